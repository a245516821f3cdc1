"""Decoding image files: 8-bit gray/RGB, 12- and 16-bit radiographs keep their contrast."""
import numpy as np
import pytest
from PIL import Image

from fact_fast.data import read_image_file
from fact_fast.data.readers import high_bit_to_uint8


def _ramp(top, shape=(32, 48), dtype=np.uint16):
    return np.linspace(0, top, shape[0] * shape[1]).round().reshape(shape).astype(dtype)


def _save(arr, path):
    Image.fromarray(arr).save(path)
    return str(path)


def _expected(arr, full_scale):
    return np.rint(np.clip(arr.astype(np.float64) / full_scale, 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize("bits", [10, 12, 14, 16])
def test_high_bit_png_scaled_by_its_bit_depth(tmp_path, bits):
    top = 2 ** bits - 1
    arr = _ramp(top)
    path = _save(arr, tmp_path / f"ramp{bits}.png")
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # really stored as a 16-bit PNG
    out = read_image_file(path)
    assert out.dtype == np.uint8 and out.shape == arr.shape
    np.testing.assert_array_equal(out, _expected(arr, top))
    assert out.min() == 0 and out.max() == 255  # full contrast, not max = top / 65535 * 255
    rgb = read_image_file(path, "rgb")
    assert rgb.shape == arr.shape + (3,)
    np.testing.assert_array_equal(rgb, np.repeat(out[:, :, None], 3, axis=2))


def test_12bit_image_with_a_dark_maximum_keeps_the_12bit_scale(tmp_path):
    # max 3000 < 4095: still a 12-bit image, scaled by 4095 (one scale per detector), not by 3000
    arr = _ramp(3000)
    out = read_image_file(_save(arr, tmp_path / "dark12.png"))
    np.testing.assert_array_equal(out, _expected(arr, 4095))
    assert out.max() == round(3000 / 4095 * 255)


def test_percentile_window_ignores_hot_pixels(tmp_path):
    arr = _ramp(2000, shape=(40, 50)) + 1000  # 1000..3000
    arr[0, 0] = 65000  # a hot pixel pushes the image to 16 bits
    path = _save(arr, tmp_path / "hot.png")
    by_depth = read_image_file(path)
    assert by_depth[0, 0] == round(65000 / 65535 * 255) and np.percentile(by_depth, 99) < 15  # rest dark
    win = read_image_file(path, intensity="percentile")
    lo, hi = np.percentile(arr.astype(np.float64), (0.5, 99.5))
    np.testing.assert_array_equal(win, _expected(arr - lo, hi - lo))
    assert np.percentile(win, 99) > 250 and np.percentile(win, 1) < 5
    with pytest.raises(ValueError, match="intensity"):
        read_image_file(path, intensity="max")


def test_float_and_int32_tiffs(tmp_path):
    frac = np.linspace(0, 1, 30 * 20, dtype=np.float32).reshape(30, 20)
    out = read_image_file(_save(frac, tmp_path / "f.tiff"))
    np.testing.assert_array_equal(out, _expected(frac, 1.0))
    counts = _ramp(4000, dtype=np.int32)
    counts[0, :5] = -7  # negative values clip to black
    out = read_image_file(_save(counts, tmp_path / "i.tiff"))
    np.testing.assert_array_equal(out, _expected(counts, 4095))
    assert (out[0, :5] == 0).all()


def test_8bit_gray_and_rgb_unchanged(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (9, 7), dtype=np.uint8)
    np.testing.assert_array_equal(read_image_file(_save(gray, tmp_path / "g.png")), gray)
    rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    path = _save(rgb, tmp_path / "c.png")
    out = read_image_file(path, "rgb")
    np.testing.assert_array_equal(out, rgb)
    assert out.flags.writeable
    np.testing.assert_array_equal(read_image_file(path, "gray"), np.asarray(Image.fromarray(rgb).convert("L")))


def test_high_bit_edge_cases():
    assert high_bit_to_uint8(np.zeros((4, 4), np.uint16)).max() == 0  # black image stays black
    np.testing.assert_array_equal(high_bit_to_uint8(np.full((3, 3), 500, np.uint16), "percentile"), 0)
    assert high_bit_to_uint8(np.zeros((0, 5), np.uint16)).shape == (0, 5)
    with pytest.raises(ValueError, match="NaN"):
        high_bit_to_uint8(np.array([[np.nan, 1.0]], np.float32))


def test_corrupt_and_missing_files_raise_decode_errors(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(OSError):  # PIL.UnidentifiedImageError is an OSError
        read_image_file(str(bad))
    with pytest.raises(FileNotFoundError):
        read_image_file(str(tmp_path / "missing.png"))
