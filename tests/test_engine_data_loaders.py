"""Samplers, build_data_loader (construction and RNG draws), DatasetWrapper items and DataManager
(order of printed lines, summary table) — dassl.md §4.2-§4.5."""
import random
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import RandomSampler, SequentialSampler

from clip_biomed.engine.config import get_cfg_default
from clip_biomed.engine.data import (
    DATASET_REGISTRY, DataManager, DatasetBase, DatasetWrapper, Datum, build_data_loader, build_sampler,
    build_transform,
)
from clip_biomed.engine.data.samplers import RandomClassSampler, RandomDomainSampler, SeqDomainSampler

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@pytest.fixture
def images(tmp_path):
    """Three tiny images in the modes medical datasets come in: RGB, grayscale, palette."""
    paths = []
    for mode, size in [("RGB", (12, 10)), ("L", (9, 9)), ("P", (10, 14))]:
        path = tmp_path / f"{mode}.png"
        Image.new(mode, size, 7).save(path)
        paths.append(str(path))
    return paths


def make_items(paths, labels, domains=None):
    domains = domains or [0] * len(labels)
    return [Datum(paths[i % len(paths)], label, domain, f"class{label}")
            for i, (label, domain) in enumerate(zip(labels, domains))]


def tiny_cfg(**dataloader):
    cfg = get_cfg_default()
    cfg.INPUT.SIZE = (8, 8)
    cfg.INPUT.TRANSFORMS = ("random_resized_crop", "random_flip", "normalize")
    cfg.DATALOADER.NUM_WORKERS = 0
    for key, value in dataloader.items():
        cfg.DATALOADER[key] = value
    return cfg


# ---------------------------------------------------------------- samplers

def test_build_sampler_torch_types_and_unknown_name(images):
    items = make_items(images, [0, 1])
    assert type(build_sampler("RandomSampler", data_source=items)) is RandomSampler
    assert type(build_sampler("SequentialSampler", data_source=items)) is SequentialSampler
    with pytest.raises(ValueError, match=r"Unknown sampler type: Shuffle \(choose one of .*RandomSampler"):
        build_sampler("Shuffle", data_source=items)


def test_random_domain_sampler_balances_domains(images):
    items = make_items(images, [0] * 14, domains=[0] * 6 + [1] * 4 + [2] * 4)
    random.seed(0)
    sampler = RandomDomainSampler(items, batch_size=4, n_domain=2)
    assert len(sampler) % 4 == 0  # an estimate from one pass at construction, as in Dassl
    indices = list(sampler)
    assert len(indices) % 4 == 0 and len(set(indices)) == len(indices)
    for start in range(0, len(indices), 4):
        counts = Counter(items[i].domain for i in indices[start:start + 4])
        assert len(counts) == 2 and set(counts.values()) == {2}
    with pytest.raises(AssertionError, match="divisible"):
        RandomDomainSampler(items, batch_size=4, n_domain=3)


def test_seq_domain_sampler_visits_domains_in_sorted_order(images):
    items = make_items(images, [0] * 9, domains=[2, 0, 1] * 3)
    indices = list(SeqDomainSampler(items, batch_size=3))
    assert len(indices) == 9
    assert [items[i].domain for i in indices] == [0, 1, 2] * 3


def test_random_class_sampler_groups_instances(images):
    items = make_items(images, [0] * 4 + [1] * 4 + [2] * 1)
    random.seed(0)
    np.random.seed(0)
    indices = list(RandomClassSampler(items, batch_size=4, n_ins=2))
    assert len(indices) % 4 == 0
    for start in range(0, len(indices), 4):
        assert sorted(Counter(items[i].label for i in indices[start:start + 4]).values()) == [2, 2]
    with pytest.raises(ValueError, match="batch_size=1 must be no less than n_ins=2"):
        RandomClassSampler(items, batch_size=1, n_ins=2)


# ---------------------------------------------------------------- build_data_loader

