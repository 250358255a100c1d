"""Helpers for tests anywhere in the project: tiny random backbones built fully offline.

    from clip_biomed.backbones.testing import make_tiny, build_tiny
    path = make_tiny("biomedclip", tmp_path / "bb")          # then MODEL.BACKBONE.NAME local-dir:<path>
    backbone = build_tiny("clip", tmp_path / "clip")

Writing + building takes well under a second per family on a CPU (the first open_clip import
costs a few seconds once).  Use a session-scoped fixture to share one directory per family.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import torch

from .base import Backbone
from .factory import build_backbone
from .sources import LOCAL_DIR
from .tiny import TINY_FAMILIES, write_tiny

__all__ = ["TINY_FAMILIES", "make_tiny", "tiny_name", "build_tiny"]


def make_tiny(family: str, out_dir: Union[str, Path], seed: int = 0) -> Path:
    """Write a tiny random model of ``family`` (biomedclip|clip|pubmedclip|pmcclip) into ``out_dir``."""
    return write_tiny(family, out_dir, seed=seed)


def tiny_name(path: Union[str, Path]) -> str:
    """The ``MODEL.BACKBONE.NAME`` of a tiny model directory."""
    return f"{LOCAL_DIR}{Path(path)}"


def build_tiny(family: str, out_dir: Union[str, Path], *, device: Union[str, torch.device, None] = "cpu",
               precision: str = "fp32", seed: int = 0) -> Backbone:
    """Write a tiny model into ``out_dir`` and build it (on the CPU unless told otherwise)."""
    return build_backbone(tiny_name(make_tiny(family, out_dir, seed=seed)), device=device, precision=precision)
