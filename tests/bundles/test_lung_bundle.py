"""The lung bundle: metadata schema, network shapes, and train -> inference -> evaluate runs."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import verify_metadata, verify_net_in_out

from seglab.io.images import read_image

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "lung" / "configs"
SCHEMA = REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"
# A tiny U-Net so a CPU epoch takes about a second.
TINY_UNET = [
    "--network_options#unet#channels", "[4,8]",
    "--network_options#unet#strides", "[2]",
    "--network_options#unet#num_res_units", "0",
]  # fmt: skip


def config_list(*names: str) -> str:
    return str([str(CONFIGS / name) for name in names])


def run_bundle(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def lung_dataset(tmp_path_factory, write_lung_dataset) -> Path:
    return write_lung_dataset(tmp_path_factory.mktemp("lung"), range(3), size=256)


def test_every_config_is_valid_json():
    names = {p.name for p in CONFIGS.glob("*.json")}
    assert {
        "metadata.json",
        "common.json",
        "train.json",
        "inference.json",
        "evaluate.json",
    } <= names
    for path in CONFIGS.glob("*.json"):
        json.loads(path.read_text())
    assert (CONFIGS / "logging.conf").is_file()
    assert (CONFIGS.parent / "docs" / "README.md").is_file()


@pytest.mark.skipif(not SCHEMA.is_file(), reason="shared/monai/ schema copy not beside the repo")
@pytest.mark.filterwarnings("ignore:No hash value provided")
def test_metadata_is_valid_against_the_monai_schema():
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA))


def test_metadata_names_the_2024_schema_and_six_classes():
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["schema"].endswith("meta_schema_20240725.json")
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 6
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == 3


@pytest.mark.parametrize("network_name", ["unet", "segnet", "deeplabv3plus"])
def test_each_network_matches_the_metadata_shapes(network_name):
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=[str(CONFIGS / "common.json"), str(CONFIGS / "inference.json")],
        n=8,
        device="cpu",
        network_name=network_name,
    )


def test_train_then_infer_then_evaluate(lung_dataset, tmp_path):
    models = tmp_path / "models"
    store = tmp_path / "mlruns"
    run_bundle(
        "--config_file", config_list("common.json", "train.json"),
        "--dataset_dir", str(lung_dataset),
        "--output_dir", str(models),
        "--mlflow_store", str(store),
        "--epochs", "2",
        "--num_samples", "2",
        "--batch_size", "2",
        "--tiling_preset", "no-overlap",
        *TINY_UNET,
    )  # fmt: skip
    model = models / "model.pt"
    assert model.is_file()
    check_tracked_run(store, lung_dataset)

    predictions = tmp_path / "predictions"
    run_bundle(
        "--config_file", config_list("common.json", "inference.json"),
        "--dataset_dir", str(lung_dataset),
        "--model_path", str(model),
        "--prediction_dir", str(predictions),
        "--tiling_preset", "paper-64",
        "--tta", "flips",
        *TINY_UNET,
    )  # fmt: skip
    written = sorted(p.name for p in predictions.iterdir())
    assert written == ["lung_0_seg.png", "lung_1_seg.png", "lung_2_seg.png"]
    labels = read_image(predictions / "lung_0_seg.png").array
    assert labels.shape == (256, 256)
    assert labels.dtype == np.uint8
    assert labels.max() < 6

    eval_dir = tmp_path / "eval"
    run_bundle(
        "--config_file", config_list("common.json", "evaluate.json"),
        "--dataset_dir", str(lung_dataset),
        "--model_path", str(model),
        "--eval_dir", str(eval_dir),
        "--tiling_preset", "no-overlap",
        *TINY_UNET,
    )  # fmt: skip
    with open(eval_dir / "mean_dice_summary.csv") as f:
        rows = {row["class"]: float(row["mean"]) for row in csv.DictReader(f)}
    assert list(rows) == [f"class{c}" for c in range(6)] + ["mean"]
    assert all(0.0 <= value <= 1.0 for value in rows.values())


def check_tracked_run(store: Path, dataset: Path) -> None:
    """The training landed as one complete MLflow run: params, per-epoch metrics, input."""
    from seglab.tracking.store import resolve_store

    client = resolve_store(store).client()
    experiment = client.get_experiment_by_name("lung")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name.startswith("lung-unet-")
    params = run.data.params
    assert params["loss_name"] == "mse" and params["tiling_preset"] == "no-overlap"
    assert params["learning_rate"] == "0.01" and params["epochs"] == "2"
    assert params["network_options.channels"] == "[4, 8]"
    assert params["compile"] == "auto"  # a two-epoch run stays eager (too short to pay)
    throughput = ("train_patches_per_s", "train_data_wait_share", "train_step_s")
    for name in ("train_loss", "train_mean_dice", "val_mean_dice", "learning_rate", *throughput):
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [1, 2], name
    for m in client.get_metric_history(run.info.run_id, "train_data_wait_share"):
        assert 0.0 <= m.value <= 1.0
    for name in ("background", "airway", "bud", "proximal", "artery", "vein"):
        history = client.get_metric_history(run.info.run_id, f"val_class_dice_{name}")
        assert [m.step for m in history] == [1, 2], name
    inputs = run.inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == [dataset.name]
    assert "mlflow.source.git.commit" in run.data.tags
    assert "--tiling_preset no-overlap" in run.data.tags["seglab.command"]
    # artifacts: learning curves, the executed configs, the final evaluation report
    artifacts = {
        f.path
        for folder in ("training", "bundle/configs", "evaluation")
        for f in client.list_artifacts(run.info.run_id, folder)
    }
    assert {"training/learning_curves.png", "training/history.csv"} <= artifacts
    assert {"bundle/configs/train.json", "bundle/configs/common.json"} <= artifacts
    assert {"evaluation/report.md", "evaluation/per_class.csv", "evaluation/confusion.png"} <= (
        artifacts
    )
    # the logged model, an output of the run, with the final metrics linked to it
    model_id = run.data.tags["seglab.model_id"]
    assert [m.model_id for m in run.outputs.model_outputs] == [model_id]
    assert 0.0 <= run.data.metrics["final_total_dice"] <= 1.0
    assert {f"final_dice_C{c}" for c in range(1, 7)} <= set(run.data.metrics)
