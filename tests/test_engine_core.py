"""Engine building blocks: config, registry, utils, logger, meters, evaluator, checkpoints (dassl.md §2, §7, §8)."""
import os
import random
import re
import shutil
import sys
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
from yacs.config import CfgNode as CN

from clip_biomed.engine.checkpoint import (
    UnloadableObject, load_checkpoint, load_pretrained_weights, model_file_name, resume_from_checkpoint,
    save_checkpoint,
)
from clip_biomed.engine.config import clean_cfg, get_cfg_default
from clip_biomed.engine.evaluation import Classification, build_evaluator, compute_accuracy
from clip_biomed.engine.logger import setup_logger
from clip_biomed.engine.meters import AverageMeter, MetricMeter
from clip_biomed.engine.registry import Registry, check_availability
from clip_biomed.engine.utils import (
    check_isfile, collect_env_info, listdir_nohidden, read_image, read_json, set_random_seed, tolist_if_not,
    write_json,
)


def leaves(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, CN):
            yield from leaves(value, prefix + key + ".")
        else:
            yield prefix + key, value


# ---------------------------------------------------------------- config

def test_default_tree_has_dassls_135_leaves():
    tree = dict(leaves(get_cfg_default()))
    assert len(tree) == 135
    dassl_own = [k for k in tree if not k.startswith("TRAINER.") or k == "TRAINER.NAME"]
    assert len(dassl_own) == 91  # + 44 leaves of Dassl's own trainers' nodes
    assert tree["OPTIM.SGD_DAMPNING"] == 0 and tree["OPTIM.STEPSIZE"] == (-1,)
    assert tree["INPUT.SIZE"] == (224, 224) and tree["INPUT.PIXEL_MEAN"] == [0.485, 0.456, 0.406]
    assert tree["DATALOADER.TEST.SAMPLER"] == "SequentialSampler" and tree["SEED"] == -1
    assert tree["TRAINER.DDAIG.G_ARCH"] == "" and tree["TRAINER.FIXMATCH.STRONG_TRANSFORMS"] == ()


def test_get_cfg_default_returns_an_independent_unfrozen_clone():
    first = get_cfg_default()
    first.OPTIM.LR = 1.0
    second = get_cfg_default()
    assert second.OPTIM.LR == 0.0003 and not second.is_frozen()


def test_yacs_decoding_and_type_checks(tmp_path):
    cfg = get_cfg_default()
    path = tmp_path / "m.yaml"
    path.write_text("INPUT:\n  SIZE: (32, 32)\nOPTIM:\n  WARMUP_CONS_LR: 1e-5\n  STEPSIZE: [3]\n")
    cfg.merge_from_file(str(path))
    assert cfg.INPUT.SIZE == (32, 32) and cfg.OPTIM.WARMUP_CONS_LR == 1e-5 and cfg.OPTIM.STEPSIZE == (3,)
    with pytest.raises(ValueError, match="Type mismatch"):
        cfg.merge_from_list(["OPTIM.LR", "1"])  # an int for a float key is rejected
    with pytest.raises(KeyError, match="Non-existent config key: OPTIM.LRR"):
        cfg.merge_from_other_cfg(CN({"OPTIM": CN({"LRR": 1.0})}))


def test_clean_cfg_keeps_only_the_named_trainer():
    cfg = get_cfg_default()
    cfg.freeze()
    clean_cfg(cfg, "FixMatch")
    assert set(cfg.TRAINER.keys()) == {"NAME", "FIXMATCH"} and cfg.is_frozen()


# ---------------------------------------------------------------- registry and utils

def test_registry_register_get_and_errors():
    registry = Registry("THING")

    @registry.register()
    class Alpha:
        pass

    def beta():
        pass

    registry.register(beta)
    assert registry.get("Alpha") is Alpha and registry.registered_names() == ["Alpha", "beta"]
    with pytest.raises(KeyError, match='An object named "Alpha" was already registered in "THING" registry'):
        registry.register(Alpha)
    registry.register(Alpha, force=True)
    with pytest.raises(KeyError, match=r'"Gamma" does not exist in "THING" registry; registered names: .*Alpha'):
        registry.get("Gamma")


