"""Tests for seglab.transforms.slices: 2.5D inputs of 1, 3 or 5 adjacent slices."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from seglab.errors import SeglabError
from seglab.transforms import (
    AdjacentSlices,
    AdjacentSlicesd,
    RandAdjacentSlicesd,
    adjacent_slice_indices,
)


def numbered_stack(depth: int = 5, shape=(3, 4), channel: bool = True) -> np.ndarray:
    """Slice z holds the value z everywhere, so the output names the slices it took."""
    volume = np.broadcast_to(np.arange(depth, dtype=np.uint8)[:, None, None], (depth, *shape))
    volume = np.ascontiguousarray(volume)
    return volume[np.newaxis] if channel else volume


@pytest.mark.parametrize(
    ("depth", "index", "k", "mode", "expected"),
    [
        (5, 2, 1, "mirror", [2]),
        (5, 2, 3, "mirror", [1, 2, 3]),
        (5, 0, 3, "mirror", [1, 0, 1]),
        (5, 0, 5, "mirror", [2, 1, 0, 1, 2]),
        (5, 4, 5, "mirror", [2, 3, 4, 3, 2]),
        (5, 3, 5, "mirror", [1, 2, 3, 4, 3]),
        (2, 0, 5, "mirror", [0, 1, 0, 1, 0]),
        (1, 0, 5, "mirror", [0, 0, 0, 0, 0]),
        (5, 0, 5, "symmetric", [1, 0, 0, 1, 2]),
        (5, 4, 5, "edge", [2, 3, 4, 4, 4]),
    ],
)
def test_indices_by_hand(depth: int, index: int, k: int, mode: str, expected: list) -> None:
    assert adjacent_slice_indices(depth, index, k, mode).tolist() == expected


@pytest.mark.parametrize("channel", [True, False])
def test_slices_become_channels(channel: bool) -> None:
    volume = numbered_stack(channel=channel)
    out = AdjacentSlices(5)(volume, 0)
    assert isinstance(out, np.ndarray) and out.shape == (5, 3, 4) and out.dtype == np.uint8
    assert out[:, 0, 0].tolist() == [2, 1, 0, 1, 2]
    as_tensor = AdjacentSlices(3)(torch.as_tensor(volume), 4)
    assert type(as_tensor) is torch.Tensor and as_tensor[:, 0, 0].tolist() == [3, 4, 3]


def test_real_pixels_are_copied_from_the_right_slices() -> None:
    volume = np.random.default_rng(0).random((1, 6, 5, 7)).astype(np.float32)
    out = AdjacentSlices(3)(volume, 5)
    assert np.array_equal(out, volume[0, [4, 5, 4]])


def test_all_slices_without_an_index() -> None:
    volume = numbered_stack(depth=4)
    out = AdjacentSlices(3)(volume)
    assert out.shape == (4, 3, 3, 4)
    for z in range(4):
        assert np.array_equal(out[z], AdjacentSlices(3)(volume, z))


def test_meta_tensor_records_the_slice_and_its_plane() -> None:
    spacing = (0.05, 0.01, 0.02)  # (z, y, x) um
    affine = torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64))
    volume = MetaTensor(torch.as_tensor(numbered_stack()), affine=affine)
    out = AdjacentSlices(3)(volume, 3)
    assert isinstance(out, MetaTensor)
    assert out.meta["slice_index"] == 3 and out.meta["adjacent_slices"] == 3
    for y, x in [(0, 0), (2, 3), (1, 2)]:
        world = out.affine @ torch.tensor([y, x, 0.0, 1.0], dtype=torch.float64)
        assert torch.allclose(world[:3], torch.tensor([3 * 0.05, y * 0.01, x * 0.02]).double())
    assert torch.equal(volume.affine, affine)  # the input keeps its own


def test_dictionary_version_gives_labels_the_centre_slice() -> None:
    image, label = numbered_stack(), numbered_stack() * 10
    out = AdjacentSlicesd(keys="image", label_keys="label", num_slices=5, index=1)(
        {"image": image, "label": label, "id": "a"}
    )
    assert out["image"][:, 0, 0].tolist() == [1, 0, 1, 2, 3]
    assert out["label"].shape == (1, 3, 4) and out["label"][0, 0, 0] == 10
    every = AdjacentSlicesd(keys="image", label_keys="label", num_slices=3)(
        {"image": image, "label": label}
    )
    assert every["image"].shape == (5, 3, 3, 4) and every["label"].shape == (5, 1, 3, 4)
    assert every["label"][:, 0, 0, 0].tolist() == [0, 10, 20, 30, 40]


def test_random_slice_is_shared_by_image_and_label_and_repeatable() -> None:
    data = {"image": numbered_stack(depth=7), "label": numbered_stack(depth=7) * 10}

    def draws(seed: int, n: int = 30) -> list[int]:
        t = RandAdjacentSlicesd(keys="image", label_keys="label", num_slices=3)
        t.set_random_state(seed)
        picked = []
        for _ in range(n):
            out = t(data)
            centre = int(out["image"][1, 0, 0])
            assert int(out["label"][0, 0, 0]) == 10 * centre
            assert out["image"].shape == (3, 3, 4) and out["label"].shape == (1, 3, 4)
            picked.append(centre)
        return picked

    assert draws(0) == draws(0)
    assert draws(0) != draws(1)
    assert set(Counter(draws(2, 200))) == set(range(7))


@pytest.mark.parametrize("k", [0, 2, 4, 7, True, "3"])
def test_slice_count_must_be_1_3_or_5(k) -> None:
    with pytest.raises(SeglabError, match=r"num_slices must be 1, 3 or 5") as info:
        AdjacentSlices(k)
    assert "\n" not in str(info.value)


def test_bad_inputs() -> None:
    with pytest.raises(SeglabError, match="outside the stack of 5 slices"):
        AdjacentSlices(3)(numbered_stack(), 5)
    with pytest.raises(SeglabError, match="must be an integer"):
        AdjacentSlices(3)(numbered_stack(), 1.5)
    with pytest.raises(SeglabError, match=r"single-channel stack"):
        AdjacentSlices(3)(np.zeros((2, 5, 3, 4)), 0)
    with pytest.raises(SeglabError, match="empty stack"):
        AdjacentSlices(3)(np.zeros((1, 0, 3, 4)), 0)
    with pytest.raises(SeglabError, match="unknown slice mode"):
        AdjacentSlices(3, mode="wrap")
    with pytest.raises(SeglabError, match="stacks of different shapes"):
        RandAdjacentSlicesd(keys="image", label_keys="label")(
            {"image": numbered_stack(depth=5), "label": numbered_stack(depth=4)}
        )
    with pytest.raises(SeglabError, match=r"key\(s\) \['label'\] not in the data"):
        RandAdjacentSlicesd(keys="image", label_keys="label")({"image": numbered_stack()})
