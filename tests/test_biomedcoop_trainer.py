"""The BiomedCoOp trainer and the shared prompt learner on a tiny local model and synthetic data."""
import os

import pytest
import torch
import torch.nn.functional as F

import train
from clip_biomed.backbones.testing import tiny_name
from clip_biomed.dassl import TRAINER_REGISTRY, build_trainer
from clip_biomed.prompt_learner import PromptLearner

PLUGINS = train.import_plugins([])  # registers the project's datasets and trainers

FAST_OPTS = [
    "OPTIM.MAX_EPOCH", "2", "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
    "TRAINER.BIOMEDCOOP.N_PROMPTS", "8", "DATALOADER.TEST.BATCH_SIZE", "50",
]


def make_trainer(root, model_dir, out_dir, *opts, trainer="BiomedCoOp", shots=4):
    args = train.build_parser().parse_args([
        "--root", str(root), "--trainer", trainer, "--seed", "1", "--output-dir", str(out_dir),
        "--dataset-config-file", os.path.join(train.REPO_ROOT, "configs/datasets/btmri.yaml"),
        "--config-file", os.path.join(train.REPO_ROOT, "configs/trainers/BiomedCoOp/few_shot/btmri.yaml"),
        "MODEL.BACKBONE.NAME", tiny_name(model_dir), "DATASET.NUM_SHOTS", str(shots), *FAST_OPTS, *opts,
    ])
    cfg = train.setup_cfg(args, PLUGINS)
    return build_trainer(cfg)


@pytest.fixture
def trainer(synthetic_root, tiny_biomedclip, tmp_path):
    return make_trainer(synthetic_root, tiny_biomedclip, tmp_path / "run")


def test_published_trainer_names_are_aliases():
    names = TRAINER_REGISTRY.registered_names()
    for alias, backbone in [("BiomedCoOp_BiomedCLIP", "BiomedCLIP"), ("BiomedCoOp_PMCCLIP", "PMCCLIP")]:
        assert alias in names
        assert TRAINER_REGISTRY.get(alias).backbone_name == backbone


def test_alias_with_a_local_model_uses_the_local_model(synthetic_root, tiny_biomedclip, tmp_path):
    t = make_trainer(synthetic_root, tiny_biomedclip, tmp_path / "a", trainer="BiomedCoOp_BiomedCLIP")
    assert t.prompt_learner.metadata["backbone"] == tiny_name(tiny_biomedclip)


def test_only_the_context_trains_and_one_image_pass_per_step(trainer, monkeypatch):
    trained = [n for n, p in trainer.prompt_learner.named_parameters() if p.requires_grad]
    assert trained == ["ctx"]
    assert not any(p.requires_grad for p in trainer.backbone.parameters())
    calls = []
    original = trainer.backbone.encode_image
    monkeypatch.setattr(trainer.backbone, "encode_image", lambda x: calls.append(1) or original(x))
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 10
    batch = next(iter(trainer.train_loader_x))
    before = trainer.prompt_learner.ctx.detach().clone()
    backbone_before = [p.detach().clone() for p in trainer.backbone.parameters()]
    summary = trainer.forward_backward(batch)
    assert len(calls) == 1
    assert set(summary) == {"loss", "loss_ce", "loss_sccm", "loss_kdsp", "acc"}
    assert summary["loss"] == pytest.approx(summary["loss_ce"] + summary["loss_sccm"] + summary["loss_kdsp"], rel=1e-5)
    assert not torch.equal(before, trainer.prompt_learner.ctx)
    assert all(torch.equal(a, b) for a, b in zip(backbone_before, trainer.backbone.parameters()))


def test_text_tower_mode_follows_the_published_behaviour_and_the_switch(synthetic_root, tiny_biomedclip, tmp_path):
    default = make_trainer(synthetic_root, tiny_biomedclip, tmp_path / "a")
    default.set_model_mode("train")
    assert default.backbone.text_tower.training
    assert not default.backbone.image_tower.training
    default.set_model_mode("eval")
    assert not default.backbone.text_tower.training

    switched = make_trainer(synthetic_root, tiny_biomedclip, tmp_path / "b", "TRAINER.BIOMEDCOOP.TEXT_DROPOUT", "False")
    switched.set_model_mode("train")
    assert not switched.backbone.text_tower.training


