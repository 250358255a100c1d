"""Hub names resolved from a Hugging Face cache (filled here with tiny files), and the download command.

Nothing touches the network: offline mode is on, or the hub endpoint points at a closed local port.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json  # noqa: E402
import shutil  # noqa: E402

import huggingface_hub.constants  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from clip_biomed.backbones import build_backbone, download_backbone, hub  # noqa: E402
from clip_biomed.backbones.formats import PMC_ARCH, PMCFiles  # noqa: E402
from clip_biomed.backbones.sources import BIOMEDCLIP_HUB_ID, resolve  # noqa: E402
from clip_biomed.backbones.testing import tiny_name  # noqa: E402
from clip_biomed.backbones.tiny import TINY_BERT_HUB_ID  # noqa: E402

BERT_FILES = ("config.json", "vocab.txt", "tokenizer_config.json")
PMC_WEIGHTS = ("image_encoder(resnet50).pth", "text_encoder.pth", "text_projection_layer.pth")
PROMPTS = ["a photo of a glioma tumor.", "normal brain"]


def _cache_repo(cache, repo_id, files, repo_type="model"):
    """Put ``files`` into ``cache`` the way huggingface_hub stores a downloaded revision."""
    repo = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in files:
        shutil.copyfile(file, snapshot / file.name)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf_cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def unreachable_hub(monkeypatch):
    """Offline mode off, but the hub does not answer: the cache must still be used, without waiting."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    hub._endpoint_reachable.cache_clear()
    yield
    hub._endpoint_reachable.cache_clear()


def _cache_biomedclip(cache, tiny_dir, repo_id):
    _cache_repo(cache, repo_id, [tiny_dir / "open_clip_config.json", tiny_dir / "open_clip_pytorch_model.bin"])
    _cache_repo(cache, TINY_BERT_HUB_ID, [tiny_dir / name for name in BERT_FILES])  # the text tower's own repo


def _same_outputs(a, b):
    ids = a.tokenize(PROMPTS)
    images = torch.randn(2, 3, a.preprocess.size, a.preprocess.size)
    with torch.no_grad():
        return torch.equal(a.encode_text(ids), b.encode_text(ids)) and \
            torch.equal(a.encode_image(images), b.encode_image(images))


def test_hf_hub_open_clip_model_with_a_separate_text_tower_repo(hub_cache, tiny_root):
    _cache_biomedclip(hub_cache, tiny_root / "biomedclip", "someone/tiny-biomedclip")
    from_hub = build_backbone("hf-hub:someone/tiny-biomedclip", device="cpu")
    assert from_hub.family == "biomedclip" and from_hub.name == "hf-hub:someone/tiny-biomedclip"
    assert _same_outputs(from_hub, build_backbone(tiny_name(tiny_root / "biomedclip"), device="cpu"))


def test_registered_names_read_their_published_repositories(hub_cache, tiny_root):
    _cache_biomedclip(hub_cache, tiny_root / "biomedclip", BIOMEDCLIP_HUB_ID)
    assert build_backbone("BiomedCLIP", device="cpu").family == "biomedclip"
    _cache_repo(hub_cache, "sarahESL/PubMedCLIP", [tiny_root / "pubmedclip" / "PubMedCLIP_ViT32.pth"])
    assert _same_outputs(build_backbone("PubMedCLIP", device="cpu"),
                         build_backbone(tiny_name(tiny_root / "pubmedclip"), device="cpu"))
    pmc = tiny_root / "pmcclip"
    _cache_repo(hub_cache, "axiong/pmc_oa", [pmc / name for name in PMC_WEIGHTS], repo_type="dataset")
    _cache_repo(hub_cache, PMCFiles.BERT_HUB_ID, [pmc / name for name in BERT_FILES])
    files = resolve("PMCCLIP")  # the tiny weights do not fit the published architecture: resolve only
    assert isinstance(files, PMCFiles) and files.arch == PMC_ARCH
    assert [p.name for p in (files.image_encoder, files.text_encoder, files.text_projection)] == list(PMC_WEIGHTS)
    assert (files.text_dir / "config.json").is_file() and (files.tokenizer_dir / "vocab.txt").is_file()


def test_download_writes_a_local_dir_that_builds_the_same_model(hub_cache, unreachable_hub, tiny_root, tmp_path):
    _cache_biomedclip(hub_cache, tiny_root / "biomedclip", "someone/tiny-biomedclip")
    out = download_backbone("hf-hub:someone/tiny-biomedclip", tmp_path / "offline_copy")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["open_clip_config.json", "open_clip_pytorch_model.bin", *BERT_FILES])
    # the config is copied unchanged; the loader points the text tower at the directory itself
    assert json.loads((out / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"]["hf_model_name"] \
        == TINY_BERT_HUB_ID
    assert _same_outputs(build_backbone(tiny_name(out), device="cpu"),
                         build_backbone(tiny_name(tiny_root / "biomedclip"), device="cpu"))


def test_download_of_pmcclip_writes_the_published_file_names(hub_cache, unreachable_hub, tiny_root, tmp_path):
    pmc = tiny_root / "pmcclip"
    _cache_repo(hub_cache, "axiong/pmc_oa", [pmc / name for name in PMC_WEIGHTS], repo_type="dataset")
    _cache_repo(hub_cache, PMCFiles.BERT_HUB_ID, [pmc / name for name in BERT_FILES])
    out = download_backbone("PMCCLIP", tmp_path / "pmc")
    assert sorted(p.name for p in out.iterdir()) == sorted([*PMC_WEIGHTS, *BERT_FILES])  # no pmc_clip_config.json
    shutil.copyfile(pmc / "pmc_clip_config.json", out / "pmc_clip_config.json")  # tiny architecture
    assert _same_outputs(build_backbone(tiny_name(out), device="cpu"),
                         build_backbone(tiny_name(pmc), device="cpu"))
