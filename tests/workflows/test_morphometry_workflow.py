"""The morphometry workflow on SEM phantoms: measure, split, run with a model, compare."""

import csv
import json
import math

import numpy as np
import pytest

from seglab.errors import DataFileError, OutputExistsError, SeglabError
from seglab.instances import SplitParams, instance_f1, split_instances
from seglab.io.images import read_image, read_stack_memmap, write_image
from seglab.metrics import probability_to_uint8
from seglab.morphometry import MEASUREMENT_COLUMNS, TABLE3_COLUMNS
from seglab.phantoms.sem import ideal_probability_maps, make_sem_phantom
from seglab.workflows import morphometry as workflow
from seglab.workflows.morphometry import (
    compare_summaries,
    measure_stack,
    postprocess_stack,
    split_stack,
)

REQUIRED_COLUMNS = [
    "label", "volume_um3", "surface_um2", "centroid_z_um", "centroid_y_um", "centroid_x_um",
    "semi_major_um", "semi_minor_um", "eccentricity", "orientation_deg", "touches_border",
]  # fmt: skip
REQUIRED_KEYS = ["count", "count_interior", "mean_volume_um3", "volume_fraction", "voxel_size_um"]
FIGURES = [
    "volume_histogram.png",
    "eccentricity_histogram.png",
    "orientation_histogram.png",
    "eccentricity_vs_orientation.png",
]


@pytest.fixture(scope="module")
def phantom():
    return make_sem_phantom(shape=(24, 128, 128), seed=0)


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# -- measure ------------------------------------------------------------------------------------
def test_measure_exact_instances_counts_every_truth_object(phantom, tmp_path):
    out = tmp_path / "m"
    result = measure_stack(phantom.instances, phantom.voxel_size, out, meshes="obj")

    truth_interior = sum(not t.touches_border for t in phantom.truth)
    assert result.values["count"] == len(phantom.truth) == 89
    assert result.values["count_interior"] == truth_interior
    table = read_csv(out / "instances.csv")
    assert len(table) == len(phantom.truth)
    assert list(table[0]) == list(MEASUREMENT_COLUMNS)
    assert set(REQUIRED_COLUMNS) <= set(table[0])
    voxel = float(np.prod(phantom.voxel_size))
    for row, truth in zip(table, phantom.truth, strict=True):
        assert int(row["label"]) == truth.label
        assert float(row["volume_um3"]) == pytest.approx(truth.voxel_count * voxel)
        assert (row["touches_border"] == "True") == truth.touches_border

    summary = json.loads((out / "summary.json").read_text())  # strict JSON: no NaN
    assert set(REQUIRED_KEYS) <= set(summary)
    assert summary["voxel_size_um"] == pytest.approx(list(phantom.voxel_size))
    assert summary["axis"] == [0.0, 0.0, 1.0] and summary["axis_source"].startswith("default")
    assert summary["sarcomere_length_um"] is None
    filled = np.count_nonzero(phantom.instances) / phantom.instances.size
    assert summary["volume_fraction"] == pytest.approx(filled)

    labels = read_image(out / "labels.tif")
    assert labels.array.dtype == np.uint16
    np.testing.assert_array_equal(labels.array, phantom.instances)
    assert labels.spacing == pytest.approx(phantom.voxel_size)
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(FIGURES)
    meshes = sorted(p.name for p in (out / "meshes").iterdir())
    assert len(meshes) == 89 + 1 and "model.obj" in meshes and "object_01.obj" in meshes


def test_measure_estimates_axis_and_sarcomere_length_from_the_image(phantom, tmp_path):
    result = measure_stack(
        phantom.instances, phantom.voxel_size, tmp_path / "m", image=phantom.image, meshes="none"
    )
    values = result.values
    assert values["axis_source"].startswith("estimated: structure tensor")
    assert "coherence" in values["axis_source"]
    # measured: 0.45 degrees off the phantom's x axis, sarcomere 1.96 um for 2.0 um
    assert math.degrees(math.acos(abs(values["axis"][2]))) < 3.0
    assert values["sarcomere_length_um"] == pytest.approx(2.0, abs=0.15)
    assert not (tmp_path / "m" / "meshes").exists()