def test_teacher_features_are_computed_once_in_eval_mode(trainer):
    trainer.set_model_mode("train")  # text tower in train mode (dropout on)
    features, prototypes = trainer.teacher_features()
    assert trainer.backbone.text_tower.training, "the text tower's mode is restored"
    trainer.backbone.text_tower.eval()
    sentences = [s for per_class in trainer.llm_prompts for s in per_class]
    with torch.no_grad():
        expected = F.normalize(trainer.backbone.encode_text(trainer.backbone.tokenize(sentences)), dim=-1)
    assert torch.allclose(features.reshape(len(sentences), -1), expected, atol=1e-6)
    assert torch.allclose(prototypes, F.normalize(features.mean(1), dim=-1))
    assert trainer.teacher_features()[0] is features


def test_text_features_once_per_evaluation(trainer, monkeypatch):
    calls = []
    original = trainer.text_features
    monkeypatch.setattr(trainer, "text_features", lambda: calls.append(1) or original())
    trainer.cfg.defrost()
    trainer.cfg.DATALOADER.TEST.BATCH_SIZE = 5  # several test batches
    trainer.cfg.freeze()
    trainer.test_loader = torch.utils.data.DataLoader(trainer.test_loader.dataset, batch_size=5)
    trainer.test()
    assert len(calls) == 1
    trainer.test()
    assert len(calls) == 2, "a new evaluation recomputes them (the context may have changed)"


def test_missing_class_in_prompt_file_is_a_clear_error(synthetic_root, tiny_biomedclip, tmp_path):
    prompts = tmp_path / "mine.json"
    prompts.write_text('{"glioma tumor": ["a glioma on MRI"], "normal brain": ["a normal brain MRI"]}')
    with pytest.raises(ValueError) as info:
        make_trainer(synthetic_root, tiny_biomedclip, tmp_path / "a", "TRAINER.BIOMEDCOOP.PROMPTS", str(prompts))
    message = str(info.value)
    assert "meningioma tumor" in message and "pituitary tumor" in message and "TRAINER.BIOMEDCOOP.PROMPTS" in message


def test_input_size_must_match_the_backbone(synthetic_root, tiny_biomedclip, tmp_path):
    with pytest.raises(ValueError, match=r'INPUT.SIZE "\(32, 32\)"'):
        make_trainer(synthetic_root, tiny_biomedclip, tmp_path / "a", "INPUT.SIZE", "(64, 64)")


# -- prompt learner --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backbone(tiny_biomedclip):
    from clip_biomed.backbones import build_backbone

    return build_backbone(tiny_name(tiny_biomedclip), device="cpu")


def test_ctx_init_for_any_n_ctx_that_fits(backbone):
    init_ids = backbone.tokenize(["a photo of a"])
    words = backbone.token_embedding(init_ids)[0, 1:5]
    four = PromptLearner(backbone, ["glioma tumor"], n_ctx=4, ctx_init="a photo of a")
    assert torch.allclose(four.ctx, words)
    torch.manual_seed(0)
    six = PromptLearner(backbone, ["glioma tumor"], n_ctx=6, ctx_init="a photo of a")
    assert torch.allclose(six.ctx[2:], words)
    assert six.prompt_prefix == "X X a photo of a"
    csc = PromptLearner(backbone, ["glioma tumor", "normal brain"], n_ctx=5, ctx_init="a photo of a", csc=True)
    assert csc.ctx.shape == (2, 5, backbone.ctx_dim)
    assert torch.allclose(csc.ctx[1, 1:], words)
    with pytest.raises(ValueError, match="N_CTX to at least 4"):
        PromptLearner(backbone, ["glioma tumor"], n_ctx=2, ctx_init="a photo of a")


@pytest.mark.parametrize("position,template", [
    ("end", "a photo of a {}."),
    ("front", "{} a photo of a."),
    ("middle", "a photo {} of a."),
])
def test_class_token_positions_encode_the_matching_sentence(backbone, position, template):
    """With the context at its initial words, every layout equals encoding the sentence directly;
    multi-token class names check the class-name lengths (the published name_lens was always 1)."""
    names = ["pituitary tumor", "normal brain"]
    learner = PromptLearner(backbone, names, n_ctx=4, ctx_init="a photo of a", class_token_position=position)
    with torch.no_grad():
        got = backbone.encode_text_embeddings(learner(), learner.token_ids)
        expected = backbone.encode_text(backbone.tokenize([template.format(n) for n in names]))
    assert torch.allclose(got, expected, atol=1e-5)
    assert learner.name_lens == [backbone.num_tokens(n) for n in names]


