"""Small synthetic datasets whose classes can be learnt, for tests, demos and smoke runs.

Each class has its own colour (hues spread evenly) and shape (disk, square, ring, cross, in turn),
drawn at a random position and size on a noisy background, so a classifier (even a linear probe on
random features) can separate the classes while no two images are equal; ``overlap`` > 0 makes
neighbouring classes overlap (jittered hues, shapes of other classes, more noise), so that the task
is not trivially easy. Class names are those
of a published dataset (label order included) or any list given.

Layouts (``layout``):
  published  <out>/<NAME>/<NAME>/<class_folder>/*.png + <out>/<NAME>/split_<NAME>.json (50/20/30)
  folder     <out>/<NAME>/<class_folder>/*.png (for FolderDataset, DATASET.FOLDER.IMAGE_DIR)
  csv        <out>/<NAME>/images/*.png + <out>/<NAME>/labels.csv with path,label,classname
"""
from __future__ import annotations

import colorsys
import csv
import os
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from clip_biomed.data_tools.catalog import class_folder, published_dataset
from clip_biomed.data_tools.splits import published_layout, stratified_split, write_split_file

LAYOUTS = ("published", "folder", "csv")
_SHAPES = ("disk", "square", "ring", "cross")


def _shape_mask(shape: str, dy: np.ndarray, dx: np.ndarray, radius: float) -> np.ndarray:
    distance = np.hypot(dy, dx)
    if shape == "disk":
        return distance <= radius
    if shape == "square":
        return np.maximum(np.abs(dy), np.abs(dx)) <= 0.85 * radius
    if shape == "ring":
        return (distance <= radius) & (distance >= 0.55 * radius)
    arm = 0.3 * radius  # cross
    return ((np.abs(dx) <= arm) & (np.abs(dy) <= radius)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= radius))


def synthetic_image(label: int, num_classes: int, size: int, rng: np.random.Generator,
                    overlap: float = 0.0) -> np.ndarray:
    """An RGB uint8 image of class ``label``: class colour and shape, random placement and noise.

    ``overlap`` in [0, 1] blurs the classes: the hue is jittered (standard deviation ``overlap`` times
    half the hue step between classes), the shape is another class's with probability ``overlap / 2``
    and the pixel noise grows (standard deviation 12 + 30 * ``overlap``), so neighbouring classes share
    images and no classifier reaches 100%.  At 0 the classes are separable (and the images are those
    this function always wrote: the extra random draws happen only when ``overlap`` > 0)."""
    hue, shape_label = label / num_classes, label
    if overlap > 0:
        hue += rng.normal(0.0, overlap * 0.5 / num_classes)
        if rng.uniform() < 0.5 * overlap:
            shape_label = int(rng.integers(num_classes))
    colour = 255.0 * np.array(colorsys.hsv_to_rgb(hue % 1.0, 0.85, 0.95))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    centre = rng.uniform(0.3 * size, 0.7 * size, size=2)
    radius = rng.uniform(0.2, 0.32) * size
    mask = _shape_mask(_SHAPES[shape_label % len(_SHAPES)], yy - centre[0], xx - centre[1], radius)
    image = np.full((size, size, 3), rng.uniform(15, 60))
    image[mask] = colour * rng.uniform(0.8, 1.0)
    image += rng.normal(0.0, 12.0 + 30.0 * overlap, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def write_synthetic_dataset(out: str, name: str, classnames: Optional[Sequence[str]] = None,
                            layout: str = "published", per_class: int = 20, size: int = 32, seed: int = 0,
                            overlap: float = 0.0) -> str:
    """Write the dataset and return its folder (<out>/<name>). ``classnames`` defaults to the class
    names of the published dataset ``name``; ``overlap``: see :func:`synthetic_image`."""
    if not 0.0 <= overlap <= 1.0:
        raise ValueError(f"overlap must be between 0 and 1, got {overlap}")
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown layout {layout!r}; choose one of {list(LAYOUTS)}")
    if per_class < 3:
        raise ValueError(f"per_class must be at least 3 (one image each for train, val and test), got {per_class}")
    classnames = list(classnames) if classnames else list(published_dataset(name).classnames)
    rng = np.random.default_rng(seed)
    dataset_dir = os.path.join(os.path.expanduser(out), name)
    split_path, published_images = published_layout(os.path.expanduser(out), name)
    image_dir = {"published": published_images, "folder": dataset_dir, "csv": dataset_dir}[layout]
    paths_by_class = []
    for label, classname in enumerate(classnames):
        folder = class_folder(classname)
        if layout == "csv":
            paths = [f"images/{folder}_{i:04d}.png" for i in range(per_class)]
        else:
            paths = [f"{folder}/{folder}_{i:04d}.png" for i in range(per_class)]
        for path in paths:
            target = os.path.join(image_dir, path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            pixels = synthetic_image(label, len(classnames), size, rng, overlap)
            Image.fromarray(pixels).save(target, compress_level=1)
        paths_by_class.append(paths)

    if layout == "published":
        split = stratified_split(paths_by_class, classnames, seed=seed)
        write_split_file(split, split_path)
    elif layout == "csv":
        with open(os.path.join(dataset_dir, "labels.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", "classname"])
            for label, (classname, paths) in enumerate(zip(classnames, paths_by_class)):
                writer.writerows([path, label, classname] for path in paths)
    return dataset_dir
