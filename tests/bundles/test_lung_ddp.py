"""The lung bundle trained by two torchrun processes (gloo on CPU) lands as one MLflow run."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "lung" / "configs"
# A tiny U-Net so a CPU epoch takes well under a second (as in test_lung_bundle.py).
TINY_UNET = [
    "--network_options#unet#channels", "[4,8]",
    "--network_options#unet#strides", "[2]",
    "--network_options#unet#num_res_units", "0",
]  # fmt: skip
RANK_LINE = re.compile(
    r"rank (\d) of 2: trained 2 epochs on (\d) of (\d) training images "
    r"and validated (\d) of (\d) images per epoch"
)


@pytest.fixture(scope="module")
def lung_dataset(tmp_path_factory, write_lung_dataset) -> Path:
    """Four phantoms: with val_fraction 0.5, two to train and two to validate."""
    return write_lung_dataset(tmp_path_factory.mktemp("lung"), range(4), size=256)


def run_torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["OMP_NUM_THREADS"] = "1"
    env["CUDA_VISIBLE_DEVICES"] = ""  # gloo on CPU even on a machine with GPUs
    names = ("common.json", "train.json", "multi_gpu_train.json")
    configs = [str(CONFIGS / name) for name in names]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
        "-m", "monai.bundle", "run", "--config_file", str(configs), *args,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_two_processes_train_one_tracked_run(lung_dataset, tmp_path):
    from seglab.tracking.store import resolve_store

    models = tmp_path / "models"
    store = tmp_path / "mlruns"
    result = run_torchrun(
        "--dataset_dir", str(lung_dataset),
        "--output_dir", str(models),
        "--mlflow_store", str(store),
        "--epochs", "2",
        "--num_samples", "2",
        "--batch_size", "2",
        "--val_fraction", "0.5",
        "--tiling_preset", "no-overlap",
        *TINY_UNET,
    )  # fmt: skip

    # each rank trained on one of the two training images and validated one of the two others
    reports = sorted(RANK_LINE.findall(result.stdout))
    assert reports == [("0", "1", "2", "1", "2"), ("1", "1", "2", "1", "2")], result.stdout[-3000:]
    # rank 1 logs warnings only: each training step is reported once, by rank 0
    assert result.stdout.count("Epoch: 1/2, Iter: 1/1 -- train_loss") == 1

    client = resolve_store(store).client()
    experiment = client.get_experiment_by_name("lung")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name.startswith("lung-unet-")
    assert run.data.params["world_size"] == "2" and run.data.params["dist_backend"] == "gloo"
    assert run.data.params["max_epochs"] == "2"
    for name in ("train_loss", "train_mean_dice", "val_mean_dice", "learning_rate"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [1, 2], name
    # rank 0 alone published the model: one logged model, one final evaluation of both val images
    assert run.data.metrics["final_n_samples"] == 2
    assert len(client.search_logged_models([experiment.experiment_id])) == 1

    # the best model and the resume checkpoint hold the bare network's weights (no DDP
    # "module." prefix), so that inference.json, evaluate.json and --resume load them unchanged
    assert sorted(p.name for p in models.iterdir()) == ["checkpoint.pt", "model.pt"]
    best = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    assert best and not any(key.startswith("module.") for key in best)
    checkpoint = torch.load(models / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 2 and checkpoint["model"].keys() == best.keys()