# -- checkpoints --------------------------------------------------------------------------------


def test_checkpoint_holds_the_context_and_its_metadata(synthetic_root, tiny_biomedclip, tmp_path):
    out = tmp_path / "run"
    t = make_trainer(synthetic_root, tiny_biomedclip, out, "OPTIM.MAX_EPOCH", "1")
    t.train()
    path = out / "prompt_learner" / "model.pth.tar-1"
    checkpoint = torch.load(path, weights_only=True)
    assert set(checkpoint["state_dict"]) == {"ctx", "_extra_state"}
    meta = checkpoint["state_dict"]["_extra_state"]
    assert meta["classnames"] == ["glioma tumor", "meningioma tumor", "pituitary tumor", "normal brain"]
    assert meta["backbone"] == tiny_name(tiny_biomedclip) and meta["n_ctx"] == 4 and meta["dataset"] == "BTMRI"
    assert os.path.getsize(path) < 50_000

    fresh = make_trainer(synthetic_root, tiny_biomedclip, tmp_path / "eval")
    fresh.load_model(str(out), epoch=1)
    assert torch.equal(fresh.prompt_learner.ctx, t.prompt_learner.ctx)
    assert fresh.prompt_learner.loaded_metadata["classnames"] == meta["classnames"]


def write_published_checkpoint(path, ctx):
    """A checkpoint shaped like the authors' released ones: the whole model's state dict and a pickled
    Dassl warmup scheduler holding live torch objects (which weights_only=True refuses)."""
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([param], lr=0.1, momentum=0.9)
    successor = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=100.0)
    state = {
        "state_dict": {
            "prompt_learner.ctx": ctx,
            "prompt_learner.token_prefix": torch.zeros(4, 1, ctx.shape[-1]),
            "image_encoder.trunk.cls_token": torch.zeros(1, 1, 8),
            "logit_scale": torch.tensor(4.6),
        },
        "epoch": 100,
        "optimizer": optimizer.state_dict(),
        "scheduler": {"successor": successor, "warmup_epoch": 1, "last_epoch": 1},
        "val_result": None,
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(state, path)


def test_published_full_model_checkpoint_loads_without_trusting_its_pickle(trainer, tmp_path):
    ctx = torch.randn(4, trainer.backbone.ctx_dim)
    model_dir = tmp_path / "published"
    write_published_checkpoint(str(model_dir / "prompt_learner" / "model.pth.tar-100"), ctx)
    with pytest.raises(Exception):
        torch.load(model_dir / "prompt_learner" / "model.pth.tar-100", weights_only=True)
    trainer.load_model(str(model_dir), epoch=100)
    assert torch.equal(trainer.prompt_learner.ctx.detach().cpu(), ctx)


def test_load_model_missing_file_names_the_path_and_the_fix(trainer, tmp_path):
    with pytest.raises(FileNotFoundError, match="--model-dir"):
        trainer.load_model(str(tmp_path), epoch=7)


# -- the published behaviour of each backbone (ZSCORE, IMAGE_BN) ----------------------------------------


def batchnorm_state(trainer):
    return {k: v.clone() for k, v in trainer.backbone.image_tower.state_dict().items() if "running" in k}


def test_published_variant_per_backbone_family(synthetic_root, tiny_biomedclip, tiny_root, tmp_path):
    pmc = make_trainer(synthetic_root, tiny_root / "pmcclip", tmp_path / "pmc")
    assert pmc.zscore == "absolute" and pmc.get_model_names() == ["prompt_learner", "image_bn"]
    assert pmc.FROZEN_IMAGE_FEATURES is False and type(pmc).FROZEN_IMAGE_FEATURES is True  # this run only
    biomedclip = make_trainer(synthetic_root, tiny_biomedclip, tmp_path / "biomedclip")
    assert biomedclip.zscore == "signed" and biomedclip.get_model_names() == ["prompt_learner"]
    assert biomedclip.FROZEN_IMAGE_FEATURES is True
    fixed = make_trainer(synthetic_root, tiny_root / "pmcclip", tmp_path / "fixed", "TRAINER.BIOMEDCOOP.ZSCORE",
                         "signed", "TRAINER.BIOMEDCOOP.IMAGE_BN", "eval")
    assert fixed.zscore == "signed" and fixed.get_model_names() == ["prompt_learner"] and fixed.FROZEN_IMAGE_FEATURES
    with pytest.raises(ValueError, match="IMAGE_BN must be one of auto, eval, train, got 'batch'"):
        make_trainer(synthetic_root, tiny_biomedclip, tmp_path / "bad", "TRAINER.BIOMEDCOOP.IMAGE_BN", "batch")


def test_pmcclip_batchnorm_drifts_as_two_published_passes_per_step(synthetic_root, tiny_root, tmp_path):
    """The published PMC-CLIP trainer runs its train-mode ResNet twice on every batch (student and
    teacher): one pass here moves the running statistics exactly as those two did."""
    import copy

    trainer = make_trainer(synthetic_root, tiny_root / "pmcclip", tmp_path / "run")
    tower = trainer.backbone.image_tower
    published = copy.deepcopy(tower).train()
    for layer in published.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.momentum = 0.1  # PyTorch's default, as in the published ModifiedResNet
    trainer.set_model_mode("train")
    layers = list(trainer.image_batchnorm)
    assert layers and all(layer.training for layer in layers) and trainer.backbone.text_tower.training
    trainer.batch_idx, trainer.num_batches = 0, 10
    batch = next(iter(trainer.train_loader_x))
    before = batchnorm_state(trainer)
    trainer.forward_backward(batch)
    with torch.no_grad():
        published(batch["img"])
        published(batch["img"])
    after = batchnorm_state(trainer)
    expected = {k: v for k, v in published.state_dict().items() if "running" in k}
    assert not torch.allclose(after["bn1.running_mean"], before["bn1.running_mean"])
    assert all(torch.allclose(after[k], expected[k], atol=1e-6) for k in after)
    trainer.set_model_mode("eval")
    assert not any(layer.training for layer in layers)


def test_drifted_statistics_are_saved_loaded_and_evaluated_without_frozen_features(
        synthetic_root, tiny_root, tmp_path, monkeypatch):
    out = tmp_path / "run"
    trained = make_trainer(synthetic_root, tiny_root / "pmcclip", out, "OPTIM.MAX_EPOCH", "1")
    pristine = batchnorm_state(trained)
    trained.train()
    drifted = batchnorm_state(trained)
    assert sorted(os.listdir(out / "image_bn")) == ["checkpoint", "model.pth.tar-1"]

    fresh = make_trainer(synthetic_root, tiny_root / "pmcclip", tmp_path / "eval")
    assert all(torch.equal(fresh_v, pristine[k]) for k, fresh_v in batchnorm_state(fresh).items())
    fresh.load_model(str(out))  # the run's final checkpoints of the context and the statistics
    assert all(torch.equal(v, drifted[k]) for k, v in batchnorm_state(fresh).items())
    assert not torch.equal(drifted["bn1.running_var"], pristine["bn1.running_var"])
    images = next(iter(fresh.test_loader))["img"]
    fresh.set_model_mode("eval")
    trained.set_model_mode("eval")
    assert torch.equal(fresh.model_inference(images), trained.model_inference(images))
    monkeypatch.setattr(fresh, "frozen_feature_batches", lambda *a: pytest.fail("frozen features used"))
    fresh.test()
    with pytest.raises(KeyError, match="does not hold the BatchNorm statistics of this backbone"):
        fresh.loadable_state_dict("image_bn", {"0.weight": torch.zeros(1)})


def test_eval_mode_batchnorm_keeps_the_frozen_statistics(synthetic_root, tiny_root, tmp_path):
    trainer = make_trainer(synthetic_root, tiny_root / "pmcclip", tmp_path / "run", "TRAINER.BIOMEDCOOP.IMAGE_BN", "eval")
    before = batchnorm_state(trainer)
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 10
    trainer.forward_backward(next(iter(trainer.train_loader_x)))
    assert all(torch.equal(v, before[k]) for k, v in batchnorm_state(trainer).items())
