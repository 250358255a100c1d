"""What a run folder's logs say: the final value of a metric, and whether the run has finished.

One rule, shared by ``parse_test_res.py``, the sweep (which skips finished runs) and the results
tables; ``scripts/common.sh``'s ``run_finished`` applies the same rule in bash (tests/test_sweep.py
checks that the two agree on the same logs):

* A run folder holds ``log.txt``, plus ``log.txt-<time>`` files when it was run again (the logger
  never overwrites a log); the newest file that holds a result is the run's result.
* The result block starts at the first line that is exactly an end signal: "Finish training" or
  "Finished training" (older Dassl, the published code) for a training run, "=> result" for an
  evaluation-only run; the value is the last ``* <metric>: X%`` line at or after it.
* A run has finished when one of its logs holds ``* accuracy: X%`` in its result block.

Evaluation-only logs are told from training logs by the argument dump that ``train.py`` (ours,
CoOp's and the published one) prints first: ``eval_only: True``.

Standard library only: the sweep imports this in every job, and the bash rule stays one awk line.
"""
from __future__ import annotations

import os
import os.path as osp
import re
from typing import List, Optional, Sequence, Tuple

TRAIN_END_SIGNALS = ("Finish training", "Finished training")
TEST_END_SIGNALS = ("=> result",)
FINISHED_METRIC = "accuracy"
LOG_NAME = "log.txt"
_EVAL_ONLY_ARG = "eval_only: True"


def metric_regex(metric: str):
    """``* <metric>: X%`` as the evaluator prints it (Dassl's style)."""
    return re.compile(rf"\* {re.escape(metric)}: ([\.\deE+-]+)%")


def log_files(run_dir: str) -> List[str]:
    """``log.txt`` first, then the ``log.txt-<time>`` files of later runs, oldest first."""
    if not osp.isdir(run_dir):
        return []
    names = sorted(n for n in os.listdir(run_dir) if n == LOG_NAME or n.startswith(LOG_NAME + "-"))
    return [osp.join(run_dir, n) for n in names]


def parse_log(fpath: str, regex, end_signals: Sequence[str]) -> Optional[float]:
    """The last value matched by ``regex`` at or after the first end-signal line, or None."""
    value, started = None, False
    with open(fpath, "r", errors="replace") as f:
        for line in f:
            line = line.strip()
            started = started or line in end_signals
            match = regex.search(line)
            if started and match:
                value = float(match.group(1))
    return value


def is_eval_only_log(fpath: str) -> bool:
    """Whether the log is that of a ``train.py --eval-only`` run (from its argument dump)."""
    with open(fpath, "r", errors="replace") as f:
        for line in f:
            if line.strip() == _EVAL_ONLY_ARG:
                return True
            if line.startswith("** Config **"):  # the argument dump is over
                return False
    return False


def end_signals(eval_only: bool) -> Tuple[str, ...]:
    return TEST_END_SIGNALS if eval_only else TRAIN_END_SIGNALS


def run_result(run_dir: str, metric: str = FINISHED_METRIC, eval_only: Optional[bool] = None
               ) -> Optional[Tuple[float, str]]:
    """(value, log file) of the run's final ``metric``, or None when no log holds one.

    ``eval_only`` None: each log's own kind (see :func:`is_eval_only_log`) decides its end signal.
    """
    regex = metric_regex(metric)
    for fpath in reversed(log_files(run_dir)):
        kind = is_eval_only_log(fpath) if eval_only is None else eval_only
        value = parse_log(fpath, regex, end_signals(kind))
        if value is not None:
            return value, fpath
    return None


def run_finished(run_dir: str, eval_only: bool = False) -> bool:
    """The rule of ``scripts/common.sh``'s ``run_finished <dir> [eval]``."""
    return run_result(run_dir, FINISHED_METRIC, eval_only) is not None
