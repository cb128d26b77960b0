"""Finding and preprocessing images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chainx.errors import ChainxError
from chainx.images import find_images, load_image, load_images, make_preprocessing


def test_preprocessing_resizes_the_short_side_then_crops_the_centre(tmp_path: Path) -> None:
    # Left half black, right half white, 80×40: the short side goes to 16, the crop is 14.
    array = np.zeros((40, 80, 3), np.uint8)
    array[:, 40:] = 255
    Image.fromarray(array).save(tmp_path / "a.png")
    prep = make_preprocessing([None, 3, 14, 14], None, None, (0.5,) * 3, (0.5,) * 3)
    assert prep.resize == 16
    image = load_image(tmp_path / "a.png", prep)
    assert image.shape == (3, 14, 14)
    assert image.dtype == np.float32
    assert np.isclose(image[0, 7, 0], -1.0) and np.isclose(image[0, 7, -1], 1.0)
    assert "resize short side to 16" in prep.describe()


def test_gray_model_reads_images_as_one_channel(tmp_path: Path) -> None:
    Image.new("RGB", (28, 28), (255, 0, 0)).save(tmp_path / "red.png")
    prep = make_preprocessing([1, 1, 28, 28], None, 28, None, None)
    image = load_image(tmp_path / "red.png", prep)
    assert image.shape == (1, 28, 28)


def test_class_folders_give_labels_and_flat_folders_none(tmp_path: Path) -> None:
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / name / "1.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "loose.png")
    (tmp_path / "notes.txt").write_text("not an image")
    paths, labels = find_images(tmp_path)
    assert [p.name for p in paths] == ["1.jpg", "1.jpg", "loose.png"]
    assert labels == ["cat", "dog", ""]
    prep = make_preprocessing([None, 3, 8, 8], None, 8, None, None)
    assert load_images(tmp_path, prep).array.shape == (3, 3, 8, 8)


def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ChainxError, match="no images found"):
        find_images(tmp_path)
    with pytest.raises(ChainxError, match="--size"):
        make_preprocessing([None, 3, None, None], None, None, None, None)
    with pytest.raises(ChainxError, match="--mean needs 1 or 3 values"):
        make_preprocessing([None, 3, 8, 8], None, None, (0.1, 0.2), None)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    prep = make_preprocessing([None, 3, 8, 8], None, None, None, None)
    with pytest.raises(ChainxError, match="broken.jpg"):
        load_image(tmp_path / "broken.jpg", prep)
