"""python -m clip_biomed.sweep: the grid comes from the launch scripts (BiomedCoOp's and fake methods'
written here), finished runs are skipped, failures are reported without stopping the others, jobs
run one per GPU or as a submitit job array.  The runs are a stand-in for `python train.py` that
writes the log such a run writes, so that these tests take seconds; the demo runs the real thing."""
import os
import subprocess
import sys

import pytest

from clip_biomed import run_logs, sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COOP_TAIL = "BiomedCoOp_BiomedCLIP/nctx4_cscFalse_ctpend"

FAKE_TRAIN = '''#!{python}
"""Stands in for `python train.py ARGS`: writes the log that run would, with accuracy 50 + K + seed."""
import os, sys, time
args = sys.argv[2:]
def value(flag, default=0):
    return args[args.index(flag) + 1] if flag in args else default
out = value("--output-dir")
matches = lambda var: any(part and part in out for part in os.environ.get(var, "").split(","))
if matches("FAKE_FAIL"):
    sys.exit("boom: " + out)
eval_only = "--eval-only" in args
if eval_only and value("--model-dir", "") and not os.path.isfile(os.path.join(value("--model-dir"), "log.txt")):
    sys.exit("the training run has not run yet")
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
os.makedirs(out, exist_ok=True)
accuracy = 50 + int(value("DATASET.NUM_SHOTS")) + int(value("--seed"))
lines = ["** Arguments **", "eval_only: %s" % eval_only, "** Config **", "opts: %s" % args,
         "cuda: %s" % os.environ.get("CUDA_VISIBLE_DEVICES", "")]
if not matches("FAKE_UNFINISHED"):
    lines += ([] if eval_only else ["Finish training"]) + ["=> result", "* accuracy: %.1f%%" % accuracy]
open(os.path.join(out, "log.txt"), "w").write("\\n".join(lines) + "\\n")
print("\\n".join(lines))
'''

FAKE_FEW_SHOT = """\
#!/usr/bin/env bash
# A method without a prompt context (its runs have no nctx level), configs borrowed from BiomedCoOp.
TRAINER=FakeMethod CONFIGS=BiomedCoOp
source "{repo}/scripts/common.sh"
few_shot_main "$@"
"""

FAKE_ZERO_SHOT = """\
#!/usr/bin/env bash
# An evaluation-only method without shots or seeds, in the published zero-shot layout.
TRAINER=FakeZeroShot
source "{repo}/scripts/common.sh"
require_args 1 "$@"
dataset=$1 backbone=${{2:-BiomedCLIP}}
shift $(( $# < 2 ? $# : 2 ))
dir=$OUTPUT/$dataset/$(run_tail "$backbone")/vit_b16
skip_finished "$dir" eval || run_train "$dir" --root "$DATA" --trainer "$TRAINER" --eval-only --seed 0 \\
    MODEL.BACKBONE.NAME "$backbone" DATASET.NUM_SHOTS 0 "$@"
"""


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    root = tmp_path_factory.mktemp("fakes")
    python = root / "python"
    python.write_text(FAKE_TRAIN.format(python=sys.executable))
    python.chmod(0o755)
    scripts = root / "scripts"
    for folder, name, text in (("fakemethod", "few_shot.sh", FAKE_FEW_SHOT), ("fakezs", "zeroshot.sh", FAKE_ZERO_SHOT)):
        (scripts / folder).mkdir(parents=True)
        (scripts / folder / name).write_text(text.format(repo=REPO))
    return {"python": str(python), "scripts": str(scripts)}


@pytest.fixture
def run_sweep(fakes, tmp_path, capsys):
    """sweep.main with the fake train.py and scripts; returns (status, printed output)."""
    def call(*args):
        status = sweep.main(["--python", fakes["python"], "--scripts-dir", fakes["scripts"],
                             "--data", str(tmp_path / "data"), "--output", str(tmp_path / "out"), *args])
        return status, capsys.readouterr().out
    return call


def grid(fakes, tmp_path, methods, protocol="few_shot", shots=(1, 2), seeds=(1, 2), datasets=("btmri", "busi")):
    found = sweep.discover_methods([fakes["scripts"]])
    return found, sweep.Grid(protocol=protocol, entries=sweep.resolve_methods(methods, found),
                             datasets=list(datasets), shots=list(shots), seeds=list(seeds),
                             backbones=["BiomedCLIP"], opts=["OPTIM.MAX_EPOCH", "3"], data=str(tmp_path / "data"),
                             output=str(tmp_path / "out"), python=fakes["python"])


