"""DataManager, its DataLoaders and the Dataset wrapper that reads and transforms images (dassl.md §4.2-§4.5).

The loaders are built exactly as Dassl builds them (no generator, no worker_init_fn): each
``iter(loader)`` then draws the same numbers from the global torch RNG as under Dassl, which keeps
shuffles and augmentations identical for a given seed.
"""
import torch
import torchvision.transforms as T
from tabulate import tabulate
from torch.utils.data import Dataset as TorchDataset

from clip_biomed.engine.data.datasets import build_dataset
from clip_biomed.engine.data.samplers import build_sampler
from clip_biomed.engine.data.transforms import INTERPOLATION_MODES, build_transform
from clip_biomed.engine.utils import read_image

__all__ = ["DataManager", "DatasetWrapper", "build_data_loader"]


def build_data_loader(cfg, sampler_type="SequentialSampler", data_source=None, batch_size=64, n_domain=0,
                      n_ins=2, tfm=None, is_train=True, dataset_wrapper=None):
    sampler = build_sampler(sampler_type, cfg=cfg, data_source=data_source, batch_size=batch_size,
                            n_domain=n_domain, n_ins=n_ins)
    wrapper = DatasetWrapper if dataset_wrapper is None else dataset_wrapper
    loader = torch.utils.data.DataLoader(
        wrapper(cfg, data_source, transform=tfm, is_train=is_train),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        # Training drops the last partial batch only when at least one full batch exists.
        drop_last=is_train and len(data_source) >= batch_size,
        pin_memory=torch.cuda.is_available() and cfg.USE_CUDA,
    )
    assert len(loader) > 0, (
        f"The data loader has no batches ({len(data_source)} items, batch size {batch_size}, "
        f"sampler {sampler_type}): check that the split is not empty and the batch size fits it"
    )
    return loader


class DataManager:
    """Builds the dataset, the train/test transforms and the loaders, then prints a summary."""

    def __init__(self, cfg, custom_tfm_train=None, custom_tfm_test=None, dataset_wrapper=None):
        dataset = build_dataset(cfg)
        if custom_tfm_train is None:
            tfm_train = build_transform(cfg, is_train=True)
        else:
            print("* Using custom transform for training")
            tfm_train = custom_tfm_train
        if custom_tfm_test is None:
            tfm_test = build_transform(cfg, is_train=False)
        else:
            print("* Using custom transform for testing")
            tfm_test = custom_tfm_test

        loader_cfg = cfg.DATALOADER

        def train_loader(data_source, sampler_cfg):
            return build_data_loader(
                cfg, sampler_type=sampler_cfg.SAMPLER, data_source=data_source, batch_size=sampler_cfg.BATCH_SIZE,
                n_domain=sampler_cfg.N_DOMAIN, n_ins=sampler_cfg.N_INS, tfm=tfm_train, is_train=True,
                dataset_wrapper=dataset_wrapper,
            )

        def test_loader(data_source):
            return build_data_loader(
                cfg, sampler_type=loader_cfg.TEST.SAMPLER, data_source=data_source,
                batch_size=loader_cfg.TEST.BATCH_SIZE, tfm=tfm_test, is_train=False,
                dataset_wrapper=dataset_wrapper,
            )

        self.train_loader_x = train_loader(dataset.train_x, loader_cfg.TRAIN_X)
        self.train_loader_u = None
        if dataset.train_u:
            u_cfg = loader_cfg.TRAIN_X if loader_cfg.TRAIN_U.SAME_AS_X else loader_cfg.TRAIN_U
            self.train_loader_u = train_loader(dataset.train_u, u_cfg)
        self.val_loader = test_loader(dataset.val) if dataset.val else None
        self.test_loader = test_loader(dataset.test)

        self._num_classes = dataset.num_classes
        self._num_source_domains = len(cfg.DATASET.SOURCE_DOMAINS)
        self._lab2cname = dataset.lab2cname
        self.dataset = dataset

        if cfg.VERBOSE:
            self.show_dataset_summary(cfg)

    @property
    def num_classes(self):
        return self._num_classes

    @property
    def num_source_domains(self):
        return self._num_source_domains

    @property
    def lab2cname(self):
        return self._lab2cname

    def show_dataset_summary(self, cfg):
        table = [["Dataset", cfg.DATASET.NAME]]
        if cfg.DATASET.SOURCE_DOMAINS:
            table.append(["Source", cfg.DATASET.SOURCE_DOMAINS])
        if cfg.DATASET.TARGET_DOMAINS:
            table.append(["Target", cfg.DATASET.TARGET_DOMAINS])
        table.append(["# classes", f"{self.num_classes:,}"])
        table.append(["# train_x", f"{len(self.dataset.train_x):,}"])
        if self.dataset.train_u:
            table.append(["# train_u", f"{len(self.dataset.train_u):,}"])
        if self.dataset.val:
            table.append(["# val", f"{len(self.dataset.val):,}"])
        table.append(["# test", f"{len(self.dataset.test):,}"])
        print(tabulate(table))


class DatasetWrapper(TorchDataset):
    """Reads each item's image and returns a dict: label, domain, impath, index, img[, img2, ...][, img0].

    With a list of transforms the outputs are "img", "img2", "img3", ...; with K_TRANSFORMS > 1
    (training only) each is a list of K independently augmented tensors.
    """

    def __init__(self, cfg, data_source, transform=None, is_train=False):
        self.cfg = cfg
        self.data_source = data_source
        self.transform = transform
        self.is_train = is_train
        self.k_tfm = cfg.DATALOADER.K_TRANSFORMS if is_train else 1
        self.return_img0 = cfg.DATALOADER.RETURN_IMG0
        if self.k_tfm > 1 and transform is None:
            raise ValueError(
                f"Cannot augment the image {self.k_tfm} times because transform is None: "
                f"pass a transform or set DATALOADER.K_TRANSFORMS to 1"
            )
        # The untouched image (img0) at the input size, for methods that need it beside the augmented one.
        to_tensor = [T.Resize(cfg.INPUT.SIZE, interpolation=INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]),
                     T.ToTensor()]
        if "normalize" in cfg.INPUT.TRANSFORMS:
            to_tensor.append(T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD))
        self.to_tensor = T.Compose(to_tensor)

    def __len__(self):
        return len(self.data_source)

    def __getitem__(self, idx):
        item = self.data_source[idx]
        output = {"label": item.label, "domain": item.domain, "impath": item.impath, "index": idx}
        img0 = read_image(item.impath)
        if self.transform is None:
            output["img"] = img0
        elif isinstance(self.transform, (list, tuple)):
            for i, tfm in enumerate(self.transform):
                output["img" if i == 0 else f"img{i + 1}"] = self._transform_image(tfm, img0)
        else:
            output["img"] = self._transform_image(self.transform, img0)
        if self.return_img0:
            output["img0"] = self.to_tensor(img0)
        return output

    def _transform_image(self, tfm, img0):
        images = [tfm(img0) for _ in range(self.k_tfm)]
        return images[0] if len(images) == 1 else images
