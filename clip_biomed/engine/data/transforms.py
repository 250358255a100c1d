"""Image transforms built from ``cfg.INPUT`` (dassl.md §4.6).

The train pipeline order is fixed by this code, not by the order of ``INPUT.TRANSFORMS``, and each
step prints the same line as Dassl. Building a pipeline draws no random numbers.

Random2DTranslation, Cutout, GaussianNoise and InstanceNormalization reproduce Dassl's ops,
including which RNG (python ``random``, numpy, torch) each one draws from.

Difference from Dassl: the policy/RandAugment family is mapped onto torchvision
(imagenet/cifar10/svhn_policy -> ``AutoAugment(policy)``, randaugment -> ``RandAugment(N, M)``,
randaugment_fixmatch and randaugment2 -> ``RandAugment(N)`` with a magnitude drawn per image).
Their op lists and random streams differ from Dassl's own ports, which cannot be reproduced on
current stacks anyway: those ports use ``np.int`` and fail on numpy >= 1.24. CoOp-style configs
use none of them.
"""
import random

import numpy as np
import torch
from torchvision.transforms import (
    AutoAugment, AutoAugmentPolicy, CenterCrop, ColorJitter, Compose, GaussianBlur, InterpolationMode,
    Normalize, RandAugment, RandomApply, RandomCrop, RandomGrayscale, RandomHorizontalFlip,
    RandomResizedCrop, Resize, ToTensor,
)
from torchvision.transforms import functional as F

__all__ = [
    "build_transform", "INTERPOLATION_MODES", "AVAI_CHOICES", "Random2DTranslation", "Cutout",
    "GaussianNoise", "InstanceNormalization", "RandomMagnitudeRandAugment",
]

AVAI_CHOICES = [
    "random_flip", "random_resized_crop", "normalize", "instance_norm", "random_crop",
    "random_translation", "center_crop", "cutout", "imagenet_policy", "cifar10_policy", "svhn_policy",
    "randaugment", "randaugment_fixmatch", "randaugment2", "gaussian_noise", "colorjitter",
    "randomgrayscale", "gaussian_blur",
]

INTERPOLATION_MODES = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


class Random2DTranslation:
    """With probability ``p`` enlarge by 1/8 and crop back at a random offset, else just resize.

    Dassl's op: always bilinear, draws from python ``random``.
    """

    def __init__(self, height, width, p=0.5, interpolation=InterpolationMode.BILINEAR):
        self.height = height
        self.width = width
        self.p = p
        self.interpolation = interpolation

    def __call__(self, img):
        if random.uniform(0, 1) > self.p:
            return F.resize(img, [self.height, self.width], interpolation=self.interpolation)
        new_width = int(round(self.width * 1.125))
        new_height = int(round(self.height * 1.125))
        resized = F.resize(img, [new_height, new_width], interpolation=self.interpolation)
        left = int(round(random.uniform(0, new_width - self.width)))
        top = int(round(random.uniform(0, new_height - self.height)))
        return F.crop(resized, top, left, self.height, self.width)