def test_check_availability_suggests_the_closest_name():
    check_availability("CoOp", ["CoOp", "CoCoOp"])
    expected = "The requested one is expected to belong to ['CoOp', 'CoCoOp'], but got [CoCop] (do you mean [CoCoOp]?)"
    with pytest.raises(ValueError) as info:
        check_availability("CoCop", ["CoOp", "CoCoOp"])
    assert str(info.value) == expected


def test_file_helpers(tmp_path):
    write_json({"a": [1, 2]}, str(tmp_path / "sub" / "x.json"))
    assert (tmp_path / "sub" / "x.json").read_text() == '{\n    "a": [\n        1,\n        2\n    ]\n}'
    assert read_json(str(tmp_path / "sub" / "x.json")) == {"a": [1, 2]}
    (tmp_path / ".hidden").write_text("")
    (tmp_path / "b").write_text("")
    assert listdir_nohidden(str(tmp_path), sort=True) == ["b", "sub"]
    with pytest.warns(UserWarning, match="No file found at"):
        assert not check_isfile(str(tmp_path / "missing"))
    assert tolist_if_not("a") == ["a"] and tolist_if_not(["a"]) == ["a"]
    from PIL import Image

    Image.new("L", (4, 3), 7).save(tmp_path / "g.png")
    image = read_image(str(tmp_path / "g.png"))
    assert image.mode == "RGB" and image.size == (4, 3)


def _rng_state():
    return random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state().tolist()


def test_set_random_seed_seeds_every_rng_and_env_info_draws_nothing():
    set_random_seed(3)
    draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_random_seed(3)
    before = _rng_state()
    info = collect_env_info()
    assert _rng_state() == before
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == draws
    assert "PyTorch" in info and "Pillow (" in info


# ---------------------------------------------------------------- logger and meters

