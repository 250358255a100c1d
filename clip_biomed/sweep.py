"""``python -m clip_biomed.sweep``: a protocol's grid of ``train.py`` runs, run here, one per GPU, or on SLURM.

    python -m clip_biomed.sweep --methods BiomedCoOp CoOp --datasets btmri busi --shots 1 2 4 8 16 --seeds 1 2 3
    python -m clip_biomed.sweep --protocol base2new --methods BiomedCoOp --datasets btmri kvasir --gpus 0,1
    python -m clip_biomed.sweep ... --slurm --partition gpu --time 240 --gpus-per-job 1 --array-parallelism 16
    python -m clip_biomed.sweep ... --dry-run                 # print the commands, run nothing
    python -m clip_biomed.sweep ... --opts OPTIM.MAX_EPOCH 50 # yacs options for every run (last)

The launch scripts are the one source of truth of each run's command and output folder: the grid
(methods x datasets x shots x seeds) is expanded by calling each method's script with ``DRY_RUN=1
SEEDS=<seed>``, which prints one ``run<TAB><dir><TAB><command>`` line per run to do and one
``skip<TAB><dir>`` line per finished run (``scripts/common.sh``); the commands one call prints form
one job, run in order (base-to-novel: train on the base classes, then evaluate on the new ones).

A method is found by the ``TRAINER=<Name>`` line of its script under ``scripts/*/`` (and any
``--scripts-dir``): ``few_shot.sh`` is called as ``<dataset> <shots> <backbone> [opts]``,
``base2new.sh`` and ``*_base2new.sh`` as ``<dataset> <backbone> [opts]`` (SHOTS from ``--shots``),
and any other script with a TRAINER line is an evaluation-only few-shot method without shots
(zero-shot, K = 0), called as ``<dataset> <backbone> [opts]``.  Nothing here knows a particular
method.

A run is finished when its log holds a final result (``clip_biomed.run_logs``); a failed run does not
stop the others: the failures are listed at the end with their log files and the exit status is 1.
Each run's complete output (stdout and stderr) is appended to ``<run dir>/sweep.log``.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from queue import Queue
from typing import Dict, List, Optional, Sequence, Tuple

from clip_biomed.progress import echo, progress
from clip_biomed.run_logs import FINISHED_METRIC, run_finished, run_result

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SCRIPTS_DIR = osp.join(REPO_ROOT, "scripts")
PROTOCOLS = ("few_shot", "base2new")
DEFAULT_SHOTS = {"few_shot": (1, 2, 4, 8, 16), "base2new": (16,)}
RUN_OUTPUT = "sweep.log"  # a run's captured stdout and stderr, inside its run folder
COMMAND_RECORD = "command.txt"
_TRAINER_LINE = re.compile(r"^\s*TRAINER=([A-Za-z_][A-Za-z0-9_]*)(?=\s|;|$)", re.M)


class SweepError(ValueError):
    """Bad input (a name, a grid the scripts refuse): reported before anything runs."""


# --- methods: found by their launch scripts --------------------------------------------------------

@dataclass(frozen=True)
class MethodScript:
    method: str        # the TRAINER= name
    protocol: str      # few_shot | base2new
    path: str
    takes_shots: bool  # few_shot.sh takes <dataset> <shots> <backbone>; the others <dataset> <backbone>


def script_protocol(filename: str) -> Tuple[str, bool]:
    """(protocol, takes shots) of a method script by its file name (see the module docstring)."""
    if filename == "few_shot.sh":
        return "few_shot", True
    if filename == "base2new.sh" or filename.endswith("_base2new.sh"):
        return "base2new", False
    return "few_shot", False


def discover_methods(script_dirs: Sequence[str] = ()) -> Dict[str, Dict[str, MethodScript]]:
    """``{method: {protocol: MethodScript}}`` from the scripts under ``scripts/*/`` and ``script_dirs``."""
    found: Dict[str, Dict[str, MethodScript]] = {}
    for root in (SCRIPTS_DIR, *script_dirs):
        if not osp.isdir(root):
            raise SweepError(f"--scripts-dir {root} is not a directory")
        for folder in sorted(os.listdir(root)):
            if not osp.isdir(osp.join(root, folder)):
                continue
            for name in sorted(os.listdir(osp.join(root, folder))):
                path = osp.join(root, folder, name)
                if not name.endswith(".sh"):
                    continue
                match = _TRAINER_LINE.search(open(path, encoding="utf-8", errors="replace").read())
                if not match:
                    continue
                protocol, takes_shots = script_protocol(name)
                script = MethodScript(match.group(1), protocol, path, takes_shots)
                previous = found.setdefault(script.method, {}).get(protocol)
                if previous and previous.path != path:
                    raise SweepError(f"two {protocol} scripts set TRAINER={script.method}: {previous.path} and {path}")
                found[script.method][protocol] = script
    return found


def resolve_methods(names: Sequence[str], methods: Dict[str, Dict[str, MethodScript]],
                    protocol: Optional[str] = None) -> List[Tuple[str, Optional[str]]]:
    """``[(method, backbone or None)]`` for method names (any case), script folder names, or published
    names ``<Method>_<Backbone>`` (which fix the backbone); ``all``: every method with a script for
    ``protocol``."""
    by_key = {m.lower(): m for m in methods}
    for method, scripts in methods.items():
        for script in scripts.values():
            by_key.setdefault(osp.basename(osp.dirname(script.path)).lower(), method)
    resolved = []
    for name in names:
        if name.lower() == "all":
            resolved += [(m, None) for m in sorted(methods) if protocol is None or protocol in methods[m]]
            continue
        if name.lower() in by_key:
            resolved.append((by_key[name.lower()], None))
            continue
        prefixes = [m for m in methods if name.lower().startswith(m.lower() + "_") and len(name) > len(m) + 1]
        if prefixes:
            method = max(prefixes, key=len)
            resolved.append((method, name[len(method) + 1:]))
            continue
        valid = ", ".join(f"{m} ({', '.join(sorted(s))})" for m, s in sorted(methods.items()))
        raise SweepError(f"Unknown method {name!r}. Valid: {valid}; or a published name <Method>_<Backbone> "
                         f"(e.g. {next(iter(sorted(methods)), 'BiomedCoOp')}_CLIP). Methods are found by the "
                         f"TRAINER=<Name> line of scripts/<method>/*.sh")
    return resolved


# --- the grid: jobs of runs ------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    dir: str
    command: str  # shell-quoted, as the script printed it
    record: str = ""  # what the script records in <dir>/command.txt when it runs this itself (4th field)

    @property
    def eval_only(self) -> bool:
        return " --eval-only " in f" {self.command} "


@dataclass(frozen=True)
class Job:
    """The runs one script call prints for one grid point, run in order."""

    protocol: str
    method: str
    backbone: str
    dataset: str
    shots: int
    seed: int
    runs: Tuple[Run, ...]
    skipped: Tuple[str, ...] = ()  # folders of finished runs

    @property
    def label(self) -> str:
        backbone = self.backbone.rstrip("/").rsplit("/", 1)[-1]  # a local-dir:/path/NAME backbone as NAME
        return f"{self.method} {self.dataset} K={self.shots} seed {self.seed} ({self.protocol}, {backbone})"


@dataclass
class Grid:
    protocol: str
    entries: List[Tuple[str, Optional[str]]]  # (method, backbone or None = each of backbones)
    datasets: List[str]
    shots: List[int]
    seeds: List[int]
    backbones: List[str]
    opts: List[str] = field(default_factory=list)
    data: str = "data"
    output: str = "output"
    python: str = sys.executable


def script_env(grid: Grid, seed: int, shots: int) -> Dict[str, str]:
    env = {**os.environ, "DRY_RUN": "1", "SEEDS": str(seed), "DATA": grid.data, "OUTPUT": grid.output,
           "PYTHON": grid.python}
    if grid.protocol == "base2new":
        env["SHOTS"] = str(shots)
    return env


def parse_dry_run(stdout: str) -> Tuple[List[Run], List[str]]:
    """The ``run``/``skip`` lines of a script's DRY_RUN=1 output (other lines are not runs); a run line
    may carry a 4th field, the record of the run's arguments the script keeps in its folder."""
    runs, skipped = [], []
    for line in stdout.splitlines():
        parts = line.split("\t")
        if parts[0] == "run" and len(parts) in (3, 4):
            runs.append(Run(parts[1], parts[2].rstrip(), parts[3].rstrip() if len(parts) == 4 else ""))
        elif parts[0] == "skip" and len(parts) == 2:
            skipped.append(parts[1])
    return runs, skipped


def expand(grid: Grid, methods: Dict[str, Dict[str, MethodScript]], workers: int = 4) -> List[Job]:
    """Every grid point's job (finished runs listed as skipped), one script call each; duplicates
    (scripts without a seed or shot level print the same runs for every seed) are kept once."""
    points = []
    for method, backbone in grid.entries:
        script = methods[method].get(grid.protocol)
        if script is None:
            raise SweepError(f"{method} has no {grid.protocol} script (it has: {', '.join(sorted(methods[method]))})")
        for chosen in ([backbone] if backbone else grid.backbones):
            for dataset in grid.datasets:
                for shots in (grid.shots if script.takes_shots or grid.protocol == "base2new" else [0]):
                    for seed in grid.seeds:
                        points.append((script, chosen, dataset, shots, seed))

    def call(point):
        script, backbone, dataset, shots, seed = point
        args = [dataset, *([str(shots)] if script.takes_shots else []), backbone, *grid.opts]
        result = subprocess.run(["bash", script.path, *args], env=script_env(grid, seed, shots),
                                capture_output=True, text=True)
        return point, args, result

    jobs: Dict[Tuple[str, ...], Job] = {}
    errors = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for point, args, result in progress(pool.map(call, points), desc="Expanding the grid", total=len(points),
                                            unit="script"):
            script, backbone, dataset, shots, seed = point
            where = f"bash {script.path} {' '.join(args)}"
            if result.returncode != 0:
                errors.append(f"{where} (SEEDS={seed}) failed with status {result.returncode}:\n"
                              f"{result.stderr.strip() or result.stdout.strip()}")
                continue
            runs, skipped = parse_dry_run(result.stdout)
            if not runs and not skipped:
                errors.append(f"{where} printed no run with DRY_RUN=1: does it launch its runs with "
                              "scripts/common.sh's run_train and skip_finished?")
                continue
            key = tuple(r.dir for r in runs) + tuple(skipped)
            jobs.setdefault(key, Job(grid.protocol, script.method, backbone, dataset, shots, seed, tuple(runs),
                                     tuple(skipped)))
    if errors:
        raise SweepError("\n\n".join(dict.fromkeys(errors)))
    return list(jobs.values())


# --- running one job ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    job: Job
    failure: str = ""     # empty: every run of the job finished
    log: str = ""         # the file to read about the failure
    seconds: float = 0.0
    accuracy: Optional[float] = None  # the last run's final accuracy


def run_job(job: Job, env: Optional[Dict[str, str]] = None) -> Outcome:
    """Run the job's commands in order; stop at the first that fails or leaves no final result.
    Module-level and picklable: submitit runs it on the cluster nodes."""
    start = time.time()
    full_env = {**os.environ, **(env or {})}
    for run in job.runs:
        os.makedirs(run.dir, exist_ok=True)
        if run.record:  # as the script would, so that its check of the folder's arguments holds
            with open(osp.join(run.dir, COMMAND_RECORD), "w") as f:
                f.write(run.record + "\n")
        output = osp.join(run.dir, RUN_OUTPUT)
        with open(output, "a") as f:
            f.write(f"\n### {time.strftime('%Y-%m-%d %H:%M:%S')} {run.command}\n")
            f.flush()
            status = subprocess.run(["bash", "-c", run.command], stdout=f, stderr=subprocess.STDOUT,
                                    env=full_env).returncode
        if status != 0:
            return Outcome(job, f"exit status {status}", output, time.time() - start)
        if not run_finished(run.dir, run.eval_only):
            return Outcome(job, "exit status 0 but its log holds no final result", output, time.time() - start)
    last = run_result(job.runs[-1].dir, FINISHED_METRIC, job.runs[-1].eval_only) if job.runs else None
    return Outcome(job, seconds=time.time() - start, accuracy=last[0] if last else None)


# --- executors -------------------------------------------------------------------------------------

class Reporter:
    """One line per finished job: running count, what it was, its result, the ETA."""

    def __init__(self, total: int):
        self.total, self.done, self.start, self.failed = total, 0, time.time(), []

    def __call__(self, outcome: Outcome) -> None:
        self.done += 1
        elapsed = time.time() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        if outcome.failure:
            self.failed.append(outcome)
            what = f"FAILED ({outcome.failure}; see {outcome.log})"
        else:
            what = "ok" + (f", accuracy {outcome.accuracy:.2f}%" if outcome.accuracy is not None else "")
        echo(f"[{self.done}/{self.total}] {outcome.job.label}: {what} in {_duration(outcome.seconds)}; "
             f"elapsed {_duration(elapsed)}, ETA {_duration(eta)}")

    def summary(self) -> int:
        if not self.failed:
            echo(f"All {self.total} jobs finished.")
            return 0
        echo(f"{len(self.failed)} of {self.total} jobs failed:")
        for outcome in self.failed:
            echo(f"  {outcome.job.label}: {outcome.failure}; log: {outcome.log}")
        return 1


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def run_local(jobs: Sequence[Job], slots: Sequence[Dict[str, str]], report: Reporter) -> None:
    """Run the jobs here, as many at once as there are slots (each slot's environment, e.g. its
    CUDA_VISIBLE_DEVICES, applies to the job it runs)."""
    free: Queue = Queue()
    for slot in slots:
        free.put(slot)

    def in_a_slot(job):
        slot = free.get()
        try:
            return run_job(job, slot)
        finally:
            free.put(slot)

    with ThreadPoolExecutor(len(slots)) as pool:
        futures = [pool.submit(in_a_slot, job) for job in jobs]
        for future in progress(as_completed(futures), desc="Sweep", total=len(futures), unit="job"):
            report(future.result())


def run_submitit(jobs: Sequence[Job], folder: str, parameters: Dict[str, object], report: Reporter,
                 cluster: Optional[str] = "slurm", wait: bool = True, poll_seconds: float = 10.0) -> None:
    """Submit the jobs as one job array through submitit (SLURM; ``cluster="local"`` runs the same
    array as local processes) and, with ``wait``, report each as it ends."""
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(**parameters)
    submitted = executor.map_array(run_job, list(jobs))
    echo(f"Submitted {len(submitted)} jobs ({cluster} job array {submitted[0].job_id.split('_')[0]}); "
         f"submitit's logs: {folder}")
    if not wait:
        echo("Not waiting (--no-wait): run the same command again to see what is left; finished runs are skipped.")
        return
    job_of = {id(handle): job for handle, job in zip(submitted, jobs)}
    for done in progress(submitit.helpers.as_completed(submitted, poll_frequency=poll_seconds), desc="Sweep",
                         total=len(submitted), unit="job"):
        job = job_of[id(done)]
        try:
            report(done.result())
        except Exception as error:  # the job itself died (time limit, node failure, cancelled)
            report(Outcome(job, f"{type(error).__name__}: {str(error).strip().splitlines()[-1][:300]}",
                           str(done.paths.stderr)))


# --- command line ----------------------------------------------------------------------------------

def _print_dry_run(jobs: Sequence[Job]) -> None:
    for job in jobs:
        print(f"# {job.label}")
        for directory in job.skipped:
            print(f"# skip (finished): {directory}")
        for run in job.runs:
            print(run.command)


def _opts(values: List[str]) -> List[str]:
    if len(values) % 2:
        raise SweepError(f"--opts takes KEY VALUE pairs; got an odd number of words: {' '.join(values)}")
    return values


def _gpus(text: str) -> List[str]:
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if not gpus or not all(g.isdigit() for g in gpus):
        raise argparse.ArgumentTypeError(f"--gpus takes GPU indices separated by commas, e.g. 0,1,2; got {text!r}")
    return gpus


def _slurm_param(text: str) -> Tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--slurm-param takes KEY=VALUE (e.g. account=mylab), got {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clip_biomed.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    grid = parser.add_argument_group("the grid")
    grid.add_argument("--methods", nargs="+", required=True, help="method names (TRAINER of their scripts), script "
                      "folder names, published names <Method>_<Backbone>, or all (every method with a script "
                      "for the protocol)")
    grid.add_argument("--datasets", nargs="+", required=True, help="dataset config names, e.g. btmri busi")
    grid.add_argument("--protocol", choices=PROTOCOLS, default="few_shot")
    grid.add_argument("--shots", nargs="+", type=int,
                      help="shots per class (default: 1 2 4 8 16 for few_shot, 16 for base2new)")
    grid.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    grid.add_argument("--backbone", nargs="+", default=["BiomedCLIP"], dest="backbones",
                      help="backbone(s) of every method (default %(default)s): BiomedCLIP, CLIP, PubMedCLIP, "
                           "PMCCLIP, hf-hub:<id>, local-dir:<path>")
    grid.add_argument("--data", default=os.environ.get("DATA", "data"), help="dataset root (default $DATA or data)")
    grid.add_argument("--output", default=os.environ.get("OUTPUT", "output"),
                      help="output root (default $OUTPUT or output)")
    grid.add_argument("--python", default=sys.executable, help="the python that runs train.py (default: this one)")
    grid.add_argument("--scripts-dir", action="append", default=[], metavar="DIR",
                      help="another folder of <method>/*.sh launch scripts (repeatable)")
    where = parser.add_argument_group("where the runs go")
    where.add_argument("--dry-run", action="store_true", help="print the jobs' commands and the skipped runs; run nothing")
    where.add_argument("--gpus", type=_gpus, help="run one job per GPU at once, e.g. 0,1,2,3 (CUDA_VISIBLE_DEVICES)")
    where.add_argument("--jobs", type=int, default=1, help="jobs at once without GPU pinning (default 1)")
    where.add_argument("--slurm", action="store_true", help="submit the jobs as one SLURM job array (submitit)")
    where.add_argument("--partition", help="SLURM partition")
    where.add_argument("--time", type=int, default=240, help="time limit of one job in minutes (default %(default)s)")
    where.add_argument("--gpus-per-job", type=int, default=1, help="GPUs of one job (default %(default)s)")
    where.add_argument("--cpus-per-job", type=int, default=8, help="CPUs of one job (default %(default)s)")
    where.add_argument("--mem-gb", type=float, help="memory of one job in GB")
    where.add_argument("--array-parallelism", type=int, default=32,
                       help="jobs of the array running at once (default %(default)s)")
    where.add_argument("--slurm-param", type=_slurm_param, action="append", default=[], metavar="KEY=VALUE",
                       help="any other submitit SLURM parameter, e.g. account=mylab, qos=high (repeatable)")
    where.add_argument("--slurm-folder", help="submitit's folder for job files and logs, on a filesystem the nodes "
                                              "share (default <output>/submitit)")
    where.add_argument("--submitit-cluster", default="slurm", choices=("slurm", "local"),
                       help="submitit executor (default slurm; local runs the same job array as local processes)")
    where.add_argument("--no-wait", action="store_true", help="with --slurm: submit and return")
    where.add_argument("--poll-seconds", type=float, default=30.0,
                       help="with --slurm: how often the array's jobs are checked (default %(default)s)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                        help="KEY VALUE yacs options passed to every run (must come last)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.jobs < 1:
        raise SweepError(f"--jobs must be at least 1, got {args.jobs}")
    methods = discover_methods(args.scripts_dir)
    grid = Grid(protocol=args.protocol, entries=resolve_methods(args.methods, methods, args.protocol), datasets=args.datasets,
                shots=list(args.shots or DEFAULT_SHOTS[args.protocol]), seeds=args.seeds, backbones=args.backbones,
                opts=_opts(args.opts), data=osp.abspath(args.data), output=osp.abspath(args.output),
                python=args.python)
    jobs = expand(grid, methods)
    todo = [job for job in jobs if job.runs]
    skipped = [d for job in jobs for d in job.skipped]
    if args.dry_run:
        _print_dry_run(jobs)
        print(f"# {sum(len(j.runs) for j in todo)} runs to do in {len(todo)} jobs; {len(skipped)} finished runs skipped")
        return 0
    if skipped:
        echo(f"Skipping {len(skipped)} finished runs (their logs hold a final result), e.g. {skipped[0]}; "
             "--dry-run lists them all")
    if not todo:
        echo("Nothing to do: every run of the grid has finished.")
        return 0
    echo(f"{len(todo)} jobs to run ({sum(len(j.runs) for j in todo)} train.py runs)")
    report = Reporter(len(todo))
    if args.slurm:
        parameters = {"name": "clip_biomed-sweep", "timeout_min": args.time, "gpus_per_node": args.gpus_per_job,
                      "cpus_per_task": args.cpus_per_job, "mem_gb": args.mem_gb, "slurm_partition": args.partition,
                      "slurm_array_parallelism": args.array_parallelism,
                      **{f"slurm_{key}": value for key, value in args.slurm_param}}
        run_submitit(todo, args.slurm_folder or osp.join(grid.output, "submitit"), parameters, report,
                     cluster=args.submitit_cluster, wait=not args.no_wait, poll_seconds=args.poll_seconds)
        if args.no_wait:
            return 0
    else:
        slots = [{"CUDA_VISIBLE_DEVICES": gpu} for gpu in args.gpus] if args.gpus else [{}] * args.jobs
        run_local(todo, slots, report)
    return report.summary()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SweepError as error:
        sys.exit(f"clip_biomed.sweep: error: {error}")
