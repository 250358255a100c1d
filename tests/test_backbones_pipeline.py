"""The data pipeline follows the backbone (clip_biomed/image_input.py), and the named shortcuts of the
newer models build the right model and pipeline from a Hugging Face cache holding tiny copies."""
import json
import os
import subprocess

import open_clip
import pytest
import torch
from safetensors.torch import load_file
from transformers import SiglipConfig, SiglipModel

import train
from clip_biomed.backbones import PreprocessInfo, build_backbone
from clip_biomed.backbones.formats import PMC_ARCH, open_clip_preprocess, openai_model_cfg
from clip_biomed.backbones.sources import (BMCCLIP_ARCH, BMCCLIP_FILE, BMCCLIP_REPO, MEDSIGLIP_REPO,
                                           PUBMEDCLIP_HF_REPO, QUILTNET_REPO, resolve)
from clip_biomed.backbones.testing import make_tiny, tiny_name
from clip_biomed.dassl import build_trainer
from clip_biomed.image_input import follow_backbone
from tests.test_backbones_hub import _cache_repo, hub_cache  # noqa: F401  (fixture)

PLUGINS = train.import_plugins([])
REPO = train.REPO_ROOT
PUBLISHED_YAML = os.path.join(REPO, "configs/trainers/BiomedCoOp/few_shot/btmri.yaml")
FAST = ["DATASET.NUM_SHOTS", "1", "DATALOADER.NUM_WORKERS", "0", "TRAINER.BIOMEDCOOP.N_PROMPTS", "4",
        "OPTIM.MAX_EPOCH", "1"]
SIGLIP_MEAN = [0.5, 0.5, 0.5]


def make_trainer(root, backbone, out_dir, *opts):
    """BiomedCoOp with the published btmri YAML (INPUT.SIZE 224, CLIP mean/std) and no INPUT opts."""
    args = train.build_parser().parse_args([
        "--root", str(root), "--trainer", "BiomedCoOp", "--seed", "1", "--output-dir", str(out_dir),
        "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"), "--config-file", PUBLISHED_YAML,
        "MODEL.BACKBONE.NAME", backbone, *FAST, *opts,
    ])
    return build_trainer(train.setup_cfg(args, PLUGINS))


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline_models")
    return {family: make_tiny(family, root / family) for family in ("clip", "siglip")}


def _write_siglip_at(directory, size: int) -> None:
    """Rewrite a tiny SigLIP folder as a model of ``size`` px (8 x 8 patches), like MedSigLIP's 448."""
    config = SiglipConfig.from_pretrained(directory)
    config.vision_config.image_size, config.vision_config.patch_size = size, size // 8
    SiglipModel(config).save_pretrained(directory)
    preprocessor = directory / "preprocessor_config.json"
    preprocessor.write_text(preprocessor.read_text().replace('"height": 32, "width": 32', f'"height": {size}, "width": {size}'))


def test_a_448_px_model_gets_448_px_inputs_from_the_published_yaml(hub_cache, tiny_dirs, synthetic_root, tmp_path):  # noqa: F811
    """MedSigLIP from the hub cache: the YAML's 224 px and CLIP mean/std give way to the model's."""
    model = tmp_path / "medsiglip"
    model.mkdir()
    for path in tiny_dirs["siglip"].iterdir():
        (model / path.name).write_bytes(path.read_bytes())
    _write_siglip_at(model, 448)
    _cache_repo(hub_cache, MEDSIGLIP_REPO, sorted(model.iterdir()))
    trainer = make_trainer(synthetic_root, "MedSigLIP", tmp_path / "run")
    assert trainer.backbone.family == "siglip" and trainer.backbone_label == "MedSigLIP"
    assert tuple(trainer.cfg.INPUT.SIZE) == (448, 448)
    assert list(trainer.cfg.INPUT.PIXEL_MEAN) == SIGLIP_MEAN and list(trainer.cfg.INPUT.PIXEL_STD) == SIGLIP_MEAN
    batch = next(iter(trainer.train_loader_x))
    assert batch["img"].shape[-2:] == (448, 448)
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 1
    assert torch.isfinite(torch.tensor(trainer.forward_backward(batch)["loss"]))


