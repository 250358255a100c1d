"""Backbone names: registry, unknown names, offline failures that name the fix, local-dir errors, CLI."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

import huggingface_hub.constants  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from clip_biomed.backbones import (ModelNotAvailableError, build_backbone, download_backbone,  # noqa: E402
                                   list_backbones, register_backbone)
from clip_biomed.backbones import hub  # noqa: E402
from clip_biomed.backbones.__main__ import main  # noqa: E402
from clip_biomed.backbones.testing import tiny_name  # noqa: E402

FAST_S = 5.0


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """Offline mode and an empty Hugging Face cache, whatever the machine has cached."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))


def test_registered_names():
    assert {"BiomedCLIP", "CLIP", "PubMedCLIP", "PMCCLIP"} <= set(list_backbones())
    assert list_backbones() == sorted(list_backbones())


def test_registering_a_taken_or_malformed_name_fails():
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("BiomedCLIP")(lambda argument: None)
    with pytest.raises(ValueError, match="must not contain"):
        register_backbone("my:model")


@pytest.mark.parametrize("name, suggestion", [("biomedclip", "BiomedCLIP"), ("PubMedClip", "PubMedCLIP"),
                                              ("ViT-B-61", "ViT-B-16")])
def test_unknown_name_lists_valid_names_and_close_matches(name, suggestion):
    with pytest.raises(ValueError) as info:
        build_backbone(name, device="cpu")
    message = str(info.value)
    assert f"Unknown backbone {name!r}" in message
    assert all(valid in message for valid in ("BiomedCLIP", "CLIP", "PMCCLIP", "hf-hub:", "local-dir:"))
    assert "Did you mean" in message and suggestion in message.split("Did you mean")[1]


@pytest.mark.parametrize("name", ["hf-hub:", "local-dir:"])
def test_scheme_without_identifier_is_an_error(name):
    with pytest.raises(ValueError, match="names nothing after"):
        build_backbone(name, device="cpu")


@pytest.mark.parametrize("name, layout_file", [
    ("BiomedCLIP", "open_clip_config.json"),
    ("CLIP", "open_clip_config.json"),
    ("PubMedCLIP", "PubMedCLIP_ViT32.pth"),
    ("PMCCLIP", "text_projection_layer.pth"),
    ("hf-hub:someone/some-open-clip-model", "open_clip_config.json"),
    ("ViT-B-32:laion2b_s34b_b79k", "open_clip_config.json"),
])
def test_offline_hub_names_fail_fast_naming_the_fix(empty_hub_cache, name, layout_file):
    start = time.monotonic()
    with pytest.raises(ModelNotAvailableError) as info:
        build_backbone(name, device="cpu")
    assert time.monotonic() - start < FAST_S
    message = str(info.value)
    assert "offline mode is on" in message
    assert f"python -m clip_biomed.backbones download --name {name} --out DIR" in message
    assert "MODEL.BACKBONE.NAME local-dir:DIR" in message and layout_file in message


def test_unreachable_hub_without_offline_mode_fails_fast_too(empty_hub_cache, monkeypatch):
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    hub._endpoint_reachable.cache_clear()
    try:
        start = time.monotonic()
        with pytest.raises(ModelNotAvailableError, match="cannot be reached"):
            build_backbone("PubMedCLIP", device="cpu")
        assert time.monotonic() - start < FAST_S
    finally:
        hub._endpoint_reachable.cache_clear()


def test_missing_or_empty_local_dir(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="is not a directory"):
        build_backbone(f"local-dir:{tmp_path / 'absent'}", device="cpu")
    with pytest.raises(ModelNotAvailableError) as info:
        build_backbone(f"local-dir:{tmp_path}", device="cpu")
    assert all(f in str(info.value) for f in ("open_clip_config.json", "PubMedCLIP_ViT32.pth",
                                              "text_projection_layer.pth"))


@pytest.mark.parametrize("family, removed, expected", [
    ("biomedclip", "config.json", "hf download clip-biomed/tiny-random-pubmedbert config.json"),
    ("biomedclip", "vocab.txt", "tokenizer vocabulary"),
    ("biomedclip", "open_clip_pytorch_model.bin", "open_clip weights file"),
    ("pmcclip", "text_encoder.pth", "text_encoder.pth"),
    ("pmcclip", "config.json", "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"),
])
def test_local_dir_with_a_missing_file_names_it(tiny_root, tmp_path, family, removed, expected):
    directory = tmp_path / family
    shutil.copytree(tiny_root / family, directory)
    (directory / removed).unlink()
    with pytest.raises(ModelNotAvailableError) as info:
        build_backbone(tiny_name(directory), device="cpu")
    assert expected in str(info.value)