def test_measure_given_axis_is_used_and_reported(phantom, tmp_path):
    result = measure_stack(
        phantom.instances, phantom.voxel_size, tmp_path / "m", axis=(0, 2, 0), meshes="none"
    )
    assert result.values["axis"] == [0.0, 1.0, 0.0]
    assert result.values["axis_source"] == "given"
    along_x = read_csv(tmp_path / "m" / "instances.csv")
    assert all(0.0 <= float(r["orientation_deg"]) <= 90.0 for r in along_x if r["fit_ok"] == "True")


def test_measure_reads_the_voxel_size_from_the_tiff(phantom, tmp_path):
    path = write_image(tmp_path / "labels.tif", phantom.instances, phantom.voxel_size, axes="ZYX")
    result = measure_stack(path, None, tmp_path / "m", meshes="none")
    assert result.values["voxel_size_um"] == pytest.approx(list(phantom.voxel_size))
    assert result.values["voxel_size_source"] == "read from labels.tif"
    assert any("read from labels.tif" in line for line in result.lines)


def test_measure_with_a_cell_mask_reports_the_fraction_of_the_cell(phantom, tmp_path):
    cell = np.zeros(phantom.instances.shape, bool)
    cell[:, :, :64] = True
    result = measure_stack(
        phantom.instances, phantom.voxel_size, tmp_path / "m", cell_mask=cell, meshes="none"
    )
    expected = np.count_nonzero(phantom.instances) / np.count_nonzero(cell)
    assert result.values["volume_fraction_of_cell"] == pytest.approx(expected)


def test_measure_with_a_cell_mask_estimates_the_axis_inside_the_cell(tmp_path):
    cell = make_sem_phantom(shape=(32, 128, 128), cell="B", seed=1, extracellular=True)
    mask = write_image(tmp_path / "cell.tif", cell.cell_mask.astype(np.uint8), axes="ZYX")
    common = dict(image=cell.image, meshes="none")
    without = measure_stack(cell.instances, cell.voxel_size, tmp_path / "a", **common)
    within = measure_stack(
        cell.instances, cell.voxel_size, tmp_path / "b", cell_mask=mask, **common
    )

    def error(values):
        return math.degrees(math.acos(min(1.0, abs(values["axis"][2]))))

    # Measured: 76.4 degrees off over the whole stack, 9.7 inside the cell.
    assert error(without.values) > 45 and error(within.values) < 12
    assert "inside the region" in within.values["axis_source"]
    assert within.values["sarcomere_source"].endswith("outside the objects, inside the cell")
    assert within.values["sarcomere_length_um"] == pytest.approx(2.0, abs=0.2)
    assert within.values["volume_fraction_of_cell"] == pytest.approx(cell.volume_fraction, rel=0.02)


def test_measure_empty_volume(tmp_path):
    result = measure_stack(np.zeros((4, 8, 8), np.uint16), (0.1, 0.04, 0.04), tmp_path / "m")
    assert result.values["count"] == 0 and result.values["mean_volume_um3"] is None
    assert read_csv(tmp_path / "m" / "instances.csv") == []
    assert len(list((tmp_path / "m" / "figures").iterdir())) == 4
    assert [p.name for p in (tmp_path / "m" / "meshes").iterdir()] == ["model.ply"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"voxel_size": (0.0, 0.04, 0.04)}, "voxel size must be three positive"),
        ({"voxel_size": (0.1, -0.04, 0.04)}, "voxel size must be three positive"),
        ({"voxel_size": (0.1, 0.04)}, "voxel size must be three positive"),
        ({"voxel_size": None}, "stores no voxel size"),
        ({"image": np.zeros((4, 8, 9), np.uint8)}, r"image has shape \(4, 8, 9\)"),
        ({"cell_mask": np.ones((4, 8, 9), bool)}, "cell mask has shape"),
        ({"meshes": "vtk"}, "unknown mesh format"),
        ({"axis": (0, 0, 0)}, "axis must be a non-zero"),
        ({"labels": np.zeros((4, 8, 8), np.float32)}, "integer instance labels"),
        ({"labels": np.zeros((8, 8), np.uint8)}, r"labels must be a \(Z, Y, X\) stack"),
    ],
)
def test_measure_rejects_bad_input(tmp_path, kwargs, message):
    args = {"labels": np.zeros((4, 8, 8), np.uint16), "voxel_size": (0.1, 0.04, 0.04)} | kwargs
    with pytest.raises(SeglabError, match=message):
        measure_stack(args.pop("labels"), args.pop("voxel_size"), tmp_path / "m", **args)
    assert not (tmp_path / "m").exists()


