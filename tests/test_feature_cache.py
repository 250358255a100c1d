"""The frozen-feature cache: what its key covers, concurrent writers, corrupt entries, and that a
cached evaluation is the uncached one (same logits, same printed accuracy, same RNG state after)."""
import os
import shutil
import threading

import pytest
import torch
import torchvision.transforms as T

from clip_biomed.backbones import build_backbone
from clip_biomed.backbones.testing import make_tiny, tiny_name
from clip_biomed.dassl import DatasetWrapper
from clip_biomed.feature_cache import (CACHE_DIR_ENV, FeatureCache, cache_from_config, default_directory, entry_key,
                                       weights_fingerprint)
from tests.test_biomedcoop_trainer import make_trainer
from tests.test_feature_methods import make_feature_trainer

BATCHES = ["DATALOADER.TEST.BATCH_SIZE", "10"]  # the 28 test images in 3 batches


def evaluate(trainer, capsys, monkeypatch):
    """(logits, the printed result block, image-encoder calls, torch RNG state after) of ``trainer.test()``."""
    logits, calls = [], []
    process, encode = trainer.evaluator.process, trainer.backbone.encode_image
    monkeypatch.setattr(trainer.evaluator, "process", lambda mo, gt: logits.append(mo.clone()) or process(mo, gt))
    monkeypatch.setattr(trainer.backbone, "encode_image", lambda x: calls.append(len(x)) or encode(x))
    torch.manual_seed(123)
    capsys.readouterr()
    trainer.test()
    out = capsys.readouterr().out
    return torch.cat(logits), out[out.index("=> result"):], len(calls), torch.get_rng_state()


def test_cached_evaluation_equals_the_uncached_one(synthetic_root, tiny_biomedclip, tmp_path, capsys, monkeypatch):
    trainer = make_trainer(synthetic_root, tiny_biomedclip, tmp_path / "run", "FEATURE_CACHE.DIR",
                           str(tmp_path / "cache"), *BATCHES)
    with monkeypatch.context() as uncached:
        uncached.setattr(trainer, "uses_feature_cache", lambda: False)  # the run-time opt-out
        reference = evaluate(trainer, capsys, uncached)
    assert not (tmp_path / "cache").exists()
    first = evaluate(trainer, capsys, monkeypatch)
    second = evaluate(trainer, capsys, monkeypatch)
    assert reference[2] == first[2] == 3 and second[2] == 0, "the second evaluation encodes nothing"
    for run in (first, second):
        assert torch.equal(run[0], reference[0])
        assert run[1] == reference[1]
        assert torch.equal(run[3], reference[3]), "a hit leaves the RNG where encoding leaves it"
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 1


def test_other_methods_seeds_and_shots_reuse_the_entry(synthetic_root, tiny_biomedclip, tmp_path, capsys, monkeypatch):
    cache = ["FEATURE_CACHE.DIR", str(tmp_path / "cache")]
    prompt_method = make_trainer(synthetic_root, tiny_biomedclip, tmp_path / "a", *cache, *BATCHES)
    prompt_method.test()
    probe = make_feature_trainer(synthetic_root, tiny_biomedclip, tmp_path / "b", "LinearProbe", *cache,
                                 seed=2, shots=2)
    assert repr(probe.train_loader_x.dataset.transform) != repr(prompt_method.train_loader_x.dataset.transform)
    logits, _, encoded, _ = evaluate(probe, capsys, monkeypatch)
    assert encoded == 0 and len(logits) == 28


@pytest.fixture
def own_copy(synthetic_root, tmp_path):
    """A copy of the synthetic dataset whose files a test may change."""
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    return root


