"""``seglab morphometry run|split|measure|compare`` on a small SEM phantom dataset."""

import csv
import json

import numpy as np
import pytest

from seglab.cli.app import main
from seglab.instances import instance_f1
from seglab.io.images import read_image, write_image
from seglab.morphometry import TABLE3_COLUMNS
from seglab.workflows.phantoms import write_sem_phantom


def run(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("sem") / "ph"
    write_sem_phantom(root, shape=(24, 128, 128), seed=0)
    labels = read_image(root / "labels" / "cellA.tif")
    object_map = np.where(labels.array > 0, 255, 0).astype(np.uint8)
    write_image(root / "object.tif", object_map, labels.spacing, axes="ZYX")
    return root


@pytest.fixture(autouse=True)
def no_team_server(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_measure_prints_the_summary_and_writes_the_folder(dataset, tmp_path, capsys):
    out = tmp_path / "m"
    code, text, err = run(
        capsys, "morphometry", "measure", dataset / "labels" / "cellA.tif",
        "--image", dataset / "images" / "cellA.tif", "--out", out, "--meshes", "stl",
    )  # fmt: skip
    assert code == 0, err
    assert "objects: 89 (6 interior)" in text
    assert "read from cellA.tif" in text and "estimated: structure tensor" in text
    assert "sarcomere length: 1.9" in text and "volume fraction: 25.51 %" in text
    assert str(out.resolve()) in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["count"] == 89 and summary["voxel_size_um"] == [0.1, 0.04, 0.04]
    assert (out / "meshes" / "model.stl").is_file()


def test_measure_with_a_given_voxel_size_and_axis(dataset, tmp_path, capsys):
    code, text, err = run(
        capsys, "morphometry", "measure", dataset / "labels" / "cellA.tif", "--out", tmp_path / "m",
        "--voxel-size", "0.2", "0.05", "0.05", "--axis", "0", "1", "0", "--meshes", "none",
    )  # fmt: skip
    assert code == 0, err
    assert "0.2 x 0.05 x 0.05 um (z y x), given" in text
    assert "(0.000, 1.000, 0.000), given" in text


def test_split_then_measure_then_compare(dataset, tmp_path, capsys):
    labels = tmp_path / "split.tif"
    code, text, err = run(
        capsys, "morphometry", "split", dataset / "object.tif",
        dataset / "contours" / "cellA.tif", "--out", labels, "--min-size", "50", "--mode", "3d",
    )  # fmt: skip
    assert code == 0, err
    assert "objects: 58 (5 not touching the border)" in text
    truth = read_image(dataset / "labels" / "cellA.tif").array
    assert instance_f1(read_image(labels).array, truth).f1 >= 0.75  # measured 0.789

    for name, source in (("cellA", dataset / "labels" / "cellA.tif"), ("split", labels)):
        code, _, err = run(
            capsys, "morphometry", "measure", source, "--out", tmp_path / name, "--meshes", "none"
        )
        assert code == 0, err
    table = tmp_path / "t3.csv"
    code, text, err = run(
        capsys, "morphometry", "compare", tmp_path / "cellA", tmp_path / "split", "--out", table
    )
    assert code == 0, err
    assert "cellA: 5.12 x 5.12 x 2.4 um, 89 objects (6 interior)" in text
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(TABLE3_COLUMNS)
    assert [r["stack"] for r in rows] == ["cellA", "split"]
    assert [int(r["count"]) for r in rows] == [89, 58]


def test_dask_backend_gives_the_serial_results(dataset, tmp_path, capsys):
    maps = (dataset / "object.tif", dataset / "contours" / "cellA.tif")
    for backend in ("serial", "dask"):
        code, _, err = run(
            capsys, "morphometry", "split", *maps, "--out", tmp_path / f"{backend}.tif",
            "--backend", backend, "--workers", "2",
        )  # fmt: skip
        assert code == 0, err
        code, _, err = run(
            capsys, "morphometry", "measure", tmp_path / f"{backend}.tif",
            "--out", tmp_path / backend, "--backend", backend, "--workers", "2",
        )  # fmt: skip
        assert code == 0, err
    serial, dask = (read_image(tmp_path / f"{b}.tif").array for b in ("serial", "dask"))
    assert serial.max() > 10 and np.array_equal(serial, dask)
    for name in ("instances.csv", "meshes/model.ply"):
        assert (tmp_path / "serial" / name).read_bytes() == (tmp_path / "dask" / name).read_bytes()
    summaries = [
        json.loads((tmp_path / b / "summary.json").read_text()) for b in ("serial", "dask")
    ]
    assert summaries[0].pop("voxel_size_source") == "read from serial.tif"
    assert summaries[1].pop("voxel_size_source") == "read from dask.tif"
    assert summaries[0] == summaries[1]


def test_split_with_2d_mode_and_other_thresholds(dataset, tmp_path, capsys):
    code, text, err = run(
        capsys, "morphometry", "split", dataset / "object.tif", dataset / "contours" / "cellA.tif",
        "--out", tmp_path / "l.tif", "--mode", "2d", "--sigma", "0", "--object-threshold", "200",
        "--contour-threshold", "100", "--seed-level", "0.9",
    )  # fmt: skip
    assert code == 0, err
    assert "mode 2d" in text and "sigma 0.0" in text
    assert read_image(tmp_path / "l.tif").array.max() > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["measure", "LABELS", "--voxel-size", "0", "0.04", "0.04"], "voxel size must be three"),
        (["measure", "LABELS", "--voxel-size", "0.1", "-1", "0.04"], "voxel size must be three"),
        (["measure", "MISSING"], "not found"),
        (["measure", "LABELS", "--image", "SMALL"], "image has shape"),
        (["measure", "LABELS", "--cell-mask", "SMALL"], "cell mask has shape"),
        (["measure", "LABELS", "--cell-mask", "MISSING"], "not found"),
        (["split", "OBJECT", "SMALL"], "differ in shape"),
        (["compare", "MISSING"], "does not exist"),
    ],
)
def test_bad_input_is_a_one_line_error(dataset, tmp_path, capsys, args, message):
    small = write_image(tmp_path / "small.tif", np.zeros((2, 8, 8), np.uint8), axes="ZYX")
    paths = {
        "LABELS": dataset / "labels" / "cellA.tif",
        "OBJECT": dataset / "object.tif",
        "SMALL": small,
        "MISSING": tmp_path / "missing.tif",
    }
    args = [str(paths.get(a, a)) for a in args]
    out = tmp_path / ("out.tif" if args[0] == "split" else "out")
    code, _, err = run(capsys, "morphometry", *args, "--out", out)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["measure", "L", "--backend", "ray"], "Invalid value for '--backend'"),
        (["split", "O", "C", "--workers", "0"], "Invalid value for '--workers'"),
    ],
)
def test_bad_backend_options_are_usage_errors(tmp_path, capsys, args, message):
    code, _, err = run(capsys, "morphometry", *args, "--out", tmp_path / "out")
    assert code == 2 and message in err
    assert not (tmp_path / "out").exists()


