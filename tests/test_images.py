"""Finding and preprocessing images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import SHARED
from onnx import numpy_helper
from PIL import Image

from chainx.errors import ChainxError
from chainx.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    find_images,
    load_image,
    load_images,
    make_preprocessing,
    model_preprocessing,
)


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
    paths, labels, skipped = find_images(tmp_path)
    assert [p.name for p in paths] == ["1.jpg", "1.jpg", "loose.png"]
    assert labels == ["cat", "dog", ""]
    assert [p.name for p in skipped] == ["notes.txt"]
    prep = make_preprocessing([None, 3, 8, 8], None, 8, None, None)
    assert load_images(tmp_path, prep).array.shape == (3, 3, 8, 8)


def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ChainxError, match="no images found"):
        find_images(tmp_path)
    with pytest.raises(ChainxError, match="--size"):
        make_preprocessing([None, 3, None, None], None, None, None, None)
    with pytest.raises(ChainxError, match="channels-last"):
        make_preprocessing([None, 224, 224, 3], None, None, None, None)
    with pytest.raises(ChainxError, match="rank 2"):
        make_preprocessing([None, 10], None, None, None, None)
    with pytest.raises(ChainxError, match="--mean needs 1 or 3 values"):
        make_preprocessing([None, 3, 8, 8], None, None, (0.1, 0.2), None)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    prep = make_preprocessing([None, 3, 8, 8], None, None, None, None)
    with pytest.raises(ChainxError, match="none of its 1 image files could be read"):
        load_images(tmp_path, prep)


def _real_jpeg(path: Path) -> Path:
    """A real photo from ../shared when it is there, else one saved by PIL."""
    photos = sorted((SHARED / "data" / "hymenoptera" / "train" / "ants").glob("*.jpg"))
    if photos:
        path.write_bytes(photos[0].read_bytes())
    else:
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (64, 96, 3), np.uint8)).save(path, quality=90)
    return path


def test_placeholders_and_other_files_are_skipped_and_counted(tmp_path: Path) -> None:
    _real_jpeg(tmp_path / "photo.jpg")
    Image.new("RGB", (40, 40), (200, 200, 200)).save(tmp_path / "imageNotFound.gif")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".DS_Store").write_bytes(b"\0\0")
    prep = make_preprocessing([None, 3, 32, 32], None, None, None, None)
    images = load_images(tmp_path, prep)
    assert [p.name for p in images.paths] == ["photo.jpg"]
    message = images.skipped.describe()
    assert message.startswith("skipped 3 non-image or placeholder files")
    assert "imageNotFound.gif" in message


def test_a_truncated_jpeg_is_skipped_by_name_or_fails_when_strict(tmp_path: Path) -> None:
    good = _real_jpeg(tmp_path / "good.jpg")
    data = good.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    prep = make_preprocessing([None, 3, 32, 32], None, None, None, None)
    images = load_images(tmp_path, prep)
    assert [p.name for p in images.paths] == ["good.jpg"]
    assert "cut.jpg" in images.skipped.describe() and "garbage.png" in images.skipped.describe()
    with pytest.raises(ChainxError, match="cut.jpg.*--strict"):
        load_images(tmp_path, prep, strict=True)


def test_unusual_formats_read_as_the_same_picture(tmp_path: Path) -> None:
    """Grayscale, RGBA, 16-bit PNG, CMYK JPEG and an EXIF-rotated JPEG."""
    gradient = np.tile(np.linspace(0, 255, 48).astype(np.uint8), (32, 1))
    rgb = np.stack([gradient] * 3, axis=-1)
    Image.fromarray(gradient).save(tmp_path / "gray.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(gradient.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    rotated = Image.fromarray(np.ascontiguousarray(np.rot90(rgb)))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    rotated.save(tmp_path / "exif.jpg", exif=exif, quality=100)
    prep = make_preprocessing([None, 3, 32, 32], None, 32, (0.0,) * 3, (1.0,) * 3)
    reference = load_image(tmp_path / "gray.png", prep)
    for name in ("rgba.png", "deep.png", "cmyk.jpg", "exif.jpg"):
        image = load_image(tmp_path / name, prep)
        assert np.abs(image - reference).max() < 0.05, name


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    Image.new("1", (10_000, 10_000)).save(tmp_path / "bomb.png")  # 100 M pixels, ~12 kB
    assert (tmp_path / "bomb.png").stat().st_size < 100_000
    prep = make_preprocessing([None, 3, 32, 32], None, None, None, None)
    with pytest.raises(ChainxError, match="bomb.png.*decompression bomb"):
        load_images(tmp_path, prep, strict=True)


def test_npy_tensors_are_used_as_preprocessed_inputs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tensor = rng.standard_normal((3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "a.npy", tensor)
    np.save(tmp_path / "b.npy", tensor[None])
    np.save(tmp_path / "wrong.npy", tensor[:, :8])
    prep = make_preprocessing([None, 3, 16, 16], None, None, None, None)
    images = load_images(tmp_path, prep)
    assert [p.name for p in images.paths] == ["a.npy", "b.npy"]
    np.testing.assert_array_equal(images.array[0], tensor)
    assert "wrong.npy" in images.skipped.describe()
    bad = tensor.copy()
    bad[0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ChainxError, match="nan.npy.*NaN"):
        load_images(tmp_path, prep)


def test_mixed_sizes_and_images_smaller_than_the_crop(tmp_path: Path) -> None:
    Image.new("RGB", (5, 3), (255, 255, 255)).save(tmp_path / "tiny.png")
    Image.new("RGB", (300, 120), (255, 255, 255)).save(tmp_path / "wide.png")
    Image.new("RGB", (64, 200), (255, 255, 255)).save(tmp_path / "tall.png")
    prep = make_preprocessing([None, 3, 32, 32], None, None, (0.0,) * 3, (1.0,) * 3)
    images = load_images(tmp_path, prep)
    assert images.array.shape == (3, 3, 32, 32)
    np.testing.assert_allclose(images.array, 1.0, atol=1e-6)


def _normalising_model(body: str, constants: dict[str, list[float]]) -> onnx.ModelProto:
    model = onnx.parser.parse_model(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        net (float[N, 3, 8, 8] input) => (float[N, 3, 8, 8] out) {{
            {body}
        }}
        """
    )
    for name, value in constants.items():
        array = np.array(value, np.float32).reshape((1, -1, 1, 1) if len(value) > 1 else ())
        model.graph.initializer.append(numpy_helper.from_array(array, name))
    return model


