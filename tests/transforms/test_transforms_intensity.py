"""Tests for seglab.transforms.intensity: the eq. 2.4 remap with its report in the meta data."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from monai.data import MetaTensor, list_data_collate
from scipy import ndimage

from seglab.errors import SeglabError
from seglab.intensity import PUBLISHED_REFERENCE_PEAKS, ReferencePeaks, remap_to_reference
from seglab.transforms import IntensityRemap, IntensityRemapd


def two_peak_slice(seed: int, shift: float = 0.0, shape=(96, 96)) -> np.ndarray:
    """uint8: smooth blobs (30 %) at 150 + shift, the rest at 180 + shift, noise sd 5."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 4)
    dark = field > np.quantile(field, 0.7)
    values = np.where(dark, 150.0 + shift, 180.0 + shift) + rng.normal(0, 5, shape)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def one_peak_slice(seed: int, shape=(96, 96)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(rng.normal(175, 6, shape)), 0, 255).astype(np.uint8)


def stack(bad: tuple[int, ...] = (2,), depth: int = 5) -> np.ndarray:
    slices = [one_peak_slice(z) if z in bad else two_peak_slice(z, 2.0 * z) for z in range(depth)]
    return np.stack(slices)[np.newaxis]  # (1, Z, H, W)


def test_single_image_matches_the_core() -> None:
    image = two_peak_slice(0)[np.newaxis]
    out = IntensityRemap()(image)
    expected, report = remap_to_reference(image[0], PUBLISHED_REFERENCE_PEAKS)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == image.shape
    assert np.array_equal(out[0], expected)
    assert report.failed == () and not np.array_equal(out, image)


def test_stack_is_remapped_per_slice_and_failures_go_into_the_meta(caplog) -> None:
    volume = stack(bad=(2,))
    expected, report = remap_to_reference(volume[0], PUBLISHED_REFERENCE_PEAKS, slice_axis=0)
    with caplog.at_level(logging.WARNING, logger="seglab.transforms.intensity"):
        out = IntensityRemap("published")(MetaTensor(torch.as_tensor(volume)))
    assert isinstance(out, MetaTensor) and out.dtype == torch.uint8
    assert np.array_equal(out.numpy()[0], expected)
    recorded = json.loads(out.meta["intensity_remap"])
    assert recorded == json.loads(json.dumps(report.as_dict()))
    assert recorded["failed"] == [2] and recorded["unchanged"] == [2]
    assert out.meta["intensity_remap_failed"] == 1
    assert np.array_equal(out.numpy()[0, 2], volume[0, 2])
    assert "detection failed on slice(s) 2" in caplog.text


def test_channels_of_a_2_5d_input_are_slices() -> None:
    volume = stack(bad=())[0, :3]  # (3, H, W)
    out, report = IntensityRemap().remap(torch.as_tensor(volume))
    expected, _ = remap_to_reference(volume, PUBLISHED_REFERENCE_PEAKS, slice_axis=0)
    assert type(out) is torch.Tensor and np.array_equal(out.numpy(), expected)
    assert report.n_slices == 3 and report.slice_axis == 0


def test_fallback_and_reference_forms_are_passed_through() -> None:
    volume = stack(bad=(0, 2))
    reference = ReferencePeaks(P1=160.0, P2=190.0)
    for given in (reference, (160.0, 190.0), [160, 190]):
        out, report = IntensityRemap(given, fallback="neighbours").remap(volume)
        expected, core = remap_to_reference(
            volume[0], (160.0, 190.0), fallback="neighbours", slice_axis=0
        )
        assert np.array_equal(out[0], expected)
        assert report.interpolated == (0, 2) == core.interpolated


def test_float_images_need_and_use_a_value_range() -> None:
    image = two_peak_slice(3)[np.newaxis].astype(np.float32)  # what LoadImage gives by default
    with pytest.raises(SeglabError, match="outside the assumed range"):
        IntensityRemap()(image)
    out = IntensityRemap(value_range=(0, 255))(image)
    expected, _ = remap_to_reference(image[0], PUBLISHED_REFERENCE_PEAKS, value_range=(0, 255))
    assert out.dtype == np.float32 and np.allclose(out[0], expected)
    as_uint8 = IntensityRemap(value_range=(0, 255), dtype=np.uint8)(image)
    assert as_uint8.dtype == np.uint8


def test_dictionary_version_records_reports_for_plain_arrays_too() -> None:
    volume = stack(bad=(1,))
    data = {
        "image": volume.copy(),
        "stack": MetaTensor(torch.as_tensor(volume)),
        "label": np.zeros_like(volume),
    }
    out = IntensityRemapd(keys=["image", "stack"])(data)
    assert np.array_equal(out["label"], data["label"])
    assert np.array_equal(out["image"], out["stack"].numpy())
    assert out["image_meta_dict"]["intensity_remap_failed"] == 1
    assert json.loads(out["image_meta_dict"]["intensity_remap"])["failed"] == [1]
    assert out["stack"].meta["intensity_remap_failed"] == 1
    assert "stack_meta_dict" not in out


def test_remap_reports_collate_in_a_batch() -> None:
    remap = IntensityRemap()
    items = [{"image": remap(MetaTensor(torch.as_tensor(stack(bad=b))))} for b in ((1,), ())]
    batch = list_data_collate(items)
    assert batch["image"].shape == (2, 1, 5, 96, 96)
    assert batch["image"].meta["intensity_remap_failed"].tolist() == [1, 0]
    assert [json.loads(r)["failed"] for r in batch["image"].meta["intensity_remap"]] == [[1], []]


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((2, 3, 8, 8), np.uint8), r"\(1, Z, H, W\) stack, got shape \(2, 3, 8, 8\)"),
        (np.zeros((8, 8), np.uint8), "EnsureChannelFirst"),
        (np.zeros((1, 0, 8), np.uint8), "empty"),
        (np.zeros((1, 8, 8), bool), "integer or floating-point"),
    ],
)
def test_bad_images(image: np.ndarray, match: str) -> None:
    with pytest.raises(SeglabError, match=match) as info:
        IntensityRemap()(image)
    assert "\n" not in str(info.value)


def test_bad_options_and_keys() -> None:
    with pytest.raises(SeglabError, match="unknown reference 'paper'"):
        IntensityRemap("paper")
    with pytest.raises(SeglabError, match="reference must be"):
        IntensityRemap(reference=5)
    with pytest.raises(SeglabError, match="fallback must be"):
        IntensityRemap(fallback="nearest")(two_peak_slice(0)[np.newaxis])
    with pytest.raises(SeglabError, match=r"key\(s\) \['image'\] not in the data"):
        IntensityRemapd(keys="image")({"stack": stack()})