def test_measure_missing_file_and_existing_output(tmp_path):
    with pytest.raises(DataFileError, match="not found"):
        measure_stack(tmp_path / "nothere.tif", (1, 1, 1), tmp_path / "m")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "old.txt").write_text("x")
    with pytest.raises(OutputExistsError):
        measure_stack(np.zeros((2, 4, 4), np.uint8), (1, 1, 1), tmp_path / "m")


# -- split --------------------------------------------------------------------------------------
def test_split_ideal_maps_recovers_the_objects(phantom, tmp_path):
    object_map, contour_map = ideal_probability_maps(phantom)
    result = split_stack(
        object_map, contour_map, tmp_path / "labels.tif", voxel_size=(0.1, 0.04, 0.04)
    )
    labels = read_image(tmp_path / "labels.tif")
    assert labels.spacing == pytest.approx((0.1, 0.04, 0.04))
    assert result.values["count"] == int(labels.array.max()) == 58
    match = instance_f1(labels.array, phantom.instances)
    # measured on this phantom: F1 0.789, precision 1.0 (the misses are border slivers and
    # objects under min_size = 50 voxels); F1 0.899 against the truth objects of >= 50 voxels
    assert match.precision == 1.0
    assert match.f1 >= 0.75
    sizes = np.bincount(phantom.instances.ravel())
    large = np.flatnonzero(sizes >= 50)[1:] if sizes[0] >= 50 else np.flatnonzero(sizes >= 50)
    kept = np.where(np.isin(phantom.instances, large[large > 0]), phantom.instances, 0)
    assert instance_f1(labels.array, kept).f1 >= 0.87


def test_split_into_a_memory_map_equals_the_in_memory_split(phantom, tmp_path, monkeypatch):
    object_map, contour_map = ideal_probability_maps(phantom)
    write_image(tmp_path / "object.tif", object_map, phantom.voxel_size, axes="ZYX")
    write_image(tmp_path / "contour.tif", contour_map, phantom.voxel_size, axes="ZYX")
    monkeypatch.setattr(workflow, "MEMMAP_VOXELS", 1000)
    monkeypatch.setattr(workflow, "SPLIT_SLAB", 5)
    params = SplitParams(min_size=20)
    result = split_stack(
        tmp_path / "object.tif", tmp_path / "contour.tif", tmp_path / "l.tif", params
    )
    expected = split_instances(object_map, contour_map, params)
    written = read_image(tmp_path / "l.tif")
    assert written.array.dtype == np.uint16  # the count fits: uint16, converted slab by slab
    assert written.spacing == pytest.approx(phantom.voxel_size)
    np.testing.assert_array_equal(written.array, expected.labels)
    assert result.values["count"] == expected.count
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # scratch removed


def test_split_empty_maps(tmp_path):
    zeros = np.zeros((3, 8, 8), np.uint8)
    result = split_stack(zeros, zeros, tmp_path / "l.tif")
    assert result.values["count"] == 0
    assert not read_image(tmp_path / "l.tif").array.any()


@pytest.mark.parametrize(
    ("contour", "out", "message"),
    [
        (np.zeros((3, 8, 9), np.uint8), "l.tif", "differ in shape"),
        (np.zeros((3, 8, 8), np.uint8), "l.png", "must be a .tif file"),
        (np.zeros((3, 8, 8), np.int32), "l.tif", "must be uint8"),
    ],
)
def test_split_rejects_bad_input(tmp_path, contour, out, message):
    with pytest.raises(SeglabError, match=message):
        split_stack(np.zeros((3, 8, 8), np.uint8), contour, tmp_path / out)


def test_split_refuses_to_replace_without_overwrite(tmp_path):
    zeros = np.zeros((3, 8, 8), np.uint8)
    split_stack(zeros, zeros, tmp_path / "l.tif")
    with pytest.raises(SeglabError, match="already exists"):
        split_stack(zeros, zeros, tmp_path / "l.tif")
    split_stack(zeros, zeros, tmp_path / "l.tif", overwrite=True)


