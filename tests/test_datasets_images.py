"""Robust image reading: every mode the datasets may hold becomes correct 8-bit RGB."""
import numpy as np
import pytest
from PIL import Image

from clip_biomed.data_tools.images import ImageReadError, read_rgb_image, to_rgb8


def saved(tmp_path, image, name):
    path = tmp_path / name
    image.save(path)
    return str(path)


def pixels(image):
    assert image.mode == "RGB"
    array = np.asarray(image)
    assert array.dtype == np.uint8
    return array


def test_8bit_modes_match_pils_conversion(tmp_path):
    gray = Image.fromarray(np.array([[0, 100, 255]], dtype=np.uint8))
    palette = gray.convert("P")
    rgba = Image.fromarray(np.array([[[10, 20, 30, 0], [200, 100, 50, 255]]], dtype=np.uint8))
    for image, name in ((gray, "gray.png"), (palette, "palette.png"), (rgba, "rgba.png"), (gray, "gray.jpg")):
        read = read_rgb_image(saved(tmp_path, image, name))
        assert np.array_equal(pixels(read), np.asarray(Image.open(tmp_path / name).convert("RGB")))
    assert pixels(read_rgb_image(str(tmp_path / "gray.png")))[0, 1].tolist() == [100, 100, 100]
    assert pixels(read_rgb_image(str(tmp_path / "rgba.png")))[0, 0].tolist() == [10, 20, 30]


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_images_are_scaled_not_clipped(tmp_path, suffix):
    values = np.array([[0, 257, 1000, 32768, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    read = read_rgb_image(saved(tmp_path, image, "deep" + suffix))
    assert pixels(read)[0, :, 0].tolist() == [0, 1, 4, 128, 255]  # PIL's own convert gives 0 255 255 255 255
    assert (pixels(read)[..., 0] == pixels(read)[..., 2]).all()


def test_big_endian_16bit_and_32bit_integer_images():
    big_endian = Image.frombytes("I;16B", (2, 1), np.array([256, 65535], dtype=">u2").tobytes())
    assert pixels(to_rgb8(big_endian))[0, :, 0].tolist() == [1, 255]
    sixteen_bit_as_int = Image.fromarray(np.array([[0, 65535]], dtype=np.int32))
    assert sixteen_bit_as_int.mode == "I"
    assert pixels(to_rgb8(sixteen_bit_as_int))[0, :, 0].tolist() == [0, 255]
    signed = Image.fromarray(np.array([[-1000, 0, 1000]], dtype=np.int32))  # outside 0..65535: min..max
    assert pixels(to_rgb8(signed))[0, :, 0].tolist() == [0, 128, 255]


def test_float_tiffs(tmp_path):
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert unit.mode == "F"
    assert pixels(read_rgb_image(saved(tmp_path, unit, "unit.tif")))[0, :, 0].tolist() == [0, 128, 255]
    hounsfield = Image.fromarray(np.array([[-1000.0, 0.0, 3000.0, np.nan]], dtype=np.float32))
    assert pixels(read_rgb_image(saved(tmp_path, hounsfield, "ct.tif")))[0, :, 0].tolist() == [0, 64, 255, 64]
    constant = Image.fromarray(np.full((2, 2), 7.5, dtype=np.float32))
    assert pixels(to_rgb8(constant)).max() == 0


def test_missing_and_corrupt_images_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Image not found: .*nope.png \(dataset BTMRI\)"):
        read_rgb_image(str(tmp_path / "nope.png"), dataset="BTMRI")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageReadError, match=r"Cannot read image .*text.png \(dataset BUSI\)"):
        read_rgb_image(str(tmp_path / "text.png"), dataset="BUSI")
    good = saved(tmp_path, Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)),
                 "cut.jpg")
    data = open(good, "rb").read()
    open(good, "wb").write(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.jpg.*truncated"):
        read_rgb_image(good)


def test_engine_read_image_uses_the_robust_reader(tmp_path):
    """DatasetWrapper reads through the engine's read_image: a 16-bit image must not come out white."""
    from clip_biomed.engine.utils import read_image

    path = tmp_path / "ramp16.png"
    Image.fromarray(np.tile(np.arange(0, 65536, 256, dtype=np.uint16), (4, 1))).save(path)
    pixels = np.asarray(read_image(str(path)))
    assert pixels.shape == (4, 256, 3) and len(np.unique(pixels)) > 200
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(str(tmp_path / "missing.png"))
