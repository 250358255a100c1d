"""Read any image the datasets may hold as an 8-bit RGB PIL image, with errors that name the file.

8-bit images (RGB, grayscale, palette, RGBA, CMYK, ...) go through PIL's ``convert("RGB")``, exactly
what Dassl's ``read_image`` does, so the published datasets give the same pixels as the published
code. PIL's conversion is wrong for high-bit-depth images: it clips 16-bit and 32-bit values at
255 (almost every pixel turns white) and truncates floats, so those are scaled here instead:

* 16-bit integer images (PNG/TIFF "I;16*", or "I" with values in 0..65535): 0..65535 -> 0..255,
  the PNG specification's rule for reducing the bit depth;
* float images ("F", e.g. TIFF): 0..1 -> 0..255 when the values lie in [0, 1];
* anything else (negative or larger integers, floats outside [0, 1]): the image's own
  min..max -> 0..255.
Scaling keeps 16-bit intensities comparable between images; data that uses fewer bits (e.g.
12-bit CT stored as 16-bit) comes out dark, so window it yourself when that matters.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")

_UINT16_MAX = 65535.0


class ImageReadError(OSError):
    """An image file exists but cannot be decoded (corrupt, truncated or not an image)."""


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def to_rgb8(image: Image.Image) -> Image.Image:
    """Convert a PIL image of any mode to 8-bit RGB (see the module docstring for the rules)."""
    if image.mode in ("I", "F") or image.mode.startswith("I;"):
        array = np.asarray(image)
        gray = _scale_high_depth(array, is_float=image.mode == "F")
        return Image.fromarray(gray).convert("RGB")
    return image.convert("RGB")


def _scale_high_depth(array: np.ndarray, is_float: bool) -> np.ndarray:
    values = array.astype(np.float64)
    finite = np.isfinite(values)
    values[~finite] = 0.0
    low, high = (float(values[finite].min()), float(values[finite].max())) if finite.any() else (0.0, 0.0)
    if is_float and 0.0 <= low and high <= 1.0:
        scaled = values * 255.0
    elif not is_float and 0.0 <= low and high <= _UINT16_MAX:
        scaled = values * (255.0 / _UINT16_MAX)
    elif high > low:
        scaled = (values - low) * (255.0 / (high - low))
    else:
        scaled = np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def read_rgb_image(path: str, dataset: Optional[str] = None) -> Image.Image:
    """Open ``path`` as 8-bit RGB. Missing files raise FileNotFoundError and undecodable ones
    ImageReadError, both naming the file (and ``dataset`` when given)."""
    where = f" (dataset {dataset})" if dataset else ""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Image not found: {path}{where}")
    try:
        with Image.open(path) as image:
            image.load()  # decode now so that truncated files fail here, with the path in the message
            return to_rgb8(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageReadError(
            f"Cannot read image {path}{where}: {err}. The file is corrupt, truncated or not an image; "
            f"replace it (re-download the dataset) or remove it from the split file") from err
