"""Tests for seglab.transforms.tiles: tiles of a tiling grid, random tiles, stitching back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.data import MetaTensor, list_data_collate
from monai.transforms import SpatialCrop

from seglab.errors import SeglabError
from seglab.tiling import extract_tiles, pad_image, plan_grid, plan_preset, stitch
from seglab.transforms import (
    RandTilePatchesd,
    StitchTiles,
    StitchTilesd,
    TileGrid,
    TilePatches,
    TilePatchesd,
    tiling_plan_from_meta,
)


def rgb(shape: tuple[int, int] = (40, 36), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (3, *shape), dtype=np.uint8)


def label_of(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """A label derived pixel-wise from the image, so any consistent cut keeps it derived."""
    return (np.asarray(image[:1]) > 127).astype(np.uint8)


@pytest.mark.parametrize("preset", ["no-overlap", "paper-64", "uniform-81"])
def test_tile_patches_match_the_core_for_each_preset(preset: str) -> None:
    image = rgb((300, 260))
    tiles = TilePatches(preset)(image)
    expected = extract_tiles(image, plan_preset(preset, image.shape))
    assert isinstance(tiles, np.ndarray) and tiles.dtype == np.uint8
    assert tiles.shape == expected.shape and tiles.shape[1:] == (3, 256, 256)
    assert np.array_equal(tiles, expected)


def test_tile_count_of_the_study_presets_on_1024() -> None:
    counts = {p: TilePatches(p).plan((3, 1024, 1024)).n_tiles for p in ("no-overlap", "paper-64")}
    assert counts == {"no-overlap": 16, "paper-64": 64}
    assert TilePatches("uniform-81").plan((1024, 1024)).n_tiles == 81


def test_explicit_grid_matches_plan_grid() -> None:
    image = rgb()
    t = TilePatches(tile_size=16, stride=8, padding=4, pad_mode="edge")
    plan = plan_grid(image.shape, 16, 8, 4, "edge")
    assert t.plan(image.shape) == plan
    assert np.array_equal(t(image), extract_tiles(image, plan))


def test_a_preset_keeps_its_sizes_with_another_pad_mode() -> None:
    image = rgb((300, 260))
    plan = TilePatches("paper-64", pad_mode="edge").plan(image.shape)
    assert plan == plan_grid(image.shape, 256, 128, 64, "edge")
    assert np.array_equal(
        TilePatches("paper-64", pad_mode="edge")(image), extract_tiles(image, plan)
    )


def test_tiles_of_tensors_and_meta_tensors_carry_the_plan() -> None:
    image = rgb()
    t = TilePatches(tile_size=16, stride=8, padding=8)
    plan = t.plan(image.shape)
    as_tensor = t(torch.as_tensor(image))
    assert type(as_tensor) is torch.Tensor and as_tensor.dtype == torch.uint8
    tiles = t(MetaTensor(torch.as_tensor(image), meta={"filename_or_obj": "a.tif"}))
    assert isinstance(tiles, MetaTensor) and tiles.shape == (plan.n_tiles, 3, 16, 16)
    assert np.array_equal(tiles.numpy(), extract_tiles(image, plan))
    assert tiling_plan_from_meta(tiles) == plan
    assert np.array_equal(tiles.meta["tile_origins"], plan.origins)
    assert tiles.meta["filename_or_obj"] == "a.tif"


def test_stitch_tiles_round_trip_and_matches_the_core() -> None:
    image = rgb().astype(np.float32)
    tiles = TilePatches(tile_size=16, stride=8, padding=8)(MetaTensor(torch.as_tensor(image)))
    mean = StitchTiles(average=True)(tiles)
    assert isinstance(mean, MetaTensor) and "tile_origins" not in mean.meta
    assert np.allclose(mean.numpy(), image)
    scores = np.random.default_rng(1).random((tiles.shape[0], 4, 16, 16)).astype(np.float32)
    plan = tiling_plan_from_meta(tiles)
    for weighting in ("sum", "gaussian"):
        ours = StitchTiles(plan, weighting=weighting)(scores)
        assert np.allclose(ours, stitch(scores, plan, weighting=weighting))


def test_stitch_tiles_d_takes_the_plan_from_another_key() -> None:
    image = MetaTensor(torch.as_tensor(rgb()))
    data = TilePatchesd(keys="image", tile_size=16, stride=8, padding=8)({"image": image})
    n = data["image"].shape[0]
    scores = torch.rand(n, 2, 16, 16)
    data["pred"] = scores
    out = StitchTilesd(keys="pred", plan_key="image")(data)
    plan = tiling_plan_from_meta(data["image"])
    assert out["pred"].shape == (2, 40, 36)
    assert np.allclose(out["pred"].numpy(), stitch(scores.numpy(), plan))


def test_tile_patches_d_cuts_the_same_tiles_from_image_and_label() -> None:
    image = rgb()
    out = TilePatchesd(keys=["image", "label"], preset=None, tile_size=16, stride=8, padding=8)(
        {"image": image, "label": label_of(image), "id": 3}
    )
    assert out["id"] == 3
    assert out["image"].shape[0] == out["label"].shape[0]
    assert np.array_equal(out["label"][:, 0], (out["image"][:, 0] > 127).astype(np.uint8))


def rand_tiles(**kwargs) -> RandTilePatchesd:
    options = {"tile_size": 16, "stride": 8, "padding": 8, "num_samples": 5}
    options.update(kwargs)
    return RandTilePatchesd(keys=["image", "label"], **options)


def test_random_tiles_come_from_the_grid() -> None:
    image = rgb()
    plan = plan_grid(image.shape, 16, 8, 8)
    padded = pad_image(image, plan)
    t = rand_tiles().set_random_state(0)
    data = {"image": MetaTensor(torch.as_tensor(image)), "label": label_of(image)}
    seen = set()
    for _ in range(4):
        samples = t(data)
        assert isinstance(samples, list) and len(samples) == 5
        indices = [s["image"].meta["tile_index"] for s in samples]
        assert len(set(indices)) == 5  # without replacement
        for i, sample in enumerate(samples):
            oy, ox = sample["image"].meta["tile_origin"]
            assert oy % 8 == 0 and ox % 8 == 0
            assert (oy, ox) == tuple(plan.origins[sample["image"].meta["tile_index"]])
            assert sample["image"].meta["patch_index"] == i
            assert tiling_plan_from_meta(sample["image"]) == plan
            assert np.array_equal(sample["image"].numpy(), padded[:, oy : oy + 16, ox : ox + 16])
            assert np.array_equal(sample["label"], label_of(sample["image"].numpy()))
            seen.add((int(oy), int(ox)))
    assert len(seen) > 5


def test_random_tiles_are_repeatable_with_a_seed() -> None:
    data = {"image": rgb(), "label": label_of(rgb())}

    def origins(seed: int) -> list[int]:
        t = rand_tiles(num_samples=4).set_random_state(seed)
        return [int(s["image"][0, 0, 0]) for s in t(data)] + [
            int(s["image"][1, 3, 2]) for s in t(data)
        ]

    assert origins(1) == origins(1)
    assert origins(1) != origins(2)


def test_all_tiles_once_in_random_order_or_with_replacement() -> None:
    image = rgb((32, 32))
    t = RandTilePatchesd(keys="image", tile_size=16, num_samples=4).set_random_state(0)
    samples = t({"image": MetaTensor(torch.as_tensor(image))})
    assert sorted(s["image"].meta["tile_index"] for s in samples) == [0, 1, 2, 3]
    with pytest.raises(SeglabError, match="cannot draw 5 different tiles from a grid of 4"):
        RandTilePatchesd(keys="image", tile_size=16, num_samples=5)({"image": image})
    many = RandTilePatchesd(keys="image", tile_size=16, num_samples=9, replace=True)
    assert len(many({"image": image})) == 9


def test_random_tile_affine_matches_monai_spatial_crop() -> None:
    affine = torch.diag(torch.tensor([0.5, 0.25, 1.0, 1.0], dtype=torch.float64))
    image = MetaTensor(torch.as_tensor(rgb()), affine=affine)
    t = RandTilePatchesd(keys="image", tile_size=(16, 12), stride=(8, 6), num_samples=3)
    for sample in t.set_random_state(4)({"image": image}):
        oy, ox = (int(v) for v in sample["image"].meta["tile_origin"])
        crop = SpatialCrop(roi_start=(oy, ox), roi_end=(oy + 16, ox + 12))(image.clone())
        assert torch.equal(sample["image"].as_tensor(), crop.as_tensor())
        assert torch.allclose(sample["image"].affine, crop.affine)
    assert torch.equal(image.affine, affine)  # the input is untouched


def test_other_items_are_copied_into_every_sample() -> None:
    data = {"image": rgb(), "label": label_of(rgb()), "info": {"case": [1, 2]}}
    samples = rand_tiles(num_samples=2)(data)
    samples[0]["info"]["case"].append(3)
    assert samples[1]["info"] == {"case": [1, 2]} and data["info"] == {"case": [1, 2]}


def test_random_tiles_of_meta_tensors_collate_into_a_batch() -> None:
    image = MetaTensor(torch.as_tensor(rgb()), meta={"filename_or_obj": "a.tif"})
    samples = rand_tiles(num_samples=3)({"image": image, "label": label_of(image)})
    batch = list_data_collate(samples)
    assert batch["image"].shape == (3, 3, 16, 16) and batch["label"].shape == (3, 1, 16, 16)
    assert len(batch["image"].meta["tiling_plan"]) == 3
    plan = tiling_plan_from_meta(batch["image"].meta)
    assert json.loads(batch["image"].meta["tiling_plan"][0])["tile_size"] == list(plan.tile_size)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: TilePatches("uniform-64"), "unknown tiling preset 'uniform-64'"),
        (lambda: TilePatches(), "either a tiling preset or a tile_size"),
        (lambda: TilePatches("no-overlap", tile_size=128), "either a tiling preset"),
        (lambda: TilePatches("no-overlap", stride=64), "brings its own stride"),
        (lambda: TilePatches(tile_size=16, stride=32), "larger than tile_size"),
        (lambda: TilePatches(tile_size=16, pad_mode="wrap"), "unknown pad_mode"),
        (lambda: TileGrid(tile_size=0), "tile_size must be positive"),
        (lambda: RandTilePatchesd("image", "no-overlap", num_samples=0), "num_samples"),
        (lambda: StitchTiles(weighting="max"), "unknown weighting"),
    ],
)
def test_bad_options_are_rejected_when_built(make, match: str) -> None:
    with pytest.raises(SeglabError, match=match) as info:
        make()
    assert "\n" not in str(info.value)


def test_bad_inputs() -> None:
    with pytest.raises(SeglabError, match="channel-first"):
        TilePatches(tile_size=4)(np.zeros((8, 8)))
    with pytest.raises(SeglabError, match="cannot tile an empty image"):
        TilePatches(tile_size=4)(np.zeros((3, 0, 8)))
    with pytest.raises(SeglabError, match=r"key\(s\) \['label'\] not in the data"):
        rand_tiles()({"image": rgb()})
    with pytest.raises(SeglabError, match="different spatial shapes"):
        rand_tiles()({"image": rgb(), "label": rgb((40, 40))})
    with pytest.raises(SeglabError, match="no tiling plan"):
        StitchTiles()(torch.zeros(4, 2, 16, 16))
    with pytest.raises(SeglabError, match="do not match the plan"):
        StitchTiles(plan_grid((32, 32), 16))(np.zeros((3, 2, 16, 16)))


def test_missing_keys_allowed_when_asked() -> None:
    t = RandTilePatchesd(
        keys=["image", "label"], tile_size=8, num_samples=2, allow_missing_keys=True
    )
    samples = t({"image": rgb((16, 16))})
    assert [sorted(s) for s in samples] == [["image"], ["image"]]
    assert t({"other": 1}) == [{"other": 1}, {"other": 1}]


def test_random_tiles_are_writable_arrays_for_torch() -> None:
    image = np.arange(2 * 40 * 40, dtype=np.float32).reshape(2, 40, 40)
    t = RandTilePatchesd(keys="image", tile_size=16, num_samples=3).set_random_state(0)
    for sample in t({"image": image}):
        assert sample["image"].flags.writeable
