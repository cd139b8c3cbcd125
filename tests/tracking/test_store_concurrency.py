"""Several processes opening one new embedded store at the same moment, then writing runs."""

import json
import os
import subprocess
import sys
import time

import pytest

from seglab.tracking.store import resolve_store

#: Opens the store when the file ``go`` appears (after its imports, so that all start
#: together), then writes runs as a training does; prints how many it wrote and its errors.
WORKER = """
import json, sys, time
from pathlib import Path
import mlflow.tracking
from seglab.tracking.store import ensure_experiment, resolve_store

store_dir, folder, index, runs = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
store = resolve_store(store_dir)
(folder / f"ready-{index}").touch()
while not (folder / "go").exists():
    time.sleep(0.005)
client = store.client()
experiment = ensure_experiment(store, "shared")
errors = []
for number in range(runs):
    try:
        run = client.create_run(experiment, run_name=f"w{index}-{number}", tags={"w": index})
        for step in range(5):
            client.log_metric(run.info.run_id, "loss", 1.0 / (step + 1), step=step)
        client.log_param(run.info.run_id, "lr", index)
        client.set_tag(run.info.run_id, "seglab.trial_number", f"{index}-{number}")
        client.set_terminated(run.info.run_id)
    except Exception as err:
        errors.append(" ".join(str(err).split())[:300])
print(json.dumps({"errors": errors}))
"""


@pytest.mark.slow
def test_processes_opening_a_new_store_together_all_write_their_runs(tmp_path, monkeypatch):
    """MLflow migrates a new database without a lock: unguarded, this broke the store for good."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workers, runs = 4, 5
    store_dir, folder = tmp_path / "mlruns", tmp_path / "sync"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(store_dir), str(folder), str(i), str(runs)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(workers)
    ]
    deadline = time.monotonic() + 120
    while len(list(folder.glob("ready-*"))) < workers and time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), [p.stderr.read()[-2000:] for p in procs]
        time.sleep(0.05)
    (folder / "go").touch()
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1]) == {"errors": []}

    client = resolve_store(store_dir).client()
    experiment = client.get_experiment_by_name("shared")
    found = client.search_runs([experiment.experiment_id], max_results=1000)
    tags = sorted(r.data.tags["seglab.trial_number"] for r in found)
    assert tags == sorted(f"{i}-{n}" for i in range(workers) for n in range(runs))
    assert {r.info.status for r in found} == {"FINISHED"}
    assert all(len(client.get_metric_history(r.info.run_id, "loss")) == 5 for r in found)
