"""Contrastive alignment ("CLIP pre-training") of a small model on a labelled dataset.

A tiny random model (``tiny.py``) has unrelated image and text spaces: its image features do
separate the classes, but no text prompt points at them, so prompt learning on it stays at chance.
:func:`align_backbone` trains ALL weights of the model behind an open_clip backbone with the
symmetric CLIP loss on (image, caption) pairs from the train split of a dataset in the published
layout, the caption being a template filled with the class name ("a photo of a glioma tumor.",
"an image of glioma tumor", ...).  Afterwards "a photo of a {class}." classifies zero-shot, so
prompt learning starts from a model with some zero-shot ability, like the real backbones.

Published layout: ``<dataset_dir>/split_<NAME>.json`` lists ``[relative_path, label, classname]``
items; images live under ``<dataset_dir>/<NAME>/<relative_path>`` (``NAME`` = the folder's name).

The model trains in train mode (dropout, BatchNorm statistics) with AdamW, a cosine schedule and light
augmentation (random crops, flips), on one CPU thread when on the CPU.  Deterministic for a seed on
the CPU; the caller's random streams and thread count are left as they were.  Sized for tiny models
and small datasets (the whole split is held in memory as one tensor).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ..data_tools.images import read_rgb_image
from ..data_tools.splits import published_layout, read_split_file
from .base import Backbone, PreprocessInfo

# Varied phrasing, so that zero-shot works with other prompts than the first (which is the
# context CoOp / BiomedCoOp initialise from: "a photo of a" + class name).
CAPTION_TEMPLATES = (
    "a photo of a {}.",
    "{}",
    "an image of {}",
    "a medical image showing {}.",
    "this scan shows a {}.",
    "a picture of a {} case.",
)
ZERO_SHOT_TEMPLATE = CAPTION_TEMPLATES[0]
MAX_LOG_LOGIT_SCALE = 4.6052  # ln(100), CLIP's clamp of the learned temperature


@dataclass(frozen=True)
class AlignSettings:
    steps: int = 1000  # the tiny models' defaults per family: tiny.TINY_ALIGN_STEPS
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    min_crop_area: float = 0.6  # random crops keep at least this share of the image
    seed: int = 0


@dataclass(frozen=True)
class ImageSet:
    """The images of one split, resized and centre-cropped to the model's size, in [0, 1]."""

    pixels: torch.Tensor  # [N, 3, size, size] float32
    labels: torch.Tensor  # [N] long
    classnames: Tuple[str, ...]  # by label


@dataclass(frozen=True)
class AlignReport:
    steps: int
    images: int
    seconds: float
    final_loss: float


def split_file(dataset_dir) -> Path:
    """``<dataset_dir>/split_<NAME>.json``; FileNotFoundError saying what is expected if it is missing."""
    dataset_dir = Path(dataset_dir).expanduser()
    path = Path(published_layout(str(dataset_dir.parent), dataset_dir.name)[0])
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the dataset to align to must be in the published layout, i.e. "
            f"DIR/split_NAME.json and the images under DIR/NAME/ (DIR = ROOT/NAME). Write one with "
            f"`python -m clip_biomed.data_tools synthetic --out ROOT --name NAME` or download one with "
            f"`python -m clip_biomed.data_tools download NAME --root ROOT`")
    return path


def read_image_set(dataset_dir, split: str, preprocess: PreprocessInfo) -> ImageSet:
    """The ``split`` ("train", "val" or "test") of a dataset in the published layout."""
    path = split_file(dataset_dir)
    dataset_dir = path.parent
    image_dir = Path(published_layout(str(dataset_dir.parent), dataset_dir.name)[1])
    all_entries = read_split_file(str(path))
    entries = all_entries[split]
    if not entries:
        raise ValueError(f"{path} has no {split!r} items")
    interpolation = InterpolationMode(preprocess.interpolation)
    pixels = []
    for entry in entries:
        image = read_rgb_image(str(image_dir / entry.path), dataset=dataset_dir.name)
        # what the test transform does: shorter side to `size`, centre crop
        image = TF.center_crop(TF.resize(image, preprocess.size, interpolation=interpolation), preprocess.size)
        pixels.append(TF.to_tensor(image))
    names = {entry.label: entry.classname for entry in all_entries["train"]}  # train has every label 0..n-1
    return ImageSet(torch.stack(pixels), torch.tensor([entry.label for entry in entries]),
                    tuple(names[label] for label in range(len(names))))


def normalize(pixels: torch.Tensor, preprocess: PreprocessInfo) -> torch.Tensor:
    mean = torch.tensor(preprocess.mean, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std, device=pixels.device).view(1, 3, 1, 1)
    return (pixels - mean) / std


