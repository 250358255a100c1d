"""FolderDataset: your own images, used exactly like the 11 published datasets.

The images are a folder of class sub-folders (DATASET.FOLDER.IMAGE_DIR, default
<ROOT>/<NAME>/<NAME>, the published layout) or a CSV of ``path,label[,classname]``
(DATASET.FOLDER.CSV). On first use a stratified train/val/test split (DATASET.FOLDER.SPLIT_RATIOS,
DATASET.FOLDER.SPLIT_SEED) is written to <ROOT>/<NAME>/split_<NAME>.json; from then on that file is
the dataset, with the same few-shot cache and base/new subsampling as the published ones.
Relative IMAGE_DIR / CSV paths are relative to DATASET.ROOT.
"""
import os

from clip_biomed.dassl import DATASET_REGISTRY
from clip_biomed.data_tools.own_data import read_label_csv, scan_class_folders
from clip_biomed.data_tools.splits import stratified_split, write_split_file

from .base import SplitJSONDataset


@DATASET_REGISTRY.register()
class FolderDataset(SplitJSONDataset):
    """A dataset made from a folder of class sub-folders or a CSV (keys DATASET.FOLDER.*)."""

    def _options(self, cfg):
        if "FOLDER" not in cfg.DATASET:
            raise KeyError("cfg.DATASET.FOLDER is missing: call datasets.add_dataset_config(cfg) before "
                           "merging the config files (train.py's extend_cfg does this)")
        return cfg.DATASET.FOLDER

    def _resolve(self, path):
        return os.path.abspath(os.path.join(self.root, os.path.expanduser(path)))

    def name_in(self, cfg):
        name = self._options(cfg).NAME
        if not name or os.sep in name or name in (".", ".."):
            raise ValueError(
                f"DATASET.FOLDER.NAME is {name!r}: set it to a short name for your dataset (no '/'); it names "
                f"the folder <DATASET.ROOT>/<NAME> that holds split_<NAME>.json and the few-shot caches")
        return name

    def image_dir_in(self, cfg):
        options = self._options(cfg)
        if options.IMAGE_DIR and options.CSV:
            raise ValueError("Set only one of DATASET.FOLDER.IMAGE_DIR (class sub-folders) and DATASET.FOLDER.CSV")
        if options.CSV:
            return os.path.dirname(self._resolve(options.CSV))  # CSV paths are relative to its folder
        if options.IMAGE_DIR:
            return self._resolve(options.IMAGE_DIR)
        return super().image_dir_in(cfg)

    def prepare_split_file(self, cfg):
        if os.path.isfile(self.split_path):
            print(f"Using the existing split file {self.split_path} (delete it to split again, "
                  f"e.g. after changing DATASET.FOLDER.*)")
            return
        options = self._options(cfg)
        if not options.CSV and not os.path.isdir(self.image_dir):
            raise FileNotFoundError(
                f"FolderDataset {self.dataset_name}: no split file {self.split_path} and no image folder "
                f"{self.image_dir}. Set DATASET.FOLDER.IMAGE_DIR to a folder with one sub-folder per class, "
                f"or DATASET.FOLDER.CSV to a CSV of path,label[,classname]")
        if options.CSV:
            images = read_label_csv(self._resolve(options.CSV), options.CLASSNAMES)
        else:
            images = scan_class_folders(self.image_dir, options.CLASSNAMES)
        split = stratified_split(images.paths_by_class, images.classnames, options.SPLIT_RATIOS, options.SPLIT_SEED)
        write_split_file(split, self.split_path)
        counts = ", ".join(f"{key} {len(entries)}" for key, entries in split.items())
        print(f"Wrote a new split of {len(images.classnames)} classes ({counts}) to {self.split_path}")

    def missing_images_hint(self):
        return (f"Restore them, or delete {self.split_path} (and {self.split_fewshot_dir}) "
                f"to split the images that are there again")
