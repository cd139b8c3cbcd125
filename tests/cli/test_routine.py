"""Routine analysis from the command line: train, register, promote, evaluate, segment, roll back.

Two tiny lung models are trained by ``seglab train`` on a phantom dataset and evaluated on a
held-out phantom set; the better one must pass the promotion gate, the worse one must be refused,
and ``seglab evaluate --model models:/NAME@champion`` in a fresh process must reproduce the
metric recorded on the champion version at training time.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seglab.cli.app import main
from seglab.io.images import read_image
from seglab.models.registry import evaluations_of, resolve_version
from seglab.tracking.store import resolve_store

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "--set", "network_options#unet#channels=[4,8]",
    "--set", "network_options#unet#strides=[2]",
    "--set", "network_options#unet#num_res_units=0",
    "--set", "epochs=2", "--set", "num_samples=2", "--set", "batch_size=2",
    "--set", "tiling_preset=no-overlap", "--set", "learning_rate=0.05",
]  # fmt: skip


def run(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(autouse=True)
def no_team_server(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_train_register_promote_evaluate_segment_rollback(tmp_path, capsys, write_lung_dataset):
    train = write_lung_dataset(tmp_path / "train", range(3))
    test = write_lung_dataset(tmp_path / "test", range(10, 12))
    store = tmp_path / "mlruns"
    common = ["--data", str(train), "--eval-data", str(test), "--store", str(store)]
    for seed in (0, 1):
        code, out, err = run(
            capsys,
            "train", "lung", *common, *TINY, "--set", f"seed={seed}",
            "--register", "lung-cli", "--output", str(tmp_path / f"models{seed}"),
        )  # fmt: skip
        assert code == 0, err
        assert f"registered lung-cli version {seed + 1}" in out
        assert "total_dice" in out

    tracking = resolve_store(store)
    # each seglab train landed a complete run: params, per-epoch metrics, input, artifacts, model
    client = tracking.client()
    training = client.get_run(resolve_version(tracking, "models:/lung-cli/1").run_id)
    assert training.info.status == "FINISHED" and training.data.params["loss_name"] == "mse"
    assert training.data.params["network_options.channels"] == "[4, 8]"
    history = client.get_metric_history(training.info.run_id, "val_class_dice_artery")
    assert [m.step for m in history] == [1, 2]
    (dataset_input,) = training.inputs.dataset_inputs
    assert dataset_input.dataset.name == "train" and dataset_input.dataset.digest
    artifacts = {f.path for f in client.list_artifacts(training.info.run_id, "evaluation")}
    assert "evaluation/report.md" in artifacts
    model_id = training.data.tags["seglab.model_id"]
    assert [m.model_id for m in training.outputs.model_outputs] == [model_id]
    values = {}
    for version in ("1", "2"):
        recorded = evaluations_of(resolve_version(tracking, f"models:/lung-cli/{version}"))
        (evaluation,) = recorded.values()
        assert evaluation.metric == "total_dice" and evaluation.dataset == "test"
        values[version] = evaluation.value
    worse, better = sorted(values, key=lambda v: (values[v], v))

    def promote(version):
        return run(capsys, "models", "promote", "lung-cli", version, "--store", str(store))

    code, out, err = promote(worse)  # the first champion: it has a recorded evaluation
    assert code == 0, err
    code, out, err = promote(better)  # at least as good on the same test set: passes the gate
    assert code == 0, err
    if values[worse] < values[better]:
        code, out, err = promote(worse)
        assert code == 2 and "worse than champion" in err and err.count("\n") == 1
        code, out, err = run(capsys, "models", "rollback", "lung-cli", "--store", str(store))
        assert code == 0 and f"version {better} -> {worse} (rollback)" in out
        code, out, err = promote(better)
        assert code == 0, err
    assert str(resolve_version(tracking, "models:/lung-cli@champion").version) == better

    code, out, err = run(capsys, "models", "show", "lung-cli", "--store", str(store))
    assert code == 0 and "audit trail:" in out and "promote @champion" in out
    code, out, err = run(capsys, "models", "list", "--store", str(store))
    assert code == 0 and "lung-cli" in out and "@champion=" in out

    # a fresh process loads models:/lung-cli@champion and reproduces the recorded metric
    champion = resolve_version(tracking, "models:/lung-cli@champion")
    recorded = values[str(champion.version)]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "seglab.cli.app", "evaluate",
         "--model", "models:/lung-cli@champion", "--data", str(test),
         "--out", str(tmp_path / "eval"), "--store", str(store)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["total_dice"] == pytest.approx(recorded, abs=1e-9)
    assert (tmp_path / "eval" / "report.md").is_file()
    assert not (tmp_path / "mlflow.db").exists()  # nothing leaked into the current folder

    code, out, err = run(
        capsys, "segment", "--model", "models:/lung-cli@champion",
        str(test / "images"), "--out", str(tmp_path / "seg"), "--store", str(store),
    )  # fmt: skip
    assert code == 0, err
    labels = read_image(tmp_path / "seg" / "labels" / "lung_10.png").array
    assert labels.shape == (256, 256) and labels.max() < 6
    probabilities = read_image(tmp_path / "seg" / "probabilities" / "lung_10.tif").array
    assert probabilities.shape == (6, 256, 256) and probabilities.dtype.name == "uint8"

    # opt-in bfloat16: the same model gives nearly the same labels; a bad precision is one line
    code, out, err = run(
        capsys, "segment", "--model", "models:/lung-cli@champion", "--precision", "bfloat16",
        str(test / "images"), "--out", str(tmp_path / "seg16"), "--store", str(store),
    )  # fmt: skip
    assert code == 0, err
    half = read_image(tmp_path / "seg16" / "labels" / "lung_10.png").array
    assert (half == labels).mean() >= 0.99
    code, out, err = run(
        capsys, "segment", "--model", "models:/lung-cli@champion", "--precision", "float16",
        str(test / "images"), "--out", str(tmp_path / "seg-bad"), "--store", str(store),
    )  # fmt: skip
    assert code == 2 and "precision must be one of float32, bfloat16" in err
    assert err.count("\n") == 1 and not (tmp_path / "seg-bad").exists()


def test_unknown_override_ids_and_models_are_one_line_errors(tmp_path, capsys, write_lung_dataset):
    train = write_lung_dataset(tmp_path / "train", range(2))
    code, _, err = run(
        capsys, "train", "lung", "--data", str(train), "--set", "epoch=3",
        "--store", str(tmp_path / "mlruns"),
    )  # fmt: skip
    assert code == 2 and "unknown config id(s) epoch" in err and err.count("\n") == 1
    code, _, err = run(capsys, "train", "lung", "--data", str(train), "--set", "epochs")
    assert code == 2 and "is not key=value" in err
    code, _, err = run(
        capsys, "evaluate", "--model", "models:/nothing@champion", "--data", str(train),
        "--out", str(tmp_path / "e"), "--store", str(tmp_path / "mlruns"),
    )  # fmt: skip
    assert code == 2 and "no registered model 'nothing'" in err
    assert not (tmp_path / "e").exists()


def test_a_bundle_from_outside_the_repository_needs_trust(tmp_path, capsys, write_lung_dataset):
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    for name in ("common.json", "train.json", "metadata.json", "logging.conf"):
        (bundle / "configs" / name).write_text(
            (REPO / "bundles" / "lung" / "configs" / name).read_text()
        )
    train = write_lung_dataset(tmp_path / "train", range(2))
    code, _, err = run(capsys, "train", str(bundle), "--data", str(train))
    assert code == 2 and "pass --trust" in err


def test_an_error_inside_the_training_engine_is_one_line(tmp_path, write_lung_dataset):
    """MONAI wraps errors raised by handlers; seglab train shows the seglab error inside."""
    train = write_lung_dataset(tmp_path / "train", range(2))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    result = subprocess.run(
        [sys.executable, "-m", "seglab.cli.app", "train", "lung", "--data", str(train),
         "--store", str(tmp_path / "mlruns"), "--output", str(tmp_path / "m"), *TINY,
         "--set", "epochs=1", "--set", "publisher#weights=/nonexistent/model.pt"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2
    assert last.startswith("seglab: error: no checkpoint at /nonexistent/model.pt")
    assert "Traceback" not in result.stderr
