"""Fetching model files from the Hugging Face Hub without hanging on offline machines.

huggingface_hub retries an unreachable hub for about 25 s per file before it gives up, and
open_clip / transformers fetch several files per model.  Every hub access of the backbones goes
through :func:`fetch` instead, which decides once whether the hub can be used at all:

* offline mode requested (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``, read at call time, so a
  value set after ``huggingface_hub`` was imported still counts), or the hub endpoint does not
  answer a single short request: files come from the local Hugging Face cache only;
* otherwise: normal download into the cache (already cached files are not downloaded again).

A file that cannot be had raises :class:`HubFileUnavailable`; ``sources.py`` turns it into a
:class:`ModelNotAvailableError` that says how to provide the model offline.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Optional, Sequence

_TRUE_VALUES = {"1", "on", "yes", "true"}
REACHABILITY_TIMEOUT_S = 3.0


class ModelNotAvailableError(FileNotFoundError):
    """The files of a backbone are not on this machine and cannot be downloaded now."""


class HubFileUnavailable(Exception):
    """One hub file is neither in the local cache nor downloadable (``sources.py`` adds the fix)."""

    def __init__(self, repo_id: str, filename: str, reason: str):
        self.repo_id, self.filename, self.reason = repo_id, filename, reason
        super().__init__(f"{filename} of {repo_id}: {reason}")


def offline_requested() -> bool:
    """True when the user asked for offline mode (environment, or huggingface_hub's own flag)."""
    if any(os.environ.get(var, "").strip().lower() in _TRUE_VALUES
           for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    from huggingface_hub import constants
    return bool(constants.HF_HUB_OFFLINE)


@functools.lru_cache(maxsize=None)
def _endpoint_reachable() -> bool:
    """One short request to the hub endpoint, no retries (asked at most once per process)."""
    from huggingface_hub import constants, get_session
    try:
        get_session().head(constants.ENDPOINT, timeout=REACHABILITY_TIMEOUT_S)
    except Exception:  # any failure (DNS, proxy, timeout, offline mode) means: do not wait for it
        return False
    return True


def hub_usable() -> bool:
    return not offline_requested() and _endpoint_reachable()


def _why_offline() -> str:
    if offline_requested():
        return "offline mode is on (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE) and it is not in the local Hugging Face cache"
    return "huggingface.co cannot be reached and it is not in the local Hugging Face cache"


def fetch(repo_id: str, filename: str, *, repo_type: Optional[str] = None,
          required: bool = True) -> Optional[Path]:
    """Local path of ``filename`` from hub repo ``repo_id`` (downloaded into the HF cache if needed).

    With ``required=False`` a file the repository does not have gives ``None``.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

    online = hub_usable()
    try:
        return Path(hf_hub_download(repo_id, filename, repo_type=repo_type, local_files_only=not online))
    except LocalEntryNotFoundError as err:
        if not required:
            return None
        raise HubFileUnavailable(repo_id, filename, _why_offline()) from err
    except EntryNotFoundError as err:  # the repository exists but has no such file
        if not required:
            return None
        raise HubFileUnavailable(repo_id, filename, "the repository has no such file") from err
    except Exception as err:  # unknown/gated repository, HTTP error: keep the hub's own words
        raise HubFileUnavailable(repo_id, filename, f"{type(err).__name__}: {err}") from err


def fetch_first(repo_id: str, filenames: Sequence[str], *, repo_type: Optional[str] = None) -> Path:
    """The first of ``filenames`` that the repository has (e.g. safetensors before .bin)."""
    for name in filenames:
        path = fetch(repo_id, name, repo_type=repo_type, required=False)
        if path is not None:
            return path
    raise HubFileUnavailable(repo_id, " or ".join(filenames),
                             _why_offline() if not hub_usable() else "the repository has none of them")
