"""Optuna search recipes: trials as nested MLflow runs, pruning inside MONAI's engine, workers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from seglab.errors import SeglabError
from seglab.studies.recipes import load_recipe, parse_recipe
from seglab.studies.runner import TAG_CHILD_KEY, TAG_PARENT

optuna = pytest.importorskip("optuna")

TINY = {
    "network_options#unet#channels": [4, 8],
    "network_options#unet#strides": [2],
    "network_options#unet#num_res_units": 0,
    "epochs": 3,
    "num_samples": 2,
    "batch_size": 2,
    "tiling_preset": "no-overlap",
    "show_progress": False,
}


@pytest.fixture(scope="module")
def lung_data(tmp_path_factory, write_lung_dataset):
    root = tmp_path_factory.mktemp("lung")
    return write_lung_dataset(root / "train", range(3), size=128), write_lung_dataset(
        root / "test", range(10, 11), size=128
    )


@pytest.fixture(autouse=True)
def no_team_server(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # studies/ work folders go here


def recipe_dict(train, test, **search):
    return {
        "kind": "search",
        "name": "lung-loss-lr",
        "bundle": "lung",
        "data": str(train),
        "eval_data": str(test),
        "overrides": TINY,
        "search": {
            "trials": 3,
            "space": {
                "loss": {
                    "choices": {
                        "dicece": {"loss_name": "dicece"},
                        "weighted-ce": {"loss_name": "ce", "class_balance": "inverse-frequency"},
                    }
                },
                "learning_rate": {"low": 1e-3, "high": 0.1, "log": True},
            },
            "startup_trials": 1,
            "warmup_epochs": 0,
            **search,
        },
    }


def child_runs(client, parent_id):
    experiment = client.get_run(parent_id).info.experiment_id
    return client.search_runs(
        [experiment], filter_string=f"tags.`{TAG_PARENT}` = '{parent_id}'", max_results=1000
    )


def test_search_runs_trials_as_nested_runs_and_resumes(lung_data, tmp_path):
    from seglab.studies.search import run_search
    from seglab.tracking.store import resolve_store

    train, test = lung_data
    store = resolve_store(tmp_path / "mlruns")
    recipe = parse_recipe(recipe_dict(train, test))
    lines: list[str] = []
    result = run_search(store, recipe, out_dir=tmp_path / "report", echo=lines.append)
    client = store.client()
    parent = client.get_run(result.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["seglab.study"] == "lung-loss-lr"
    runs = child_runs(client, result.run_id)
    assert len(runs) == 3
    storage = f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}"
    study = optuna.load_study(study_name=f"lung-loss-lr-{recipe.digest}", storage=storage)
    trials = study.get_trials()
    assert sorted(r.data.tags["seglab.trial_number"] for r in runs) == ["0", "1", "2"]
    for trial in trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.tags[TAG_CHILD_KEY] == f"trial={trial.number}"
        assert run.data.tags["seglab.trial_state"] == trial.state.name
        assert run.data.params["learning_rate"] == str(trial.params["learning_rate"])
        if trial.state.name == "COMPLETE":
            assert trial.value == pytest.approx(run.data.metrics["final_total_dice"])
        else:  # pruned inside the engine: fewer epochs, no model
            assert trial.state.name == "PRUNED"
            assert run.data.tags["seglab.pruned"] == "true"
            assert "final_total_dice" not in run.data.metrics
    report = tmp_path / "report"
    assert {"trials.csv", "best.json", "optimization_history.png"} <= {
        p.name for p in report.iterdir()
    }
    best = json.loads((report / "best.json").read_text())
    assert best["final_total_dice"] == pytest.approx(study.best_value)
    assert parent.data.metrics["best_final_total_dice"] == pytest.approx(study.best_value)
    assert any("trial 0:" in line for line in lines)

    # run again: the study is full, nothing is trained, the same parent run is reused
    again = run_search(store, recipe, out_dir=tmp_path / "report", echo=lines.append)
    assert again.run_id == result.run_id
    assert len(child_runs(client, result.run_id)) == 3
    assert "nothing to run" in lines[-1] or any("nothing to run" in x for x in lines)


def test_pruned_trial_stops_the_trainer_without_an_error(lung_data, tmp_path):
    """A real pruner that prunes at once: the engine stops after one epoch, nothing raises."""
    from seglab.studies.search import PruningHandler
    from seglab.workflows.training import train_bundle

    class PruneAfterFirstReport(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return len(trial.intermediate_values) >= 1

    train, test = lung_data
    study = optuna.create_study(direction="maximize", pruner=PruneAfterFirstReport())
    trial = study.ask()
    handler = PruningHandler(trial, "val_mean_dice")
    outcome = train_bundle(
        "lung",
        train,
        overrides={
            **TINY,
            "epochs": 4,
            "extra_handlers": [handler],
            "extra_val_handlers": [handler.validation],
        },
        store_dir=tmp_path / "mlruns",
        output_dir=tmp_path / "ckpt",
    )
    assert handler.pruned and list(handler.reported) == [1]
    from seglab.tracking.store import resolve_store

    run = resolve_store(tmp_path / "mlruns").client().get_run(outcome.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["seglab.pruned"] == "true"
    assert run.data.metrics["max_epochs"] == 4 if "max_epochs" in run.data.metrics else True
    history = run.data.metrics
    assert "final_total_dice" not in history and outcome.model_id is None


def test_prune_metric_the_bundle_does_not_log_fails_the_trials_then_stops(lung_data, tmp_path):
    from seglab.studies.search import run_search
    from seglab.tracking.store import resolve_store

    train, test = lung_data
    recipe = parse_recipe(recipe_dict(train, test, prune_on="val_nothing", trials=5))
    lines: list[str] = []
    store = resolve_store(tmp_path / "mlruns")
    result = run_search(store, recipe, out_dir=tmp_path / "r", echo=lines.append)
    assert result.failed == 3  # stopped after three identical failures, not five
    assert any("the last 3 trials failed" in line for line in lines)
    runs = child_runs(store.client(), result.run_id)
    assert {r.info.status for r in runs} == {"FAILED"}
    assert all("val_nothing" in r.data.tags["seglab.failure"] for r in runs)


def write_recipe(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("storage_kind", ["sqlite", "journal"])
def test_two_workers_share_one_study(lung_data, tmp_path, storage_kind):
    train, test = lung_data
    recipe = write_recipe(tmp_path / "search.yaml", recipe_dict(train, test, trials=4))
    storage = (
        f"sqlite:///{tmp_path / 'optuna.db'}"
        if storage_kind == "sqlite"
        else f"journal:{tmp_path / 'optuna.journal'}"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [
        sys.executable, "-m", "seglab.cli.app", "search", str(recipe), "--storage", storage,
        "--store", str(tmp_path / "mlruns"), "--trials", "2", "--out", str(tmp_path / "report"),
    ]  # fmt: skip
    workers = [
        subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-2000:]
    assert sum("created" in out for out, _ in outputs) == 1
    assert sum("joined" in out for out, _ in outputs) == 1

    from seglab.studies.optuna_study import resolve_storage, study_name
    from seglab.tracking.store import resolve_store

    store = resolve_store(tmp_path / "mlruns")
    loaded = load_recipe(recipe)
    study = optuna.load_study(
        study_name=study_name(loaded), storage=resolve_storage(storage, store)
    )
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state.is_finished() for t in trials)
    parent_id = study.user_attrs["mlflow_parent_run_id"]
    runs = child_runs(store.client(), parent_id)
    assert sorted(r.data.tags["seglab.trial_number"] for r in runs) == ["0", "1", "2", "3"]
    assert sorted(t.user_attrs["mlflow_run_id"] for t in trials) == sorted(
        r.info.run_id for r in runs
    )
    parents = store.client().search_runs(
        [runs[0].info.experiment_id], filter_string="tags.`seglab.study` = 'lung-loss-lr'"
    )
    assert [p.info.run_id for p in parents if TAG_PARENT not in p.data.tags] == [parent_id]


def test_search_recipe_errors_are_one_line(tmp_path, lung_data):
    from seglab.studies.search import run_search
    from seglab.tracking.store import resolve_store

    train, test = lung_data
    store = resolve_store(tmp_path / "mlruns")
    bad = recipe_dict(train, test)
    bad["search"]["space"]["learnig_rate"] = bad["search"]["space"].pop("learning_rate")
    with pytest.raises(SeglabError, match="config id.*learnig_rate"):
        run_search(store, parse_recipe(bad))
    with pytest.raises(SeglabError, match="--fresh does not apply"):
        run_search(store, parse_recipe(recipe_dict(train, test)), fresh=True)
    with pytest.raises(SeglabError, match="cannot open Optuna storage"):
        run_search(store, parse_recipe(recipe_dict(train, test)), storage="nosuchdb://x")
    assert not Path("studies").exists()


def test_train_best_trains_the_best_parameters_again_and_registers_them(lung_data, tmp_path):
    from seglab.models.registry import resolve_version
    from seglab.studies.search import run_search
    from seglab.tracking.store import resolve_store

    train, test = lung_data
    data = recipe_dict(train, test, trials=1, train_best=True)
    data["register"] = "lung-searched"
    store = resolve_store(tmp_path / "mlruns")
    result = run_search(store, parse_recipe(data), out_dir=tmp_path / "r", echo=print)
    best = json.loads((tmp_path / "r" / "best.json").read_text())
    assert best["registered"] == "lung-searched/1" and best["trial"] == 0
    final = store.client().get_run(best["final_run_id"])
    assert final.data.tags[TAG_PARENT] == result.run_id
    assert final.data.tags[TAG_CHILD_KEY] == "best"
    assert final.data.params["learning_rate"] == str(best["params"]["learning_rate"])
    version = resolve_version(store, "models:/lung-searched/1")
    assert version.run_id == best["final_run_id"]
