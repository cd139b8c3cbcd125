"""``seglab train`` killed with SIGKILL at random points resumes to completion, runs stay true.

The lung bundle is trained by the real command (a subprocess) on a tiny phantom dataset into an
embedded store, killed five times and resumed with ``--resume`` each time: four kills at random
moments of the epochs, one at a random moment of the final publishing (model logging, final
evaluation, registration), after which the last resume only publishes. Each process's MLflow
run is found by its owner pid tag, so a kill point is known to lie inside that run's training.
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from seglab.cli.app import main
from seglab.io.atomic import atomic_file
from seglab.tracking.store import (
    TAG_FAILURE,
    TAG_PID,
    ensure_experiment,
    owner_tags,
    resolve_store,
)

EPOCHS = 16
KILLS_IN_EPOCHS = 4  # then one kill while the finished training publishes its model
EXPERIMENT = "lung"  # the bundle's experiment_name
MODEL_NAME = "lung-killed"
TINY = [
    "--set", "network_options#unet#channels=[4,8]",
    "--set", "network_options#unet#strides=[2]",
    "--set", "network_options#unet#num_res_units=0",
    "--set", f"epochs={EPOCHS}", "--set", "num_samples=2", "--set", "batch_size=2",
    "--set", "tiling_preset=no-overlap",
]  # fmt: skip
DEAD = "the process running it died"  # seglab.tracking.store.fail_dead_runs's reason


@pytest.fixture(autouse=True)
def no_team_server(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def lung_dataset(tmp_path_factory, write_lung_dataset) -> Path:
    """Four 128x128 phantoms: three training images (3 iterations an epoch), one validation."""
    return write_lung_dataset(tmp_path_factory.mktemp("lung"), range(4), size=128)


def read_checkpoint(path: Path) -> dict | None:
    """The epoch checkpoint as a resume would read it; None when there is none yet."""
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def start_training(dataset: Path, out: Path, store: Path, log: Path, resume: bool):
    command = [
        sys.executable, "-m", "seglab.cli.app", "train", "lung", "--data", str(dataset),
        "--store", str(store), "--output", str(out), "--register", MODEL_NAME, *TINY,
    ]  # fmt: skip
    if resume:
        command.append("--resume")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["OMP_NUM_THREADS"] = "1"
    with open(log, "w") as stream:
        return subprocess.Popen(
            command, cwd=log.parent, env=env, stdout=stream, stderr=subprocess.STDOUT
        )


def tail(log: Path) -> str:
    return log.read_text()[-3000:]


def wait_for_run(client, experiment_id: str, process, log: Path, timeout: float = 180.0):
    """Wait until ``process`` has opened its run (training started); return the run."""
    deadline = time.monotonic() + timeout
    while True:
        for run in client.search_runs([experiment_id]):
            if run.data.tags.get(TAG_PID) == str(process.pid):
                return run
        assert process.poll() is None, "training ended before opening its run:\n" + tail(log)
        assert time.monotonic() < deadline, "no run opened in time:\n" + tail(log)
        time.sleep(0.05)


class CheckpointWatch:
    """The epoch of the checkpoint file, re-read whenever the file is replaced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.key: tuple[int, int] | None = None
        self.epoch = 0

    def current(self) -> int:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return 0
        if (stat.st_ino, stat.st_mtime_ns) != self.key:
            saved = read_checkpoint(self.path)
            assert saved is not None
            self.key, self.epoch = (stat.st_ino, stat.st_mtime_ns), saved["epoch"]
        return self.epoch


def snapshot(client, run_id: str) -> dict:
    """Everything a later process must not add to: metric histories and artifact paths."""
    run = client.get_run(run_id)
    metrics = {
        key: [(m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key)]
        for key in run.data.metrics
    }
    artifacts = sorted(f.path for f in client.list_artifacts(run_id))
    return {"metrics": metrics, "params": dict(run.data.params), "artifacts": artifacts}


