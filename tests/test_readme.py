"""Every command README.md shows is exercised: the demo runs here, `make test` runs in CI, and the
commands that need real weights or data are checked against the scripts and CLIs they call (the
script exists and parses, every flag the README uses is accepted), so the README cannot rot."""
import functools
import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_commands():
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


CLONE = "$BIOMEDCOOP/"  # README's name for the path of the clone (commands run from the user's folder)


def _words(command):
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):  # leading VAR=value
        words.pop(0)
    return [word[len(CLONE):] if word.startswith(CLONE) else word for word in words]


def _help(words):
    """The --help text of the python entry point a README command calls (each entry point once)."""
    if words[1] == "-m":
        module, rest = words[2], words[3:]
        sub = [rest[0]] if rest and not rest[0].startswith("-") and module in SUBCOMMAND_MODULES else []
        cmd = [sys.executable, "-m", module, *sub, "--help"]
    else:
        cmd = [sys.executable, os.path.join(REPO, words[1]), "--help"]
    return _help_text(tuple(cmd))


@functools.lru_cache(maxsize=None)
def _help_text(cmd):
    result = subprocess.run(list(cmd), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{cmd}: {result.stderr[-2000:]}"
    return result.stdout


SUBCOMMAND_MODULES = {"clip_biomed.data_tools", "clip_biomed.prompts", "clip_biomed.backbones"}


def test_readme_shows_the_two_commands():
    commands = readme_commands()
    assert "make demo" in commands and "make test" in commands
    ci = open(os.path.join(REPO, ".ci", "run")).read()
    assert re.search(r"^make test$", ci, flags=re.M), ".ci/run must call exactly README's test command"


@pytest.mark.parametrize("command", [c for c in readme_commands() if c.split()[0] not in ("make", "pip")])
def test_readme_command_matches_its_entry_point(command):
    words = _words(command)
    if words[0] == "bash":
        script = os.path.join(REPO, words[1])
        assert os.path.isfile(script), command
        assert subprocess.run(["bash", "-n", script]).returncode == 0
        return
    assert words[0] == "python", command
    help_text = _help(words)
    for flag in (w for w in words[2:] if w.startswith("--")):
        assert flag in help_text, f"{flag} of `{command}` is not an option of its entry point"


def test_make_targets_install_and_call_the_demo_and_the_test_suite():
    """`make test` (CI) installs the project with README's `pip install -e .`."""
    assert "pip install -e ." in readme_commands()
    dry = subprocess.run(["make", "-n", "demo", "test"], cwd=REPO, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert "scripts/demo.sh" in dry.stdout and "pytest -q tests" in dry.stdout
    assert "pip install --quiet -e ." in dry.stdout


def test_demo_runs_end_to_end(tmp_path):
    """The demo on one K (8 shots) and its three seeds: the tiny model's zero-shot accuracy is above
    chance (25% for 4 classes) and below 100% (the classes overlap), BiomedCoOp learns from the 32
    images (clearly above zero-shot; on the CPU the runs are deterministic), the sweep reports every
    run and the results command prints the table and writes the plot."""
    env = {**os.environ, "DEMO": str(tmp_path / "demo"), "PYTHON": sys.executable, "SHOTS": "8",
           "METHODS": "Zeroshot CoOp BiomedCoOp"}  # the default's feature methods left out for time
    result = subprocess.run(["bash", os.path.join(REPO, "scripts", "demo.sh")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    zero_shot = re.search(r"^Aligned to .*: [\d.]+% -> ([\d.]+)%$", out, flags=re.M)
    assert zero_shot and 35.0 < float(zero_shot.group(1)) < 80.0, out
    assert len(re.findall(r"^\[\d+/\d+\] BiomedCoOp btmri K=8 seed \d \(few_shot, tiny-biomedclip\): ok", out,
                          flags=re.M)) == 3, out
    assert "mean ± std over 3 seeds (1, 2, 3)" in out
    assert re.search(r"^\| Zeroshot \| tiny-biomedclip \| ([\d.]+) \|", out, flags=re.M), out  # the K=0 column
    assert re.search(r"^\| CoOp \| tiny-biomedclip \|", out, flags=re.M), out
    learned = re.search(r"^\| BiomedCoOp \| tiny-biomedclip \|.* ([\d.]+) \|$", out, flags=re.M)  # K=8, last
    assert learned and float(learned.group(1)) > float(zero_shot.group(1)) + 10.0, out
    (run,) = (tmp_path / "demo").iterdir()  # one folder for these settings
    assert "shots8_seeds1-2-3" in run.name and (run / "results" / "few_shot_accuracy.png").is_file()
