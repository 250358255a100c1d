"""The baselines' launch scripts (scripts/{coop,cocoop,kgcoop,prograd}/*.sh, scripts/zeroshot/*.sh) on
a tiny local model and synthetic data, and parse_test_res on every result.

Each script runs in bash with DRY_RUN=1, which prints every train.py command it would run (the way
the sweep reads them); the test then runs each printed command through train.py's ``main`` in this
process, in order, instead of one ~6 s Python start per run.  (The non-dry path of run_train is
the one scripts/biomedcoop runs for real in test_biomedcoop_scripts.py.)  A second dry run must
then skip every finished run.
"""
import os
import shlex
import subprocess
import sys

import pytest

import parse_test_res
import train
from clip_biomed.backbones.testing import tiny_name

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["OPTIM.MAX_EPOCH", "1", "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
        "DATALOADER.TEST.BATCH_SIZE", "50"]
FEW_SHOT = {"coop": "CoOp", "cocoop": "CoCoOp", "kgcoop": "KgCoOp", "prograd": "ProGrad"}


def dry_run(script, args, env):
    result = subprocess.run(["bash", os.path.join(REPO, "scripts", script), *args], cwd=REPO,
                            env={**env, "DRY_RUN": "1"}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{script}: {result.stdout}\n{result.stderr}"
    return [line.split("\t") for line in result.stdout.splitlines()]


def run_in_process(command):
    """Run one printed `python train.py ...` command through train.main."""
    argv = shlex.split(command)
    assert argv[:2] == [sys.executable, os.path.join(REPO, "train.py")], argv[:2]
    console = sys.stdout
    try:
        train.main(train.build_parser().parse_args(argv[2:]))
    finally:
        if sys.stdout is not console:  # train.main tees stdout into the run's log.txt
            sys.stdout.close()
            sys.stdout = console


def test_every_baseline_script_runs_and_parse_test_res_reads_each_result(synthetic_root, tiny_biomedclip, tmp_path,
                                                                      train_main_in_process):
    output = tmp_path / "output"
    env = {**os.environ, "DATA": str(synthetic_root), "OUTPUT": str(output), "PYTHON": sys.executable,
           "SEEDS": "1", "SHOTS": "2"}
    backbone, tag = tiny_name(tiny_biomedclip), tiny_biomedclip.name
    ensemble = ["TRAINER.ZEROSHOT_ENSEMBLE.N_PROMPTS", "4"]
    invocations = [(f"{name}/few_shot.sh", ["btmri", "2", backbone, *FAST]) for name in FEW_SHOT]
    invocations += [
        ("kgcoop/base2new.sh", ["btmri", backbone, *FAST]),
        ("zeroshot/zeroshot.sh", ["btmri", backbone, *FAST]),
        ("zeroshot/zeroshot_ensemble.sh", ["btmri", backbone, *FAST, *ensemble]),
        ("zeroshot/zeroshot_base2new.sh", ["btmri", backbone, *FAST]),
        ("zeroshot/zeroshot_ensemble_base2new.sh", ["btmri", backbone, *FAST, *ensemble]),
    ]
    runs = []
    for script, args in invocations:
        lines = dry_run(script, args, env)
        assert lines and all(kind == "run" for kind, *_ in lines), lines
        runs += [directory for _, directory, *_ in lines]
        for _, _, command, *_ in lines:
            run_in_process(command)
    assert len(runs) == 4 + 2 + 1 + 1 + 2 + 2

    few_shot = {name: output / f"btmri/shots_2/{method}_{tag}/nctx4_cscFalse_ctpend"
                for name, method in FEW_SHOT.items()}
    assert sorted(runs[:4]) == sorted(str(path / "seed1") for path in few_shot.values())
    results = {name: parse_test_res.parse_directory(str(path), verbose=False) for name, path in few_shot.items()}
    b2n = f"btmri/shots_2/KgCoOp_{tag}/nctx4_cscFalse_ctpend"
    results["kgcoop base"] = parse_test_res.parse_directory(str(output / "base2new/train_base" / b2n), verbose=False)
    results["kgcoop new"] = parse_test_res.parse_directory(str(output / "base2new/test_new" / b2n), test_log=True,
                                                           verbose=False)
    for folder in (f"Zeroshot{tag}", f"Zeroshot{tag}2"):  # the published ZeroshotBiomedCLIP / ZeroshotBiomedCLIP2
        for experiment in (f"btmri/{folder}", f"base2new/train_base/btmri/{folder}",
                           f"base2new/test_new/btmri/{folder}"):
            assert (output / experiment / "vit_b16" / "log.txt").is_file()
            results[experiment] = parse_test_res.parse_directory(str(output / experiment), test_log=True, verbose=False)
    for name, result in results.items():
        assert len(result["values"]) == 1 and 0.0 <= result["mean"] <= 100.0, name
    new_log = (output / "base2new/test_new" / b2n / "seed1/log.txt").read_text()
    assert "# classes  2" in new_log and "model.pth.tar-1" in new_log

    for script, args in invocations:  # relaunching skips every finished run
        lines = dry_run(script, args, env)
        assert all(kind == "skip" for kind, *_ in lines) and len(lines) >= 1, (script, lines)


@pytest.mark.parametrize("script", ["coop/base2new.sh", "zeroshot/zeroshot_base2new.sh"])
def test_base2new_scripts_leave_busi_out_unless_asked(script, tmp_path):
    result = subprocess.run(["bash", os.path.join(REPO, "scripts", script), "busi"], cwd=REPO,
                            env={**os.environ, "DRY_RUN": "1", "OUTPUT": str(tmp_path)}, capture_output=True, text=True)
    assert result.returncode == 2 and "B2N_ALLOW_BUSI=1" in result.stderr


@pytest.mark.parametrize("script, args, config, note", [
    ("coop/few_shot.sh", ["folder", "4"], "CoOp/few_shot.yaml", False),     # dataset-independent configs
    ("kgcoop/few_shot.sh", ["folder", "4"], "KgCoOp/few_shot.yaml", True),  # per-dataset W; generic for others
    ("prograd/base2new.sh", ["folder"], "ProGrad/base_to_novel.yaml", False),
    ("zeroshot/zeroshot_ensemble.sh", ["folder"], "Zeroshot/few_shot.yaml", False),
])
def test_own_datasets_get_the_generic_config(script, args, config, note, tmp_path):
    result = subprocess.run(["bash", os.path.join(REPO, "scripts", script), *args], cwd=REPO,
                            env={**os.environ, "DRY_RUN": "1", "OUTPUT": str(tmp_path), "SEEDS": "1"},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"--config-file {REPO}/configs/trainers/{config} " in result.stdout
    assert ("using the generic" in result.stderr) == note
