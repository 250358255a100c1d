"""Every registered method trains one step (if it learns anything) and evaluates on every backbone
family (tiny models); a method that acts inside a tower refuses, with an error naming the tower, only a
tower without transformer blocks (PMC-CLIP's ResNet).

Parametrized over TRAINER_REGISTRY (published ``<Method>_<Backbone>`` aliases left out: they are the
same classes), so a method added to ``trainers/`` is covered on every family without editing this
file.  Kept cheap per (method, family): one tiny model per family built once per session (each
trainer gets a deep copy, so methods that adapt inside the towers cannot affect each other), one
shot per class (4 images: one training step of batch 4), evaluation of 8 test images.
"""
import copy
import math
import os

import pytest
import torch

import train
from clip_biomed import method as method_module
from clip_biomed.backbones import build_backbone
from clip_biomed.backbones.layouts import UnsupportedTowerError
from clip_biomed.backbones.testing import TINY_FAMILIES, make_tiny, tiny_name
from clip_biomed.dassl import TRAINER_REGISTRY, build_trainer

PLUGINS = train.import_plugins([])
METHODS = sorted(name for name in TRAINER_REGISTRY.registered_names()  # (other tests register toy trainers)
                 if issubclass(TRAINER_REGISTRY.get(name), method_module.ClipTrainer)
                 and TRAINER_REGISTRY.get(name).__module__.startswith("trainers.")
                 and not TRAINER_REGISTRY.get(name).backbone_name)
# every family; pubmedclip is the clip family's code path on OpenAI-format files (its own tests cover them)
FAMILIES = [family for family in TINY_FAMILIES if family != "pubmedclip"]
ONE_STEP = ["DATASET.NUM_SHOTS", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "OPTIM.MAX_EPOCH", "1",
            "DATALOADER.NUM_WORKERS", "0", "TEST.NO_TEST", "True"]  # evaluated below, on a few images
EVAL_IMAGES = 8
# options a method needs here: BiomedAP's published blocks are those of a 12-block tower (tiny towers
# have 2), CLIP-LoRA's run length is 500 iterations per shot, not OPTIM.MAX_EPOCH
METHOD_OPTS = {"BiomedAP": ["TRAINER.BIOMEDAP.FUSION_LAYERS", "[0, 1]"],
               "CLIPLoRA": ["TRAINER.CLIPLORA.ITERATIONS_PER_SHOT", "0"]}


@pytest.fixture(scope="session")
def family_backbones(tmp_path_factory):
    """{local-dir name: (family, fp32 backbone)}, built once."""
    root = tmp_path_factory.mktemp("families")
    built = {}
    for family in FAMILIES:
        name = tiny_name(make_tiny(family, root / family))
        built[name] = (family, build_backbone(name, device="cpu"))
    return built


@pytest.fixture
def shared_backbones(family_backbones, monkeypatch):
    """Trainers get a deep copy of the session's backbone instead of loading it again."""
    def build(name, device=None, precision="fp32", files=None):
        if name not in family_backbones or precision != "fp32":
            return build_backbone(name, device=device, precision=precision, files=files)
        return copy.deepcopy(family_backbones[name][1]).to(device)

    monkeypatch.setattr(method_module, "build_backbone", build)
    return {family: name for name, (family, _) in family_backbones.items()}


def one_step_trainer(method, backbone_name, root, out_dir):
    """``method``'s trainer for one training step on ``root``'s BTMRI."""
    # the method's generic few-shot config where it has one (e.g. CLIP-SVD's own schedule settings)
    config = os.path.join(train.REPO_ROOT, "configs/trainers", TRAINER_REGISTRY.get(method).METHOD, "few_shot.yaml")
    args = train.build_parser().parse_args([
        "--root", str(root), "--trainer", method, "--seed", "1", "--output-dir", str(out_dir),
        "--dataset-config-file", os.path.join(train.REPO_ROOT, "configs/datasets/btmri.yaml"),
        *(["--config-file", config] if os.path.isfile(config) else []),
        "MODEL.BACKBONE.NAME", backbone_name, *ONE_STEP, *METHOD_OPTS.get(method, []),
    ])
    return build_trainer(train.setup_cfg(args, PLUGINS))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_method_trains_one_step_and_evaluates_on_the_family(method, family, shared_backbones, synthetic_root,
                                                           tmp_path):
    try:
        trainer = one_step_trainer(method, shared_backbones[family], synthetic_root, tmp_path / "run")
    except UnsupportedTowerError as error:
        assert family == "pmcclip" and "ModifiedResNet" in str(error), str(error)
        return
    assert trainer.backbone.family == family.replace("pubmedclip", "clip")
    assert tuple(trainer.cfg.INPUT.SIZE) == (trainer.backbone.preprocess.size,) * 2  # the pipeline follows it
    assert len(trainer.train_loader_x) == 1  # one training step
    frozen = {name: p.detach().clone() for name, p in trainer.backbone.named_parameters()}
    if trainer.get_model_names():  # zero-shot methods learn nothing: evaluated only
        trainer.train()
    test_set = torch.utils.data.Subset(trainer.test_loader.dataset, range(EVAL_IMAGES))
    trainer.test_loader = torch.utils.data.DataLoader(test_set, batch_size=EVAL_IMAGES)
    accuracy = trainer.test()
    assert math.isfinite(accuracy) and 0.0 <= accuracy <= 100.0
    assert all(torch.isfinite(p).all() for _, p in trainer.trainable_parameters())
    # the backbone's frozen weights stay as they were (methods that adapt inside the towers train added
    # or re-parameterised weights)
    for name, p in trainer.backbone.named_parameters():
        if not p.requires_grad and name in frozen:
            assert torch.equal(p, frozen[name]), name
