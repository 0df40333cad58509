from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import DataError
from imagesets import BadImageError, Box, open_rgb, to_rgb

from .conftest import write_image


def _check_rgb(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    assert img.mode == "RGB" and img.size == size
    arr = np.asarray(img)
    assert arr.dtype == np.uint8 and arr.shape == (size[1], size[0], 3)
    return arr


def test_grey_and_palette_become_rgb():
    grey = Image.fromarray(np.full((4, 5), 77, np.uint8), "L")
    assert (_check_rgb(to_rgb(grey), (5, 4)) == 77).all()
    pal = Image.new("P", (3, 3), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert tuple(_check_rgb(to_rgb(pal), (3, 3))[0, 0]) == (10, 200, 30)


def test_alpha_is_composited_on_black():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[0, 0, 3] = 255  # opaque
    rgba[0, 1, 3] = 0  # transparent: stored colour must not leak through
    rgba[1, :, 3] = 128
    arr = _check_rgb(to_rgb(Image.fromarray(rgba, "RGBA")), (2, 2))
    assert tuple(arr[0, 0]) == (200, 200, 200)
    assert tuple(arr[0, 1]) == (0, 0, 0)
    assert 95 <= arr[1, 0, 0] <= 105
    la = Image.fromarray(np.stack([np.full((2, 2), 90, np.uint8), np.full((2, 2), 255, np.uint8)], -1), "LA")
    assert (_check_rgb(to_rgb(la), (2, 2)) == 90).all()
    pal = Image.new("P", (2, 1), 0)
    pal.putpalette([250, 250, 250] * 256)
    pal.info["transparency"] = 0
    assert (_check_rgb(to_rgb(pal), (2, 1)) == 0).all()


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path):
    values = np.array([[0, 257 * 100], [65535, 257 * 255]], np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    img = open_rgb(path)
    arr = _check_rgb(img, (2, 2))[..., 0]
    assert arr.tolist() == [[0, 100], [255, 255]]
    wide = Image.fromarray(np.array([[0, 257 * 50]], np.int32), "I")
    assert _check_rgb(to_rgb(wide), (2, 1))[0, :, 0].tolist() == [0, 50]
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F")
    assert _check_rgb(to_rgb(floats), (3, 1))[0, :, 0].tolist() == [0, 128, 255]


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    r, g, b = _check_rgb(open_rgb(path), (8, 8))[4, 4]
    assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "text"])
def test_bad_files_raise_bad_image_error_naming_the_path(tmp_path: Path, damage: str):
    path = write_image(tmp_path / "x.JPEG", size=(64, 64), fmt="JPEG")
    data = path.read_bytes()
    payload = {
        "truncated": data[: len(data) // 2],
        "garbage": data[:200] + bytes(np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8)),
        "empty": b"",
        "text": b"<html>404 not found</html>",
    }[damage]
    path.write_bytes(payload)
    with pytest.raises(BadImageError) as info:
        open_rgb(path)
    assert info.value.path == str(path)
    assert str(path) in str(info.value) and "\n  fix: restore this file" in str(info.value) and isinstance(info.value, DataError)
    # It must survive a DataLoader worker sending it back (pickled), path intact.
    again = pickle.loads(pickle.dumps(info.value))
    assert again.path == str(path) and str(again) == str(info.value)


def test_a_truncated_file_is_an_error_even_after_lmms_eval_made_pil_tolerant(tmp_path: Path, monkeypatch):
    # Importing lmms-eval sets PIL's LOAD_TRUNCATED_IMAGES for the whole process (a --suite all run
    # imports it); the readers' promise must not depend on what ran before them.
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    path = write_image(tmp_path / "x.JPEG", size=(64, 64), fmt="JPEG")
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(BadImageError, match="x.JPEG"):
        open_rgb(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # what the process had is given back


def test_missing_file_is_not_a_bad_image(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        open_rgb(tmp_path / "nope.jpg")


def test_box_geometry():
    box = Box(2, 3, 6, 5, label=1)
    assert box.area == 8 and box.center == (4.0, 4.0)