# -- postprocess (maps on disk -> morphometry folder, bounded memory) --------------------------
@pytest.mark.parametrize(("memmap_voxels", "slab"), [(1000, 5), (1000, 1), (10**9, 64)])
def test_postprocess_memmapped_maps_equals_split_then_measure_in_memory(
    phantom, tmp_path, monkeypatch, memmap_voxels, slab
):
    object_map, contour_map = ideal_probability_maps(phantom)
    voxel = phantom.voxel_size
    write_image(tmp_path / "object.tif", object_map, voxel, axes="ZYX")
    write_image(tmp_path / "contour.tif", contour_map, voxel, axes="ZYX")
    params = SplitParams(min_size=20)
    # The whole-volume path: split and measure arrays held in memory.
    expected = split_instances(object_map, contour_map, params)
    measure_stack(expected.labels, voxel, tmp_path / "whole", axis=(0, 0, 1), meshes="stl")
    # Slabs of 5 (or 1) slices cut most objects (about 9 slices thick); memmaps above 1000 voxels.
    monkeypatch.setattr(workflow, "MEMMAP_VOXELS", memmap_voxels)
    monkeypatch.setattr(workflow, "SPLIT_SLAB", slab)
    phases = set()
    result = postprocess_stack(
        tmp_path / "object.tif",
        tmp_path / "contour.tif",
        None,
        tmp_path / "chunked",
        axis=(0, 0, 1),
        params=params,
        meshes="stl",
        slab=slab,
        progress=lambda phase, fraction: phases.add(phase),
    )
    whole, chunked = tmp_path / "whole", tmp_path / "chunked"
    assert (chunked / "instances.csv").read_text() == (whole / "instances.csv").read_text()
    summary = json.loads((chunked / "summary.json").read_text())
    reference = json.loads((whole / "summary.json").read_text())
    assert summary["split"]["min_size"] == 20
    assert summary["voxel_size_source"] == "read from object.tif"
    for key in set(reference) - {"voxel_size_source"}:
        assert summary[key] == reference[key], key
    labels = read_image(chunked / "labels.tif")
    assert labels.array.dtype == np.uint16 and labels.spacing == pytest.approx(voxel)
    np.testing.assert_array_equal(labels.array, expected.labels)
    model = (chunked / "meshes" / "model.stl").read_bytes()
    assert model == (whole / "meshes" / "model.stl").read_bytes()
    assert result.values["count"] == expected.count == len(read_csv(chunked / "instances.csv"))
    assert {"finding objects", "splitting", "locating objects", "measuring objects"} <= phases
    assert set(result.timings_s) == {"splitting and labels.tif", "measuring and meshes"}
    assert result.lines[-1].startswith("time: splitting and labels.tif ")
    assert not [p for p in tmp_path.rglob(".*")]  # scratch files removed


def test_postprocess_empty_maps(tmp_path):
    zeros = np.zeros((3, 8, 8), np.uint8)
    result = postprocess_stack(zeros, zeros, (1.0, 1.0, 1.0), tmp_path / "out", meshes="ply")
    assert result.values["count"] == 0
    assert read_csv(tmp_path / "out" / "instances.csv") == []
    assert not read_image(tmp_path / "out" / "labels.tif").array.any()
    assert (tmp_path / "out" / "meshes" / "model.ply").is_file()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"slab": 0}, "slab"),
        ({"meshes": "vtk"}, "mesh format"),
        ({"voxel_size": None}, "no voxel size"),
        ({"contour_map": np.zeros((3, 8, 9), np.uint8)}, "differ in shape"),
    ],
)
def test_postprocess_rejects_bad_input(tmp_path, kwargs, message):
    arguments = {
        "object_map": np.zeros((3, 8, 8), np.uint8),
        "contour_map": np.zeros((3, 8, 8), np.uint8),
        "voxel_size": (1.0, 1.0, 1.0),
        "out_dir": tmp_path / "out",
    } | kwargs
    with pytest.raises(SeglabError, match=message):
        postprocess_stack(**arguments)
    assert not (tmp_path / "out").exists()


# -- compare ------------------------------------------------------------------------------------
def test_compare_writes_table3(phantom, tmp_path):
    a = measure_stack(phantom.instances, phantom.voxel_size, tmp_path / "cellA", meshes="none")
    empty = np.zeros((10, 20, 30), np.uint8)
    measure_stack(empty, (0.1, 0.04, 0.04), tmp_path / "cellB", meshes="none")
    rows = compare_summaries(
        [tmp_path / "cellA", tmp_path / "cellB" / "summary.json"], tmp_path / "t3.csv"
    )
    table = read_csv(tmp_path / "t3.csv")
    assert list(table[0]) == list(TABLE3_COLUMNS)
    assert [r["stack"] for r in table] == ["cellA", "cellB"]
    assert table[0]["imaged_volume_um"] == "5.12 x 5.12 x 2.4"
    assert int(table[0]["count"]) == 89
    assert float(table[0]["mean_volume_um3"]) == pytest.approx(a.values["mean_volume_um3"])
    assert float(table[0]["volume_fraction_percent"]) == pytest.approx(
        100 * a.values["volume_fraction"]
    )
    assert table[1]["imaged_volume_um"] == "1.2 x 0.8 x 1" and math.isnan(
        rows[1]["mean_volume_um3"]
    )