def test_bert_tokenizer_needs_only_vocab_and_config(tiny_root, tmp_path):
    shutil.copytree(tiny_root / "biomedclip", tmp_path / "bare")
    (tmp_path / "bare" / "tokenizer_config.json").unlink()
    bare = build_backbone(tiny_name(tmp_path / "bare"), device="cpu")
    full = build_backbone(tiny_name(tiny_root / "biomedclip"), device="cpu")
    assert torch.equal(bare.tokenize(["A Photo of GLIOMA."]), full.tokenize(["a photo of glioma."]))  # uncased


def test_biomedclip_config_keeps_its_hub_ids_the_directory_is_used_instead(tiny_root):
    config = json.loads((tiny_root / "biomedclip" / "open_clip_config.json").read_text())
    assert config["model_cfg"]["text_cfg"]["hf_model_name"] == "clip-biomed/tiny-random-pubmedbert"
    assert build_backbone(tiny_name(tiny_root / "biomedclip"), device="cpu").family == "biomedclip"


def test_biomedclip_config_with_pre_2024_open_clip_keys_still_loads(tiny_root, tmp_path):
    shutil.copytree(tiny_root / "biomedclip", tmp_path / "old")
    path = tmp_path / "old" / "open_clip_config.json"
    config = json.loads(path.read_text())
    text_cfg = config["model_cfg"]["text_cfg"]
    text_cfg["proj"], text_cfg["pooler_type"] = text_cfg.pop("hf_proj_type"), text_cfg.pop("hf_pooler_type")
    path.write_text(json.dumps(config))
    old = build_backbone(tiny_name(tmp_path / "old"), device="cpu")
    new = build_backbone(tiny_name(tiny_root / "biomedclip"), device="cpu")
    ids = new.tokenize(["a photo of a glioma tumor."])
    with torch.no_grad():
        assert torch.equal(old.encode_text(ids), new.encode_text(ids))


def test_pickled_objects_are_refused_with_the_way_out(tiny_root, tmp_path):
    state = torch.load(tiny_root / "pubmedclip" / "PubMedCLIP_ViT32.pth", weights_only=True)
    state["args"] = argparse.Namespace(lr=0.1)  # a training script's extra, not a tensor
    torch.save(state, tmp_path / "PubMedCLIP_ViT32.pth")
    with pytest.raises(ValueError) as info:
        build_backbone(tiny_name(tmp_path), device="cpu")
    assert "weights_only=True" in str(info.value) and "torch.save(" in str(info.value)


@pytest.mark.filterwarnings("ignore:.*(TorchScript|deprecated)")
def test_torchscript_archives_are_refused_with_the_way_out(tmp_path):
    """OpenAI's clip.load downloads (~/.cache/clip/ViT-B-16.pt) are TorchScript archives, not state dicts."""
    path = tmp_path / "ViT-B-16.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    with pytest.raises(ValueError) as info:
        build_backbone(f"PubMedCLIP:{path}", device="cpu")
    assert "is a TorchScript archive" in str(info.value) and f"torch.jit.load('{path}'" in str(info.value)


def test_weights_that_do_not_fit_are_reported(tiny_root, tmp_path):
    shutil.copytree(tiny_root / "pmcclip", tmp_path / "pmc")
    (tmp_path / "pmc" / "pmc_clip_config.json").write_text(json.dumps({"width": 16}))
    with pytest.raises(ValueError, match="do not fit the architecture"):
        build_backbone(tiny_name(tmp_path / "pmc"), device="cpu")


def test_explicit_weights_file(tiny_root):
    backbone = build_backbone(f"PubMedCLIP:{tiny_root / 'pubmedclip' / 'PubMedCLIP_ViT32.pth'}", device="cpu")
    assert backbone.family == "clip" and backbone.embed_dim == 32
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        build_backbone("PubMedCLIP:/no/such/file.pth", device="cpu")
    with pytest.raises(ValueError, match="takes no ':<file>' argument"):
        build_backbone("BiomedCLIP:/some/file.bin", device="cpu")


def test_download_refuses_offline_mode_and_local_dirs(empty_hub_cache, tmp_path):
    with pytest.raises(ModelNotAvailableError, match="unset HF_HUB_OFFLINE"):
        download_backbone("BiomedCLIP", tmp_path / "out")
    with pytest.raises(ValueError, match="already a local directory"):
        download_backbone(f"local-dir:{tmp_path}", tmp_path / "out")


def test_cli_download_reports_errors_without_a_traceback(empty_hub_cache, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["download", "--name", "BiomedCLIP", "--out", str(tmp_path / "out")])
    assert info.value.code == 1
    assert capsys.readouterr().err.startswith("error: downloading needs the Hugging Face Hub")


def test_cli_tiny_and_list(tmp_path, capsys):
    assert main(["tiny", "--family", "pmcclip", "--out", str(tmp_path / "pmc"), "--seed", "3"]) == 0
    assert f"local-dir:{(tmp_path / 'pmc').resolve()}" in capsys.readouterr().out
    assert build_backbone(tiny_name(tmp_path / "pmc"), device="cpu").family == "pmcclip"
    assert main(["list"]) == 0
    assert "PMCCLIP" in capsys.readouterr().out.split()