def test_command_line_input_keys_win_over_the_backbone(tiny_dirs, synthetic_root, tmp_path):
    siglip = tiny_name(tiny_dirs["siglip"])
    # a size the SigLIP tower takes (it interpolates its position embeddings); the mean still follows the model
    trainer = make_trainer(synthetic_root, siglip, tmp_path / "a", "INPUT.SIZE", "(48, 48)")
    assert tuple(trainer.cfg.INPUT.SIZE) == (48, 48) and list(trainer.cfg.INPUT.PIXEL_MEAN) == SIGLIP_MEAN
    assert tuple(trainer.cfg.INPUT.USER_KEYS) == ("SIZE",)
    images = next(iter(trainer.test_loader))["img"][:2]
    assert images.shape[-2:] == (48, 48)
    assert trainer.image_features(images).shape == (2, trainer.backbone.embed_dim)
    # a size a fixed tower cannot take fails before any image is read, naming the fix
    with pytest.raises(ValueError, match=r'takes only 32x32 images .* INPUT.SIZE "\(32, 32\)"'):
        make_trainer(synthetic_root, tiny_name(tiny_dirs["clip"]), tmp_path / "b", "INPUT.SIZE", "(48, 48)")


def test_follow_backbone_false_keeps_the_configured_input(tiny_dirs, synthetic_root, tmp_path):
    kept = make_trainer(synthetic_root, tiny_name(tiny_dirs["siglip"]), tmp_path / "a", "INPUT.FOLLOW_BACKBONE", "False")
    assert tuple(kept.cfg.INPUT.SIZE) == (224, 224)  # the YAML's, interpolated by the SigLIP tower
    assert list(kept.cfg.INPUT.PIXEL_MEAN) == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    with pytest.raises(ValueError, match="takes only 32x32 images"):
        make_trainer(synthetic_root, tiny_name(tiny_dirs["clip"]), tmp_path / "b", "INPUT.FOLLOW_BACKBONE", "False")


def test_the_paper_backbones_keep_the_published_input(tmp_path):
    """BiomedCLIP, CLIP, PubMedCLIP and PMC-CLIP preprocess as the published YAMLs say (224 px, CLIP
    mean/std, bicubic): following them changes nothing, so the published numbers stay reproducible."""
    clip_tag = open_clip.get_pretrained_cfg("ViT-B-16", "openai")
    # the tensor shapes of OpenAI's ViT-B/32 state dict that PubMedCLIP_ViT32.pth carries (no memory: meta)
    shapes = {"visual.proj": (768, 512), "visual.conv1.weight": (768, 3, 32, 32), "visual.positional_embedding": (50, 768),
              "ln_final.weight": (512,), "positional_embedding": (77, 512), "token_embedding.weight": (49408, 512),
              "text_projection": (512, 512)}
    shapes.update({f"{tower}transformer.resblocks.{i}.ln_1.weight": (768,) for tower in ("visual.", "") for i in range(12)})
    vit_b32 = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    paper = {
        # BiomedCLIP's open_clip_config.json: timm ViT-B/16 at 224, OpenAI mean/std (docs/backbones.md)
        "BiomedCLIP": open_clip_preprocess({"vision_cfg": {"timm_model_name": "vit_base_patch16_224", "image_size": 224}},
                                           {"mean": open_clip.OPENAI_DATASET_MEAN, "std": open_clip.OPENAI_DATASET_STD}),
        "CLIP": open_clip_preprocess(open_clip.get_model_config("ViT-B-16"),
                                     {k: clip_tag[k] for k in ("mean", "std") if k in clip_tag}),
        "PubMedCLIP": open_clip_preprocess(openai_model_cfg(vit_b32), {}),
        "PMCCLIP": open_clip_preprocess({"vision_cfg": {"image_size": PMC_ARCH["image_size"]}}, {}),
    }
    for name, preprocess in paper.items():
        args = train.build_parser().parse_args(["--config-file", PUBLISHED_YAML])
        cfg = train.setup_cfg(args, PLUGINS)
        before = cfg.clone()
        assert follow_backbone(cfg, preprocess, name) == [], name
        assert cfg == before, name