def test_methods_are_found_by_the_trainer_line_of_their_scripts(fakes):
    found = sweep.discover_methods([fakes["scripts"]])
    assert found["BiomedCoOp"]["few_shot"].takes_shots and "base2new" in found["BiomedCoOp"]
    assert set(found["FakeMethod"]) == {"few_shot"}
    assert not found["FakeZeroShot"]["few_shot"].takes_shots
    assert sweep.resolve_methods(["biomedcoop", "BiomedCoOp_CLIP", "fakezs", "FakeMethod"], found) == [
        ("BiomedCoOp", None), ("BiomedCoOp", "CLIP"), ("FakeZeroShot", None), ("FakeMethod", None)]
    every = [m for m in sorted(found)]
    assert [m for m, _ in sweep.resolve_methods(["all"], found, "few_shot")] == every
    assert [m for m, _ in sweep.resolve_methods(["all"], found, "base2new")] == [
        m for m in every if "base2new" in found[m]] and ("FakeMethod", None) not in sweep.resolve_methods(
            ["all"], found, "base2new")
    with pytest.raises(sweep.SweepError) as error:
        sweep.resolve_methods(["CoOpp"], found)
    assert "Unknown method 'CoOpp'" in str(error.value)
    assert "BiomedCoOp (base2new, few_shot)" in str(error.value) and "FakeMethod (few_shot)" in str(error.value)


def test_grid_expansion_gives_the_scripts_commands_and_folders(fakes, tmp_path):
    found, few_shot = grid(fakes, tmp_path, ["BiomedCoOp", "FakeMethod", "FakeZeroShot"])
    jobs = sweep.expand(few_shot, found)
    by_method = {m: [j for j in jobs if j.method == m] for m in ("BiomedCoOp", "FakeMethod", "FakeZeroShot")}
    assert len(by_method["BiomedCoOp"]) == len(by_method["FakeMethod"]) == 2 * 2 * 2  # datasets x shots x seeds
    assert [(j.dataset, j.shots) for j in by_method["FakeZeroShot"]] == [("btmri", 0), ("busi", 0)]  # once each
    out = tmp_path / "out"
    job = next(j for j in by_method["BiomedCoOp"] if (j.dataset, j.shots, j.seed) == ("busi", 2, 1))
    (run,) = job.runs
    assert run.dir == str(out / "busi/shots_2" / COOP_TAIL / "seed1") and not run.eval_only
    words = run.command.split()
    assert words[:2] == [fakes["python"], os.path.join(REPO, "train.py")]
    assert "--seed 1 " in run.command and "DATASET.NUM_SHOTS 2 OPTIM.MAX_EPOCH 3" in run.command
    assert by_method["FakeMethod"][0].runs[0].dir == str(out / "btmri/shots_1/FakeMethod_BiomedCLIP/seed1")
    assert by_method["FakeZeroShot"][0].runs[0].dir == str(out / "btmri/FakeZeroShot_BiomedCLIP/vit_b16")
    assert by_method["FakeZeroShot"][0].runs[0].eval_only

    found, base2new = grid(fakes, tmp_path, ["BiomedCoOp"], protocol="base2new", shots=(16,), seeds=(1,),
                           datasets=("btmri",))
    (job,) = sweep.expand(base2new, found)
    train, test = job.runs
    assert train.dir == str(out / "base2new/train_base/btmri/shots_16" / COOP_TAIL / "seed1")
    assert test.dir == str(out / "base2new/test_new/btmri/shots_16" / COOP_TAIL / "seed1")
    assert test.eval_only and f"--model-dir {train.dir}" in test.command
    with pytest.raises(sweep.SweepError, match="FakeMethod has no base2new script"):
        sweep.expand(grid(fakes, tmp_path, ["FakeMethod"], protocol="base2new")[1], found)


def test_bad_grid_is_refused_before_anything_runs(run_sweep, tmp_path):
    with pytest.raises(sweep.SweepError) as error:
        run_sweep("--methods", "BiomedCoOp", "--datasets", "btmri", "nosuchdata", "--shots", "1", "--seeds", "1")
    assert "Unknown dataset 'nosuchdata'" in str(error.value) and "btmri" in str(error.value)
    with pytest.raises(sweep.SweepError, match="odd number"):
        run_sweep("--methods", "BiomedCoOp", "--datasets", "btmri", "--opts", "OPTIM.MAX_EPOCH")
    assert not (tmp_path / "out").exists()