class Cutout:
    """Zero ``n_holes`` squares of side ``length`` (clipped at the border) in a CHW tensor; numpy centres."""

    def __init__(self, n_holes=1, length=16):
        self.n_holes = n_holes
        self.length = length

    def __call__(self, img):
        h, w = img.size(1), img.size(2)
        mask = np.ones((h, w), np.float32)
        for _ in range(self.n_holes):
            y = np.random.randint(h)
            x = np.random.randint(w)
            y1, y2 = np.clip([y - self.length // 2, y + self.length // 2], 0, h)
            x1, x2 = np.clip([x - self.length // 2, x + self.length // 2], 0, w)
            mask[y1:y2, x1:x2] = 0.0
        return img * torch.from_numpy(mask).expand_as(img)


class GaussianNoise:
    """With probability ``p`` (python ``random``) add ``torch.randn`` noise of the given mean/std."""

    def __init__(self, mean=0, std=0.15, p=0.5):
        self.mean = mean
        self.std = std
        self.p = p

    def __call__(self, img):
        if random.uniform(0, 1) > self.p:
            return img
        noise = torch.randn(img.size()) * self.std + self.mean  # summed before adding, as Dassl does
        return img + noise


class InstanceNormalization:
    """Per-channel (x - mean) / (std + eps) of a CHW tensor, with the unbiased std."""

    def __init__(self, eps=1e-8):
        self.eps = eps

    def __call__(self, img):
        channels = img.reshape(img.shape[0], -1)
        mean = channels.mean(1).view(-1, 1, 1)
        std = channels.std(1).view(-1, 1, 1)
        return (img - mean) / (std + self.eps)


class RandomMagnitudeRandAugment(RandAugment):
    """torchvision RandAugment whose magnitude is drawn (torch RNG) for every image, as in the
    FixMatch-style variants where each op gets a random strength."""

    def forward(self, img):
        self.magnitude = int(torch.randint(self.num_magnitude_bins, ()).item())
        return super().forward(img)


def build_transform(cfg, is_train=True, choices=None):
    """Return the train or test pipeline, or None when ``INPUT.NO_TRANSFORM``."""
    if cfg.INPUT.NO_TRANSFORM:
        print("Note: no transform is applied!")
        return None
    if choices is None:
        choices = cfg.INPUT.TRANSFORMS
    for choice in choices:
        assert choice in AVAI_CHOICES, f'Unknown transform "{choice}" in INPUT.TRANSFORMS; valid: {AVAI_CHOICES}'
    if cfg.INPUT.INTERPOLATION not in INTERPOLATION_MODES:
        raise ValueError(
            f'INPUT.INTERPOLATION must be one of {list(INTERPOLATION_MODES)}, got "{cfg.INPUT.INTERPOLATION}"'
        )
    build = _build_transform_train if is_train else _build_transform_test
    return Compose(build(cfg, choices))


def _build_transform_train(cfg, choices):
    print("Building transform_train")
    inp = cfg.INPUT
    size = inp.SIZE
    interp = INTERPOLATION_MODES[inp.INTERPOLATION]
    n, m = inp.RANDAUGMENT_N, inp.RANDAUGMENT_M
    # (choice, printed line, op factory) in the order Dassl applies them; factories so that only
    # the chosen ops are constructed.
    steps = [
        ("random_translation", "+ random translation", lambda: Random2DTranslation(size[0], size[1])),
        ("random_crop", f"+ random crop (padding = {inp.CROP_PADDING})",
         lambda: RandomCrop(size, padding=inp.CROP_PADDING)),
        ("random_resized_crop", f"+ random resized crop (size={size}, scale={inp.RRCROP_SCALE})",
         lambda: RandomResizedCrop(size, scale=inp.RRCROP_SCALE, interpolation=interp)),
        ("random_flip", "+ random flip", RandomHorizontalFlip),
        ("imagenet_policy", "+ imagenet policy", lambda: AutoAugment(AutoAugmentPolicy.IMAGENET)),
        ("cifar10_policy", "+ cifar10 policy", lambda: AutoAugment(AutoAugmentPolicy.CIFAR10)),
        ("svhn_policy", "+ svhn policy", lambda: AutoAugment(AutoAugmentPolicy.SVHN)),
        ("randaugment", f"+ randaugment (n={n}, m={m})", lambda: RandAugment(num_ops=n, magnitude=m)),
        ("randaugment_fixmatch", f"+ randaugment_fixmatch (n={n})", lambda: RandomMagnitudeRandAugment(num_ops=n)),
        ("randaugment2", f"+ randaugment2 (n={n})", lambda: RandomMagnitudeRandAugment(num_ops=n)),
        ("colorjitter",
         f"+ color jitter (brightness={inp.COLORJITTER_B}, contrast={inp.COLORJITTER_C}, "
         f"saturation={inp.COLORJITTER_S}, hue={inp.COLORJITTER_H})",
         lambda: ColorJitter(inp.COLORJITTER_B, inp.COLORJITTER_C, inp.COLORJITTER_S, inp.COLORJITTER_H)),
        ("randomgrayscale", "+ random gray scale", lambda: RandomGrayscale(p=inp.RGS_P)),
        ("gaussian_blur", f"+ gaussian blur (kernel={inp.GB_K})",
         lambda: RandomApply([GaussianBlur(inp.GB_K)], p=inp.GB_P)),
        (None, "+ to torch tensor of range [0, 1]", ToTensor),
        ("cutout", f"+ cutout (n_holes={inp.CUTOUT_N}, length={inp.CUTOUT_LEN})",
         lambda: Cutout(inp.CUTOUT_N, inp.CUTOUT_LEN)),
        ("normalize", _normalize_line(cfg), lambda: _normalize(cfg)),
        ("gaussian_noise", f"+ gaussian noise (mean={inp.GN_MEAN}, std={inp.GN_STD})",
         lambda: GaussianNoise(inp.GN_MEAN, inp.GN_STD)),
        ("instance_norm", "+ instance normalization", InstanceNormalization),
    ]
    ops = []
    if "random_crop" not in choices and "random_resized_crop" not in choices:
        # Without a crop, resize so every image comes out at exactly SIZE.
        print(f"+ resize to {_size_text(size)}")
        ops.append(Resize(size, interpolation=interp))
    for choice, line, make_op in steps:
        if choice is None or choice in choices:
            print(line)
            ops.append(make_op())
    return ops


def _build_transform_test(cfg, choices):
    print("Building transform_test")
    size = cfg.INPUT.SIZE
    interp = INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]
    print(f"+ resize the smaller edge to {max(size)}")
    print(f"+ {_size_text(size)} center crop")
    print("+ to torch tensor of range [0, 1]")
    ops = [Resize(max(size), interpolation=interp), CenterCrop(size), ToTensor()]
    if "normalize" in choices:
        print(_normalize_line(cfg))
        ops.append(_normalize(cfg))
    if "instance_norm" in choices:
        print("+ instance normalization")
        ops.append(InstanceNormalization())
    return ops


def _size_text(size):
    return f"{size[0]}x{size[1]}"


def _normalize(cfg):
    return Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD)


def _normalize_line(cfg):
    return f"+ normalization (mean={cfg.INPUT.PIXEL_MEAN}, std={cfg.INPUT.PIXEL_STD})"
