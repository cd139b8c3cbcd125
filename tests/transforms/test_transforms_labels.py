"""Tests for seglab.transforms.labels: colour-coded label images to class-index maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from seglab.errors import DataFileError, SeglabError
from seglab.io.labels import LUNG_CLASSES, ClassColour, ColourTable
from seglab.transforms import DecodeColourLabels, DecodeColourLabelsd


def index_map(shape: tuple[int, int] = (6, 9), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 6, shape).astype(np.uint8)


def channel_first_rgb(indices: np.ndarray, table: ColourTable = LUNG_CLASSES) -> np.ndarray:
    return np.moveaxis(table.encode(indices), -1, 0)


def test_decodes_channel_first_rgb_like_the_core() -> None:
    indices = index_map()
    rgb = channel_first_rgb(indices)
    out = DecodeColourLabels()(rgb)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == (1, 6, 9)
    assert np.array_equal(out[0], indices)
    assert np.array_equal(out[0], LUNG_CLASSES.decode(np.moveaxis(rgb, 0, -1)))


def test_float_meta_tensor_from_load_image_keeps_its_kind_and_meta() -> None:
    indices = index_map()
    rgb = MetaTensor(torch.as_tensor(channel_first_rgb(indices), dtype=torch.float32))
    rgb.meta["filename_or_obj"] = "label.png"
    out = DecodeColourLabels(dtype=np.int64)(rgb)
    assert isinstance(out, MetaTensor) and out.dtype == torch.int64
    assert out.meta["filename_or_obj"] == "label.png"
    assert np.array_equal(out.numpy()[0], indices)
    plain = DecodeColourLabels()(torch.as_tensor(channel_first_rgb(indices)))
    assert type(plain) is torch.Tensor and plain.dtype == torch.uint8


def test_channel_last_and_alpha() -> None:
    indices = index_map()
    rgb = LUNG_CLASSES.encode(indices)
    assert np.array_equal(DecodeColourLabels(channel_dim=-1)(rgb)[0], indices)
    rgba = np.concatenate([channel_first_rgb(indices), np.full((1, 6, 9), 255, np.uint8)])
    assert np.array_equal(DecodeColourLabels()(rgba)[0], indices)


def test_table_from_object_or_json_path(tmp_path) -> None:
    table = ColourTable(
        [ClassColour(0, "background", (0, 0, 0)), ClassColour(7, "mito", (250, 10, 10))]
    )
    path = table.save(tmp_path / "classes.json")
    indices = np.where(index_map() > 2, 7, 0).astype(np.uint8)
    rgb = channel_first_rgb(indices, table)
    for given in (table, path, str(path)):
        assert np.array_equal(DecodeColourLabels(given)(rgb)[0], indices)


def test_tolerance_is_passed_through() -> None:
    indices = index_map()
    rgb = channel_first_rgb(indices).astype(np.int16)
    rgb[0] = np.clip(rgb[0] + 2, 0, 255)
    with pytest.raises(DataFileError):
        DecodeColourLabels()(rgb)
    assert np.array_equal(DecodeColourLabels(tolerance=3)(rgb)[0], indices)


def test_unknown_colours_raise_the_core_error() -> None:
    rgb = channel_first_rgb(index_map())
    rgb[:, 0, 0] = (10, 20, 30)
    with pytest.raises(DataFileError, match=r"1 pixels have colours not in the class table") as e:
        DecodeColourLabels()(rgb)
    assert "(10, 20, 30) x1" in str(e.value) and "\n" not in str(e.value)


def test_empty_image_gives_an_empty_map() -> None:
    out = DecodeColourLabels()(np.zeros((3, 0, 4), np.uint8))
    assert out.shape == (1, 0, 4) and out.dtype == np.uint8


def test_dictionary_version_maps_keys() -> None:
    indices = index_map()
    data = {"image": np.zeros((3, 6, 9)), "label": channel_first_rgb(indices)}
    out = DecodeColourLabelsd(keys="label", table="lung")(data)
    assert out["image"] is data["image"]
    assert np.array_equal(out["label"][0], indices)
    assert DecodeColourLabelsd(keys="label", allow_missing_keys=True)({"x": 1}) == {"x": 1}


@pytest.mark.parametrize(
    ("label", "channel_dim", "match"),
    [
        (np.zeros((1, 6, 9), np.uint8), 0, r"3 \(RGB\) or 4 \(RGBA\) channels first"),
        (np.zeros((6, 9), np.uint8), 0, r"got shape \(6, 9\)"),
        (np.zeros((3, 6, 9), np.uint8), -1, "channels last"),
    ],
)
def test_wrong_channel_count(label: np.ndarray, channel_dim: int, match: str) -> None:
    with pytest.raises(SeglabError, match=match) as info:
        DecodeColourLabels(channel_dim=channel_dim)(label)
    assert "\n" not in str(info.value)


def test_bad_options_and_keys(tmp_path) -> None:
    with pytest.raises(SeglabError, match="channel_dim must be 0"):
        DecodeColourLabels(channel_dim=2)
    with pytest.raises(SeglabError, match="table must be a ColourTable"):
        DecodeColourLabels(table=6)
    with pytest.raises(DataFileError, match="not found"):
        DecodeColourLabels(table=tmp_path / "missing.json")
    with pytest.raises(SeglabError, match=r"key\(s\) \['label'\] not in the data"):
        DecodeColourLabelsd(keys="label")({"image": np.zeros((3, 2, 2))})
    with pytest.raises(SeglabError, match="numpy array or a torch tensor"):
        DecodeColourLabels()([[0, 0, 0]])
