"""The one dataset class behind the 11 BiomedCoOp datasets and the generic folder dataset.

Layout under DATASET.ROOT (that of the published archives)::

    <ROOT>/<NAME>/split_<NAME>.json            {"train"|"val"|"test": [[relpath, label, classname], ...]}
    <ROOT>/<NAME>/<NAME>/<class folder>/...    the images; relpath is relative to this folder
    <ROOT>/<NAME>/split_fewshot/shot_K-seed_S.json   few-shot subsets, written on first use

Class names and label order come from the split file. Few-shot subsets (DATASET.NUM_SHOTS >= 1:
K per class from train, min(K, 4) per class from val, the full test set) are drawn by the engine's
``generate_fewshot_dataset`` with python's global RNG right after ``set_random_seed(SEED)``, so
they are the subsets Dassl/CoOp draw for the same split file and seed. Base/new subsampling
(DATASET.SUBSAMPLE_CLASSES) is applied afterwards, as in CoOp.
"""
import os
from collections import Counter

from clip_biomed.dassl import DatasetBase, Datum
from clip_biomed.data_tools.download import download_command, verify_command
from clip_biomed.data_tools.splits import (
    SPLIT_KEYS, SplitFileError, base_new_labels, fewshot_cache_path, file_sha256, published_layout,
    read_fewshot_cache, read_split_file, write_fewshot_cache,
)

VAL_SHOTS_CAP = 4  # CoOp-style datasets keep min(K, 4) validation images per class


def subsample_classes(*splits, subsample="all"):
    """Keep the base or new classes in every split, counted on the first split (train), as CoOp does."""
    relabel = base_new_labels({item.label for item in splits[0]}, subsample)
    if subsample == "all":
        return splits
    print(f"SUBSAMPLE {subsample.upper()} CLASSES!")
    return tuple(
        [Datum(impath=item.impath, label=relabel[item.label], domain=item.domain, classname=item.classname)
         for item in split if item.label in relabel]
        for split in splits
    )


class SplitJSONDataset(DatasetBase):
    """A dataset described by a split file in the published format (see the module docstring).

    Subclasses are the dataset names (``class BTMRI(SplitJSONDataset)``); the generic folder
    dataset overrides the hooks ``name_in``, ``image_dir_in``, ``prepare_split_file`` and
    ``missing_images_hint``.
    """

    def __init__(self, cfg):
        self.root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
        self.dataset_name = self.name_in(cfg)
        self.dataset_dir = os.path.join(self.root, self.dataset_name)
        self.image_dir = self.image_dir_in(cfg)
        self.split_path = published_layout(self.root, self.dataset_name)[0]
        self.split_fewshot_dir = os.path.join(self.dataset_dir, "split_fewshot")

        self.prepare_split_file(cfg)
        print(f"Reading split from {self.split_path}")
        split = read_split_file(self.split_path)
        used = {"train": split["train"], "val": split["val"]}
        if cfg.DATASET.NUM_SHOTS >= 1:
            used = self.fewshot_subsets(split, cfg.DATASET.NUM_SHOTS, cfg.SEED)
        used["test"] = split["test"]
        self.check_images_exist(used)

        train, val, test = (self.to_datums(used[key]) for key in SPLIT_KEYS)
        train, val, test = subsample_classes(train, val, test, subsample=cfg.DATASET.get("SUBSAMPLE_CLASSES", "all"))
        super().__init__(train_x=train, val=val, test=test)

    # Hooks: where the dataset lives and what to do when its split file is missing.
    def name_in(self, cfg):
        return type(self).__name__

    def image_dir_in(self, cfg):
        return published_layout(self.root, self.dataset_name)[1]

    def prepare_split_file(self, cfg):
        """Published datasets ship their split file: without it (or the images) the dataset is absent."""
        missing = [path for path in (self.split_path, self.image_dir) if not os.path.exists(path)]
        if missing:
            name = self.dataset_name
            raise FileNotFoundError(
                f"Dataset {name} not found (missing {', '.join(missing)}). DATASET.ROOT={self.root} "
                f"must hold {name}/split_{name}.json and {name}/{name}/<class folders>. Download it with:\n"
                f"    {download_command(name, self.root)}")

    def missing_images_hint(self):
        return (f"List every missing file with `{verify_command(self.dataset_name, self.root)}`; "
                f"download again with `{download_command(self.dataset_name, self.root)}`")

    # The shared machinery.
    def fewshot_subsets(self, split, num_shots, seed):
        """{"train", "val"} entries of the K-shot subsets, from the JSON cache when it belongs to this
        split file, K and seed, else drawn now (train first, then val, as CoOp does) and cached."""
        shots = {"train": num_shots, "val": min(num_shots, VAL_SHOTS_CAP)}
        self.report_small_classes(split["train"], num_shots)
        cache_path = fewshot_cache_path(self.split_fewshot_dir, num_shots, seed)
        split_sha256 = file_sha256(self.split_path)
        if seed < 0:
            print(f"Warning: SEED is {seed} (unseeded): the {num_shots}-shot subset of {self.dataset_name} is "
                  f"drawn from an unseeded RNG and cannot be reproduced elsewhere; it is cached in "
                  f"{cache_path} and reused by later runs with SEED {seed}. Pass --seed S (S >= 0) to fix it.")
        if os.path.exists(cache_path):
            try:
                subsets = read_fewshot_cache(cache_path, split, split_sha256=split_sha256, shots=shots, seed=seed)
                print(f"Loading preprocessed few-shot data from {cache_path}")
                return subsets
            except SplitFileError as err:
                print(f"Not using the few-shot cache: {err}. Drawing the subsets again.")
        subsets = {part: self.generate_fewshot_dataset(split[part], num_shots=k) for part, k in shots.items()}
        try:
            write_fewshot_cache(cache_path, subsets, split_file=self.split_path, split_sha256=split_sha256,
                                shots=shots, seed=seed)
            print(f"Saving preprocessed few-shot data to {cache_path}")
        except OSError as err:  # e.g. a read-only shared data folder: the run itself is still valid
            print(f"Warning: could not write the few-shot cache {cache_path} ({err}); continuing without it")
        return subsets

    def report_small_classes(self, train, num_shots):
        """Classes with fewer training images than K are used whole (as Dassl does): say which."""
        counts = Counter((entry.label, entry.classname) for entry in train)
        small = sorted((label, name, n) for (label, name), n in counts.items() if n < num_shots)
        if small:
            listed = ", ".join(f"{name!r} ({n})" for _, name, n in small)
            print(f"Warning: DATASET.NUM_SHOTS is {num_shots}, but {len(small)} of the {len(counts)} classes of "
                  f"{self.dataset_name} have fewer training images, so their few-shot sets are smaller "
                  f"(all their images): {listed}")

    def check_images_exist(self, parts):
        entries = [entry for part in parts.values() for entry in part]
        missing = [entry.path for entry in entries if not os.path.isfile(os.path.join(self.image_dir, entry.path))]
        if missing:
            examples = ", ".join(missing[:3])
            raise FileNotFoundError(
                f"Dataset {self.dataset_name}: {len(missing):,} of the {len(entries):,} images it needs from "
                f"{self.split_path} are missing in {self.image_dir} (e.g. {examples}). {self.missing_images_hint()}")

    def to_datums(self, entries):
        return [Datum(impath=os.path.join(self.image_dir, entry.path), label=entry.label, classname=entry.classname)
                for entry in entries]
