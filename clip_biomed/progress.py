"""Progress bars for long loops that stay quiet when nobody watches.

``progress(iterable, desc)`` is a tqdm bar on stderr when stderr is a terminal, and the bare
iterable otherwise: logs (log.txt only tees stdout, and sweeps capture both streams into files)
stay free of carriage-return noise.  ``CLIP_BIOMED_PROGRESS=1`` forces bars on, ``0`` off.
"""
from __future__ import annotations

import os
import sys
from typing import Iterable, Optional, TypeVar

T = TypeVar("T")
PROGRESS_ENV_VAR = "CLIP_BIOMED_PROGRESS"


def progress_enabled() -> bool:
    forced = os.environ.get(PROGRESS_ENV_VAR, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def progress(iterable: Iterable[T], desc: str = "", total: Optional[int] = None, unit: str = "it") -> Iterable[T]:
    if not progress_enabled():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc or None, total=total, unit=unit, file=sys.stderr, leave=False)


def echo(line: str) -> None:
    """Print ``line`` on stdout without breaking an active bar (one line per finished item in long
    loops: the record that stays in logs, where bars do not show)."""
    if progress_enabled():
        from tqdm import tqdm

        tqdm.write(line, file=sys.stdout)
    else:
        print(line, flush=True)