def test_run_with_a_registered_model(tmp_path, capsys, register_tiny_mito_model):
    from seglab.phantoms.sem import make_sem_phantom
    from seglab.tracking.store import resolve_store

    store = tmp_path / "mlruns"
    register_tiny_mito_model(resolve_store(store), tmp_path, name="mito-cli")
    code, _, err = run(
        capsys, "models", "promote", "mito-cli", "1", "--store", store,
        "--force", "--reason", "test",
    )  # fmt: skip
    assert code == 0, err
    phantom = make_sem_phantom(shape=(8, 64, 64), seed=2)
    stack = write_image(tmp_path / "stack.tif", phantom.image, axes="ZYX")
    cell = write_image(tmp_path / "cell.tif", phantom.cell_mask.astype(np.uint8), axes="ZYX")
    out = tmp_path / "out"
    code, text, err = run(
        capsys, "morphometry", "run", stack, "--model", "models:/mito-cli@champion",
        "--voxel-size", "0.1", "0.04", "0.04", "--axis", "0", "0", "1", "--out", out,
        "--store", store, "--object-threshold", "1", "--contour-threshold", "255",
        "--min-size", "1", "--meshes", "none", "--cell-mask", cell,
    )  # fmt: skip
    assert code == 0, err
    assert "mito-cli version 1 on stack.tif" in text and "logged as run" in text
    assert "(0.000, 0.000, 1.000), given" in text
    assert "volume fraction of the cell:" in text
    for name in ("object.tif", "contour.tif", "labels.tif", "instances.csv", "summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_uri"] == "models:/mito-cli@champion" and summary["model"] == "mito-cli/1"
    runs = (
        resolve_store(store)
        .client()
        .search_runs(
            [resolve_store(store).client().get_experiment_by_name("morphometry").experiment_id]
        )
    )
    assert [r.data.tags["seglab.model"] for r in runs] == ["mito-cli/1"]
    cell_fraction = summary["volume_fraction_of_cell"]
    inside = np.count_nonzero(phantom.cell_mask) * 0.1 * 0.04 * 0.04
    assert cell_fraction == pytest.approx(summary["total_volume_um3"] / inside)
    assert runs[0].data.metrics["volume_fraction_of_cell"] == pytest.approx(cell_fraction)
    assert runs[0].data.params["cell_mask"] == str(cell)
    assert runs[0].data.params["precision"] == "float32"

    # opt-in bfloat16 maps differ from float32 ones by rounding only
    half = tmp_path / "out16"
    code, text, err = run(
        capsys, "morphometry", "run", stack, "--model", "models:/mito-cli@champion",
        "--voxel-size", "0.1", "0.04", "0.04", "--axis", "0", "0", "1", "--out", half,
        "--store", store, "--object-threshold", "1", "--contour-threshold", "255",
        "--min-size", "1", "--meshes", "none", "--precision", "bfloat16",
    )  # fmt: skip
    assert code == 0, err
    full_map = read_image(out / "object.tif").array.astype(int)
    half_map = read_image(half / "object.tif").array.astype(int)
    assert np.abs(full_map - half_map).max() <= 8  # of 255: bf16 keeps 8 bits of mantissa

    code, _, err = run(
        capsys, "morphometry", "run", stack, "--model", "models:/mito-cli@champion",
        "--out", out, "--store", store,
    )  # fmt: skip
    assert code == 2 and "stores no voxel size" in err
