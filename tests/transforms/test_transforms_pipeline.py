"""The transforms together in MONAI pipelines over files, as the study bundles use them."""

from __future__ import annotations

import json
import pickle

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from seglab.io.images import write_image
from seglab.io.labels import LUNG_CLASSES
from seglab.tiling import plan_preset
from seglab.transforms import (
    DecodeColourLabelsd,
    IntensityRemapd,
    RandAdjacentSlicesd,
    RandD4d,
    RandTilePatchesd,
)


def lung_case(tmp_path, name: str, seed: int, size: int = 384) -> dict[str, str]:
    """An RGB image whose red channel encodes the class (40 per class) and its colour label."""
    rng = np.random.default_rng(seed)
    classes = np.repeat(np.repeat(rng.integers(0, 6, (size // 16, size // 16)), 16, 0), 16, 1)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    image[..., 0] = classes * 40
    write_image(tmp_path / f"{name}.tif", image)
    write_image(tmp_path / f"{name}_label.png", LUNG_CLASSES.encode(classes))
    return {"image": str(tmp_path / f"{name}.tif"), "label": str(tmp_path / f"{name}_label.png")}


def study_a_transform(num_samples: int) -> Compose:
    return Compose(
        [
            LoadImaged(keys=["image", "label"], reader="seglab.transforms.TiffReader"),
            EnsureChannelFirstd(keys=["image", "label"]),
            DecodeColourLabelsd(keys="label", table="lung"),
            RandTilePatchesd(keys=["image", "label"], preset="uniform-81", num_samples=num_samples),
            RandD4d(keys=["image", "label"]),
        ]
    )


def test_study_a_pipeline_yields_aligned_tiles_of_the_preset(tmp_path) -> None:
    files = [lung_case(tmp_path, f"case{i}", seed=i) for i in range(2)]
    transform = study_a_transform(num_samples=3)

    def first_batch() -> dict:
        generator = torch.Generator().manual_seed(0)
        return next(iter(DataLoader(Dataset(files, transform), batch_size=2, generator=generator)))

    batch = first_batch()
    assert batch["image"].shape == (6, 3, 256, 256) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (6, 1, 256, 256) and batch["label"].dtype == torch.uint8
    # the label still describes the image pixel for pixel after tiling, padding and D4
    assert torch.equal(batch["label"][:, 0].long(), (batch["image"][:, 0] / 40).long())
    plan = plan_preset("uniform-81", (384, 384))
    origins = batch["image"].meta["tile_origin"]
    assert origins.shape == (6, 2) and (origins % 128 == 0).all()
    for origin, index in zip(origins, batch["image"].meta["tile_index"], strict=True):
        assert tuple(origin.tolist()) == tuple(plan.origins[int(index)])
    names = [str(n) for n in batch["image"].meta["filename_or_obj"]]
    assert sorted(set(names)) == [f["image"] for f in files]
    again = first_batch()  # the same seed gives the same tiles and elements
    assert torch.equal(again["image"], batch["image"])


def test_study_b_pipeline_yields_2_5d_inputs_with_the_remap_report(tmp_path) -> None:
    rng = np.random.default_rng(5)
    mito = rng.random((5, 64, 64)) < 0.3
    stack = np.clip(np.where(mito, 150, 180) + rng.normal(0, 5, mito.shape), 0, 255)
    stack[2] = rng.normal(175, 6, (64, 64))  # one slice without two peaks
    write_image(tmp_path / "stack.tif", stack.astype(np.uint8), spacing=(0.05, 0.01, 0.01))
    write_image(tmp_path / "mito.tif", mito.astype(np.uint8), spacing=(0.05, 0.01, 0.01))
    transform = Compose(
        [
            LoadImaged(keys=["image", "label"], reader="seglab.transforms.TiffReader", dtype=None),
            EnsureChannelFirstd(keys=["image", "label"]),
            IntensityRemapd(keys="image", reference="published"),
            RandAdjacentSlicesd(keys="image", label_keys="label", num_slices=5),
            RandD4d(keys=["image", "label"]),
        ]
    )
    files = [{"image": str(tmp_path / "stack.tif"), "label": str(tmp_path / "mito.tif")}] * 2
    batch = next(iter(DataLoader(Dataset(files, transform), batch_size=2)))
    assert batch["image"].shape == (2, 5, 64, 64) and batch["image"].dtype == torch.uint8
    assert batch["label"].shape == (2, 1, 64, 64)
    assert batch["image"].meta["intensity_remap_failed"].tolist() == [1, 1]
    assert json.loads(batch["image"].meta["intensity_remap"][0])["failed"] == [2]
    assert all(0 <= int(z) < 5 for z in batch["image"].meta["slice_index"])


def test_pipelines_pickle_for_worker_processes() -> None:
    restored = pickle.loads(pickle.dumps(study_a_transform(num_samples=2)))
    assert isinstance(restored.transforms[3], RandTilePatchesd)
