"""The frozen-feature cache: image features of a frozen backbone, stored on disk and reused.

Every method keeps the backbone frozen, so the features of a test set under the deterministic test
transform are the same for every method, seed and shot count; the cache computes them once.  An
entry is one *split* (the ordered images of one data loader) encoded by one backbone: the
L2-normalised float32 features ``[N, D]`` and the labels ``[N]``, exactly as the trainer's evaluation
loop produced them batch by batch.  ``ClipTrainer.frozen_feature_batches`` reads and writes it, so
every frozen-image-feature method gets it without code of its own; feature-based methods also keep
the features of their augmented training views here (``feature_trainer.py``).

Key (``entry_key`` hashes all of it; the readable fields are stored in the entry):

* the backbone's *weights*: a SHA-256 of the image tower's state dict (names, dtypes, shapes and
  bytes), computed once per run and memoised on the module while no tensor of it is replaced or
  modified in place (their ``_version`` counters); plus the backbone's class and family;
* the precision (``TRAINER.<NODE>.PREC``), the device kind (CPU, or the GPU's name) and the
  versions of torch, torchvision, Pillow, open_clip and timm (any of them can change the bits);
* the dataset name and the SHA-256 of its split file;
* the images, in order: path, label, size and modification time (ns) of every file.  A file
  rewritten in place with the same size within the file system's timestamp resolution is not
  noticed: touch it (or delete the entry) after such an edit;
* the transform: ``repr`` of the loader's transform (every op with its parameters: for the test
  transform resize, centre crop, normalisation), ``INPUT.SIZE/INTERPOLATION/PIXEL_MEAN/PIXEL_STD``,
  and the dataset wrapper's class.  The training augmentations do not enter a test entry's key, so
  methods with different training pipelines share their test features;
* the batch size of the encoding (batched kernels may differ in the last bits between sizes);
* what the caller adds (e.g. the seed and view index of an augmented training view).

Storage: ``<dir>/v<FORMAT_VERSION>/<key[:2]>/<key>.safetensors``, plain tensors with a JSON
metadata header (key, fields, SHA-256 of the tensors); never pickles.  Writes go to a temporary
file in the same folder and are renamed into place (``os.replace``), so concurrent writers of one
entry all finish and one complete entry remains.  A truncated or corrupt entry (unreadable header,
wrong key, shapes or checksum) is reported, removed and rebuilt.  A folder that cannot be written
is reported once; the run goes on without the cache.

Configuration (``add_config``, called by ``train.py``'s ``extend_cfg``): ``FEATURE_CACHE.ENABLED``
(default True) and ``FEATURE_CACHE.DIR`` (default empty: ``$CLIP_BIOMED_FEATURE_CACHE``, else
``$XDG_CACHE_HOME/clip_biomed/features``, else ``~/.cache/clip_biomed/features``).  Details:
docs/feature_cache.md.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import weakref
from importlib import metadata
from typing import Callable, Dict, Iterable, Iterator, Optional, Sequence, Tuple

import torch
from torch import Tensor
from yacs.config import CfgNode as CN

from clip_biomed.data_tools.splits import file_sha256

__all__ = ["FORMAT_VERSION", "CACHE_DIR_ENV", "add_config", "default_directory", "cache_from_config",
           "weights_fingerprint", "forget_fingerprints", "images_signature", "loader_fields", "backbone_fields",
           "dataset_fields", "entry_key", "draw_loader_seed", "FeatureCache"]

FORMAT_VERSION = 1  # bump when what an entry holds, or how features are computed, changes
CACHE_DIR_ENV = "CLIP_BIOMED_FEATURE_CACHE"
_LIBRARIES = ("torch", "torchvision", "pillow", "open_clip_torch", "timm")

Batches = Iterable[Tuple[Tensor, Tensor]]


def add_config(cfg) -> None:
    """``FEATURE_CACHE.ENABLED`` and ``FEATURE_CACHE.DIR`` (empty: :func:`default_directory`)."""
    cfg.FEATURE_CACHE = CN()
    cfg.FEATURE_CACHE.ENABLED = True
    cfg.FEATURE_CACHE.DIR = ""


def default_directory() -> str:
    """``$CLIP_BIOMED_FEATURE_CACHE``, else the user's cache folder: outside any repository."""
    if os.environ.get(CACHE_DIR_ENV):
        return os.path.expanduser(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "clip_biomed", "features")