def test_changed_weights_split_file_images_or_transform_miss(own_copy, tiny_biomedclip, tmp_path):
    trainer = make_feature_trainer(own_copy, tiny_biomedclip, tmp_path / "run", "LinearProbe",
                                   "FEATURE_CACHE.DIR", str(tmp_path / "cache"))
    cache, loader = trainer.feature_cache, trainer.test_loader

    def fields():
        return trainer.feature_cache_fields("test", loader)

    features, labels = trainer.split_features("test")
    assert cache.load(fields()) is not None and torch.equal(cache.load(fields())["features"], features.cpu())

    weight = next(trainer.backbone.image_tower.parameters())
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.view(-1)[0] += 0.5
    assert cache.load(fields()) is None, "a changed weight"
    with torch.no_grad():
        weight.copy_(saved)
    assert cache.load(fields()) is not None, "the same weights again"

    split_file = trainer.dm.dataset.split_path
    original = open(split_file).read()
    open(split_file, "w").write(original + "\n")
    assert cache.load(fields()) is None, "a changed split file"
    open(split_file, "w").write(original)

    image = loader.dataset.data_source[5].impath
    stat = os.stat(image)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache.load(fields()) is None, "a changed image file"
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache.load(fields()) is not None

    bilinear = T.Compose([T.Resize(32, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(32), T.ToTensor()])
    other = torch.utils.data.DataLoader(DatasetWrapper(trainer.cfg, loader.dataset.data_source, transform=bilinear),
                                        batch_size=loader.batch_size)
    same = torch.utils.data.DataLoader(DatasetWrapper(trainer.cfg, loader.dataset.data_source,
                                                      transform=loader.dataset.transform), batch_size=loader.batch_size)
    assert cache.load(trainer.feature_cache_fields("test", other)) is None, "a changed transform"
    assert cache.load(trainer.feature_cache_fields("test", same)) is not None


def test_weights_are_identified_by_content_not_name(tiny_biomedclip, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_biomedclip, copy)
    original, same = (build_backbone(tiny_name(d), device="cpu") for d in (tiny_biomedclip, copy))
    other = build_backbone(tiny_name(make_tiny("biomedclip", tmp_path / "other", seed=1)), device="cpu")
    assert weights_fingerprint(original.image_tower) == weights_fingerprint(same.image_tower)
    assert weights_fingerprint(original.image_tower) != weights_fingerprint(other.image_tower)


def _entry(n=40, dim=8):
    return torch.randn(n, dim), torch.arange(n) % 4


def test_concurrent_writers_leave_one_valid_entry(tmp_path):
    cache = FeatureCache(str(tmp_path))
    fields = {"split": "test", "n": 40}
    features, labels = _entry()
    start, failures = threading.Barrier(3), []

    def write():
        start.wait()
        for _ in range(15):
            cache.save(fields, features, labels)

    def read():
        start.wait()
        for _ in range(60):
            entry = cache.load(fields)
            if entry is not None and not torch.equal(entry["features"], features):
                failures.append("a reader saw a partial entry")

    threads = [threading.Thread(target=write), threading.Thread(target=write), threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert torch.equal(cache.load(fields)["features"], features)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [f"{entry_key(fields)}.safetensors"]


@pytest.mark.parametrize("damage", ["truncate", "flip a byte", "another entry"])
def test_a_corrupt_entry_is_reported_and_rebuilt(damage, tmp_path, capsys):
    cache = FeatureCache(str(tmp_path))
    fields, other_fields = {"split": "test"}, {"split": "val"}
    features, labels = _entry()
    path = cache.save(fields, features, labels)
    data = open(path, "rb").read()
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip a byte":
        data = data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:]
    else:
        data = open(cache.save(other_fields, features, labels), "rb").read()
    open(path, "wb").write(data)
    capsys.readouterr()

    encoded = [(features[:25], labels[:25]), (features[25:], labels[25:])]
    got = list(cache.batches(fields, lambda: iter(encoded), 25, "cpu"))
    assert f"the entry {path} is corrupt" in capsys.readouterr().out
    assert torch.equal(torch.cat([f for f, _ in got]), features)
    assert torch.equal(cache.load(fields)["features"], features), "rebuilt"


def test_configuration_and_opt_outs(synthetic_root, tiny_biomedclip, tmp_path, monkeypatch, capsys):
    from yacs.config import CfgNode as CN

    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "from-env"))
    assert default_directory() == str(tmp_path / "from-env")
    monkeypatch.delenv(CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_directory() == str(tmp_path / "xdg" / "clip_biomed" / "features")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_directory() == os.path.expanduser("~/.cache/clip_biomed/features")
    cfg = CN({"FEATURE_CACHE": CN({"ENABLED": True, "DIR": str(tmp_path / "from-cfg")})})
    assert cache_from_config(cfg).directory == str(tmp_path / "from-cfg")

    off = make_feature_trainer(synthetic_root, tiny_biomedclip, tmp_path / "off", "LinearProbe",
                               "FEATURE_CACHE.ENABLED", "False")
    assert off.feature_cache is None and not off.uses_feature_cache()

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    unwritable = make_feature_trainer(synthetic_root, tiny_biomedclip, tmp_path / "ro", "LinearProbe",
                                      "FEATURE_CACHE.DIR", str(blocked / "cache"))
    assert unwritable.uses_feature_cache()
    capsys.readouterr()
    features, _ = unwritable.split_features("test")
    assert "Feature cache: cannot write to" in capsys.readouterr().out
    assert torch.equal(features, off.split_features("test")[0]), "the run goes on, uncached"
    unwritable.FROZEN_IMAGE_FEATURES = False  # a method that changes the image path never uses it
    assert not unwritable.uses_feature_cache()
