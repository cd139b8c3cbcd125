"""Four `seglab search` workers on one study and one new MLflow store: nothing lost or doubled."""

import os
import subprocess
import sys
import time

import pytest
import yaml

from seglab.studies.recipes import load_recipe
from seglab.studies.runner import TAG_PARENT, TAG_STUDY

optuna = pytest.importorskip("optuna")

WORKERS = 4
TRIALS_EACH = 2
#: The smallest training the lung bundle runs: one epoch of a 2-level U-Net on two patches.
TINY = {
    "network_options#unet#channels": [4, 8],
    "network_options#unet#strides": [2],
    "network_options#unet#num_res_units": 0,
    "epochs": 1,
    "num_samples": 2,
    "batch_size": 2,
    "tiling_preset": "no-overlap",
    "show_progress": False,
}


@pytest.fixture(scope="module")
def lung_data(tmp_path_factory, write_lung_dataset):
    root = tmp_path_factory.mktemp("lung")
    return (
        write_lung_dataset(root / "train", range(2), size=128),
        write_lung_dataset(root / "test", range(10, 11), size=128),
    )


@pytest.mark.slow
@pytest.mark.parametrize("storage_kind", ["sqlite", "journal"])
def test_four_workers_share_one_study_without_lost_or_doubled_trials(
    lung_data, tmp_path, storage_kind
):
    train, test = lung_data
    total = WORKERS * TRIALS_EACH
    recipe = tmp_path / "search.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "kind": "search",
                "name": "lung-concurrency",
                "bundle": "lung",
                "data": str(train),
                "eval_data": str(test),
                "overrides": TINY,
                "search": {
                    "trials": total,
                    "space": {"learning_rate": {"low": 1e-3, "high": 0.1, "log": True}},
                    "pruner": "none",
                },
            }
        )
    )
    storage = (
        f"sqlite:///{tmp_path / 'optuna.db'}"
        if storage_kind == "sqlite"
        else f"journal:{tmp_path / 'optuna.journal'}"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [
        sys.executable, "-m", "seglab.cli.app", "search", str(recipe), "--storage", storage,
        "--store", str(tmp_path / "mlruns"), "--trials", str(TRIALS_EACH),
        "--out", str(tmp_path / "report"),
    ]  # fmt: skip
    started = time.monotonic()
    # all four open the new MLflow store and the new study at about the same moment
    pipe = subprocess.PIPE
    workers = [
        subprocess.Popen(command, cwd=tmp_path, env=env, stdout=pipe, stderr=pipe, text=True)
        for _ in range(WORKERS)
    ]
    outputs = [w.communicate(timeout=600) for w in workers]
    print(f"{WORKERS} workers, {storage_kind}: {time.monotonic() - started:.1f} s")
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, (out + err)[-3000:]
        assert "database is locked" not in err
    assert sum("(created)" in out for out, _ in outputs) == 1
    assert sum("(joined)" in out for out, _ in outputs) == WORKERS - 1

    from seglab.studies.optuna_study import TAG_TRIAL, resolve_storage, study_name
    from seglab.tracking.store import resolve_store

    store = resolve_store(tmp_path / "mlruns")
    study = optuna.load_study(
        study_name=study_name(load_recipe(recipe)), storage=resolve_storage(storage, store)
    )
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(total))
    assert {t.state.name for t in trials} == {"COMPLETE"}

    client = store.client()
    parent_id = study.user_attrs["mlflow_parent_run_id"]
    experiment = client.get_run(parent_id).info.experiment_id
    runs = client.search_runs([experiment], max_results=1000)
    parents = [r for r in runs if TAG_PARENT not in r.data.tags]
    children = [r for r in runs if r.data.tags.get(TAG_PARENT) == parent_id]
    assert [r.info.run_id for r in parents] == [parent_id]
    assert len(runs) == 1 + total  # no stray runs: the parent and one child per trial
    assert parents[0].data.tags[TAG_STUDY] == "lung-concurrency"
    assert sorted(int(r.data.tags[TAG_TRIAL]) for r in children) == list(range(total))
    assert {r.info.status for r in runs} == {"FINISHED"}
    by_trial = {int(r.data.tags[TAG_TRIAL]): r for r in children}
    for trial in trials:
        run = by_trial[trial.number]
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.data.tags["seglab.trial_state"] == "COMPLETE"
        assert trial.value == pytest.approx(run.data.metrics["final_total_dice"])