def test_loader_construction_and_drop_last_rule(images):
    cfg = tiny_cfg()
    tfm = build_transform(cfg, is_train=False)
    five = make_items(images, [0, 1, 0, 1, 0])
    train = build_data_loader(cfg, "RandomSampler", five, batch_size=4, tfm=tfm, is_train=True)
    assert train.drop_last and len(train) == 1
    assert train.generator is None and train.num_workers == 0
    assert train.pin_memory == torch.cuda.is_available()
    small_train = build_data_loader(cfg, "RandomSampler", five[:3], batch_size=4, tfm=tfm, is_train=True)
    assert not small_train.drop_last and len(small_train) == 1
    test = build_data_loader(cfg, "SequentialSampler", five, batch_size=4, tfm=tfm, is_train=False)
    assert not test.drop_last and len(test) == 2
    cfg.USE_CUDA = False
    assert not build_data_loader(cfg, "SequentialSampler", five, batch_size=4, tfm=tfm).pin_memory
    with pytest.raises(AssertionError, match="no batches"):
        build_data_loader(cfg, "SequentialSampler", [], batch_size=4, tfm=tfm)


def test_iterating_a_random_loader_draws_exactly_two_int64(images):
    cfg = tiny_cfg()
    items = make_items(images, list(range(7)))
    torch.manual_seed(0)
    before = torch.get_rng_state()
    loader = build_data_loader(cfg, "RandomSampler", items, batch_size=3,
                               tfm=build_transform(cfg, is_train=False), is_train=True)
    assert torch.equal(torch.get_rng_state(), before)  # building draws nothing
    order = [int(i) for batch in loader for i in batch["index"]]
    after = torch.get_rng_state()

    torch.manual_seed(0)
    torch.empty((), dtype=torch.int64).random_()  # worker base seed, drawn by iter(loader)
    sampler_seed = int(torch.empty((), dtype=torch.int64).random_().item())  # RandomSampler's generator seed
    assert torch.equal(torch.get_rng_state(), after)
    expected = torch.randperm(7, generator=torch.Generator().manual_seed(sampler_seed)).tolist()
    assert order == expected[:6]  # drop_last: 2 full batches of 3


# ---------------------------------------------------------------- DatasetWrapper

def test_wrapper_items_and_collated_batch(images):
    cfg = tiny_cfg()
    items = make_items(images, [0, 1, 2], domains=[3, 4, 5])
    wrapper = DatasetWrapper(cfg, items, transform=build_transform(cfg, is_train=False))
    item = wrapper[1]
    assert set(item) == {"label", "domain", "impath", "index", "img"}
    assert (item["label"], item["domain"], item["impath"], item["index"]) == (1, 4, images[1], 1)
    assert item["img"].shape == (3, 8, 8) and item["img"].dtype == torch.float32  # grayscale -> 3 channels
    batch = next(iter(build_data_loader(cfg, "SequentialSampler", items, batch_size=3,
                                        tfm=wrapper.transform, is_train=False)))
    assert batch["img"].shape == (3, 3, 8, 8)
    assert batch["label"].dtype == batch["domain"].dtype == batch["index"].dtype == torch.int64
    assert batch["impath"] == images


def test_wrapper_several_transforms_k_views_and_img0(images):
    cfg = tiny_cfg(K_TRANSFORMS=2, RETURN_IMG0=True)
    tfm = build_transform(cfg, is_train=True)
    items = make_items(images, [0])
    item = DatasetWrapper(cfg, items, transform=[tfm, tfm, tfm], is_train=True)[0]
    assert {"img", "img2", "img3", "img0"} <= set(item) and "img1" not in item
    assert isinstance(item["img2"], list) and len(item["img2"]) == 2
    raw = np.asarray(Image.open(images[0]).convert("RGB").resize((8, 8), Image.BILINEAR), dtype=np.float32)
    expected_img0 = (torch.from_numpy(raw / 255).permute(2, 0, 1) - torch.tensor(cfg.INPUT.PIXEL_MEAN).view(3, 1, 1)) \
        / torch.tensor(cfg.INPUT.PIXEL_STD).view(3, 1, 1)
    assert torch.allclose(item["img0"], expected_img0, atol=1e-5)
    # evaluation ignores K_TRANSFORMS; no transform gives the PIL image itself
    assert torch.is_tensor(DatasetWrapper(cfg, items, transform=tfm, is_train=False)[0]["img"])
    cfg.DATALOADER.K_TRANSFORMS = 1
    assert isinstance(DatasetWrapper(cfg, items, transform=None)[0]["img"], Image.Image)
    cfg.DATALOADER.K_TRANSFORMS = 3
    with pytest.raises(ValueError, match="Cannot augment the image 3 times"):
        DatasetWrapper(cfg, items, transform=None, is_train=True)


