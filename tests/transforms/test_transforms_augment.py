"""Tests for seglab.transforms.augment: D4 rotations/flips as invertible MONAI transforms."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Flip, Invertd, Rotate90

from seglab.d4 import D4
from seglab.errors import SeglabError
from seglab.transforms import D4Transform, D4Transformd, RandD4, RandD4d, d4_index_map

AFFINE = torch.tensor(
    [[0.5, 0.0, 0.0, 3.0], [0.0, 0.25, 0.0, -2.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]],
    dtype=torch.float64,
)


def image(shape: tuple[int, ...] = (2, 5, 7), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def meta_image(shape: tuple[int, ...] = (2, 5, 7), seed: int = 0) -> MetaTensor:
    return MetaTensor(torch.as_tensor(image(shape, seed)), affine=AFFINE.clone())


@pytest.mark.parametrize("index", range(8))
def test_d4_transform_matches_the_core_for_every_kind(index: int) -> None:
    x = image()
    expected = D4[index].apply(x)
    as_numpy = D4Transform(index)(x)
    as_tensor = D4Transform(index)(torch.as_tensor(x))
    as_meta = D4Transform(index)(meta_image())
    assert isinstance(as_numpy, np.ndarray) and np.array_equal(as_numpy, expected)
    assert type(as_tensor) is torch.Tensor and np.array_equal(as_tensor.numpy(), expected)
    assert isinstance(as_meta, MetaTensor) and np.array_equal(as_meta.numpy(), expected)
    # plain arrays are undone without a record
    assert np.array_equal(D4Transform(index).inverse(as_numpy), x)
    assert np.array_equal(D4Transform(index).inverse(as_tensor).numpy(), x)


@pytest.mark.parametrize("index", range(8))
def test_affine_and_pixels_match_monai_rotate90_and_flip(index: int) -> None:
    element = D4[index]
    reference = Rotate90(k=element.quarter_turns)(meta_image())
    if element.flip:
        reference = Flip(spatial_axis=1)(reference)
    ours = D4Transform(index)(meta_image())
    assert torch.equal(ours.as_tensor(), reference.as_tensor())
    assert torch.allclose(ours.affine, reference.affine, atol=1e-12)


def test_index_map_sends_output_pixels_to_their_source() -> None:
    x = image((1, 4, 6))
    for element in D4:
        out = element.apply(x)[0]
        t = d4_index_map(element, (4, 6))
        for a in range(out.shape[0]):
            for b in range(out.shape[1]):
                i, j, _ = (t @ [a, b, 1]).round().astype(int)
                assert out[a, b] == x[0, i, j]


def test_stacks_are_rotated_in_their_last_two_axes() -> None:
    x = image((2, 3, 4, 5))
    assert np.array_equal(D4Transform(5)(x), D4[5].apply(x))
    out = D4Transform(1)(MetaTensor(torch.as_tensor(x)))
    assert out.shape == (2, 3, 5, 4)
    back = D4Transform(1).inverse(out)
    assert torch.equal(back.as_tensor(), torch.as_tensor(x))
    assert torch.allclose(back.affine, torch.eye(4, dtype=torch.float64))


def test_empty_images_keep_their_swapped_shape() -> None:
    assert D4Transform(1)(np.zeros((2, 0, 3), np.float32)).shape == (2, 3, 0)
    assert D4Transform(7)(torch.zeros(2, 0, 3)).shape == (2, 3, 0)


def test_rand_d4_is_repeatable_with_a_seed_and_uses_all_eight_elements() -> None:
    def draws(seed: int, n: int) -> list[int]:
        t = RandD4().set_random_state(seed)
        return [t(meta_image()).applied_operations[-1]["extra_info"]["d4_index"] for _ in range(n)]

    assert draws(3, 20) == draws(3, 20)
    assert draws(3, 20) != draws(4, 20)
    counts = Counter(draws(5, 400))
    assert sorted(counts) == list(range(8))
    assert all(30 <= c <= 70 for c in counts.values())  # 50 expected each


def test_rand_d4_result_is_the_recorded_element() -> None:
    t = RandD4().set_random_state(1)
    for seed in range(6):
        x = meta_image(seed=seed)
        out = t(x)
        index = out.applied_operations[-1]["extra_info"]["d4_index"]
        assert np.array_equal(out.numpy(), D4[index].apply(x.numpy()))


@pytest.mark.parametrize("seed", range(4))
def test_rand_d4_inverse_restores_pixels_and_affine(seed: int) -> None:
    x = meta_image(seed=seed)
    t = RandD4().set_random_state(seed)
    out = t(x.clone())
    back = t.inverse(out)
    assert torch.equal(back.as_tensor(), x.as_tensor())
    assert torch.allclose(back.affine, AFFINE)
    assert len(back.applied_operations) == 0


def test_prob_zero_is_identity_and_inverts_to_itself() -> None:
    x = meta_image()
    t = RandD4(prob=0.0)
    out = t(x.clone())
    assert torch.equal(out.as_tensor(), x.as_tensor())
    assert out.applied_operations[-1]["do_transforms"] is False
    assert torch.equal(t.inverse(out).as_tensor(), x.as_tensor())


def test_element_subsets() -> None:
    t = RandD4(elements="flips").set_random_state(0)
    seen = {t(meta_image()).applied_operations[-1]["extra_info"]["d4_index"] for _ in range(60)}
    assert seen == {0, 2, 4, 6}
    t = RandD4(elements=[3]).set_random_state(0)
    assert np.array_equal(t(image()), D4[3].apply(image()))


def test_rand_d4d_keeps_image_and_label_aligned() -> None:
    t = RandD4d(keys=["image", "label"]).set_random_state(7)
    indices = set()
    for seed in range(12):
        x = meta_image((3, 6, 9), seed)
        label = MetaTensor((x[:1] > 0.5).to(torch.uint8))
        out = t({"image": x, "label": label, "name": "a"})
        assert out["name"] == "a"
        assert torch.equal(out["label"].as_tensor(), (out["image"][:1] > 0.5).to(torch.uint8))
        ops = [out[k].applied_operations[-1]["extra_info"]["d4_index"] for k in ("image", "label")]
        assert ops[0] == ops[1]
        indices.add(ops[0])
    assert len(indices) > 3


def test_rand_d4d_inverse_through_monai_invertd() -> None:
    transform = Compose([RandD4d(keys=["image"])]).set_random_state(11)
    inverter = Invertd(keys="pred", transform=transform, orig_keys="image")
    applied = set()
    for seed in range(6):
        x = meta_image((2, 5, 7), seed)
        out = transform({"image": x.clone()})
        applied.add(out["image"].applied_operations[-1]["extra_info"]["d4_index"])
        out["pred"] = out["image"] * 2.0  # a "prediction" in the transformed frame
        restored = inverter(out)["pred"]
        assert restored.shape == x.shape
        assert torch.allclose(restored.as_tensor(), x.as_tensor() * 2.0)
        assert torch.allclose(restored.affine, AFFINE)
    assert applied - {0}, "no non-identity element was drawn"


def test_compose_inverse_undoes_rand_d4d_on_all_keys() -> None:
    transform = Compose([RandD4d(keys=["image", "label"], elements=[1])])
    x = meta_image((1, 4, 6))
    label = MetaTensor(torch.arange(24).reshape(1, 4, 6))
    out = transform({"image": x.clone(), "label": label.clone()})
    assert out["image"].shape == (1, 6, 4)
    back = transform.inverse(out)
    assert torch.equal(back["image"].as_tensor(), x.as_tensor())
    assert torch.equal(back["label"].as_tensor(), label.as_tensor())


def test_d4_transformd_maps_keys_and_inverts() -> None:
    t = D4Transformd(keys=["image", "label"], index=6)
    x, label = image((2, 4, 5)), image((1, 4, 5), seed=1)
    out = t({"image": x, "label": label})
    assert np.array_equal(out["image"], D4[6].apply(x))
    assert np.array_equal(out["label"], D4[6].apply(label))
    back = t.inverse(out)
    assert np.array_equal(back["image"], x) and np.array_equal(back["label"], label)


def test_rand_d4_allows_missing_keys_when_asked() -> None:
    out = RandD4d(keys=["image", "label"], allow_missing_keys=True)({"image": image()})
    assert set(out) == {"image"}


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: RandD4(prob=1.5), "prob must be in"),
        (lambda: RandD4(elements="most"), "unknown D4 subset"),
        (lambda: RandD4(elements=[0, 8]), "0..7"),
        (lambda: RandD4(elements=[]), "elements is empty"),
        (lambda: D4Transform(9), "0..7"),
    ],
)
def test_bad_options(make, match: str) -> None:
    with pytest.raises(SeglabError, match=match):
        make()


def test_bad_inputs_give_one_line_errors() -> None:
    with pytest.raises(SeglabError, match="channel-first") as info:
        RandD4()(np.zeros((4, 4)))
    assert "\n" not in str(info.value)
    with pytest.raises(SeglabError, match="numpy array or a torch tensor"):
        RandD4()([[1, 2], [3, 4]])
    with pytest.raises(SeglabError, match=r"key\(s\) \['label'\] not in the data"):
        RandD4d(keys=["image", "label"])({"image": image()})
    with pytest.raises(SeglabError, match="different spatial shapes"):
        RandD4d(keys=["image", "label"])({"image": image((1, 4, 5)), "label": image((1, 5, 4))})
    with pytest.raises(SeglabError, match="needs the MetaTensor"):
        RandD4().inverse(image())
    with pytest.raises(SeglabError, match="no record"):
        RandD4().inverse(meta_image())
    with pytest.raises(SeglabError, match="records D4 element 3, but this transform undoes"):
        D4Transform(5).inverse(D4Transform(3)(meta_image()))
    with pytest.raises(SeglabError, match="must be 0..7, got 1.5"):
        RandD4(elements=[1.5])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tensors_stay_on_their_device() -> None:
    x = torch.rand(2, 5, 7, device="cuda")
    out = RandD4(elements=[5])(x)
    assert out.device == x.device
    assert np.array_equal(out.cpu().numpy(), D4[5].apply(x.cpu().numpy()))