def cache_from_config(cfg) -> Optional["FeatureCache"]:
    """The cache ``cfg`` asks for, or None when ``FEATURE_CACHE.ENABLED`` is False.  A config built
    without ``add_config`` (e.g. by a script of one's own) gets the defaults."""
    node = cfg.get("FEATURE_CACHE")
    if node is not None and not node.ENABLED:
        return None
    directory = os.path.expanduser(node.DIR) if node is not None and node.DIR else default_directory()
    return FeatureCache(directory)


# --- the parts of a key ---------------------------------------------------------------------------

_FINGERPRINTS: "weakref.WeakKeyDictionary[torch.nn.Module, Tuple[tuple, str]]" = weakref.WeakKeyDictionary()


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    flat = tensor.detach().reshape(-1).contiguous().cpu()
    return memoryview(flat.view(torch.uint8).numpy())


def weights_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 of ``module``'s state dict (names, dtypes, shapes, bytes).

    Hashing runs at memory speed (~0.2 s for ViT-B/16's 86M parameters on one CPU core) and is
    memoised on the module: while every tensor is the same object, at the same address, with the
    same in-place version counter, the memoised digest is returned.  Edits through ``.data``
    bypass version counters; code that changes frozen weights that way must call
    :func:`forget_fingerprints`.
    """
    state = module.state_dict(keep_vars=True)
    stamp = tuple((name, id(value), value.data_ptr(), value._version) if torch.is_tensor(value) else (name, repr(value))
                  for name, value in state.items())
    memo = _FINGERPRINTS.get(module)
    if memo is not None and memo[0] == stamp:
        return memo[1]
    digest = hashlib.sha256()
    for name, value in state.items():
        if torch.is_tensor(value):
            digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}\n".encode())
            digest.update(_tensor_bytes(value))
        else:
            digest.update(f"{name}|{value!r}\n".encode())
    _FINGERPRINTS[module] = (stamp, digest.hexdigest())
    return _FINGERPRINTS[module][1]


def forget_fingerprints() -> None:
    """Drop the memoised weight fingerprints (the next lookup hashes the weights again)."""
    _FINGERPRINTS.clear()


def images_signature(items: Sequence) -> str:
    """SHA-256 over (path, label, size, mtime_ns) of each Dassl ``Datum``, in order."""
    digest = hashlib.sha256()
    for item in items:
        stat = os.stat(item.impath)
        digest.update(f"{item.impath}\t{item.label}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _library_versions() -> Dict[str, str]:
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def _device_kind(device: torch.device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def loader_fields(loader) -> Optional[dict]:
    """The images and transform of a Dassl-style loader (a ``DatasetWrapper`` with ``data_source``
    and ``transform``, read in order), or None when the loader is not one the cache can describe."""
    wrapper = getattr(loader, "dataset", None)
    items = getattr(wrapper, "data_source", None)
    if items is None or not hasattr(wrapper, "transform"):
        return None
    if not isinstance(getattr(loader, "sampler", None), torch.utils.data.SequentialSampler):
        return None  # the stored order must be the order the items are listed in
    return {
        "n_images": len(items),
        "images_sha256": images_signature(items),
        "transform": repr(wrapper.transform),
        "wrapper": f"{type(wrapper).__module__}.{type(wrapper).__qualname__}",
        "batch_size": loader.batch_size,
    }


def backbone_fields(backbone, precision: str, device) -> dict:
    """What of the backbone and the machine decides the bits of its image features."""
    return {
        "backbone_class": f"{type(backbone).__module__}.{type(backbone).__qualname__}",
        "family": getattr(backbone, "family", ""),
        "image_tower_sha256": weights_fingerprint(backbone.image_tower),
        "precision": precision,
        "device": _device_kind(device),
        "libraries": _library_versions(),
    }


def dataset_fields(cfg, dataset) -> dict:
    split_file = getattr(dataset, "split_path", None)
    return {
        "dataset": cfg.DATASET.NAME,
        "split_file_sha256": file_sha256(split_file) if split_file and os.path.isfile(split_file) else None,
        # the pipeline itself is in the loader's transform; these are the parameters every method shares
        "input": {key: list(cfg.INPUT[key]) if isinstance(cfg.INPUT[key], (list, tuple)) else cfg.INPUT[key]
                  for key in ("SIZE", "INTERPOLATION", "PIXEL_MEAN", "PIXEL_STD")},
    }


def entry_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


# --- the store ---------------------------------------------------------------------------------------


class CorruptEntry(ValueError):
    """An entry file that cannot be trusted."""


def _checksum(tensors: Dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(f"{name}|{tensors[name].dtype}|{tuple(tensors[name].shape)}\n".encode())
        digest.update(_tensor_bytes(tensors[name]))
    return digest.hexdigest()


class FeatureCache:
    """A folder of entries (see the module docstring)."""

    def __init__(self, directory: str):
        self.directory = os.path.abspath(directory)
        self._unwritable = False

    def path(self, key: str) -> str:
        return os.path.join(self.directory, f"v{FORMAT_VERSION}", key[:2], f"{key}.safetensors")

    def load(self, fields: dict) -> Optional[Dict[str, torch.Tensor]]:
        """The tensors of the entry for ``fields`` (on the CPU), or None if there is none.  A corrupt
        entry is reported and removed, so that it is rebuilt."""
        key = entry_key(fields)
        path = self.path(key)
        if not os.path.isfile(path):
            return None
        try:
            return self._read(path, key, fields)
        except (CorruptEntry, OSError) as error:
            print(f"Feature cache: the entry {path} is corrupt ({error}); rebuilding it")
            try:
                os.remove(path)
            except OSError:
                pass
            return None

    @staticmethod
    def _read(path: str, key: str, fields: dict) -> Dict[str, torch.Tensor]:
        from safetensors import SafetensorError
        from safetensors.torch import load

        with open(path, "rb") as f:
            data = f.read()
        try:
            header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
            tensors = load(data)
        except (SafetensorError, ValueError, UnicodeDecodeError, OverflowError) as error:
            raise CorruptEntry(f"unreadable: {error}") from None
        info = header.get("__metadata__") or {}
        if info.get("key") != key or json.loads(info.get("fields", "null")) != json.loads(json.dumps(fields)):
            raise CorruptEntry("it belongs to another key")
        features, labels = tensors.get("features"), tensors.get("labels")
        if features is None or labels is None or features.dim() != 2 or labels.shape != features.shape[:1]:
            raise CorruptEntry("unexpected tensors")
        if info.get("checksum") != _checksum(tensors):
            raise CorruptEntry("checksum mismatch")
        return tensors

    def save(self, fields: dict, features: torch.Tensor, labels: torch.Tensor) -> Optional[str]:
        """Write the entry atomically; returns its path, or None when the folder is not writable."""
        from safetensors.torch import save

        tensors = {"features": features.detach().float().cpu().contiguous(),
                   "labels": labels.detach().long().cpu().contiguous()}
        key = entry_key(fields)
        path = self.path(key)
        info = {"key": key, "format": str(FORMAT_VERSION), "fields": json.dumps(fields, sort_keys=True),
                "checksum": _checksum(tensors)}
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            handle, partial = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".partial", dir=os.path.dirname(path))
            try:
                with os.fdopen(handle, "wb") as f:
                    f.write(save(tensors, metadata=info))
                os.replace(partial, path)
            finally:
                if os.path.exists(partial):
                    os.remove(partial)
        except OSError as error:
            if not self._unwritable:
                print(f"Feature cache: cannot write to {self.directory} ({error}); continuing without caching "
                      f"(set FEATURE_CACHE.DIR or ${CACHE_DIR_ENV} to a writable folder)")
            self._unwritable = True
            return None
        return path

    def batches(self, fields: dict, encode: Callable[[], Batches], batch_size: int, device,
                on_hit: Callable[[], None] = lambda: None, what: str = "images") -> Iterator[Tuple[Tensor, Tensor]]:
        """(features, labels) batches of the entry for ``fields``: read from the cache in batches of
        ``batch_size`` when it exists (then ``on_hit()`` runs, e.g. to draw what iterating the
        loader would have drawn from the RNG), else those of ``encode()``, which are stored."""
        entry = self.load(fields)
        if entry is not None:
            print(f"Read the features of the {what} from the feature cache ({self.path(entry_key(fields))})")
            on_hit()
            features, labels = entry["features"], entry["labels"]
            for start in range(0, len(labels), batch_size):
                yield (features[start:start + batch_size].to(device), labels[start:start + batch_size].to(device))
            return
        chunks, label_chunks = [], []
        for features, labels in encode():
            chunks.append(features.detach().to("cpu", copy=True))  # a copy: the caller may change its batch
            label_chunks.append(labels.detach().to("cpu", copy=True))
            yield features, labels
        if chunks and self.save(fields, torch.cat(chunks), torch.cat(label_chunks)):
            print(f"Stored the features of the {what} in the feature cache ({self.path(entry_key(fields))})")


def draw_loader_seed(loader) -> None:
    """Draw from the torch RNG what ``iter(loader)`` draws (its workers' base seed), so that reading
    a loader's features from the cache leaves the RNG where encoding them would have left it."""
    torch.empty((), dtype=torch.int64).random_(generator=loader.generator)
