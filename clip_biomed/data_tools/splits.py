"""Split files in the published format, stratified splitting, and the JSON few-shot cache.

A split file is ``{"train"|"val"|"test": [[relative_path, label, classname], ...]}`` with paths
relative to the dataset's image folder (the format of the published ``split_<NAME>.json``).

The few-shot cache replaces CoOp's pickles: ``split_fewshot/shot_K-seed_S.json`` holds the sampled
entries together with the sha256 of the split file they were drawn from, so a cache made from
another split file (or a damaged one) is detected instead of being trusted.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
from collections import Counter
from typing import Dict, List, Mapping, NamedTuple, Sequence, Tuple

from clip_biomed.data_tools.files import atomic_write

SPLIT_KEYS = ("train", "val", "test")
DEFAULT_SPLIT_RATIOS = (0.5, 0.2, 0.3)  # train/val/test per class, as the published split helper



class Entry(NamedTuple):
    """One line of a split file. It has a ``label`` like Dassl's Datum, so the engine's few-shot
    sampler can draw entries directly and only the chosen images need to become Datums."""

    path: str  # relative to the dataset's image folder
    label: int
    classname: str


Split = Dict[str, List[Entry]]


class SplitFileError(ValueError):
    """A split file or few-shot cache that cannot be used as it is; the message says why."""


def published_layout(root: str, name: str) -> Tuple[str, str]:
    """(split file, image folder) of dataset ``name`` under ``root`` in the published layout:
    ``<root>/<name>/split_<name>.json`` and ``<root>/<name>/<name>/``."""
    dataset_dir = os.path.join(root, name)
    return os.path.join(dataset_dir, f"split_{name}.json"), os.path.join(dataset_dir, name)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(obj, path: str) -> None:
    """Write JSON (indented like Dassl's write_json) so that readers never see a half-written file:
    parallel runs of a sweep may build the same cache at the same time."""
    with atomic_write(path, encoding="utf-8") as f:
        json.dump(obj, f, indent=4, separators=(",", ": "), ensure_ascii=False)


def _load_json(path: str):
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SplitFileError(f"{path} is not valid JSON ({err})") from err


def _as_entries(value, where: str) -> List[Entry]:
    if not isinstance(value, list):
        raise SplitFileError(f"{where} must be a list of [relative_path, label, classname]")
    entries = []
    for i, item in enumerate(value):
        ok = (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
              and isinstance(item[1], int) and not isinstance(item[1], bool) and isinstance(item[2], str))
        if not ok:
            raise SplitFileError(f"{where}[{i}] is {item!r}; expected [relative_path, label, classname]")
        entries.append(Entry(*item))
    return entries


def parse_split(data, source: str) -> Split:
    """Validate split data read from ``source`` and return it as tuples.

    Labels must be 0..n-1 in train (Dassl counts classes as max label + 1), every label must keep
    one class name, and val/test may only use labels that train has.
    """
    if not isinstance(data, dict) or any(key not in data for key in SPLIT_KEYS):
        raise SplitFileError(f"{source}: expected a JSON object with the keys {list(SPLIT_KEYS)}")
    split = {key: _as_entries(data[key], f"{source}: {key!r}") for key in SPLIT_KEYS}
    names: Dict[int, str] = {}
    for key in SPLIT_KEYS:
        for path, label, classname in split[key]:
            if names.setdefault(label, classname) != classname:
                raise SplitFileError(
                    f"{source}: label {label} is called both {names[label]!r} and {classname!r} ({key}: {path})")
    train_labels = {label for _, label, _ in split["train"]}
    if train_labels != set(range(len(train_labels))):
        raise SplitFileError(f"{source}: train labels must be 0..n-1 without gaps, found {sorted(train_labels)}")
    for key in ("val", "test"):
        unknown = {label for _, label, _ in split[key]} - train_labels
        if unknown:
            raise SplitFileError(f"{source}: {key} uses labels {sorted(unknown)} that train does not have")
    return split


def read_split_file(path: str) -> Split:
    return parse_split(_load_json(path), source=path)


def write_split_file(split: Mapping[str, Sequence[Entry]], path: str) -> None:
    write_json_atomic({key: [list(entry) for entry in split[key]] for key in SPLIT_KEYS}, path)


def _check_split_ratios(ratios: Sequence[float]) -> Tuple[float, float, float]:
    if len(ratios) != 3 or any(r <= 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(
            f"Split ratios must be three positive numbers (train, val, test) summing to 1, got {list(ratios)}")
    return tuple(float(r) for r in ratios)


def stratified_split(paths_by_class: Sequence[Sequence[str]], classnames: Sequence[str],
                     ratios: Sequence[float] = DEFAULT_SPLIT_RATIOS, seed: int = 1) -> Split:
    """Split each class separately (label i = classnames[i]) into train/val/test.

    Paths are sorted before a shuffle with a private ``random.Random(seed)``: the split depends on
    neither the filesystem order nor the global RNG, so creating it does not move the few-shot draw
    that follows, and every training seed sees the same split.
    """
    train_ratio, val_ratio, _ = _check_split_ratios(ratios)
    rng = random.Random(seed)
    split: Split = {key: [] for key in SPLIT_KEYS}
    for label, (classname, paths) in enumerate(zip(classnames, paths_by_class)):
        shuffled = sorted(paths)
        rng.shuffle(shuffled)
        n_train = round(len(shuffled) * train_ratio)
        n_val = round(len(shuffled) * val_ratio)
        if n_train < 1 or n_val < 1 or len(shuffled) - n_train - n_val < 1:
            raise ValueError(
                f"Class {classname!r} has {len(shuffled)} images, too few for a train/val/test split with "
                f"ratios {list(ratios)}: add images to it or change the ratios")
        parts = {"train": shuffled[:n_train], "val": shuffled[n_train:n_train + n_val],
                 "test": shuffled[n_train + n_val:]}
        for key in SPLIT_KEYS:
            split[key].extend(Entry(path, label, classname) for path in parts[key])
    return split


def fewshot_cache_path(fewshot_dir: str, num_shots: int, seed: int) -> str:
    return os.path.join(fewshot_dir, f"shot_{num_shots}-seed_{seed}.json")


def write_fewshot_cache(path: str, subsets: Mapping[str, Sequence[Entry]], *, split_file: str,
                        split_sha256: str, shots: Mapping[str, int], seed: int) -> None:
    write_json_atomic({
        "split_file": os.path.basename(split_file),
        "split_sha256": split_sha256,
        "seed": seed,
        "shots": dict(shots),
        **{part: [list(entry) for entry in entries] for part, entries in subsets.items()},
    }, path)


def read_fewshot_cache(path: str, split: Split, *, split_sha256: str, shots: Mapping[str, int],
                       seed: int) -> Split:
    """Return the cached subsets ({part: entries} for each part in ``shots``).

    Raises SplitFileError saying why the cache does not belong to this split file, K and seed, or
    why its content is not a K-shot subset of it.
    """
    data = _load_json(path)
    if not isinstance(data, dict):
        raise SplitFileError(f"{path}: expected a JSON object")
    if data.get("split_sha256") != split_sha256:
        raise SplitFileError(f"{path} was drawn from a different split file (sha256 differs)")
    if data.get("seed") != seed or data.get("shots") != dict(shots):
        raise SplitFileError(f"{path} is for seed {data.get('seed')} and shots {data.get('shots')}, "
                             f"not seed {seed} and shots {dict(shots)}")
    subsets = {}
    for part, num_shots in shots.items():
        entries = _as_entries(data.get(part), f"{path}: {part!r}")
        if not set(entries) <= set(split[part]):
            raise SplitFileError(f"{path}: {part!r} lists items that are not in the split file's {part!r}")
        expected = {label: min(num_shots, count) for label, count in Counter(e[1] for e in split[part]).items()}
        if dict(Counter(e[1] for e in entries)) != expected:
            raise SplitFileError(f"{path}: {part!r} does not hold {num_shots} items of every class")
        subsets[part] = entries
    return subsets


SUBSAMPLE_CHOICES = ("all", "base", "new")  # DATASET.SUBSAMPLE_CLASSES


def base_new_labels(labels, subsample):
    """{old label: new label} of the classes that ``subsample`` keeps (CoOp's rule).

    With n distinct ``labels`` and m = ceil(n / 2), "base" keeps labels 0..m-1 and "new" keeps
    m..n-1 relabelled to 0..n-m-1; "all" keeps every label as it is.
    """
    if subsample not in SUBSAMPLE_CHOICES:
        raise ValueError(f"DATASET.SUBSAMPLE_CLASSES must be one of {list(SUBSAMPLE_CHOICES)}, got {subsample!r}")
    labels = sorted(set(labels))
    if subsample == "all":
        return {label: label for label in labels}
    m = math.ceil(len(labels) / 2)
    kept = labels[:m] if subsample == "base" else labels[m:]
    return {label: new_label for new_label, label in enumerate(kept)}
