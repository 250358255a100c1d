"""build_transform (dassl.md §4.6): printed lines, fixed train order, test pipeline, no RNG at build,
and the hand-written ops (Random2DTranslation, Cutout, GaussianNoise, InstanceNormalization)."""
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as F

from clip_biomed.engine.config import get_cfg_default
from clip_biomed.engine.data import build_transform
from clip_biomed.engine.data.transforms import (
    AVAI_CHOICES, Cutout, GaussianNoise, InstanceNormalization, Random2DTranslation,
)

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
NORM_LINE = f"+ normalization (mean={CLIP_MEAN}, std={CLIP_STD})"


def coop_cfg(transforms=("random_resized_crop", "random_flip", "normalize")):
    cfg = get_cfg_default()
    cfg.INPUT.SIZE = (32, 32)
    cfg.INPUT.INTERPOLATION = "bicubic"
    cfg.INPUT.PIXEL_MEAN = CLIP_MEAN
    cfg.INPUT.PIXEL_STD = CLIP_STD
    cfg.INPUT.TRANSFORMS = transforms
    return cfg


def rng_states():
    return random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state().tolist()


def test_coop_train_and_test_lines_match_the_golden_log(capsys):
    cfg = coop_cfg()
    build_transform(cfg, is_train=True)
    build_transform(cfg, is_train=False)
    assert capsys.readouterr().out.splitlines() == [
        "Building transform_train",
        "+ random resized crop (size=(32, 32), scale=(0.08, 1.0))",
        "+ random flip",
        "+ to torch tensor of range [0, 1]",
        NORM_LINE,
        "Building transform_test",
        "+ resize the smaller edge to 32",
        "+ 32x32 center crop",
        "+ to torch tensor of range [0, 1]",
        NORM_LINE,
    ]


def test_every_choice_in_code_order_regardless_of_list_order(capsys):
    cfg = get_cfg_default()
    cfg.INPUT.SIZE = (32, 32)
    before = rng_states()
    forward = build_transform(cfg, is_train=True, choices=AVAI_CHOICES)
    forward_lines = capsys.readouterr().out.splitlines()
    backward = build_transform(cfg, is_train=True, choices=list(reversed(AVAI_CHOICES)))
    assert capsys.readouterr().out.splitlines() == forward_lines
    assert rng_states() == before  # building draws nothing
    assert [type(op) for op in backward.transforms] == [type(op) for op in forward.transforms]
    assert forward_lines == [
        "Building transform_train",
        "+ random translation",
        "+ random crop (padding = 4)",
        "+ random resized crop (size=(32, 32), scale=(0.08, 1.0))",
        "+ random flip",
        "+ imagenet policy",
        "+ cifar10 policy",
        "+ svhn policy",
        "+ randaugment (n=2, m=10)",
        "+ randaugment_fixmatch (n=2)",
        "+ randaugment2 (n=2)",
        "+ color jitter (brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)",
        "+ random gray scale",
        "+ gaussian blur (kernel=21)",
        "+ to torch tensor of range [0, 1]",
        "+ cutout (n_holes=1, length=16)",
        "+ normalization (mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])",
        "+ gaussian noise (mean=0.0, std=0.15)",
        "+ instance normalization",
    ]
    assert [type(op).__name__ for op in forward.transforms][:3] == ["Random2DTranslation", "RandomCrop",
                                                                    "RandomResizedCrop"]
    image = Image.new("RGB", (40, 36), (200, 100, 50))
    assert forward(image).shape == (3, 32, 32)


def test_without_a_crop_the_train_pipeline_resizes_exactly(capsys):
    cfg = coop_cfg(transforms=("random_flip",))
    cfg.INPUT.SIZE = (16, 24)
    tfm = build_transform(cfg, is_train=True)
    assert capsys.readouterr().out.splitlines()[1] == "+ resize to 16x24"
    assert tfm(Image.new("RGB", (50, 10))).shape == (3, 16, 24)


def test_test_pipeline_keeps_aspect_then_center_crops():
    cfg = coop_cfg(transforms=("random_flip", "normalize", "instance_norm"))
    tfm = build_transform(cfg, is_train=False)
    image = Image.fromarray(np.random.RandomState(0).randint(0, 256, (20, 40, 3), dtype=np.uint8))
    expected = F.to_tensor(F.center_crop(F.resize(image, 32, interpolation=F.InterpolationMode.BICUBIC), [32, 32]))
    expected = InstanceNormalization()(F.normalize(expected, CLIP_MEAN, CLIP_STD))
    assert torch.allclose(tfm(image), expected)
    assert [type(op).__name__ for op in tfm.transforms] == ["Resize", "CenterCrop", "ToTensor", "Normalize",
                                                             "InstanceNormalization"]


def test_no_transform_and_bad_choices(capsys):
    cfg = coop_cfg()
    cfg.INPUT.NO_TRANSFORM = True
    assert build_transform(cfg, is_train=True) is None
    assert capsys.readouterr().out == "Note: no transform is applied!\n"
    with pytest.raises(AssertionError, match='Unknown transform "flip".*random_flip'):
        build_transform(coop_cfg(transforms=("flip",)))
    cfg = coop_cfg()
    cfg.INPUT.INTERPOLATION = "lanczos"
    with pytest.raises(ValueError, match="INPUT.INTERPOLATION must be one of"):
        build_transform(cfg)


def test_random_translation_follows_python_random():
    image = Image.fromarray(np.random.RandomState(1).randint(0, 256, (10, 20, 3), dtype=np.uint8))
    op = Random2DTranslation(8, 16)  # enlarged size: 9x18
    branches = set()
    for seed in range(8):
        replica = random.Random(seed)
        translated = replica.uniform(0, 1) <= 0.5
        if translated:
            left, top = round(replica.uniform(0, 2)), round(replica.uniform(0, 1))
            expected = F.crop(F.resize(image, [9, 18]), top, left, 8, 16)
        else:
            expected = F.resize(image, [8, 16])
        random.seed(seed)
        assert np.array_equal(np.asarray(op(image)), np.asarray(expected))
        assert random.getstate() == replica.getstate()
        branches.add(translated)
    assert branches == {True, False}


def test_cutout_zeroes_squares_centred_by_numpy():
    img = torch.ones(2, 10, 10)
    np.random.seed(3)
    y, x = np.random.randint(10), np.random.randint(10)
    np.random.seed(3)
    out = Cutout(n_holes=1, length=4)(img)
    hole = torch.zeros(10, 10, dtype=torch.bool)
    hole[max(y - 2, 0):min(y + 2, 10), max(x - 2, 0):min(x + 2, 10)] = True
    assert torch.equal(out[0] == 0, hole) and torch.equal(out[1], out[0])


def test_gaussian_noise_applies_torch_noise_with_probability_half():
    img = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    op = GaussianNoise(mean=0.3, std=0.15)
    branches = set()
    for seed in range(8):
        applied = random.Random(seed).uniform(0, 1) <= 0.5
        torch.manual_seed(seed)
        # Dassl builds the noise first, then adds it: bit-identical only in that order
        expected = img + (torch.randn(img.size()) * 0.15 + 0.3) if applied else img
        random.seed(seed)
        torch.manual_seed(seed)
        assert torch.equal(op(img), expected)
        branches.add(applied)
    assert branches == {True, False}


def test_instance_normalization_standardises_each_channel():
    img = torch.rand(3, 5, 7) * torch.tensor([1.0, 5.0, 0.1]).view(3, 1, 1)
    out = InstanceNormalization()(img).reshape(3, -1)
    assert torch.allclose(out.mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(out.std(1), torch.ones(3), atol=1e-5)
