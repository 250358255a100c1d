"""``setup_logger``: tee stdout into ``<output>/log.txt`` (dassl.md §8)."""
import os
import os.path as osp
import sys
import time

from clip_biomed.engine.utils import mkdir_if_missing

__all__ = ["Logger", "setup_logger"]


class Logger:
    """Writes to the console and to a file. Only stdout is teed: stderr (tqdm, warnings,
    tracebacks) stays out of log.txt, as in Dassl."""

    def __init__(self, fpath=None):
        self.console = sys.stdout
        self.file = None
        if fpath is not None:
            mkdir_if_missing(osp.dirname(fpath) or ".")
            self.file = open(fpath, "w")

    def write(self, msg):
        self.console.write(msg)
        if self.file is not None:
            self.file.write(msg)

    def flush(self):
        self.console.flush()
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())

    def close(self):
        # The console is restored rather than closed: closing the real stdout would break
        # anything printed after the logger is dropped (Dassl closes it; nothing relies on that).
        if self.file is not None and not self.file.closed:
            self.file.close()

    # Code that queries these on sys.stdout (e.g. tqdm, colour detection) should see the console's.
    def isatty(self):
        return self.console.isatty()

    def fileno(self):
        return self.console.fileno()

    @property
    def encoding(self):
        return getattr(self.console, "encoding", "utf-8")

    def __del__(self):
        self.close()


def setup_logger(output=None):
    """Tee stdout into ``output`` (a ``.txt``/``.log`` path) or ``output/log.txt``.

    An existing log is never overwritten: the new file gets a ``-%Y-%m-%d-%H-%M-%S`` suffix.
    """
    if output is None:
        return
    if output.endswith(".txt") or output.endswith(".log"):
        fpath = output
    else:
        fpath = osp.join(output, "log.txt")
    if osp.exists(fpath):
        stamped = fpath = fpath + time.strftime("-%Y-%m-%d-%H-%M-%S")
        n = 1
        while osp.exists(fpath):  # a second run within the same second
            fpath = f"{stamped}-{n}"
            n += 1
    sys.stdout = Logger(fpath)