def test_only_a_size_the_tower_cannot_take_is_refused():
    args = train.build_parser().parse_args(["--config-file", PUBLISHED_YAML, "INPUT.SIZE", "(336, 336)"])
    cfg = train.setup_cfg(args, PLUGINS)
    fixed = PreprocessInfo(size=224, mean=(0.5,) * 3, std=(0.5,) * 3)
    with pytest.raises(ValueError, match=r"INPUT.SIZE is \(336, 336\) but backbone M takes only 224x224"):
        follow_backbone(cfg, fixed, "M")
    notes = follow_backbone(cfg, PreprocessInfo(size=224, mean=(0.5,) * 3, std=(0.5,) * 3, resizable=True), "M")
    assert tuple(cfg.INPUT.SIZE) == (336, 336) and list(cfg.INPUT.PIXEL_MEAN) == [0.5] * 3
    assert len(notes) == 2 and all("follows backbone M" in note for note in notes)  # mean and std


@pytest.mark.parametrize("name, family", [("BMCCLIP", "clip"), ("QuiltNet", "clip"), ("MedSigLIP", "siglip"),
                                          ("PubMedCLIP-HF", "hf-clip")])
def test_shortcuts_build_from_their_hub_repositories(hub_cache, tiny_dirs, tmp_path, monkeypatch, name, family):  # noqa: F811
    """Each shortcut reads its published repository (here a cache of tiny files under the real id)."""
    if name == "BMCCLIP":
        # an open_clip training checkpoint ({"state_dict": {"module.<key>": ...}}) of the built-in ViT-L-14,
        # stood in for by the tiny CLIP (open_clip's ViT-L-14 config is swapped for the tiny one)
        state = load_file(str(tiny_dirs["clip"] / "open_clip_model.safetensors"))
        torch.save({"epoch": 10, "state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / BMCCLIP_FILE)
        _cache_repo(hub_cache, BMCCLIP_REPO, [tmp_path / BMCCLIP_FILE])
        tiny_cfg = json.loads((tiny_dirs["clip"] / "open_clip_config.json").read_text())["model_cfg"]
        real_get_model_config = open_clip.get_model_config
        monkeypatch.setattr(open_clip, "get_model_config",
                            lambda arch: dict(tiny_cfg) if arch == BMCCLIP_ARCH else real_get_model_config(arch))
    else:
        source_family, repo = {"QuiltNet": ("clip", QUILTNET_REPO), "MedSigLIP": ("siglip", MEDSIGLIP_REPO),
                               "PubMedCLIP-HF": ("hf-clip", PUBMEDCLIP_HF_REPO)}[name]
        directory = tiny_dirs.get(source_family) or make_tiny(source_family, tmp_path / source_family)
        _cache_repo(hub_cache, repo, sorted(p for p in directory.iterdir() if p.is_file()))
    backbone = build_backbone(name, device="cpu")
    assert backbone.family == family
    ids = backbone.tokenize(["a photo of a glioma tumor."])
    assert backbone.encode_text(ids).shape == (1, backbone.embed_dim)
    out = tmp_path / "offline"
    resolve(name).export(out)  # what `download` writes: local-dir: reads it back
    copy = build_backbone(tiny_name(out), device="cpu")
    assert torch.equal(copy.encode_text(ids), backbone.encode_text(ids))


def test_few_shot_script_runs_biomedcoop_on_a_shortcut():
    env = {**os.environ, "DRY_RUN": "1", "SEEDS": "1"}
    out = subprocess.run(["bash", os.path.join(REPO, "scripts/biomedcoop/few_shot.sh"), "btmri", "16", "MedSigLIP"],
                         env=env, capture_output=True, text=True, check=True).stdout
    kind, folder, command, _record = out.splitlines()[0].split("\t")
    assert kind == "run" and folder.endswith("btmri/shots_16/BiomedCoOp_MedSigLIP/nctx4_cscFalse_ctpend/seed1")
    assert "MODEL.BACKBONE.NAME MedSigLIP" in command and "INPUT.SIZE" not in command
