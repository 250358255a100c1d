"""``build_backbone``: a name -> a frozen Backbone on a device; ``download_backbone``: an offline copy."""
from __future__ import annotations

from pathlib import Path
from typing import Union

import torch

from ..precision import Precision
from .base import Backbone
from .formats import files_from_dir
from .hub import ModelNotAvailableError, offline_requested
from .sources import LOCAL_DIR, resolve


def backbone_files(name: str):
    """The format record of backbone ``name`` (``formats.py``): its files, downloaded into the Hugging
    Face cache if needed, and facts such as ``.preprocess`` read from them without building the model."""
    return resolve(name)


def build_backbone(name: str, device: Union[str, torch.device, None] = None,
                   precision: str = "fp32", files=None) -> Backbone:
    """The backbone ``name`` (see ``sources.py``), frozen (no parameter requires grad), in eval mode.

    ``device``: default CUDA when available, else CPU.  ``precision`` (``fp32|fp16|bf16|amp``, see
    ``clip_biomed.precision``) sets the dtype the frozen weights are stored in; the backbone's
    outputs are float32 whatever it is.  ``files``: the record :func:`backbone_files` returned for
    ``name``, when the caller already has it.
    """
    precision = Precision(precision, device)
    backbone = (files or resolve(name)).build(name)
    backbone.requires_grad_(False)
    backbone.to(device=precision.device, dtype=precision.weight_dtype)
    return backbone.eval()


def download_backbone(name: str, out_dir: Union[str, Path]) -> Path:
    """Download backbone ``name`` and write it to ``out_dir`` in the layout ``local-dir:`` reads."""
    if name.startswith(LOCAL_DIR):
        raise ValueError(f"{name} is already a local directory; nothing to download")
    if offline_requested():
        raise ModelNotAvailableError("downloading needs the Hugging Face Hub, but offline mode is on: "
                                     "unset HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE")
    out = Path(out_dir).expanduser()
    resolve(name).export(out)
    files_from_dir(out)  # the copy must be readable as local-dir:
    return out
