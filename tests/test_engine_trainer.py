"""Trainer behaviour (dassl.md §3) with a toy plugin: in-process (hooks, log lines) and end to end
through ``python train.py`` in subprocesses (train, checkpoint, resume, eval-only, parse_test_res).

This module doubles as the plugin: ``train.py --plugin <this module>`` imports it to register
ToyShapes (3 classes of 16x16 coloured PNGs) and ToyTrainer (a linear classifier). It uses only
``clip_biomed.dassl`` so the same plugin runs on the real Dassl (see test_engine_dassl.py).
"""
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from clip_biomed.dassl import (
    DATASET_REGISTRY, ENGINE, TRAINER_REGISTRY, DatasetBase, Datum, TrainerX, TrainerXU, build_lr_scheduler,
    build_optimizer, compute_accuracy, get_cfg_default, load_checkpoint,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASSNAMES = ["red blob", "green blob", "blue blob"]
SPLIT_SIZES = {"train": 8, "val": 4, "test": 6}  # images per class
STOP_ENV = "TOY_STOP_AFTER_EPOCH"  # simulates a crash after that many epochs (for resume tests)
PLUGIN_MODULE = __name__  # "tests.test_engine_trainer" or "test_engine_trainer", per pytest's import mode


def write_toy_images(root):
    """root/toy_shapes/<split>/<class index>_<i>.png: noisy images where one colour channel is stronger."""
    rng = np.random.default_rng(0)
    for split, per_class in SPLIT_SIZES.items():
        folder = Path(root) / "toy_shapes" / split
        folder.mkdir(parents=True, exist_ok=True)
        for label in range(len(CLASSNAMES)):
            for i in range(per_class):
                # a per-image colour cast makes the classes overlap, so accuracies differ between seeds
                pixels = rng.integers(0, 150, size=(16, 16, 3)) + rng.integers(0, 80, size=3)
                pixels[..., label] += 60
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{label}_{i}.png")


@DATASET_REGISTRY.register(force=True)
class ToyShapes(DatasetBase):
    dataset_dir = "toy_shapes"

    def __init__(self, cfg):
        root = osp.join(cfg.DATASET.ROOT, self.dataset_dir)
        train, val, test = (self.read_split(osp.join(root, split)) for split in ("train", "val", "test"))
        num_shots = cfg.DATASET.NUM_SHOTS
        if num_shots >= 1:
            train = self.generate_fewshot_dataset(train, num_shots=num_shots)
            val = self.generate_fewshot_dataset(val, num_shots=min(num_shots, 4))
        super().__init__(train_x=train, val=val, test=test)

    @staticmethod
    def read_split(folder):
        items = []
        for name in sorted(os.listdir(folder)):
            label = int(name.split("_")[0])
            items.append(Datum(impath=osp.join(folder, name), label=label, classname=CLASSNAMES[label]))
        return items


@TRAINER_REGISTRY.register(force=True)
class ToyTrainer(TrainerX):
    """CoOp-shaped: one registered module, update_lr at the last batch, CoOp-style load_model."""

    def build_model(self):
        height, width = self.cfg.INPUT.SIZE
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(3 * height * width, self.num_classes)).to(self.device)
        self.optim = build_optimizer(self.model, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("toy_head", self.model, self.optim, self.sched)

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        output = self.model(image)
        loss = F.cross_entropy(output, label)
        self.model_backward_and_update(loss)
        summary = {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return summary

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def after_epoch(self):
        super().after_epoch()
        if os.environ.get(STOP_ENV) == str(self.epoch + 1):
            raise SystemExit(f"simulated crash after epoch {self.epoch + 1}")

    def load_model(self, directory, epoch=None):
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return
        model_file = "model-best.pth.tar" if epoch is None else f"model.pth.tar-{epoch}"
        for name in self.get_model_names():
            model_path = osp.join(directory, name, model_file)
            checkpoint = load_checkpoint(model_path)
            print(f'Loading weights to {name} from "{model_path}" (epoch = {checkpoint["epoch"]})')
            self._models[name].load_state_dict(checkpoint["state_dict"])


METHOD_YAML = """\
INPUT:
  SIZE: (16, 16)
  INTERPOLATION: bicubic
  TRANSFORMS: ["random_flip", "normalize"]
DATALOADER:
  NUM_WORKERS: 0
  TRAIN_X:
    BATCH_SIZE: 4
  TEST:
    BATCH_SIZE: 8
OPTIM:
  NAME: sgd
  LR: 0.05
  MAX_EPOCH: 4
  LR_SCHEDULER: cosine
  WARMUP_EPOCH: 1
  WARMUP_TYPE: constant
  WARMUP_CONS_LR: 1e-5
TRAIN:
  PRINT_FREQ: 2
"""
TRAIN_LINE = re.compile(
    r"epoch \[(\d+)/(\d+)\] batch \[(\d+)/(\d+)\] time \d+\.\d{3} \(\d+\.\d{3}\) data \d+\.\d{3} \(\d+\.\d{3}\) "
    r"loss \d+\.\d{4} \(\d+\.\d{4}\) acc \d+\.\d{4} \(\d+\.\d{4}\) lr (\d\.\d{4}e[-+]\d\d) eta \d+:\d\d:\d\d"
)
RESULT_BLOCK = re.compile(
    r"=> result\n\* total: (\d+)\n\* correct: (\d+)\n\* accuracy: (\d+\.\d)%\n"
    r"\* error: \d+\.\d%\n\* macro_f1: \d+\.\d%\n"
)


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_data")
    write_toy_images(root)
    config_dir = root / "configs"
    config_dir.mkdir()
    (config_dir / "toy_dataset.yaml").write_text("DATASET:\n  NAME: ToyShapes\n  NUM_SHOTS: 4\n")
    (config_dir / "toy_method.yaml").write_text(METHOD_YAML)
    return root


def toy_cfg(root, output_dir, *opts):
    cfg = get_cfg_default()
    cfg.merge_from_file(str(root / "configs" / "toy_dataset.yaml"))
    cfg.merge_from_file(str(root / "configs" / "toy_method.yaml"))
    cfg.merge_from_list(["DATASET.ROOT", str(root), "OUTPUT_DIR", str(output_dir), "TRAINER.NAME", "ToyTrainer",
                         *opts])
    cfg.freeze()
    return cfg


# ---------------------------------------------------------------- in-process

class RecordingToyTrainer(ToyTrainer):
    """Records the order of the hooks that TrainerBase.train calls."""

    def __init__(self, cfg):
        self.calls = []
        super().__init__(cfg)

    def before_train(self):
        self.calls.append("before_train")
        super().before_train()

    def before_epoch(self):
        self.calls.append(f"before_epoch {self.epoch}")

    def run_epoch(self):
        self.calls.append(f"run_epoch {self.epoch}")
        super().run_epoch()

    def after_epoch(self):
        self.calls.append(f"after_epoch {self.epoch}")
        super().after_epoch()

    def after_train(self):
        self.calls.append("after_train")
        super().after_train()


def test_training_log_lines_and_hook_order(toy_root, tmp_path, capsys):
    cfg = toy_cfg(toy_root, tmp_path, "OPTIM.MAX_EPOCH", 2, "TEST.FINAL_MODEL", "best_val", "TRAIN.CHECKPOINT_FREQ", 1)
    torch.manual_seed(0)
    trainer = RecordingToyTrainer(cfg)
    assert trainer.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    trainer.train()
    out = capsys.readouterr().out
    assert trainer.calls == [
        "before_train", "before_epoch 0", "run_epoch 0", "after_epoch 0", "before_epoch 1", "run_epoch 1",
        "after_epoch 1", "after_train",
    ]
    lines = out.splitlines()
    # 4 shots x 3 classes / batch 4 = 3 batches; PRINT_FREQ 2 prints batch 2 only
    train_lines = [TRAIN_LINE.fullmatch(line) for line in lines if line.startswith("epoch [")]
    assert all(train_lines) and [m.group(1, 3, 4) for m in train_lines] == [("1", "2", "3"), ("2", "2", "3")]
    assert [m.group(5) for m in train_lines] == ["1.0000e-05", "5.0000e-02"]  # the LR of the epoch (not yet stepped)
    head = lines[:lines.index("Loading evaluator: Classification") + 1]
    assert head[:3] == ["Loading dataset: ToyShapes", "Creating a 4-shot dataset", "Creating a 4-shot dataset"]
    assert lines[lines.index("Loading evaluator: Classification") + 1:][:2] == [
        "No checkpoint found, train from scratch", f"Initialize tensorboard (log_dir={tmp_path / 'tensorboard'})"]
    assert out.count("Evaluate on the *val* set") == 2 and len(RESULT_BLOCK.findall(out)) == 3
    best = tmp_path / "toy_head" / "model-best.pth.tar"
    tail = lines[lines.index("Finish training"):]
    assert tail[:2] == ["Finish training", "Deploy the model with the best val performance"]
    assert tail[2].startswith(f'Loading weights to toy_head from "{best}"')
    assert tail[3] == "Evaluate on the *test* set" and re.fullmatch(r"Elapsed: \d+:\d\d:\d\d", tail[-1])
    assert RESULT_BLOCK.search(out.split("Evaluate on the *test* set")[1]).group(1) == "18"
    assert sorted(os.listdir(tmp_path / "toy_head")) == ["checkpoint", "model-best.pth.tar", "model.pth.tar-1",
                                                         "model.pth.tar-2"]
    assert (tmp_path / "toy_head" / "checkpoint").read_text() == "model.pth.tar-2\n"
    saved = torch.load(tmp_path / "toy_head" / "model.pth.tar-2", weights_only=True)
    assert set(saved) == {"state_dict", "epoch", "optimizer", "scheduler", "val_result"}
    assert saved["epoch"] == 2 and saved["val_result"] is None
    assert torch.load(best, weights_only=True)["val_result"] >= 0

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "train/lr", "val/accuracy", "val/error_rate", "val/macro_f1",
            "test/accuracy"} <= tags
    assert [e.step for e in events.Scalars("train/lr")] == list(range(6))
    assert [e.step for e in events.Scalars("val/accuracy")] == [0, 1]


@pytest.mark.skipif(ENGINE != "builtin", reason="tests the built-in engine's classes")
def test_base_trainer_contract(toy_root, tmp_path, capsys):
    """register_model guards, set_model_mode on registered models only, anomaly check, base load_model."""
    from clip_biomed.engine.trainer import TrainerBase, TrainerX as BuiltinTrainerX

    class Early(TrainerBase):
        def __init__(self):
            self.register_model("m", nn.Linear(1, 1))

    with pytest.raises(AttributeError, match="before super"):
        Early()
    base = TrainerBase()
    base.register_model("m", nn.Linear(1, 1))
    with pytest.raises(AssertionError, match="duplicate"):
        base.register_model("m", nn.Linear(1, 1))
    with pytest.raises(FloatingPointError, match="Loss is infinite or NaN!"):
        base.detect_anomaly(torch.tensor([1.0, float("nan")]))

    class PlainToy(BuiltinTrainerX):  # the engine's own load_model (not the CoOp-style override)
        build_model = ToyTrainer.build_model

    trainer = PlainToy(toy_cfg(toy_root, tmp_path))
    trainer.frozen = nn.Dropout()  # not registered: its mode must not change
    trainer.set_model_mode("train")
    assert trainer.model.training and trainer.frozen.training
    trainer.frozen.eval()
    trainer.set_model_mode("eval")
    assert not trainer.model.training and not trainer.frozen.training
    trainer.frozen.train()
    trainer.set_model_mode("test")
    assert trainer.frozen.training
    with pytest.raises(KeyError):
        trainer.set_model_mode("predict")
    trainer.save_model(2, str(tmp_path))  # a periodic checkpoint: val_result None
    capsys.readouterr()
    with pytest.raises(FileNotFoundError, match="No model at"):
        trainer.load_model(str(tmp_path), epoch=9)
    trainer.load_model(str(tmp_path), epoch=3)  # Dassl crashes here formatting None with .1f
    assert capsys.readouterr().out == (
        f"Load {tmp_path / 'toy_head' / 'model.pth.tar-3'} to toy_head (epoch=3, val_result=None)\n")
    trainer.load_model("")
    assert "load_model() is skipped" in capsys.readouterr().out
    with pytest.raises(NotImplementedError, match="must override build_model"):
        BuiltinTrainerX(toy_cfg(toy_root, tmp_path))


@DATASET_REGISTRY.register(force=True)
class ToyShapesU(ToyShapes):
    """ToyShapes with the test images as an unlabelled set (18 items), for TrainerXU."""

    def __init__(self, cfg):
        labelled = ToyShapes(cfg)
        DatasetBase.__init__(self, train_x=labelled.train_x, train_u=labelled.test, val=labelled.val,
                             test=labelled.test)


class ToyXU(TrainerXU):
    build_model = ToyTrainer.build_model

    def forward_backward(self, batch_x, batch_u):
        image_x, label_x, image_u = self.parse_batch_train(batch_x, batch_u)
        self.seen.append((len(label_x), len(image_u)))
        loss = F.cross_entropy(self.model(image_x), label_x) + self.model(image_u).logsumexp(1).mean()
        self.model_backward_and_update(loss)
        return {"loss": loss.item()}


@pytest.mark.parametrize("count_iter,num_batches", [("train_x", 3), ("train_u", 4), ("smaller_one", 3)])
def test_trainer_xu_epoch_length_and_loader_restart(toy_root, tmp_path, capsys, count_iter, num_batches):
    """train_x: 12 items / batch 4 = 3 batches; train_u: 18 / 4 = 4 (drop_last); the shorter one restarts."""
    cfg = toy_cfg(toy_root, tmp_path, "DATASET.NAME", "ToyShapesU", "TRAIN.COUNT_ITER", count_iter,
                  "OPTIM.MAX_EPOCH", 1, "TEST.NO_TEST", True)
    trainer = ToyXU(cfg)
    trainer.seen = []
    trainer.train()
    assert trainer.num_batches == num_batches and trainer.seen == [(4, 4)] * num_batches
    assert f"epoch [1/1] batch [2/{num_batches}]" in capsys.readouterr().out  # PRINT_FREQ 2
    # Both engines refuse an unknown COUNT_ITER; only the built-in one says which values are valid.
    with pytest.raises(ValueError, match="COUNT_ITER must be one of" if ENGINE == "builtin" else None):
        ToyXU(toy_cfg(toy_root, tmp_path / "x", "DATASET.NAME", "ToyShapesU", "TRAIN.COUNT_ITER", "all")).run_epoch()


def test_unknown_trainer_and_dataset_list_valid_names(toy_root, tmp_path):
    from clip_biomed.dassl import build_trainer

    with pytest.raises(ValueError, match=r"belong to \[.*'ToyTrainer'.*\], but got \[ToyTrainr\] "
                                         r"\(do you mean \[ToyTrainer\]\?\)"):
        build_trainer(toy_cfg(toy_root, tmp_path, "TRAINER.NAME", "ToyTrainr"))
    with pytest.raises(ValueError, match=r"belong to \[.*'ToyShapes'.*\], but got \[ToyShape\]"):
        ToyTrainer(toy_cfg(toy_root, tmp_path, "DATASET.NAME", "ToyShape"))


# ---------------------------------------------------------------- end to end through train.py

@pytest.fixture(scope="module")
def scripts_dir(tmp_path_factory):
    """train.py and parse_test_res.py copied beside no trainers/ or datasets/ package, so these runs
    test the engine alone (train.py imports those repo-root packages when they sit beside it)."""
    folder = tmp_path_factory.mktemp("scripts")
    for script in ("train.py", "parse_test_res.py"):
        shutil.copy(REPO_ROOT / script, folder / script)
    return folder


def run_script(folder, script, *args, env=None, check=True):
    python_path = [str(REPO_ROOT), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, python_path)), **(env or {}))
    result = subprocess.run([sys.executable, str(folder / script), *map(str, args)], cwd=folder,
                            env=full_env, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} {args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def train_toy(folder, root, output_dir, *extra, env=None, check=True):
    return run_script(
        folder, "train.py", "--root", root, "--output-dir", output_dir, "--trainer", "ToyTrainer", "--plugin",
        PLUGIN_MODULE, "--dataset-config-file", root / "configs" / "toy_dataset.yaml",
        "--config-file", root / "configs" / "toy_method.yaml", *extra, env=env, check=check,
    )


def lrs_by_epoch(text):
    return {int(m.group(1)): m.group(5) for m in TRAIN_LINE.finditer(text)}


def final_accuracy(text):
    return float(RESULT_BLOCK.findall(text.split("Finish training")[1])[-1][2])


@pytest.fixture(scope="module")
def e2e_runs(scripts_dir, toy_root, tmp_path_factory):
    """seed1: crashes after epoch 2, then a rerun resumes it; seed2: uninterrupted; seed3: best_val."""
    out = tmp_path_factory.mktemp("e2e") / "ToyShapes" / "ToyTrainer"
    runs = {}
    crashed = train_toy(scripts_dir, toy_root, out / "seed1", "--seed", 1, "TRAIN.CHECKPOINT_FREQ", 2,
                        env={STOP_ENV: "2"}, check=False)
    assert crashed.returncode != 0 and "simulated crash after epoch 2" in crashed.stderr
    runs["resumed"] = train_toy(scripts_dir, toy_root, out / "seed1", "--seed", 1)
    runs["seed2"] = train_toy(scripts_dir, toy_root, out / "seed2", "--seed", 2)
    runs["seed3"] = train_toy(scripts_dir, toy_root, out / "seed3", "--seed", 3, "TEST.FINAL_MODEL", "best_val")
    return out, runs


def test_train_writes_logs_and_checkpoints(e2e_runs):
    out, runs = e2e_runs
    log = (out / "seed2" / "log.txt").read_text()
    assert log == runs["seed2"].stdout  # the log is the tee of stdout
    # the arguments and config are printed once the trainer is built (an error comes before them)
    assert log.startswith("Setting fixed seed: 2\nLoading trainer: ToyTrainer\n")
    assert log.index("Loading evaluator") < log.index("***************\n** Arguments **\n") < log.index("epoch [1/")
    assert f"Dassl engine: {ENGINE}\nCollecting env info ...\n** System info **\n" in log
    assert "  SUBSAMPLE_CLASSES: all\n" in log and "Loading trainer: ToyTrainer\n" in log
    assert "Deploy the last-epoch model\n" in log and log.rstrip().splitlines()[-1].startswith("Elapsed: ")
    assert sorted(lrs_by_epoch(log)) == [1, 2, 3, 4]
    assert sorted(os.listdir(out / "seed2" / "toy_head")) == ["checkpoint", "model.pth.tar-4"]
    assert final_accuracy(log) > 40  # above chance (33.3%): the toy problem is learnable
    assert "Deploy the model with the best val performance" in runs["seed3"].stdout
    assert (out / "seed3" / "toy_head" / "model-best.pth.tar").exists()
    # train.py's default evaluator writes a metrics file per split (Dassl's own test() does not name the split)
    expected = ["metrics_test.json", "metrics_val.json"] if ENGINE == "builtin" else ["metrics.json"]
    assert sorted(p.name for p in (out / "seed3").glob("metrics*.json")) == expected


def test_same_seed_reproduces_the_run(e2e_runs, scripts_dir, toy_root, tmp_path):
    out, runs = e2e_runs
    again = train_toy(scripts_dir, toy_root, tmp_path / "again", "--seed", 2)
    timings = re.compile(r"time \S+ \(\S+\) data \S+ \(\S+\)|eta \S+|Elapsed: \S+")
    first = timings.sub("", runs["seed2"].stdout.replace(str(out / "seed2"), "<OUT>"))
    assert timings.sub("", again.stdout.replace(str(tmp_path / "again"), "<OUT>")) == first
    assert "loss" in first and "* accuracy:" in first


def test_rerun_into_the_same_dir_resumes_on_the_same_lr_curve(e2e_runs):
    out, runs = e2e_runs
    resumed = runs["resumed"].stdout
    ckpt = out / "seed1" / "toy_head" / "model.pth.tar-2"
    assert (f"Found checkpoint at {out / 'seed1'} (will resume training)\n"
            f'Loading checkpoint from "{ckpt}"\nLoaded model weights\nLoaded optimizer\nLoaded scheduler\n'
            "Previous epoch: 2\n") in resumed
    assert sorted(lrs_by_epoch(resumed)) == [3, 4]
    uninterrupted = lrs_by_epoch(runs["seed2"].stdout)
    assert lrs_by_epoch(resumed) == {3: uninterrupted[3], 4: uninterrupted[4]}
    assert uninterrupted[3] != uninterrupted[4]  # the LR keeps moving (real Dassl freezes it here)
    logs = sorted(os.listdir(out / "seed1"))
    assert logs[0] == "log.txt" and re.fullmatch(r"log\.txt-\d{4}(-\d\d){5}", logs[1])
    assert "Finish training" not in (out / "seed1" / "log.txt").read_text()


def test_eval_only_and_parse_test_res(e2e_runs, scripts_dir, toy_root):
    out, runs = e2e_runs
    eval_root = out.parent / "eval"
    accuracies = {}
    for seed in (1, 2):
        result = train_toy(scripts_dir, toy_root, eval_root / f"seed{seed}", "--seed", seed, "--eval-only",
                           "--model-dir", out / f"seed{seed}", "--load-epoch", 4)
        model_path = out / f"seed{seed}" / "toy_head" / "model.pth.tar-4"
        loaded = f'Loading weights to toy_head from "{model_path}" (epoch = 4)\nEvaluate on the *test* set\n'
        assert loaded in result.stdout
        assert "Finish training" not in result.stdout and not (eval_root / f"seed{seed}" / "tensorboard").exists()
        accuracies[seed] = float(RESULT_BLOCK.findall(result.stdout)[-1][2])
    # the deployed last-epoch model of the training run gives the same test accuracy
    assert accuracies[2] == final_accuracy(runs["seed2"].stdout)

    parsed = run_script(scripts_dir, "parse_test_res.py", eval_root, "--test-log").stdout
    mean = np.mean(list(accuracies.values()))
    assert f"* accuracy: {mean:.2f}% +- {np.std(list(accuracies.values())):.2f}%" in parsed
    assert "Number of seeds (log files): 2" in parsed

    train_values = [final_accuracy(runs[k].stdout) for k in ("resumed", "seed2", "seed3")]
    parsed = run_script(scripts_dir, "parse_test_res.py", "--directory", out, "--ci95").stdout
    assert parsed.startswith(f"Parsing files in {out}\nfile: {out / 'seed1'}/log.txt-")  # the resumed run's log
    ci = 1.96 * np.std(train_values) / np.sqrt(3)
    assert f"* accuracy: {np.mean(train_values):.2f}% +- {ci:.2f}%" in parsed
    parsed = run_script(scripts_dir, "parse_test_res.py", out, "--keyword", "balanced_accuracy").stdout
    assert "Number of seeds (log files): 3" in parsed and "* balanced_accuracy: " in parsed


def test_eval_only_without_weights_fails_loudly(scripts_dir, toy_root, tmp_path):
    missing = tmp_path / "no_such_run"
    result = train_toy(scripts_dir, toy_root, tmp_path / "out", "--eval-only", "--model-dir", missing, check=False)
    assert result.returncode != 0
    assert "FileNotFoundError" in result.stderr and str(missing) in result.stderr and "--model-dir" in result.stderr
    result = train_toy(scripts_dir, toy_root, tmp_path / "out2", "--eval-only", check=False)
    assert result.returncode != 0 and "no --model-dir was given" in result.stderr
