"""Checkpoint files with Dassl's layout and messages (dassl.md §8).

Layout: ``<dir>/model.pth.tar-<epoch>`` or ``<dir>/model-best.pth.tar``, plus ``<dir>/checkpoint``,
a one-line pointer to the latest file used by resume. Keys: state_dict, epoch (epochs completed),
optimizer, scheduler, val_result.

Difference from Dassl: files are read with ``torch.load(weights_only=True)`` (never arbitrary
unpickling). This project's checkpoints hold only plain state dicts, so they load directly.
Checkpoints written by real Dassl with a warmup scheduler (e.g. the published BiomedCoOp/CoOp
ones) also embed a pickled scheduler *object*; for those, each class or function that torch does not
allowlist is replaced by an inert placeholder (``UnloadableObject``; ``defaultdict`` by a plain dict),
so the weights load and nothing named in the file is executed.
"""
import os
import os.path as osp
import shutil
import warnings
from collections import OrderedDict

import torch

from clip_biomed.data_tools.files import atomic_write
from clip_biomed.engine.utils import mkdir_if_missing

__all__ = [
    "save_checkpoint", "load_checkpoint", "resume_from_checkpoint", "load_pretrained_weights",
    "model_file_name", "find_model_file", "LAST_CHECKPOINT", "UnloadableObject",
]

# Written after every epoch that is not the last one, so that an interrupted run resumes from its
# last completed epoch; a name the published layout never uses, removed once the run has finished.
LAST_CHECKPOINT = "model-last.pth.tar"


def model_file_name(epoch=None):
    """``model.pth.tar-<epoch>`` (a periodic checkpoint), or ``model-best.pth.tar`` without an epoch:
    the names save_checkpoint writes and load_model (and --eval-only's check) read."""
    return "model-best.pth.tar" if epoch is None else f"model.pth.tar-{epoch}"


def find_model_file(directory, name, epoch=None):
    """The checkpoint file of model ``name`` in a run folder ``directory``, or a clear error.

    ``epoch`` given: ``<name>/model.pth.tar-<epoch>``.  Without an epoch: ``model-best.pth.tar``
    when the run selected on val (TEST.FINAL_MODEL best_val), else the final checkpoint the
    ``checkpoint`` pointer names (Dassl would look only for model-best.pth.tar, which a
    last-step run never writes).  A run that has not finished is refused rather than evaluated.
    """
    folder = osp.join(directory, name)
    how = "pass --model-dir <OUTPUT_DIR of a training run> (it holds <name>/model.pth.tar-<epoch>)"
    if epoch is not None or osp.isfile(osp.join(folder, model_file_name(None))):
        path = osp.join(folder, model_file_name(epoch))
        if osp.isfile(path):
            return path
        found = sorted(f for f in os.listdir(folder) if f.startswith("model")) if osp.isdir(folder) else []
        raise FileNotFoundError(f'No model at "{path}" (found: {", ".join(found) or "nothing"}); {how} '
                                "and --load-epoch <epoch> (or no --load-epoch for the run's final checkpoint)")
    pointer = osp.join(folder, "checkpoint")
    latest = open(pointer).read().strip() if osp.isfile(pointer) else ""
    if latest == LAST_CHECKPOINT:
        last = torch.load(osp.join(folder, latest), map_location="cpu", weights_only=True)["epoch"]
        raise FileNotFoundError(f"The run in {directory} has not finished (its last completed epoch is {last}): "
                                "rerun the same command to resume it, or pass --load-epoch <epoch> of a "
                                "checkpoint it saved")
    if latest and osp.isfile(osp.join(folder, latest)):
        return osp.join(folder, latest)
    raise FileNotFoundError(f"No checkpoint in {folder} (no model-best.pth.tar and no finished run's "
                            f"checkpoint pointer); {how}")


class UnloadableObject:
    """Stands in for a pickled object whose class is not a plain tensor/container type.

    It accepts any construction arguments and keeps the pickled state in ``.state``; it runs no
    code from the checkpoint. Only legacy Dassl checkpoints produce these (in their "scheduler").
    """

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state


def _strip_module_prefix(state_dict):
    """DataParallel saves keys as ``module.x``; store/load them as ``x``."""
    return OrderedDict((k[7:] if k.startswith("module.") else k, v) for k, v in state_dict.items())


