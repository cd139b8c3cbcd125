"""Tests for seglab.transforms.readers: TiffReader as a MONAI ImageReader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirstd, LoadImage, LoadImaged

from seglab.errors import DataFileError
from seglab.io.images import read_image, write_image
from seglab.transforms import TiffReader

SPACING = (0.05, 0.0078, 0.0078)  # (z, y, x) um, SBF-SEM-like


def grey_stack(shape=(4, 6, 9), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def rgb_image(shape=(5, 8), seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def test_reads_a_zyx_stack_with_its_spacing(tmp_path) -> None:
    path = write_image(tmp_path / "stack.tif", grey_stack(), spacing=SPACING)
    reader = TiffReader()
    array, meta = reader.get_data(reader.read(path))
    assert np.array_equal(array, grey_stack())
    assert meta["spatial_shape"].tolist() == [4, 6, 9]
    assert meta["original_channel_dim"] == "no_channel"
    assert np.allclose(meta["spacing"], SPACING) and meta["spacing_unit"] == "um"
    assert np.allclose(meta["affine"], np.diag([*SPACING, 1.0]))
    assert meta["axes"] == "ZYX" and meta["format"] == "tiff"


def test_load_image_with_a_reader_instance(tmp_path) -> None:
    path = write_image(tmp_path / "stack.tif", grey_stack(), spacing=SPACING)
    img = LoadImage(reader=TiffReader(), ensure_channel_first=True, dtype=None)(path)
    assert isinstance(img, MetaTensor) and img.shape == (1, 4, 6, 9) and img.dtype == torch.uint8
    assert np.array_equal(img.numpy()[0], grey_stack())
    assert np.allclose(img.pixdim.numpy(), SPACING)
    assert img.meta["filename_or_obj"] == str(path)


@pytest.mark.parametrize("reader", ["seglab.transforms.TiffReader", TiffReader])
def test_load_imaged_resolves_the_reader_by_dotted_name_or_class(tmp_path, reader) -> None:
    image = write_image(tmp_path / "image.tif", rgb_image())
    label = write_image(tmp_path / "label.png", rgb_image(seed=2))
    load = LoadImaged(keys=["image", "label"], reader=reader, image_only=True)
    assert isinstance(load._loader.readers[-1], TiffReader)
    data = EnsureChannelFirstd(keys=["image", "label"])(load({"image": image, "label": label}))
    assert data["image"].shape == (3, 5, 8) and data["label"].shape == (3, 5, 8)
    assert data["image"].dtype == torch.float32  # LoadImage's default dtype
    # channel-first of the row-major image: no transposition (MONAI's PILReader swaps y and x)
    assert np.array_equal(data["image"].numpy(), np.moveaxis(rgb_image(), -1, 0))
    assert np.array_equal(data["label"].numpy(), np.moveaxis(rgb_image(seed=2), -1, 0))
    assert data["image"].meta["original_channel_dim"] == -1


def test_png_and_nifti_follow_seglab_axis_order(tmp_path) -> None:
    png = write_image(tmp_path / "grey.png", grey_stack((6, 9)))
    reader = TiffReader()
    array, meta = reader.get_data(reader.read(png))
    assert np.array_equal(array, grey_stack((6, 9)))
    assert np.isnan(meta["spacing"]).all() and np.array_equal(meta["affine"], np.eye(3))
    nii = write_image(tmp_path / "stack.nii.gz", grey_stack(), spacing=SPACING)
    array, meta = reader.get_data(reader.read(nii))
    assert np.array_equal(array, read_image(nii).array) and array.shape == (4, 6, 9)
    assert np.allclose(meta["spacing"], SPACING) and meta["format"] == "nifti"


def test_several_files_are_stacked_as_channels(tmp_path) -> None:
    a = write_image(tmp_path / "a.tif", grey_stack((6, 9), 0))
    b = write_image(tmp_path / "b.tif", grey_stack((6, 9), 1))
    img = LoadImage(reader=TiffReader(), ensure_channel_first=True, dtype=None)([a, b])
    assert img.shape == (2, 6, 9)
    assert np.array_equal(img.numpy(), np.stack([grey_stack((6, 9), 0), grey_stack((6, 9), 1)]))
    c = write_image(tmp_path / "c.tif", rgb_image((6, 9)))
    d = write_image(tmp_path / "d.tif", rgb_image((6, 9), seed=3))
    array, meta = TiffReader().get_data(TiffReader().read([c, d]))
    assert array.shape == (6, 9, 6) and meta["original_channel_dim"] == -1


def test_verify_suffix() -> None:
    reader = TiffReader()
    for name in ("a.tif", "a.TIFF", "a.ome.tif", "a.png", "a.nii", "a.nii.gz", ["a.tif", "b.png"]):
        assert reader.verify_suffix(name), name
    for name in ("a.jpg", "a.npy", ["a.tif", "b.jpg"], []):
        assert not reader.verify_suffix(name), name


def test_errors(tmp_path) -> None:
    reader = TiffReader()
    with pytest.raises(DataFileError, match="not found") as info:
        reader.read(tmp_path / "missing.tif")
    assert "\n" not in str(info.value)
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(DataFileError, match="broken.tif"):
        reader.read(tmp_path / "broken.tif")
    a = write_image(tmp_path / "a.tif", grey_stack((6, 9)))
    b = write_image(tmp_path / "b.tif", grey_stack((6, 8)))
    with pytest.raises(DataFileError, match="cannot stack"):
        reader.get_data(reader.read([a, b]))
    c = write_image(tmp_path / "c.tif", grey_stack((6, 9)), spacing=(0.1, 0.1))
    with pytest.raises(DataFileError, match="same pixel size"):
        reader.get_data(reader.read([a, c]))


def test_the_reader_hands_monai_a_writable_array(tmp_path) -> None:
    path = write_image(tmp_path / "rgb.png", np.zeros((8, 6, 3), np.uint8))
    assert not read_image(path).array.flags.writeable  # seglab's reader protects its result
    array, _ = TiffReader().get_data(TiffReader().read(path))
    assert array.flags.writeable
