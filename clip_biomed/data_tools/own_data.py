"""Your own labelled images -> classes and image paths, ready for a stratified split.

Two sources are understood:

* a folder with one sub-folder per class (images may sit in nested folders inside a class
  folder); the class name is the folder name with "_" read as " " (``normal_scan`` -> "normal
  scan"), as in the published archives; sub-folders without images are ignored;
* a CSV file with rows ``path,label[,classname]`` (an optional header row starts with
  ``path,label``); paths are relative to the CSV's folder or absolute. Labels are either all
  integers 0..n-1 (names from the classname column or from ``class_order``) or class names.

Labels follow the sorted folder names (CSV: sorted labels) unless ``class_order``
(DATASET.FOLDER.CLASSNAMES) lists every class, by folder name or class name, in the wanted order.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import Dict, List, Sequence

from clip_biomed.data_tools.images import IMAGE_EXTENSIONS, is_image_file


@dataclass
class LabelledImages:
    classnames: List[str]  # label i is classnames[i]
    paths_by_class: List[List[str]]  # per label: paths relative to the image folder (or absolute)


def folder_classname(folder: str) -> str:
    return folder.replace("_", " ")


def _images_under(folder: str, image_dir: str) -> List[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(os.path.relpath(os.path.join(dirpath, name), image_dir).replace(os.sep, "/")
                     for name in filenames if is_image_file(name) and not name.startswith("."))
    return sorted(found)


def _ordered(classes: Dict[str, List[str]], aliases: Dict[str, str], class_order: Sequence[str],
             source: str) -> LabelledImages:
    """Put ``classes`` ({classname: paths}) in label order. ``aliases`` maps each class's folder
    name or CSV label to its class name: the default order is that of the sorted folder names (as
    the published split helper does), and ``class_order`` may use either spelling."""
    if not class_order:
        names = [aliases[key] for key in sorted(aliases)]
    else:
        names = [aliases.get(name, name) for name in class_order]
        unknown = [given for given, name in zip(class_order, names) if name not in classes]
        missing = sorted(set(classes) - set(names))
        if unknown or missing or len(set(names)) != len(names):
            raise ValueError(
                f"DATASET.FOLDER.CLASSNAMES {list(class_order)} must list every class of {source} once; "
                f"found classes {sorted(classes)}" + (f"; unknown: {unknown}" if unknown else "")
                + (f"; not listed: {missing}" if missing else ""))
    return LabelledImages(names, [classes[name] for name in names])


def scan_class_folders(image_dir: str, class_order: Sequence[str] = ()) -> LabelledImages:
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"Image folder not found: {image_dir} (expected one sub-folder per class)")
    classes, aliases = {}, {}
    for folder in sorted(os.listdir(image_dir)):
        path = os.path.join(image_dir, folder)
        if folder.startswith(".") or not os.path.isdir(path):
            continue
        images = _images_under(path, image_dir)
        if not images:
            continue
        classname = folder_classname(folder)
        if classname in classes:
            raise ValueError(f"{image_dir}: two class folders both mean the class {classname!r}; rename one")
        classes[classname] = images
        aliases[folder] = classname
    if not classes:
        raise ValueError(f"No class sub-folders with images ({', '.join(IMAGE_EXTENSIONS)}) in {image_dir}")
    return _ordered(classes, aliases, class_order, image_dir)


def _read_csv_rows(csv_path: str) -> List[List[str]]:
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"Label CSV not found: {csv_path}")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = [[cell.strip() for cell in row] for row in csv.reader(f) if any(cell.strip() for cell in row)]
    if rows and [cell.lower() for cell in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    for number, row in enumerate(rows, start=1):
        if len(row) not in (2, 3) or not row[0] or not row[1]:
            raise ValueError(f"{csv_path}: data row {number} is {row}; expected path,label[,classname]")
    if not rows:
        raise ValueError(f"{csv_path} has no data rows (expected path,label[,classname])")
    return rows


def read_label_csv(csv_path: str, class_order: Sequence[str] = ()) -> LabelledImages:
    rows = _read_csv_rows(csv_path)
    integer_labels = all(row[1].lstrip("-").isdigit() for row in rows)
    classes: Dict[str, List[str]] = {}
    if integer_labels:
        names = _names_of_integer_labels(rows, class_order, csv_path)
        for row in rows:
            classes.setdefault(names[int(row[1])], []).append(row[0])
        return LabelledImages(names, [sorted(classes.get(name, [])) for name in names])
    aliases = {}
    for row in rows:
        name = row[2] if len(row) == 3 else folder_classname(row[1])
        if aliases.setdefault(row[1], name) != name:
            raise ValueError(f"{csv_path}: label {row[1]!r} has two class names, {aliases[row[1]]!r} and {name!r}")
        classes.setdefault(name, []).append(row[0])
    if len(classes) != len(aliases):
        raise ValueError(f"{csv_path}: different labels share a class name ({sorted(aliases)})")
    return _ordered({name: sorted(paths) for name, paths in classes.items()}, aliases, class_order, csv_path)


def _names_of_integer_labels(rows: List[List[str]], class_order: Sequence[str], csv_path: str) -> List[str]:
    labels = sorted({int(row[1]) for row in rows})
    if labels != list(range(len(labels))):
        raise ValueError(f"{csv_path}: integer labels must be 0..n-1 without gaps, found {labels}")
    names: Dict[int, str] = {}
    for row in rows:
        if len(row) == 3 and names.setdefault(int(row[1]), row[2]) != row[2]:
            raise ValueError(f"{csv_path}: label {row[1]} has two class names, {names[int(row[1])]!r} and {row[2]!r}")
    if class_order:
        if len(class_order) != len(labels):
            raise ValueError(f"DATASET.FOLDER.CLASSNAMES has {len(class_order)} names but {csv_path} has "
                             f"{len(labels)} labels (0..{len(labels) - 1})")
        ordered = list(class_order)
    elif len(names) == len(labels):
        ordered = [names[label] for label in labels]
    else:
        raise ValueError(f"{csv_path}: integer labels need class names, either as a third column "
                         f"(path,label,classname) or in DATASET.FOLDER.CLASSNAMES (label order)")
    if len(set(ordered)) != len(ordered):
        raise ValueError(f"{csv_path}: two labels share a class name: {ordered}")
    return ordered
