import json
import subprocess

import pytest

from seglab.io.dataset import write_manifest
from seglab.io.images import write_image
from seglab.tracking.runs import (
    MAX_PARAM_LENGTH,
    environment_tags,
    flatten_params,
    git_tags,
    log_dataset,
    tracked_run,
)
from seglab.tracking.store import TAG_FAILURE, TAG_PID, resolve_store


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return resolve_store(tmp_path / "mlruns")


def test_a_run_that_completes_is_finished_with_its_tags_and_params(store):
    params = {"optimizer": {"lr": 0.01, "name": "SGD"}, "epochs": 250, "classes": [1, 2]}
    with tracked_run(store, "lung", "lung-unet", params=params, tags={"study": "A"}) as run:
        assert run.run_name.startswith("lung-unet-")
    got = store.client().get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params == {
        "optimizer.lr": "0.01",
        "optimizer.name": "SGD",
        "epochs": "250",
        "classes": "[1, 2]",
    }
    assert got.data.tags["study"] == "A" and TAG_PID in got.data.tags
    assert got.data.tags["seglab.version.mlflow"]


def test_a_run_whose_block_raises_is_failed_with_the_reason(store):
    with pytest.raises(ZeroDivisionError), tracked_run(store, "lung", "bad") as run:
        _ = 1 / 0
    got = store.client().get_run(run.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags[TAG_FAILURE] == "ZeroDivisionError: division by zero"


def test_an_interrupted_run_is_killed(store):
    with pytest.raises(KeyboardInterrupt), tracked_run(store, "lung", "stop") as run:
        raise KeyboardInterrupt
    assert store.client().get_run(run.run_id).info.status == "KILLED"


def test_child_runs_point_at_their_parent(store):
    with tracked_run(store, "ablation", "parent") as parent:
        with tracked_run(store, "ablation", "k5", parent_run_id=parent.run_id) as child:
            pass
    got = store.client().get_run(child.run_id)
    assert got.data.tags["mlflow.parentRunId"] == parent.run_id


def test_many_and_long_params_respect_mlflow_limits(store):
    params = {f"p{i}": i for i in range(250)} | {"long": "x" * (MAX_PARAM_LENGTH + 50)}
    with tracked_run(store, "limits", "many", params=params) as run:
        pass
    logged = store.client().get_run(run.run_id).data.params
    assert len(logged) == 251
    assert len(logged["long"]) == MAX_PARAM_LENGTH and logged["long"].endswith("...[cut]")


def test_dataset_inputs_carry_the_manifest_digest(store, tmp_path):
    import numpy as np

    data = tmp_path / "data"
    write_image(data / "images" / "a.png", np.zeros((8, 8), np.uint8))
    write_image(data / "labels" / "a.png", np.zeros((8, 8), np.uint8))
    manifest = write_manifest(data)
    with tracked_run(store, "lung", "data") as run:
        digest = log_dataset(run, "lung-phantoms", manifest, context="training")
    inputs = store.client().get_run(run.run_id).inputs.dataset_inputs
    assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [("lung-phantoms", digest)]
    assert json.loads(inputs[0].dataset.source)["uri"] == str(data.resolve())
    assert {t.key: t.value for t in inputs[0].tags}["mlflow.data.context"] == "training"
    # changing a file changes the manifest and so the digest
    write_image(data / "images" / "a.png", np.ones((8, 8), np.uint8))
    write_manifest(data)
    with tracked_run(store, "lung", "data") as run2:
        assert log_dataset(run2, "lung-phantoms", manifest) != digest


def test_flatten_params_handles_empty_and_nested_values():
    assert flatten_params({}) == {}
    assert flatten_params({"a": {}, "b": None, "c": {"d": {"e": True}}}) == {
        "a": "{}",
        "b": "null",
        "c.d.e": "true",
    }


def test_git_tags_name_the_commit_of_a_repository(tmp_path):
    assert git_tags(tmp_path) == {}
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f").write_text("x")
    env = ["-c", "user.email=a@b", "-c", "user.name=t"]
    subprocess.run(["git", *env, "-C", str(tmp_path), "add", "f"], check=True)
    subprocess.run(["git", *env, "-C", str(tmp_path), "commit", "-qm", "m"], check=True)
    tags = git_tags(tmp_path)
    assert len(tags["mlflow.source.git.commit"]) == 40 and tags["seglab.git.dirty"] == "false"
    (tmp_path / "f").write_text("y")
    assert git_tags(tmp_path)["seglab.git.dirty"] == "true"


def test_environment_tags_record_versions():
    tags = environment_tags()
    assert tags["seglab.version.numpy"] and tags["seglab.python"].count(".") == 2
