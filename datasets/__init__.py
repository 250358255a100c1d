"""The project's datasets (imported from the repository root, never installed: a top-level
package named ``datasets`` in site-packages would shadow Hugging Face's).

Importing this package registers every dataset in the engine's DATASET_REGISTRY:
the 11 BiomedCoOp datasets (``datasets/biomed.py``) and ``FolderDataset`` for your own images.
"""
from yacs.config import CfgNode

from clip_biomed.data_tools.splits import DEFAULT_SPLIT_RATIOS

from . import biomed, folder  # noqa: F401  (importing a module registers its datasets)
from .base import SplitJSONDataset, subsample_classes

__all__ = ["SplitJSONDataset", "subsample_classes", "add_dataset_config", "extend_cfg"]


def add_dataset_config(cfg):
    """Add the config keys the datasets read beyond Dassl's defaults (train.py's extend_cfg calls it).

    DATASET.SUBSAMPLE_CLASSES: "all" | "base" | "new" (CoOp's key; added here too when absent).
    DATASET.FOLDER.*: FolderDataset (see datasets/folder.py and docs/datasets.md):
      NAME           your dataset's name: <ROOT>/<NAME>/ holds split_<NAME>.json and split_fewshot/
      IMAGE_DIR      folder with one sub-folder per class (default <ROOT>/<NAME>/<NAME>)
      CSV            or a CSV of path,label[,classname] (paths relative to the CSV's folder)
      CLASSNAMES     label order (folder names or class names); default: sorted folder names / CSV labels
      SPLIT_RATIOS   train/val/test fraction of each class for the first split
      SPLIT_SEED     seed of that split (independent of SEED, so every run sees the same split)
    """
    if "SUBSAMPLE_CLASSES" not in cfg.DATASET:
        cfg.DATASET.SUBSAMPLE_CLASSES = "all"
    if "FOLDER" not in cfg.DATASET:
        cfg.DATASET.FOLDER = CfgNode()
        cfg.DATASET.FOLDER.NAME = ""
        cfg.DATASET.FOLDER.IMAGE_DIR = ""
        cfg.DATASET.FOLDER.CSV = ""
        cfg.DATASET.FOLDER.CLASSNAMES = ()
        cfg.DATASET.FOLDER.SPLIT_RATIOS = DEFAULT_SPLIT_RATIOS
        cfg.DATASET.FOLDER.SPLIT_SEED = 1
    return cfg


extend_cfg = add_dataset_config  # the plugin hook train.py calls on every imported plugin package
