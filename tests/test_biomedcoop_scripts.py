"""The user's commands: few_shot.sh, base2new.sh and the published-checkpoint evaluation, run as a
user runs them (bash, train.py subprocesses) on a tiny local model and synthetic data."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clip_biomed.backbones.testing import tiny_name
from tests.test_biomedcoop_trainer import write_published_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["OPTIM.MAX_EPOCH", "2", "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
        "TRAINER.BIOMEDCOOP.N_PROMPTS", "8"]
RUN_TAIL = "shots_{shots}/BiomedCoOp_{tag}/nctx4_cscFalse_ctpend"


def run(cmd, env, cwd):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture
def env(synthetic_root, tmp_path):
    return {**os.environ, "DATA": str(synthetic_root), "OUTPUT": str(tmp_path / "output"),
            "PYTHON": sys.executable, "SEEDS": "1 2", "OUTPUT_EVAL": str(tmp_path / "output_eval"),
            "CKPT": str(tmp_path / "checkpoints")}


def parse(directory, *flags):
    return run([sys.executable, os.path.join(REPO, "parse_test_res.py"), *flags, str(directory)], os.environ, REPO)


def test_few_shot_script_trains_every_seed_and_skips_finished_runs(env, tiny_biomedclip, tmp_path):
    backbone = tiny_name(tiny_biomedclip)
    cmd = ["bash", os.path.join(REPO, "scripts/biomedcoop/few_shot.sh"), "btmri", "4", backbone, *FAST]
    run(cmd, env, tmp_path)
    runs = tmp_path / "output" / "btmri" / RUN_TAIL.format(shots=4, tag=tiny_biomedclip.name)
    for seed in (1, 2):
        assert (runs / f"seed{seed}" / "prompt_learner" / "model.pth.tar-2").is_file()
    summary = parse(runs)
    assert "Number of seeds (log files): 2" in summary and "* accuracy:" in summary

    again = run(cmd, env, tmp_path)
    assert again.count("Oops! The results exist at") == 2


def test_base2new_script_trains_base_and_tests_new(env, tiny_biomedclip, tmp_path):
    env = {**env, "SEEDS": "1"}
    run(["bash", os.path.join(REPO, "scripts/biomedcoop/base2new.sh"), "btmri", tiny_name(tiny_biomedclip), *FAST],
        env, tmp_path)
    tail = "btmri/" + RUN_TAIL.format(shots=16, tag=tiny_biomedclip.name)
    base = tmp_path / "output/base2new/train_base" / tail
    new = tmp_path / "output/base2new/test_new" / tail
    base_log = (base / "seed1" / "log.txt").read_text()
    new_log = (new / "seed1" / "log.txt").read_text()
    assert "# classes  2" in base_log and "# classes  2" in new_log
    split = json.loads((Path(env["DATA"]) / "BTMRI" / "split_BTMRI.json").read_text())
    n_base_test = sum(1 for _, label, _ in split["test"] if label < 2)
    assert f"* total: {n_base_test}" in base_log
    assert f"* total: {len(split['test']) - n_base_test}" in new_log
    assert 'model.pth.tar-2" (epoch = 2)' in new_log
    assert "* accuracy:" in parse(base)
    assert "* accuracy:" in parse(new, "--test-log")


def test_eval_script_evaluates_published_checkpoints_for_every_seed(env, tiny_biomedclip, tmp_path):
    from clip_biomed.backbones import build_backbone
    from clip_biomed.published_checkpoints import checkpoint_path

    ctx_dim = build_backbone(tiny_name(tiny_biomedclip), device="cpu").ctx_dim
    for seed in (1, 2):
        path = tmp_path / "checkpoints" / checkpoint_path("few_shot", "btmri", 4, seed)
        write_published_checkpoint(str(path), torch.randn(4, ctx_dim))
    env = {**env, "HF_HUB_OFFLINE": "1"}
    run(["bash", os.path.join(REPO, "scripts/biomedcoop/eval_fewshot.sh"), "btmri", "4",
         tiny_name(tiny_biomedclip), *FAST], env, tmp_path)
    results = tmp_path / "output_eval/btmri" / RUN_TAIL.format(shots=4, tag="BiomedCLIP")
    summary = parse(results, "--test-log")
    assert "Number of seeds (log files): 2" in summary


def test_interpret_prompt_lists_nearest_words(env, tiny_biomedclip, tmp_path):
    from tests.test_biomedcoop_trainer import make_trainer

    trainer = make_trainer(env["DATA"], tiny_biomedclip, tmp_path / "run", "OPTIM.MAX_EPOCH", "1")
    trainer.train()
    out = run([sys.executable, "-m", "clip_biomed.interpret_prompt", str(tmp_path / "run/prompt_learner/model.pth.tar-1"),
               "--backbone", tiny_name(tiny_biomedclip), "--topk", "3"], env, REPO)
    lines = [line for line in out.splitlines() if line.startswith("ctx ")]
    assert len(lines) == 4 and all(line.count("(") == 3 for line in lines)