def save_checkpoint(state, save_dir, is_best=False, remove_module_from_keys=True, model_name="", quiet=False):
    """Save ``state`` to ``save_dir/<model_name or model.pth.tar-<epoch>>`` and update the pointer.

    The file is written under a temporary name and renamed, so a run killed while saving never
    leaves a truncated checkpoint behind.  ``quiet``: no "Checkpoint saved" line (per-epoch resume
    checkpoints, which Dassl does not write, stay out of the log)."""
    mkdir_if_missing(save_dir)
    if remove_module_from_keys:
        state["state_dict"] = _strip_module_prefix(state["state_dict"])
    fpath = osp.join(save_dir, model_name or model_file_name(state["epoch"]))
    with atomic_write(fpath, "wb") as f:
        torch.save(state, f)
    if not quiet:
        print(f"Checkpoint saved to {fpath}")
    with atomic_write(osp.join(save_dir, "checkpoint")) as f:
        f.write(f"{osp.basename(fpath)}\n")
    if is_best:
        best_fpath = osp.join(osp.dirname(fpath), "model-best.pth.tar")
        shutil.copy(fpath, best_fpath)
        print(f'Best checkpoint saved to "{best_fpath}"')


def _plain_dict(*args):
    """Stands in for ``collections.defaultdict`` (e.g. a pickled optimizer's ``state``)."""
    return {}


# Legacy globals rebuilt as plain containers; every other non-allowlisted global becomes inert.
_LEGACY_CONTAINERS = {"collections.defaultdict": _plain_dict, "builtins.dict": dict}


def _torch_load_weights_only(fpath, map_location):
    try:
        return torch.load(fpath, map_location=map_location, weights_only=True)
    except Exception as plain_error:
        # Legacy Dassl format: pickled scheduler/optimizer objects. Replace their classes by
        # inert placeholders and retry, still under weights_only.
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(fpath)
        if not unsafe:
            raise
        stand_ins = [(_LEGACY_CONTAINERS.get(name, UnloadableObject), name) for name in unsafe]
        with torch.serialization.safe_globals(stand_ins):
            try:
                return torch.load(fpath, map_location=map_location, weights_only=True)
            except Exception:
                raise plain_error from None


def load_checkpoint(fpath):
    """Load a checkpoint onto the GPU if one is available, else the CPU (weights_only)."""
    if fpath is None:
        raise ValueError("File path is None")
    if not osp.exists(fpath):
        raise FileNotFoundError(f'File is not found at "{fpath}"')
    map_location = None if torch.cuda.is_available() else "cpu"
    try:
        return _torch_load_weights_only(fpath, map_location)
    except Exception:
        print(f'Unable to load checkpoint from "{fpath}"')
        raise


def resume_from_checkpoint(fdir, model, optimizer=None, scheduler=None):
    """Restore model/optimizer/scheduler from the file named in ``fdir/checkpoint``; return its epoch."""
    with open(osp.join(fdir, "checkpoint"), "r") as f:
        fpath = osp.join(fdir, f.readlines()[0].strip("\n"))
    print(f'Loading checkpoint from "{fpath}"')
    checkpoint = load_checkpoint(fpath)
    model.load_state_dict(checkpoint["state_dict"])
    print("Loaded model weights")
    if optimizer is not None and "optimizer" in checkpoint.keys():
        optimizer.load_state_dict(checkpoint["optimizer"])
        print("Loaded optimizer")
    if scheduler is not None and "scheduler" in checkpoint.keys():
        scheduler.load_state_dict(checkpoint["scheduler"])
        print("Loaded scheduler")
    start_epoch = checkpoint["epoch"]
    print(f"Previous epoch: {start_epoch}")
    return start_epoch


def load_pretrained_weights(model, weight_path):
    """Copy into ``model`` every tensor of the file whose name and shape match; report the rest."""
    checkpoint = load_checkpoint(weight_path)
    state_dict = checkpoint["state_dict"] if "state_dict" in checkpoint else checkpoint
    model_dict = model.state_dict()
    matched, discarded = OrderedDict(), []
    for k, v in _strip_module_prefix(state_dict).items():
        if k in model_dict and model_dict[k].size() == v.size():
            matched[k] = v
        else:
            discarded.append(k)
    model_dict.update(matched)
    model.load_state_dict(model_dict)
    if not matched:
        warnings.warn(f"Cannot load {weight_path} (check the key names manually)")
    else:
        print(f"Successfully loaded pretrained weights from {weight_path}")
        if discarded:
            print(f"Layers discarded due to unmatched keys or size: {discarded}")