# ---------------------------------------------------------------- DataManager

@pytest.fixture
def toy_dataset_cfg(images):
    @DATASET_REGISTRY.register(force=True)
    class EngineDataToyDS(DatasetBase):
        def __init__(self, cfg):
            train = make_items(images, [0, 1, 2] * 6)
            val = make_items(images, [0, 1, 2] * 4)
            test = make_items(images, [0, 1, 2] * 6) * 200  # 3,600: thousands separator
            super().__init__(train_x=self.generate_fewshot_dataset(train, num_shots=4),
                             train_u=train if cfg.DATASET.ALL_AS_UNLABELED else None,
                             val=self.generate_fewshot_dataset(val, num_shots=4), test=test)

    cfg = tiny_cfg()
    cfg.DATASET.NAME = "EngineDataToyDS"
    cfg.INPUT.PIXEL_MEAN = CLIP_MEAN
    cfg.INPUT.PIXEL_STD = CLIP_STD
    cfg.DATALOADER.TEST.BATCH_SIZE = 100
    return cfg


def test_data_manager_prints_like_dassl(toy_dataset_cfg, capsys):
    before = torch.get_rng_state()
    dm = DataManager(toy_dataset_cfg)
    assert torch.equal(torch.get_rng_state(), before)
    norm = f"+ normalization (mean={CLIP_MEAN}, std={CLIP_STD})"
    assert capsys.readouterr().out.splitlines() == [
        "Loading dataset: EngineDataToyDS",
        "Creating a 4-shot dataset",
        "Creating a 4-shot dataset",
        "Building transform_train",
        "+ random resized crop (size=(8, 8), scale=(0.08, 1.0))",
        "+ random flip",
        "+ to torch tensor of range [0, 1]",
        norm,
        "Building transform_test",
        "+ resize the smaller edge to 8",
        "+ 8x8 center crop",
        "+ to torch tensor of range [0, 1]",
        norm,
        "---------  ---------------",
        "Dataset    EngineDataToyDS",
        "# classes  3",
        "# train_x  12",
        "# val      12",
        "# test     3,600",
        "---------  ---------------",
    ]
    assert (dm.num_classes, dm.num_source_domains, dm.lab2cname) == (3, 0, {0: "class0", 1: "class1", 2: "class2"})
    assert dm.dataset.classnames == ["class0", "class1", "class2"]
    assert dm.train_loader_u is None
    assert (len(dm.train_loader_x), len(dm.val_loader), len(dm.test_loader)) == (1, 1, 36)


def test_data_manager_custom_transforms_train_u_and_domain_rows(toy_dataset_cfg, capsys):
    toy_dataset_cfg.DATASET.ALL_AS_UNLABELED = True  # the toy dataset then also has train_u
    toy_dataset_cfg.DATALOADER.TRAIN_U.SAME_AS_X = False
    toy_dataset_cfg.DATALOADER.TRAIN_U.BATCH_SIZE = 5
    toy_dataset_cfg.DATASET.SOURCE_DOMAINS = ("a",)
    toy_dataset_cfg.DATASET.TARGET_DOMAINS = ("b",)
    toy_dataset_cfg.VERBOSE = True
    dm = DataManager(toy_dataset_cfg, custom_tfm_train=build_transform(toy_dataset_cfg, is_train=False),
                     custom_tfm_test=build_transform(toy_dataset_cfg, is_train=False))
    out = capsys.readouterr().out
    assert "* Using custom transform for training\n* Using custom transform for testing\n" in out
    assert "Source     ('a',)\nTarget     ('b',)\n" in out
    assert "# train_x  12\n# train_u  18\n# val      12\n" in out
    assert dm.num_source_domains == 1
    assert len(dm.train_loader_u) == 3 and dm.train_loader_u.batch_size == 5
    toy_dataset_cfg.VERBOSE = False
    DataManager(toy_dataset_cfg)
    assert "Dataset" not in capsys.readouterr().out