@pytest.mark.parametrize(
    ("body", "constants", "mean", "std"),
    [
        (  # torchvision's normalisation inside the graph: [0, 1] pixels, nothing more
            "c = Sub (input, mean)\n out = Div (c, std)",
            {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
            (0.0,),
            (1.0,),
        ),
        (  # Keras' Rescaling(1/127.5, offset=-1): 0–255 pixels
            "c = Mul (input, scale)\n out = Add (c, shift)",
            {"scale": [1 / 127.5], "shift": [-1.0]},
            (0.0,),
            (1 / 255,),
        ),
        (  # Caffe's mean subtraction: 0–255 pixels
            "out = Sub (input, mean)",
            {"mean": [103.9, 116.8, 123.7]},
            (0.0,),
            (1 / 255,),
        ),
        (  # a constant divided by the input is no normalisation: ImageNet's defaults
            "out = Div (one, input)",
            {"one": [1.0]},
            IMAGENET_MEAN,
            IMAGENET_STD,
        ),
    ],
)
def test_a_model_that_normalises_its_input_gets_its_pixels_once(
    body: str, constants: dict[str, list[float]], mean: tuple, std: tuple
) -> None:
    model = _normalising_model(body, constants)
    prep = model_preprocessing(model, None, None, None, None)
    assert prep.mean == mean
    np.testing.assert_allclose(prep.std, std)
    assert ("normalises its input itself" in prep.describe()) is (mean == (0.0,))
    asked = model_preprocessing(model, None, None, (0.5,), (0.5,))  # the options win
    assert (asked.mean, asked.std, asked.note) == ((0.5,), (0.5,), None)


@pytest.mark.parametrize("shape", [[None, 3, None, None], ["N", 3, "H", "W"], [1, 3, 32, 48]])
def test_a_model_without_a_fixed_square_size_asks_for_size(shape: list) -> None:
    dims = [d if isinstance(d, int) else None for d in shape]
    with pytest.raises(ChainxError, match="not a fixed square size: give --size"):
        make_preprocessing(dims, None, None, None, None)
    if dims[2] is None:  # a dynamic size takes the one asked for
        assert make_preprocessing(dims, 40, None, None, None).size == 40
