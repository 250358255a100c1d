"""Resume by default: a BiomedCoOp run killed with SIGKILL in the middle of an epoch, rerun with the same
command, continues from its last completed epoch exactly as the uninterrupted run (same learning
rates, losses and final result: the RNG states travel in the small model-last.pth.tar)."""
import os
import re
import shutil
import signal
import subprocess
import sys
import threading

import pytest

import train
from clip_biomed.backbones.testing import tiny_name
from clip_biomed.engine.checkpoint import LAST_CHECKPOINT, find_model_file

EPOCHS = 4
OPTS = ["DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", str(EPOCHS), "INPUT.SIZE", "(32, 32)",
        "TRAINER.BIOMEDCOOP.N_PROMPTS", "4", "DATALOADER.TEST.BATCH_SIZE", "50"]
TIMINGS = re.compile(r" time \S+ \(\S+\) data \S+ \(\S+\)| eta \S+")


def arguments(root, model, out, workers):
    return ["--root", str(root), "--seed", "1", "--trainer", "BiomedCoOp", "--output-dir", str(out),
            "--dataset-config-file", os.path.join(train.REPO_ROOT, "configs/datasets/btmri.yaml"),
            "--config-file", os.path.join(train.REPO_ROOT, "configs/trainers/BiomedCoOp/few_shot/btmri.yaml"),
            "MODEL.BACKBONE.NAME", tiny_name(model), "DATALOADER.NUM_WORKERS", str(workers), *OPTS]


def training_lines(log):
    """{epoch: its training lines without the timings}: learning rates, losses, accuracies."""
    epochs = {}
    for line in log.splitlines():
        match = re.match(r"epoch \[(\d+)/", line)
        if match:
            epochs.setdefault(int(match.group(1)), []).append(TIMINGS.sub("", line))
    return epochs


def final_result(log):
    """The final test's metric lines ("* accuracy: X%", ...)."""
    return [line for line in log.split("Finish training")[1].splitlines() if line.startswith("* ")]


def in_process_run(argv, capsys):
    """train.py's main() in this process (the uninterrupted reference); its log."""
    train.main(train.build_parser().parse_args(argv))
    return capsys.readouterr().out


def kill_during_epoch(cmd, env, epoch):
    """Start ``cmd`` and SIGKILL it (and its data-loader workers) once epoch ``epoch`` has begun."""
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    watchdog = threading.Timer(300, os.killpg, (process.pid, signal.SIGKILL))
    watchdog.start()
    seen = []
    try:
        for line in process.stdout:
            seen.append(line)
            if line.startswith(f"epoch [{epoch}/{EPOCHS}] batch [1/"):
                os.killpg(process.pid, signal.SIGKILL)
                break
    finally:
        watchdog.cancel()
        process.stdout.close()
        process.wait()
    assert process.returncode == -signal.SIGKILL, "".join(seen[-30:])
    return "".join(seen)


def test_sigkilled_run_resumes_as_if_uninterrupted(synthetic_root, tiny_biomedclip, tmp_path, train_main_in_process):
    capsys = train_main_in_process
    workers = 1  # worker seeds are drawn from the torch RNG at every epoch's iter(): restored too
    reference = in_process_run(arguments(synthetic_root, tiny_biomedclip, tmp_path / "reference", workers), capsys)
    out = tmp_path / "killed"
    cmd = [sys.executable, os.path.join(train.REPO_ROOT, "train.py"),
           *arguments(synthetic_root, tiny_biomedclip, out, workers)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    killed_log = kill_during_epoch(cmd, env, epoch=3)
    assert "epoch [3/4] batch [1/2]" in killed_log and "Finish training" not in killed_log

    folder = out / "prompt_learner"
    assert sorted(os.listdir(folder)) == ["checkpoint", LAST_CHECKPOINT]  # no published file name is used
    assert (folder / "checkpoint").read_text().strip() == LAST_CHECKPOINT
    assert os.path.getsize(folder / LAST_CHECKPOINT) < 60_000  # the context, its optimizer state and the RNGs
    with pytest.raises(FileNotFoundError, match="has not finished \\(its last completed epoch is 2\\): rerun"):
        find_model_file(str(out), "prompt_learner")

    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    log = resumed.stdout
    assert "Previous epoch: 2" in log and "Restored the random number generators of epoch 2" in log
    expected = training_lines(reference)
    assert sorted(training_lines(log)) == [3, 4]
    assert {e: lines for e, lines in training_lines(log).items()} == {3: expected[3], 4: expected[4]}
    assert len({re.search(r"lr (\S+)", lines[0]).group(1) for lines in expected.values()}) == EPOCHS  # LR moves
    assert final_result(log) == final_result(reference) and any("* accuracy:" in m for m in final_result(log))

    assert sorted(os.listdir(folder)) == ["checkpoint", f"model.pth.tar-{EPOCHS}"]  # the published layout
    assert find_model_file(str(out), "prompt_learner") == str(folder / f"model.pth.tar-{EPOCHS}")


def test_run_interrupted_in_process_without_workers_resumes_identically(
        synthetic_root, tiny_biomedclip, tmp_path, train_main_in_process, monkeypatch):
    """DATALOADER.NUM_WORKERS 0: the random crops are drawn in this process, from the restored RNGs.
    The interrupted run is the reference's folder as it stood after epoch 2 (what a run killed during
    epoch 3 leaves), resumed by a new main() that re-seeds and rebuilds everything first."""
    from trainers.biomedcoop import BiomedCoOp

    capsys = train_main_in_process
    original = BiomedCoOp.after_epoch
    interrupted = tmp_path / "interrupted"

    def after_epoch_and_snapshot(self):
        original(self)
        if self.epoch + 1 == 2:
            shutil.copytree(tmp_path / "reference" / "prompt_learner", interrupted / "prompt_learner")

    monkeypatch.setattr(BiomedCoOp, "after_epoch", after_epoch_and_snapshot)
    reference = in_process_run(arguments(synthetic_root, tiny_biomedclip, tmp_path / "reference", 0), capsys)
    monkeypatch.setattr(BiomedCoOp, "after_epoch", original)
    log = in_process_run(arguments(synthetic_root, tiny_biomedclip, interrupted, 0), capsys)
    assert "Restored the random number generators of epoch 2" in log
    expected = training_lines(reference)
    assert training_lines(log) == {3: expected[3], 4: expected[4]}
    assert final_result(log) == final_result(reference)