def random_crop_flip(pixels: torch.Tensor, min_area: float) -> torch.Tensor:
    """Per image: a random square crop of at least ``min_area`` of the image, resized back to full
    size, flipped left-right half of the time; one batched resampling instead of a loop."""
    n = pixels.shape[0]
    rand = torch.rand(n, 4, device=pixels.device)
    side = (min_area + (1.0 - min_area) * rand[:, 0]).sqrt()  # crop side as a fraction of the image
    shift_x = (2 * rand[:, 1] - 1) * (1 - side)  # keep the crop inside the image
    shift_y = (2 * rand[:, 2] - 1) * (1 - side)
    flip = torch.where(rand[:, 3] < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=pixels.device)
    theta[:, 0, 0] = side * flip
    theta[:, 0, 2] = shift_x
    theta[:, 1, 1] = side
    theta[:, 1, 2] = shift_y
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, image_labels: torch.Tensor,
                     text_labels: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP loss between a batch of images and a batch of captions, where every caption of
    an image's class is a positive (the target mass spread evenly over them): a batch holds several
    images per class and several captions per class.  With one caption per image and distinct
    labels it is exactly CLIP's loss."""
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    logits = logit_scale * image_features @ text_features.t()
    positives = (image_labels[:, None] == text_labels[None, :]).float()
    image_to_text = F.cross_entropy(logits, positives / positives.sum(dim=1, keepdim=True))
    text_to_image = F.cross_entropy(logits.t(), (positives / positives.sum(dim=0, keepdim=True)).t())
    return (image_to_text + text_to_image) / 2


def _open_clip_model(backbone: Backbone) -> torch.nn.Module:
    """The open_clip model behind ``backbone`` (every family of this package has one)."""
    model = getattr(backbone, "model", None)
    if not isinstance(getattr(model, "logit_scale", None), torch.nn.Parameter):
        raise ValueError(f"{backbone.name}: alignment trains backbones that wrap an open_clip model with a "
                         f"`logit_scale` parameter (all families of clip_biomed.backbones); "
                         f"{type(backbone).__name__} has none")
    return model


@contextmanager
def _one_cpu_thread():
    """Run on one CPU thread: a tiny model gains little from more, the result then does not depend
    on the machine's core count, and OpenMP threads slow down many-fold when other processes share
    the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _rng_devices(device: torch.device) -> List[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def align_backbone(backbone: Backbone, dataset_dir, settings: AlignSettings = AlignSettings()) -> AlignReport:
    """Train every weight of ``backbone``'s open_clip model in place (on the backbone's device) on the
    train split of ``dataset_dir``; the backbone stays frozen and in eval mode afterwards."""
    if settings.steps < 1:
        raise ValueError(f"the alignment needs at least 1 step, got {settings.steps}")
    model = _open_clip_model(backbone)
    device = backbone.device
    train = read_image_set(dataset_dir, "train", backbone.preprocess)
    pixels, labels = train.pixels.to(device), train.labels.to(device)
    # every template of every class at every step, so that each phrasing (above all the first one,
    # which prompt learners start from) must tell all classes apart
    captions = [template.format(name) for name in train.classnames for template in CAPTION_TEMPLATES]
    caption_ids = backbone.tokenize(captions)
    caption_labels = torch.arange(len(train.classnames), device=device).repeat_interleave(len(CAPTION_TEMPLATES))
    start = time.perf_counter()
    with torch.random.fork_rng(devices=_rng_devices(device)), _one_cpu_thread():
        torch.manual_seed(settings.seed)
        model.requires_grad_(True)
        # Train mode, as in CLIP pre-training (the Backbone wrapper itself always stays in eval mode):
        # BatchNorm (PMC-CLIP's ResNet) learns the data's statistics, and the BERT towers learn with
        # dropout on, so that BiomedCoOp's published training (text tower in train mode) does not
        # wreck the alignment: tiny BERTs aligned without dropout fell from 100% zero-shot to 50% or
        # 75% in 4 of 5 BiomedCoOp runs tried.
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.steps)
        batch_size = min(settings.batch_size, len(labels))
        for _ in range(settings.steps):
            batch = torch.randperm(len(labels), device=device)[:batch_size]
            images = normalize(random_crop_flip(pixels[batch], settings.min_crop_area), backbone.preprocess)
            # (the backbone's encoders trim the padding and are differentiable w.r.t. the weights)
            loss = contrastive_loss(backbone.encode_image(images), backbone.encode_text(caption_ids), labels[batch],
                                    caption_labels, model.logit_scale.exp())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, MAX_LOG_LOGIT_SCALE)
        model.requires_grad_(False)
        model.eval()
    return AlignReport(steps=settings.steps, images=len(labels), seconds=time.perf_counter() - start,
                       final_loss=loss.item())


@torch.no_grad()
def zero_shot_accuracy(backbone: Backbone, images: ImageSet, template: str = ZERO_SHOT_TEMPLATE) -> float:
    """Percentage of ``images`` whose nearest class prompt (``template`` + class name) is right."""
    text = F.normalize(backbone.encode_text(backbone.tokenize([template.format(c) for c in images.classnames])),
                       dim=-1)
    pixels = normalize(images.pixels.to(backbone.device), backbone.preprocess)
    predictions = [(F.normalize(backbone.encode_image(chunk), dim=-1) @ text.t()).argmax(dim=1)
                   for chunk in pixels.split(256)]
    return 100.0 * float((torch.cat(predictions).cpu() == images.labels).float().mean())
