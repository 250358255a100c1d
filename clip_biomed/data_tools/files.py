"""Writing a file so that no reader ever sees it half-written, with the permissions of any new file.

The file is written under a temporary name in its own folder and renamed over the target.  The
temporary file of ``tempfile.mkstemp`` is private (mode 0600), and a rename keeps the mode, which made
split files and caches unreadable to colleagues sharing a data folder: here it gets the mode an
``open()`` would give it, 0666 minus the process's umask.
"""
import contextlib
import os
import tempfile

__all__ = ["atomic_write", "new_file_mode"]


def new_file_mode() -> int:
    """0666 minus the umask: the mode ``open(path, "w")`` gives a new file."""
    umask = os.umask(0)  # the umask can only be read by setting it
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path, mode: str = "w", encoding=None):
    """``with atomic_write(path) as f: ...`` writes ``path`` all at once (``mode`` "w" or "wb").

    Parallel writers of the same file (runs of a sweep building the same cache) each write their
    own temporary file; the last rename wins and every reader sees one whole file.  On an error the
    temporary file is removed and ``path`` is left as it was.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as f:
            if hasattr(os, "fchmod"):  # POSIX; elsewhere files have no such mode bits
                os.fchmod(f.fileno(), new_file_mode())
            yield f
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)
        raise
