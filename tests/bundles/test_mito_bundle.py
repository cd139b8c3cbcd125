"""The mito bundle: metadata schema, network shapes, and train -> inference -> evaluate runs."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import verify_metadata, verify_net_in_out

from seglab.io.dataset import write_manifest
from seglab.io.images import read_image, write_image
from seglab.phantoms.sem import make_sem_phantom

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "mito" / "configs"
SCHEMA = REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"
SHAPE = (12, 96, 96)
# A tiny U-Net so a CPU epoch takes well under a second; 64 px patches fit the 96 px slices.
TINY_UNET = [
    "--network_options#unet#channels", "[4,8]",
    "--network_options#unet#strides", "[2]",
    "--network_options#unet#num_res_units", "0",
    "--patch_size", "64",
]  # fmt: skip


def config_list(*names: str) -> str:
    return str([str(CONFIGS / name) for name in names])


def bundle_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "monai.bundle", "run", *args]


def bundle_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_bundles(*commands: list[str]) -> None:
    """Run bundle commands side by side (the machine has 2 cores) and check each succeeded."""
    procs = [
        subprocess.Popen(
            c, cwd=REPO, env=bundle_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )
        for c in commands
    ]  # fmt: skip
    for proc in procs:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output[-4000:]


@pytest.fixture(scope="module")
def sem_dataset(tmp_path_factory) -> Path:
    """Two small SEM stacks with instances and contours (one for training, one for validation)."""
    root = tmp_path_factory.mktemp("mito")
    for seed, name in enumerate(["cellA", "cellB"]):
        phantom = make_sem_phantom(shape=SHAPE, seed=seed)
        spacing = phantom.voxel_size
        write_image(root / "images" / f"{name}.tif", phantom.image, spacing, axes="ZYX")
        write_image(root / "labels" / f"{name}.tif", phantom.instances, spacing, axes="ZYX")
        contours = np.multiply(phantom.contours, 255, dtype=np.uint8)
        write_image(root / "contours" / f"{name}.tif", contours, spacing, axes="ZYX")
    write_manifest(root)
    return root


def test_every_config_is_valid_json():
    names = {p.name for p in CONFIGS.glob("*.json")}
    assert {
        "metadata.json",
        "common.json",
        "train.json",
        "inference.json",
        "evaluate.json",
        "ensemble.json",
    } <= names
    for path in CONFIGS.glob("*.json"):
        json.loads(path.read_text())
    assert (CONFIGS / "logging.conf").is_file()
    assert (CONFIGS.parent / "docs" / "README.md").is_file()


@pytest.mark.skipif(not SCHEMA.is_file(), reason="shared/monai/ schema copy not beside the repo")
@pytest.mark.filterwarnings("ignore:No hash value provided")
def test_metadata_is_valid_against_the_monai_schema():
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA))


def test_metadata_names_three_classes_and_three_slices():
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["schema"].endswith("meta_schema_20240725.json")
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 3
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == 3


@pytest.mark.parametrize("num_slices", [1, 3, 5])
def test_each_slice_count_matches_the_metadata_shapes(num_slices):
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=[str(CONFIGS / "common.json"), str(CONFIGS / "inference.json")],
        n=4,
        device="cpu",
        num_slices=num_slices,
        **{"_meta_#network_data_format#inputs#image#num_channels": num_slices},
    )


def test_train_then_infer_then_evaluate(sem_dataset, tmp_path):
    models = tmp_path / "models"
    store = tmp_path / "mlruns"
    run_bundles(
        bundle_command(
            "--config_file", config_list("common.json", "train.json"),
            "--dataset_dir", str(sem_dataset),
            "--output_dir", str(models),
            "--mlflow_store", str(store),
            "--epochs", "2",
            "--iterations_per_epoch", "3",
            "--num_samples", "2",
            "--batch_size", "2",
            "--val_fraction", "0.5",
            "--num_slices", "3",
            "--intensity_remap", "true",
            *TINY_UNET,
        )
    )  # fmt: skip
    model = models / "model.pt"
    assert model.is_file() and (models / "checkpoint.pt").is_file()
    check_tracked_run(store, sem_dataset)

    predictions = tmp_path / "predictions"
    eval_dir = tmp_path / "eval"
    common = ["--dataset_dir", str(sem_dataset), "--model_path", str(model), *TINY_UNET]
    run_bundles(
        bundle_command(
            "--config_file", config_list("common.json", "inference.json"),
            "--prediction_dir", str(predictions),
            *common,
        ),
        bundle_command(
            "--config_file", config_list("common.json", "evaluate.json"),
            "--eval_dir", str(eval_dir),
            *common,
        ),
    )  # fmt: skip
    written = sorted(p.name for p in predictions.iterdir())
    assert written == [f"cell{c}_{kind}.tif" for c in "AB" for kind in ("contour", "object", "seg")]
    labels = read_image(predictions / "cellA_seg.tif")
    assert labels.array.shape == SHAPE and labels.array.dtype == np.uint8
    assert labels.array.max() <= 2
    np.testing.assert_allclose(labels.spacing, read_image(sem_dataset / "images/cellA.tif").spacing)
    objects = read_image(predictions / "cellA_object.tif").array
    # the label map is the object probability map thresholded at 0.5 (128 of 255)
    np.testing.assert_array_equal(labels.array > 0, objects >= 128)

    with open(eval_dir / "metrics.csv") as f:
        metrics = {row[0]: float(row[1]) for row in csv.reader(f)}
    assert set(metrics) == {"object_dice", "object_precision", "object_recall", "contour_dice"}
    assert all(0.0 <= value <= 1.0 for value in metrics.values())
    with open(eval_dir / "object_dice_raw.csv") as f:
        assert [Path(row["filename"]).name for row in csv.DictReader(f)] == [
            "cellA.tif",
            "cellB.tif",
        ]


def check_tracked_run(store: Path, dataset: Path) -> None:
    """The training landed as one complete MLflow run: params, per-epoch metrics, input."""
    from seglab.tracking.store import resolve_store

    client = resolve_store(store).client()
    experiment = client.get_experiment_by_name("mito")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name.startswith("mito-unet-3fm-")
    params = run.data.params
    assert params["loss_name"] == "dicece" and params["optimizer"] == "adam"
    assert params["learning_rate"] == "0.001" and params["epochs"] == "2"
    assert params["num_slices"] == "3" and params["intensity_remap"] == "true"
    assert params["network_options.channels"] == "[4, 8]"
    for name in ("train_loss", "train_object_dice", "val_object_dice", "val_contour_dice"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [1, 2], name
    inputs = run.inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == [dataset.name]
    assert inputs[0].dataset.digest
    artifacts = {
        f.path
        for folder in ("training", "bundle/configs", "evaluation")
        for f in client.list_artifacts(run.info.run_id, folder)
    }
    assert {"training/learning_curves.png", "bundle/configs/train.json"} <= artifacts
    assert {"evaluation/report.md", "evaluation/sweep.png", "evaluation/sweep.csv"} <= artifacts
    model_id = run.data.tags["seglab.model_id"]
    assert [m.model_id for m in run.outputs.model_outputs] == [model_id]
    assert 0.0 <= run.data.metrics["final_f_score"] <= 1.0


def test_seglab_train_registers_a_mito_model_that_evaluates_from_the_registry(
    sem_dataset, tmp_path, capsys, monkeypatch
):
    """The same bundle through ``seglab train``; the registered model evaluates a stack."""
    from seglab.cli.app import main
    from seglab.models.registry import evaluations_of, resolve_version
    from seglab.tracking.store import resolve_store

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = tmp_path / "mlruns"
    overrides = [
        "network_options#unet#channels=[4,8]", "network_options#unet#strides=[2]",
        "network_options#unet#num_res_units=0", "patch_size=64", "epochs=2",
        "iterations_per_epoch=3", "num_samples=2", "batch_size=2", "val_fraction=0.5",
        "num_slices=1",
    ]  # fmt: skip
    args = ["train", "mito", "--data", str(sem_dataset), "--store", str(store)]
    args += ["--output", str(tmp_path / "models"), "--register", "mito-test"]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "registered mito-test version 1" in out and "f_score" in out

    tracking = resolve_store(store)
    version = resolve_version(tracking, "models:/mito-test/1")
    (recorded,) = evaluations_of(version).values()
    assert recorded.metric == "f_score" and 0.0 <= recorded.value <= 1.0
    run = tracking.client().get_run(version.run_id)
    assert run.info.run_name.startswith("mito-unet-1fm-") and run.info.status == "FINISHED"

    assert main(["models", "promote", "mito-test", "1", "--store", str(store)]) == 0
    code = main(
        ["evaluate", "--model", "models:/mito-test@champion", "--data", str(sem_dataset),
         "--out", str(tmp_path / "eval"), "--store", str(store)]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert 0.0 <= metrics["f_score"] <= 1.0 and metrics["n_samples"] == 2
    assert (tmp_path / "eval" / "sweep.png").is_file()