def test_compare_rejects_missing_or_no_folders(tmp_path):
    with pytest.raises(DataFileError, match="does not exist"):
        compare_summaries([tmp_path / "nothere"])
    with pytest.raises(SeglabError, match="no morphometry folders"):
        compare_summaries([])


# -- run with a registered model -----------------------------------------------------------------
def test_run_segments_splits_measures_and_logs(tmp_path, monkeypatch, register_tiny_mito_model):
    from seglab.models.registry import model_id_of, resolve_version
    from seglab.tracking.store import resolve_store

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = resolve_store(tmp_path / "mlruns")
    register_tiny_mito_model(store, tmp_path)
    model_id = model_id_of(resolve_version(store, "models:/mito-tiny/1"))
    assert model_id
    small = make_sem_phantom(shape=(8, 64, 64), seed=1)
    stack = write_image(tmp_path / "stack.tif", small.image, small.voxel_size, axes="ZYX")
    params = SplitParams(object_threshold=1, contour_threshold=255, min_size=1)
    result = workflow.run_morphometry(
        store, "models:/mito-tiny/1", stack, None, tmp_path / "out", split_params=params
    )
    out = tmp_path / "out"
    for name in ("object.tif", "contour.tif", "labels.tif", "instances.csv", "summary.json"):
        assert (out / name).is_file(), name
    object_map = read_image(out / "object.tif")
    assert object_map.array.dtype == np.uint8 and object_map.array.shape == (8, 64, 64)
    assert object_map.spacing == pytest.approx(small.voxel_size)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "mito-tiny/1" and summary["run_id"] == result.run_id
    assert summary["voxel_size_source"] == "read from stack.tif"
    assert summary["axis_source"].startswith("estimated")
    assert summary["count"] == int(read_image(out / "labels.tif").array.max())
    assert (out / "meshes" / "model.ply").is_file()
    assert list(result.timings_s)[0] == "segmenting" and all(
        t >= 0 for t in result.timings_s.values()
    )

    client = store.client()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "morphometry"
    assert run.data.tags["seglab.model"] == "mito-tiny/1"
    assert run.data.tags["seglab.model_id"] == model_id
    assert run.data.params["model_uri"] == "models:/mito-tiny/1"
    assert run.data.params["split.contour_threshold"] == "255"
    assert run.data.metrics["count"] == summary["count"]
    assert [i.model_id for i in run.inputs.model_inputs] == [model_id]
    artifacts = {f.path for f in client.list_artifacts(result.run_id, "morphometry")}
    assert {"morphometry/instances.csv", "morphometry/summary.json"} <= artifacts
    figures = client.list_artifacts(result.run_id, "morphometry/figures")
    assert len(figures) == 4


def _ensemble_runner(remap):
    """A real 2.5D ensemble (3- and 5-slice U-Nets, untrained) as run_morphometry loads it."""
    import torch

    from seglab.models.pyfunc import BundleRunner, MemberSettings, ModelSettings
    from seglab.networks.factory import build_network

    tiny = {"channels": [4, 8], "strides": [2], "num_res_units": 0}
    torch.manual_seed(0)
    runner = BundleRunner()
    runner.settings = ModelSettings(
        bundle="mito",
        kind="binary",
        class_names=["background", "interior", "contour"],
        in_channels=1,
        members=[MemberSettings("unet", tiny, 3), MemberSettings("unet", tiny, 5)],
        foreground_classes=[1, 2],
        tiling_preset="no-overlap",
        tile_batch_size=4,
        intensity_remap=remap,
        reference_peaks=(100.0, 180.0) if remap else None,
    )
    runner.networks = [build_network("unet", n, 3, {"unet": tiny}).eval() for n in (3, 5)]
    return runner