def test_setup_logger_tees_stdout_and_never_overwrites(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # restored after the test
    out = tmp_path / "run"
    setup_logger(str(out))
    print("first run")
    sys.stdout.flush()
    setup_logger(str(out))
    print("second run")
    sys.stdout.flush()
    assert (out / "log.txt").read_text() == "first run\nsecond run\n"  # the first logger still tees
    suffixed = [name for name in os.listdir(out) if name != "log.txt"]
    assert len(suffixed) == 1 and re.fullmatch(r"log\.txt-\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d", suffixed[0])
    assert (out / suffixed[0]).read_text() == "second run\n"
    setup_logger(str(out))
    setup_logger(str(out))
    assert len(os.listdir(out)) == 4  # runs within one second get "-1", "-2", ...
    setup_logger(str(tmp_path / "named.log"))
    print("named")
    sys.stdout.flush()
    assert (tmp_path / "named.log").read_text() == "named\n"


def test_meters_format():
    meter = AverageMeter()
    meter.update(torch.tensor(2.0))
    meter.update(4.0, n=3)
    assert (meter.val, meter.avg, meter.count) == (4.0, 3.5, 4)
    ema = AverageMeter(ema=True)
    ema.update(1.0)
    assert ema.avg == pytest.approx(0.1)
    losses = MetricMeter()
    losses.update({"loss": torch.tensor(1.5), "acc": 50.0})
    losses.update({"loss": 0.5, "acc": 100.0})
    losses.update(None)
    assert str(losses) == "loss 0.5000 (1.0000) acc 100.0000 (75.0000)"
    with pytest.raises(TypeError):
        losses.update(1.0)


# ---------------------------------------------------------------- evaluator

def eval_cfg(tmp_path, **test_overrides):
    cfg = get_cfg_default()
    cfg.OUTPUT_DIR = str(tmp_path)
    for key, value in test_overrides.items():
        cfg.TEST[key] = value
    return cfg


def run_evaluator(evaluator):
    logits = torch.eye(3)[[0, 0, 1, 2, 2, 1]]  # predictions 0 0 1 2 2 1
    labels = torch.tensor([0, 1, 1, 2, 2, 2])
    evaluator.process(logits[:4], labels[:4])
    evaluator.process(logits[4:], labels[4:])
    return evaluator.evaluate()


def test_classification_block_and_results(tmp_path, capsys):
    cfg = eval_cfg(tmp_path)
    evaluator = build_evaluator(cfg, lab2cname={0: "a", 1: "b", 2: "c"})
    assert capsys.readouterr().out == "Loading evaluator: Classification\n"
    results = run_evaluator(evaluator)
    assert list(results) == ["accuracy", "error_rate", "macro_f1"]
    assert results["accuracy"] == pytest.approx(400 / 6)
    f1 = 100 * np.mean([2 / 3, 0.5, 0.8])
    assert results["macro_f1"] == pytest.approx(f1)
    assert capsys.readouterr().out == (
        "=> result\n* total: 6\n* correct: 4\n* accuracy: 66.7%\n* error: 33.3%\n* macro_f1: 65.6%\n"
    )
    evaluator.reset()
    evaluator.process(torch.eye(2).repeat(600, 1), torch.zeros(1200, dtype=torch.long))
    evaluator.evaluate()
    assert "* total: 1,200\n* correct: 600\n" in capsys.readouterr().out


def test_per_class_block_and_confusion_matrix(tmp_path, capsys):
    cfg = eval_cfg(tmp_path, PER_CLASS_RESULT=True, COMPUTE_CMAT=True)
    evaluator = Classification(cfg, lab2cname={0: "cat", 1: "dog", 2: "cow"})
    results = run_evaluator(evaluator)
    out = capsys.readouterr().out
    assert out.split("=> per-class result\n")[1] == (
        "* class: 0 (cat)\ttotal: 1\tcorrect: 1\tacc: 100.0%\n"
        "* class: 1 (dog)\ttotal: 2\tcorrect: 1\tacc: 50.0%\n"
        "* class: 2 (cow)\ttotal: 3\tcorrect: 2\tacc: 66.7%\n"
        "* average: 72.2%\n"
        f"Confusion matrix is saved to {tmp_path / 'cmat.pt'}\n"
    )
    assert results["perclass_accuracy"] == pytest.approx(100 * (1 + 0.5 + 2 / 3) / 3)
    cmat = torch.load(tmp_path / "cmat.pt", weights_only=True)
    assert torch.allclose(cmat[2], torch.tensor([0.0, 1 / 3, 2 / 3], dtype=torch.float64))
    with pytest.raises(AssertionError, match="lab2cname"):
        Classification(cfg)


def test_unknown_evaluator_is_listed(tmp_path):
    with pytest.raises(ValueError, match=r"belong to \[.*'Classification'.*\], but got \[Clasification\]"):
        build_evaluator(eval_cfg(tmp_path, EVALUATOR="Clasification"))


def test_compute_accuracy_topk():
    output = torch.tensor([[0.1, 0.7, 0.2], [0.8, 0.15, 0.05], [0.35, 0.25, 0.4], [0.5, 0.1, 0.4]])
    target = torch.tensor([1, 2, 0, 2])
    top1, top2 = compute_accuracy((output, None), target, topk=(1, 2))
    assert top1.shape == (1,) and top1.item() == 25.0 and top2.item() == 75.0


# ---------------------------------------------------------------- checkpoints

def make_state(model, epoch, **extra):
    return dict(state_dict=model.state_dict(), epoch=epoch, optimizer=None, scheduler=None, val_result=None, **extra)


def test_save_checkpoint_layout_and_messages(tmp_path, capsys):
    model = torch.nn.Linear(2, 2)
    wrapped = OrderedDict(("module." + k, v) for k, v in model.state_dict().items())
    save_checkpoint(dict(make_state(model, 3), state_dict=wrapped), str(tmp_path), is_best=True)
    out = capsys.readouterr().out
    assert out == (f"Checkpoint saved to {tmp_path / 'model.pth.tar-3'}\n"
                   f'Best checkpoint saved to "{tmp_path / "model-best.pth.tar"}"\n')
    assert (tmp_path / "checkpoint").read_text() == "model.pth.tar-3\n"
    loaded = torch.load(tmp_path / "model-best.pth.tar", weights_only=True)
    assert list(loaded["state_dict"]) == ["weight", "bias"] and loaded["epoch"] == 3
    save_checkpoint(make_state(model, 4), str(tmp_path), model_name="model-best.pth.tar")
    assert (tmp_path / "checkpoint").read_text() == "model-best.pth.tar\n"


def test_model_file_name_is_what_save_writes_and_load_model_reads(tmp_path):
    save_checkpoint(make_state(torch.nn.Linear(1, 1), 7), str(tmp_path))
    assert model_file_name(7) == "model.pth.tar-7" and (tmp_path / model_file_name(7)).is_file()
    assert model_file_name() == "model-best.pth.tar"  # best_val's file, the default of load_model


def test_resume_from_checkpoint_restores_everything(tmp_path, capsys):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    state = dict(make_state(model, 5), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict())
    save_checkpoint(state, str(tmp_path))
    capsys.readouterr()

    fresh = torch.nn.Linear(3, 2)
    fresh_optimizer = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    fresh_scheduler = torch.optim.lr_scheduler.StepLR(fresh_optimizer, step_size=1, gamma=0.5)
    assert resume_from_checkpoint(str(tmp_path), fresh, fresh_optimizer, fresh_scheduler) == 5
    assert capsys.readouterr().out == (
        f'Loading checkpoint from "{tmp_path / "model.pth.tar-5"}"\n'
        "Loaded model weights\nLoaded optimizer\nLoaded scheduler\nPrevious epoch: 5\n"
    )
    assert torch.equal(fresh.weight, model.weight) and fresh_optimizer.param_groups[0]["lr"] == 0.05
    assert fresh_scheduler.last_epoch == 1
    assert "momentum_buffer" in fresh_optimizer.state_dict()["state"][0]


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(ValueError, match="File path is None"):
        load_checkpoint(None)
    with pytest.raises(FileNotFoundError, match="File is not found at"):
        load_checkpoint(str(tmp_path / "nope.pth.tar"))


def test_load_checkpoint_never_runs_pickled_code(tmp_path):
    """weights_only semantics, also on the legacy-format path: a pickled callable is never called."""
    source, copy = tmp_path / "source.txt", tmp_path / "copy.txt"
    source.write_text("x")
    torch.save({"payload": _CopyOnLoad(str(source), str(copy))}, tmp_path / "evil.pth.tar")
    checkpoint = load_checkpoint(str(tmp_path / "evil.pth.tar"))
    assert not copy.exists()
    assert isinstance(checkpoint["payload"], UnloadableObject)
    torch.save({"payload": _MkdirOnLoad(str(tmp_path / "made"))}, tmp_path / "evil2.pth.tar")
    with pytest.raises(Exception, match="blocked"):  # torch refuses os-level modules outright
        load_checkpoint(str(tmp_path / "evil2.pth.tar"))
    assert not (tmp_path / "made").exists()


class _CopyOnLoad:
    def __init__(self, src, dst):
        self.args = (src, dst)

    def __reduce__(self):
        return (shutil.copyfile, self.args)


class _MkdirOnLoad:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_load_checkpoint_reads_legacy_dassl_checkpoints(tmp_path):
    """Real Dassl's warmup scheduler pickles its successor object (and its optimizer) into the file."""
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    successor = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=5.0)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    successor.step()
    legacy_scheduler = {"successor": successor, "warmup_epoch": 1, "cons_lr": 1e-5, "last_epoch": 1}
    torch.save(dict(make_state(model, 7), optimizer=optimizer.state_dict(), scheduler=legacy_scheduler),
               tmp_path / "model.pth.tar-7")
    with pytest.raises(Exception, match="Unsupported global"):
        torch.load(tmp_path / "model.pth.tar-7", weights_only=True)
    checkpoint = load_checkpoint(str(tmp_path / "model.pth.tar-7"))
    assert checkpoint["epoch"] == 7 and torch.equal(checkpoint["state_dict"]["weight"], model.weight)
    assert isinstance(checkpoint["scheduler"]["successor"], UnloadableObject)


def test_load_pretrained_weights_keeps_matching_tensors(tmp_path, capsys):
    source = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 4))
    torch.save({"state_dict": OrderedDict(("module." + k, v) for k, v in source.state_dict().items())},
               tmp_path / "w.pth")
    target = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 5))
    load_pretrained_weights(target, str(tmp_path / "w.pth"))
    out = capsys.readouterr().out
    assert torch.equal(target[0].weight, source[0].weight) and not torch.equal(target[1].bias[:4], source[1].bias)
    assert out == (f"Successfully loaded pretrained weights from {tmp_path / 'w.pth'}\n"
                   "Layers discarded due to unmatched keys or size: ['1.weight', '1.bias']\n")
    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "none.pth")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_pretrained_weights(target, str(tmp_path / "none.pth"))
    assert any("Cannot load" in str(w.message) for w in caught)

