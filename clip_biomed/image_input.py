"""The data pipeline follows the backbone: image size, normalisation and interpolation from the model.

Dassl builds the data loaders from ``INPUT.SIZE``, ``INPUT.PIXEL_MEAN``, ``INPUT.PIXEL_STD`` and
``INPUT.INTERPOLATION`` before the model exists.  ``ClipTrainer.build_data_loader`` therefore reads the
backbone's preprocessing from its files first (``backbone_files(name).preprocess``, no model built) and
:func:`follow_backbone` sets those four keys to the model's values, so a 448-px model gets 448-px
inputs with the method's published YAML unchanged.  Which value wins:

* the backbone's, over the engine defaults and every YAML (the published YAMLs carry 224 px and
  CLIP's mean/std as placeholders; for the paper's four backbones these equal the model's values,
  so their runs and numbers do not change);
* the user's, for a key given on the ``train.py`` command line (``INPUT.SIZE "(336, 336)"``:
  ``train.py`` records such keys in ``INPUT.USER_KEYS``; a YAML may list keys there too);
* the configs', for every key, with ``INPUT.FOLLOW_BACKBONE False``.

Whatever wins, :func:`check_input_size` refuses a size the image tower cannot take (fixed position
embeddings or attention pool: the open_clip families), before any image is read; towers that
interpolate their position embeddings (transformers CLIP / SigLIP) take any size.
``INPUT.TRANSFORMS`` stays the user's choice (the mean/std only apply with ``normalize`` in it).
"""
from __future__ import annotations

from typing import List, Sequence

PREPROCESS_KEYS = ("SIZE", "PIXEL_MEAN", "PIXEL_STD", "INTERPOLATION")


def add_config(cfg) -> None:
    """The two INPUT keys of this module (``train.extend_cfg`` adds them)."""
    cfg.INPUT.FOLLOW_BACKBONE = True
    cfg.INPUT.USER_KEYS = ()


def mark_user_keys(cfg, opts: Sequence[str]) -> None:
    """Record the preprocessing keys that ``opts`` (trailing ``KEY VALUE`` pairs) set in ``INPUT.USER_KEYS``."""
    given = {key.split(".", 1)[1] for key in list(opts)[0::2] if key.startswith("INPUT.")}
    cfg.INPUT.USER_KEYS = tuple(sorted(set(cfg.INPUT.USER_KEYS) | (given & set(PREPROCESS_KEYS))))


def backbone_input(preprocess) -> dict:
    """The INPUT values of a backbone's :class:`~clip_biomed.backbones.PreprocessInfo`."""
    return {"SIZE": (preprocess.size, preprocess.size), "PIXEL_MEAN": list(preprocess.mean),
            "PIXEL_STD": list(preprocess.std), "INTERPOLATION": preprocess.interpolation}


def _same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return len(a) == len(b) and all(abs(float(x) - float(y)) < 1e-6 for x, y in zip(a, b))


def follow_backbone(cfg, preprocess, name: str) -> List[str]:
    """Set ``cfg.INPUT``'s preprocessing keys to the backbone's, except the user's (module docstring),
    after checking that the resulting size suits the backbone.  Returns one line per changed key."""
    follow = cfg.INPUT.get("FOLLOW_BACKBONE", True)
    kept = set(PREPROCESS_KEYS) if not follow else set(cfg.INPUT.get("USER_KEYS", ()))
    changed = {key: value for key, value in backbone_input(preprocess).items()
               if key not in kept and not _same(cfg.INPUT[key], value)}
    _check_size(tuple(changed.get("SIZE", cfg.INPUT.SIZE)), preprocess, name)
    notes = [f"INPUT.{key} {cfg.INPUT[key]} -> {value} (follows backbone {name}; INPUT.FOLLOW_BACKBONE False "
             "keeps the configured value)" for key, value in changed.items()]
    if changed:
        frozen = cfg.is_frozen()
        cfg.defrost()
        for key, value in changed.items():
            cfg.INPUT[key] = tuple(value) if key == "SIZE" else value
        if frozen:
            cfg.freeze()
    return notes


def check_input_size(cfg, preprocess, name: str) -> None:
    """The data pipeline must produce images the backbone's image tower can take."""
    _check_size(tuple(cfg.INPUT.SIZE), preprocess, name)


def _check_size(size: tuple, preprocess, name: str) -> None:
    native = preprocess.size
    if size == (native, native) or preprocess.resizable:
        return
    raise ValueError(
        f"INPUT.SIZE is {size} but backbone {name} takes only {native}x{native} images (its image tower's "
        f"position embeddings are fixed to that size): drop INPUT.SIZE from the command line (the data "
        f'pipeline then follows the backbone) or pass INPUT.SIZE "({native}, {native})"'
    )