@pytest.mark.parametrize("remap", [False, True])
def test_slab_wise_maps_equal_the_whole_stack_prediction(remap, tmp_path):
    runner = _ensemble_runner(remap)
    stack = make_sem_phantom(shape=(11, 32, 32), seed=4).image
    whole = runner.probabilities(stack, stack=True)  # (Z, K, Y, X), 5-slice halo mirrored
    expected_object = probability_to_uint8(runner.object_probability(whole, class_axis=1))
    expected_contour = probability_to_uint8(whole[:, 2])
    write_image(tmp_path / "stack.tif", stack, (0.05, 0.01, 0.01), axes="ZYX")
    mapped = read_stack_memmap(tmp_path / "stack.tif").array
    for slab in (1, 4, 11, 50):
        object_map = np.full(stack.shape, 7, np.uint8)
        contour_map = np.full(stack.shape, 7, np.uint8)
        seen: list[tuple] = []
        workflow.predict_maps(
            runner,
            mapped,
            object_map,
            contour_map,
            slab=slab,
            progress=lambda phase, fraction, seen=seen: seen.append((phase, fraction)),
        )
        # Batches of other sizes may move a float by one rounding step: at most 1 grey level.
        assert np.abs(object_map.astype(int) - expected_object).max() <= 1, slab
        assert np.abs(contour_map.astype(int) - expected_contour).max() <= 1, slab
        assert np.mean(object_map == expected_object) > 0.999
        assert seen[-1] == ("segmenting", 1.0)


def test_predict_maps_rejects_a_model_without_contours():
    import dataclasses

    runner = _ensemble_runner(False)
    runner.settings = dataclasses.replace(
        runner.settings, class_names=["background", "mito", "other"]
    )
    maps = np.zeros((3, 8, 8), np.uint8)
    with pytest.raises(SeglabError, match="'contour' class"):
        workflow.predict_maps(runner, maps, maps.copy(), maps.copy())
    with pytest.raises(SeglabError, match="slab must be"):
        workflow.predict_maps(_ensemble_runner(False), maps, maps.copy(), maps.copy(), slab=0)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((8, 64, 64), ((0, 8), (0, 64), (0, 64))),
        ((690, 1024, 1024), ((337, 353), (0, 1024), (0, 1024))),
        ((100, 4096, 2048), ((42, 58), (1536, 2560), (512, 1536))),
        ((5, 4096, 4096), ((0, 5), (1132, 2963), (1132, 2963))),
    ],
)
def test_estimation_block_is_central_and_bounded(shape, expected):
    block = workflow._estimation_block(shape)
    assert tuple((s.start, s.stop) for s in block) == expected
    size = np.prod([s.stop - s.start for s in block])
    assert size == np.prod(shape) or size <= workflow.ESTIMATE_VOXELS


def test_a_large_stack_estimates_axis_and_sarcomere_on_a_central_block(
    phantom, tmp_path, monkeypatch
):
    monkeypatch.setattr(workflow, "ESTIMATE_VOXELS", phantom.instances.size // 3)
    monkeypatch.setattr(workflow, "ESTIMATE_MIN_SLICES", 8)
    result = measure_stack(
        phantom.instances, phantom.voxel_size, tmp_path / "out", image=phantom.image, meshes="none"
    )
    block = result.values["estimated_on"]
    depth = phantom.instances.shape[0]
    assert block["z"][1] - block["z"][0] < depth
    assert block["z"][0] + block["z"][1] in (depth - 1, depth, depth + 1)  # centred
    assert block["y"] == [0, 128] and block["x"] == [0, 128]
    assert math.degrees(math.acos(abs(result.values["axis"][2]))) < 3.0
    assert result.values["sarcomere_length_um"] == pytest.approx(2.0, abs=0.15)


def test_run_rejects_a_zero_voxel_size_before_loading_the_model(tmp_path):
    stack = write_image(tmp_path / "s.tif", np.zeros((3, 8, 8), np.uint8), axes="ZYX")
    with pytest.raises(SeglabError, match="voxel size must be three positive"):
        workflow.run_morphometry(None, "models:/x/1", stack, (0, 1, 1), tmp_path / "out")
    with pytest.raises(SeglabError, match="stores no voxel size"):
        workflow.run_morphometry(None, "models:/x/1", stack, None, tmp_path / "out")
    with pytest.raises(DataFileError, match="not found"):
        workflow.run_morphometry(None, "models:/x/1", tmp_path / "no.tif", None, tmp_path / "o")