def test_dry_run_prints_the_commands_and_the_skipped_runs_and_runs_nothing(run_sweep, tmp_path):
    finished = tmp_path / "out/btmri/shots_1" / COOP_TAIL / "seed1"
    finished.mkdir(parents=True)
    (finished / "log.txt").write_text("Finish training\n=> result\n* accuracy: 70.0%\n")
    status, out = run_sweep("--methods", "BiomedCoOp", "--datasets", "btmri", "--shots", "1", "2", "--seeds", "1",
                            "--dry-run")
    assert status == 0
    assert f"# skip (finished): {finished}" in out
    assert out.count(os.path.join(REPO, "train.py")) == 1 and "DATASET.NUM_SHOTS 2" in out
    assert "# 1 runs to do in 1 jobs; 1 finished runs skipped" in out
    assert sorted(p.name for p in (tmp_path / "out/btmri").iterdir()) == ["shots_1"]


def test_failed_runs_are_reported_at_the_end_and_finished_ones_skipped_next_time(run_sweep, tmp_path, monkeypatch):
    out = tmp_path / "out/btmri"
    failing, unfinished = out / "shots_2" / COOP_TAIL / "seed2", out / "shots_1" / COOP_TAIL / "seed1"
    monkeypatch.setenv("FAKE_FAIL", str(failing))
    monkeypatch.setenv("FAKE_UNFINISHED", str(unfinished))
    args = ["--methods", "BiomedCoOp", "FakeZeroShot", "--datasets", "btmri", "--shots", "1", "2", "--seeds", "1", "2"]
    status, printed = run_sweep(*args)
    assert status == 1
    progress_lines = [line for line in printed.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in progress_lines] == [f"[{i}/5" for i in range(1, 6)]
    assert all("ETA" in line for line in progress_lines)
    assert "BiomedCoOp btmri K=1 seed 2 (few_shot, BiomedCLIP): ok, accuracy 53.00%" in printed
    assert "2 of 5 jobs failed:" in printed
    assert f"BiomedCoOp btmri K=2 seed 2 (few_shot, BiomedCLIP): exit status 1; log: {failing}/sweep.log" in printed
    assert f"exit status 0 but its log holds no final result; log: {unfinished}/sweep.log" in printed
    assert "boom: " + str(failing) in (failing / "sweep.log").read_text()
    assert run_logs.run_finished(str(out / "FakeZeroShot_BiomedCLIP/vit_b16"), eval_only=True)

    monkeypatch.delenv("FAKE_FAIL")
    monkeypatch.delenv("FAKE_UNFINISHED")
    status, printed = run_sweep(*args)
    assert status == 0
    assert "Skipping 3 finished runs" in printed and "2 jobs to run" in printed and "All 2 jobs finished." in printed
    assert run_logs.run_finished(str(failing)) and run_logs.run_finished(str(unfinished))
    assert run_sweep(*args) == (0, "Skipping 5 finished runs (their logs hold a final result), e.g. "
                                   f"{out / 'shots_1' / COOP_TAIL / 'seed1'}; --dry-run lists them all\n"
                                   "Nothing to do: every run of the grid has finished.\n")


def test_base_to_novel_job_evaluates_after_training_and_not_after_a_failed_training(run_sweep, tmp_path,
                                                                                    monkeypatch):
    tail = "btmri/shots_16/" + COOP_TAIL
    monkeypatch.setenv("FAKE_FAIL", f"train_base/{tail}/seed1")
    status, printed = run_sweep("--protocol", "base2new", "--methods", "BiomedCoOp", "--datasets", "btmri",
                                "--seeds", "1", "2")
    assert status == 1 and "1 of 2 jobs failed:" in printed
    new = tmp_path / "out/base2new/test_new" / tail
    assert not (new / "seed1").exists()
    assert run_logs.run_finished(str(new / "seed2"), eval_only=True)  # its eval found the trained run


