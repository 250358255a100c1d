"""Average a metric over the seed sub-directories of an experiment (CoOp's parse_test_res.py).

    python parse_test_res.py output/btmri/shots_16/BiomedCoOp/nctx4_cscFalse_ctpend
    python parse_test_res.py --directory DIR --test-log      # eval-only logs (after "=> result")
    python parse_test_res.py DIR --multi-exp                 # DIR/<experiment>/<seed>/log.txt

Each non-hidden sub-directory of DIR is one seed; the value of ``* <keyword>: X%`` is read from
its log after the end signal (the last match wins). Output lines match CoOp's.

Differences from CoOp's script (docs/engine.md):
- the directory may be given positionally or with --directory;
- the end signal of training logs is "Finish training" or "Finished training" (older Dassl,
  the published BiomedCoOp code), so logs of either version parse;
- a seed directory whose run was resumed holds ``log.txt`` plus timestamped ``log.txt-<time>``
  files; the newest file with a result is used (CoOp reads only log.txt);
- the number of seeds found is printed, and a directory without results exits with status 1 and a
  message naming the directory and what was searched for (CoOp fails an assert).
"""
import argparse
import os
import os.path as osp
import sys
from collections import OrderedDict

import numpy as np

from clip_biomed.run_logs import TEST_END_SIGNALS, TRAIN_END_SIGNALS, log_files, metric_regex, parse_log


class NoResultsError(RuntimeError):
    """The directory holds no log with the requested metric."""


def _subdirs(directory):
    return sorted(n for n in os.listdir(directory) if not n.startswith(".") and osp.isdir(osp.join(directory, n)))


def compute_ci95(values):
    return 1.96 * np.std(values) / np.sqrt(len(values))


def parse_directory(directory, keyword="accuracy", test_log=False, ci95=False, verbose=True):
    """Parse every seed sub-directory of ``directory``.

    Returns ``{"directory", "files", "values", "mean", "std"}`` where ``std`` is the population
    std (or the 95% confidence half-width when ``ci95``). Raises NoResultsError if nothing matched.
    """
    if not osp.isdir(directory):
        raise NoResultsError(f"{directory} is not a directory")
    end_signals = TEST_END_SIGNALS if test_log else TRAIN_END_SIGNALS
    regex = metric_regex(keyword)
    if verbose:
        print(f"Parsing files in {directory}")
    files, values = [], []
    for subdir in _subdirs(directory):
        for fpath in reversed(log_files(osp.join(directory, subdir))):
            value = parse_log(fpath, regex, end_signals)
            if value is not None:
                files.append(fpath)
                values.append(value)
                if verbose:
                    print(f"file: {fpath}. {keyword}: {value:.2f}%. ")
                break
    if not values:
        raise NoResultsError(
            f"Nothing found in {directory}: no <seed>/log.txt under it has a '* {keyword}: X%' line after "
            f"{' or '.join(repr(s) for s in end_signals)}"
            + ("" if test_log else " (for eval-only logs pass --test-log)")
        )
    mean = float(np.mean(values))
    spread = float(compute_ci95(values) if ci95 else np.std(values))
    if verbose:
        print("===")
        print(f"Summary of directory: {directory}")
        print(f"Number of seeds (log files): {len(values)}")
        print(f"* {keyword}: {mean:.2f}% +- {spread:.2f}%")
        print("===")
    return {"directory": directory, "files": files, "values": values, "mean": mean, "std": spread}


def parse_experiments(directory, keyword="accuracy", test_log=False, ci95=False, verbose=True):
    """``--multi-exp``: parse each sub-directory as an experiment; return {experiment: result}."""
    results = OrderedDict(
        (name, parse_directory(osp.join(directory, name), keyword, test_log, ci95, verbose))
        for name in _subdirs(directory)
    )
    if not results:
        raise NoResultsError(f"Nothing found in {directory}: it has no experiment sub-directories")
    if verbose:
        print("Average performance")
        print(f"* {keyword}: {np.mean([r['mean'] for r in results.values()]):.2f}%")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory_pos", nargs="?", metavar="directory", help="path to the directory of seeds")
    parser.add_argument("--directory", type=str, default="", help="same as the positional directory")
    parser.add_argument("--ci95", action="store_true", help="report the 95%% confidence interval instead of std")
    parser.add_argument("--test-log", action="store_true", help="parse eval-only logs (values after '=> result')")
    parser.add_argument("--multi-exp", action="store_true", help="each sub-directory is an experiment of seeds")
    parser.add_argument("--keyword", default="accuracy", type=str, help="which metric to read")
    args = parser.parse_args(argv)
    directory = args.directory or args.directory_pos
    if not directory:
        parser.error("give the directory, positionally or with --directory")
    parse = parse_experiments if args.multi_exp else parse_directory
    try:
        parse(directory, keyword=args.keyword, test_log=args.test_log, ci95=args.ci95)
    except NoResultsError as error:
        sys.exit(f"parse_test_res.py: {error}")


if __name__ == "__main__":
    main()
