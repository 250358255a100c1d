"""Small file-system, JSON, image and seeding helpers with Dassl's names and behaviour (dassl.md §8)."""
import errno
import json
import os
import os.path as osp
import random
import warnings

import numpy as np
import torch
from clip_biomed.data_tools.images import read_rgb_image

from clip_biomed.engine.registry import check_availability, get_most_similar_str_to_a_from_b

__all__ = [
    "mkdir_if_missing", "check_isfile", "read_json", "write_json", "listdir_nohidden", "read_image",
    "tolist_if_not", "set_random_seed", "collect_env_info", "check_availability",
    "get_most_similar_str_to_a_from_b",
]


def mkdir_if_missing(dirname):
    """Create ``dirname`` (and parents) unless it exists; tolerate a concurrent creator."""
    if not osp.exists(dirname):
        try:
            os.makedirs(dirname)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise


def check_isfile(fpath):
    isfile = osp.isfile(fpath)
    if not isfile:
        warnings.warn(f'No file found at "{fpath}"')
    return isfile


def read_json(fpath):
    with open(fpath, "r") as f:
        return json.load(f)


def write_json(obj, fpath):
    """Write JSON the way Dassl/CoOp split files are written (indent 4)."""
    mkdir_if_missing(osp.dirname(fpath) or ".")
    with open(fpath, "w") as f:
        json.dump(obj, f, indent=4, separators=(",", ": "))


def listdir_nohidden(path, sort=False):
    """``os.listdir`` without names starting with "."; filesystem order unless ``sort``."""
    items = [name for name in os.listdir(path) if not name.startswith(".")]
    if sort:
        items.sort()
    return items


def read_image(path):
    """Open an image as an 8-bit RGB PIL image.

    Difference from Dassl's ``Image.open(path).convert("RGB")``: 16-bit and float images (medical
    PNG/TIFF) are scaled to 8 bits instead of clipped, and a missing or corrupt file raises an error
    naming it and the fix.  8-bit images give the same pixels as Dassl.
    """
    return read_rgb_image(path)


def tolist_if_not(x):
    return x if isinstance(x, list) else [x]


def set_random_seed(seed):
    """Seed python, numpy and torch (CPU + all CUDA devices) and nothing else (dassl.md §5.4)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def collect_env_info():
    """Versions of the stack, for the log. Cheap (no subprocesses) and draws no random numbers,
    unlike Dassl's ``torch.utils.collect_env`` dump, which is informational only."""
    import platform
    import sys

    import PIL
    import torchvision

    cuda = torch.cuda.is_available()
    lines = [
        f"Python: {sys.version.split()[0]} ({platform.platform()})",
        f"PyTorch: {torch.__version__} (CUDA build {torch.version.cuda})",
        f"torchvision: {torchvision.__version__}",
        f"NumPy: {np.__version__}",
        f"CUDA available: {cuda}",
    ]
    if cuda:
        lines += [f"GPU {i}: {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    lines.append(f"        Pillow ({PIL.__version__})")
    return "\n".join(lines)