def test_one_job_per_gpu(run_sweep, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SLEEP", "0.5")
    status, _ = run_sweep("--methods", "FakeMethod", "--datasets", "btmri", "--shots", "1", "2", "--seeds", "1", "2",
                          "--gpus", "0,1")
    assert status == 0
    logs = list((tmp_path / "out").rglob("log.txt"))
    assert len(logs) == 4
    assert {line for log in logs for line in log.read_text().splitlines() if line.startswith("cuda:")} == {
        "cuda: 0", "cuda: 1"}


def test_submitit_job_array_with_its_local_executor(run_sweep, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "shots_2")
    status, printed = run_sweep("--methods", "FakeMethod", "--datasets", "btmri", "--shots", "1", "2", "--seeds", "1",
                                "--slurm", "--submitit-cluster", "local", "--gpus-per-job", "0", "--partition", "gpu",
                                "--slurm-param", "account=lab", "--poll-seconds", "0.2")
    assert status == 1
    assert "Submitted 2 jobs (local job array" in printed and f"{tmp_path / 'out' / 'submitit'}" in printed
    assert "FakeMethod btmri K=1 seed 1 (few_shot, BiomedCLIP): ok, accuracy 52.00%" in printed
    assert "1 of 2 jobs failed:" in printed and "shots_2/FakeMethod_BiomedCLIP/seed1/sweep.log" in printed
    assert list((tmp_path / "out" / "submitit").glob("*_result.pkl"))


LOG_VARIANTS = {
    "finished": "Finish training\nDeploy the last-epoch model\n=> result\n* accuracy: 71.3%\n",
    "older_dassl": "Finished training\n=> result\n* accuracy: 5e+01%\n",
    "crlf_and_spaces": "  Finish training \r\n=> result\r\n* accuracy: 70.0%\r\n",
    "val_only": "Evaluate on the *val* set\n=> result\n* accuracy: 10.0%\nepoch [2/10]\n",
    "eval_only": "eval_only: True\n=> result\n* accuracy: 42.0%\n",
    "no_test_after_training": "=> result\n* accuracy: 10.0%\nFinish training\nTraceback (most recent call last)\n",
    "no_number": "Finish training\n=> result\n* accuracy: %\n",
    "similar_signal": "Finish training soon\n=> results\n* accuracy: 10.0%\n",
}


@pytest.mark.parametrize("mode", ["", "eval"])
def test_bash_and_python_agree_on_finished_runs(tmp_path, mode):
    cases = {name: text for name, text in LOG_VARIANTS.items()}
    for name, text in cases.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "log.txt").write_text(text)
    (tmp_path / "resumed").mkdir()
    (tmp_path / "resumed" / "log.txt").write_text(LOG_VARIANTS["val_only"])
    (tmp_path / "resumed" / "log.txt-2026-01-02-03-04-05").write_text(LOG_VARIANTS["finished"])
    (tmp_path / "no_log").mkdir()
    names = [*cases, "resumed", "no_log"]
    script = (f'source "{REPO}/scripts/common.sh"; set +e; for d in {" ".join(names)}; do '
              f'run_finished "{tmp_path}/$d" {mode} && echo "$d yes" || echo "$d no"; done')
    printed = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.split("\n")
    in_bash = dict(line.split() for line in printed if line)
    in_python = {d: "yes" if run_logs.run_finished(str(tmp_path / d), eval_only=mode == "eval") else "no"
                 for d in names}
    assert in_bash == in_python
    expected_yes = {"finished", "older_dassl", "crlf_and_spaces", "resumed"} | (
        {"val_only", "eval_only", "no_test_after_training"} if mode == "eval" else set())
    assert {d for d, v in in_python.items() if v == "yes"} == expected_yes


def test_a_record_the_script_prints_is_written_before_the_run(fakes, tmp_path):
    """Scripts that keep a record of a run's arguments in its folder print it as a 4th field."""
    out = tmp_path / "run"
    command = f"{fakes['python']} train.py --output-dir {out} --seed 1 DATASET.NUM_SHOTS 2"
    (run,), skipped = sweep.parse_dry_run(f"run\t{out}\t{command}\tthe recorded arguments\nskip\t/done\nnoise\n")
    assert (run.dir, run.command, run.record, skipped) == (str(out), command, "the recorded arguments", ["/done"])
    outcome = sweep.run_job(sweep.Job("few_shot", "FakeMethod", "BiomedCLIP", "btmri", 2, 1, (run,)))
    assert not outcome.failure and outcome.accuracy == 53.0
    assert (out / "command.txt").read_text() == "the recorded arguments\n"