@pytest.mark.slow
def test_training_killed_at_random_points_resumes_to_completion(tmp_path, lung_dataset):
    started = time.monotonic()
    out, store_dir = tmp_path / "out", tmp_path / "mlruns"
    checkpoint = out / "checkpoint.pt"
    store = resolve_store(store_dir)
    experiment_id = ensure_experiment(store, EXPERIMENT)  # the database exists before polling
    client = store.client()
    rng = random.Random(7)
    watch = CheckpointWatch(checkpoint)
    # one entry per process: its run, the checkpoint it resumed from, the kill point, snapshot
    history: list[dict] = []

    for attempt in range(KILLS_IN_EPOCHS + 2):
        before = read_checkpoint(checkpoint)  # a torn file would fail to load here
        resumed_epoch = before["epoch"] if before else 0
        log = tmp_path / f"train{attempt}.log"
        process = start_training(lung_dataset, out, store_dir, log, resume=attempt > 0)
        run = wait_for_run(client, experiment_id, process, log)
        points = "; ".join(entry["point"] for entry in history)
        where = f"process {attempt} (after kills: {points or 'none'})"
        tags = run.data.tags
        if before is None:
            assert "seglab.resumed_from_epoch" not in tags, where
        else:  # resumed at the last complete checkpoint, naming the run that wrote it
            assert tags["seglab.resumed_from_epoch"] == str(resumed_epoch), where
            assert tags.get("seglab.resumed_from_run") == before["run_id"], where
            assert before["run_id"] in [entry["run_id"] for entry in history], where
        if history:  # the killed predecessor was failed when this one started, not earlier
            dead = client.get_run(history[-1]["run_id"])
            assert dead.info.status == "FAILED" and dead.data.tags[TAG_FAILURE] == DEAD, where
        history.append(
            {"run_id": run.info.run_id, "resumed": resumed_epoch, "point": "", "log": log}
        )
        if attempt == KILLS_IN_EPOCHS + 1:
            assert process.wait(timeout=300) == 0, where + "\n" + tail(log)
            break

        if attempt < KILLS_IN_EPOCHS:  # somewhere in the next few epochs of this process
            after_epoch = min(resumed_epoch + rng.randint(0, 2), EPOCHS)
            delay = rng.uniform(0.0, 0.3)
        else:  # somewhere in the publishing after the last epoch
            after_epoch, delay = EPOCHS, rng.uniform(0.0, 0.4)
        deadline = time.monotonic() + 180
        while watch.current() < after_epoch:
            assert process.poll() is None, f"{where}: ended early\n" + tail(log)
            assert time.monotonic() < deadline, f"{where}: no epoch {after_epoch}\n" + tail(log)
            time.sleep(0.01)
        time.sleep(delay)
        assert process.poll() is None, f"{where}: ended before its kill\n" + tail(log)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
        point = (
            f"kill {attempt + 1}: {delay:.3f} s after checkpoint epoch >= {after_epoch}, "
            f"checkpoint then at epoch {watch.current()}"
        )
        history[-1]["point"] = point
        dead = client.get_run(run.info.run_id)
        assert dead.info.status == "RUNNING", f"{point}: the kill came after the run ended"
        history[-1]["snapshot"] = snapshot(client, run.info.run_id)

    points = "; ".join(entry["point"] for entry in history[:-1])
    final = history[-1]
    # the training completed every epoch and published its model as usual
    saved = read_checkpoint(checkpoint)
    assert saved["epoch"] == EPOCHS and saved["trainer"]["iteration"] == 3 * EPOCHS, points
    assert final["resumed"] == EPOCHS, points  # the last kill came while it was publishing
    assert f"registered {MODEL_NAME} version" in final["log"].read_text(), points
    finished = client.get_run(final["run_id"])
    assert finished.info.status == "FINISHED", points
    assert "final_total_dice" in finished.data.metrics, points
    assert [m.model_id for m in finished.outputs.model_outputs], points
    versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
    latest = max(versions, key=lambda version: int(version.version))
    assert latest.run_id == final["run_id"], points
    assert finished.data.tags["seglab.registered"] == f"{MODEL_NAME}/{latest.version}", points
    assert not list(out.glob(".checkpoint.*.tmp.pt")), points  # no temporaries left behind

    # statuses are true: one run per process, the killed ones FAILED, nothing RUNNING
    runs = client.search_runs([experiment_id])
    status = {run.info.run_id: run.info.status for run in runs}
    ids = [entry["run_id"] for entry in history]
    assert len(set(ids)) == len(ids) == len(runs), points
    assert [status[run_id] for run_id in ids] == ["FAILED"] * (len(ids) - 1) + ["FINISHED"], points

    # nothing was appended to a dead run; each run holds only the epochs it trained
    next_resumed = [entry["resumed"] for entry in history[1:]] + [EPOCHS]
    for entry, resumed_next in zip(history, next_resumed, strict=True):
        steps = [m.step for m in client.get_metric_history(entry["run_id"], "train_loss")]
        first = entry["resumed"] + 1
        # the kill may fall between the checkpoint's write and the epoch's metrics
        assert steps in (
            list(range(first, resumed_next + 1)),
            list(range(first, resumed_next)),
        ), f"{entry['point'] or 'final run'}: steps {steps}"
        if "snapshot" in entry:
            assert snapshot(client, entry["run_id"]) == entry["snapshot"], entry["point"]
    print(f"\n{len(history) - 1} kills ({points}); {time.monotonic() - started:.1f} s")


@pytest.mark.slow
def test_a_truncated_checkpoint_stops_a_resume_in_one_line_and_dead_runs_fail(
    tmp_path, lung_dataset, capsys
):
    """The checkpoint is refused before any run opens; a dead run is failed all the same."""
    store = resolve_store(tmp_path / "mlruns")
    experiment_id = ensure_experiment(store, EXPERIMENT)
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                           capture_output=True, text=True)  # fmt: skip
    dead_pid = int(child.stdout)  # exited: a run owned by it belongs to a killed training
    client = store.client()
    dead = client.create_run(experiment_id, tags=owner_tags(dead_pid)).info.run_id
    out = tmp_path / "out"
    with atomic_file(out / "checkpoint.pt") as tmp:
        tmp.write_bytes(b"PK\x03\x04" + bytes(200))  # a zip archive cut short
    code = main([
        "train", "lung", "--data", str(lung_dataset), "--store", str(tmp_path / "mlruns"),
        "--output", str(out), "--resume", *TINY,
    ])  # fmt: skip
    err = capsys.readouterr().err
    error = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err
    assert error.startswith(f"seglab: error: cannot resume from checkpoint {out / 'checkpoint.pt'}")
    assert "unreadable or corrupt" in error and "delete the file" in error
    assert (out / "checkpoint.pt").stat().st_size == 204  # left as it was for the user to see
    (run,) = client.search_runs([experiment_id])  # no run opened for the refused training
    assert run.info.run_id == dead and run.info.status == "FAILED"
    assert run.data.tags[TAG_FAILURE] == DEAD
