"""Parent runs of studies: found again by recipe, resumed, never run twice at once."""

import pytest

from seglab.errors import SeglabError
from seglab.studies.recipes import parse_recipe
from seglab.studies.runner import TAG_DIGEST, TAG_STUDY, StudyRun, study_run

RECIPE = {
    "kind": "tiling", "name": "t", "bundle": "lung", "data": "d",
    "grid": {"tiling_preset": ["no-overlap"]},
}  # fmt: skip


@pytest.fixture
def store(tmp_path, monkeypatch):
    from seglab.tracking.store import resolve_store

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return resolve_store(tmp_path / "mlruns")


def test_a_finished_study_is_found_again_and_a_changed_recipe_is_new(store):
    recipe = parse_recipe(RECIPE)
    with study_run(store, recipe) as first:
        assert not first.resumed
    parent = store.client().get_run(first.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[TAG_STUDY] == "t" and parent.data.tags[TAG_DIGEST] == recipe.digest
    with study_run(store, recipe) as again:
        assert again.resumed and again.run_id == first.run_id
    with study_run(store, recipe, fresh=True) as fresh:
        assert fresh.run_id != first.run_id
    with study_run(store, parse_recipe({**RECIPE, "seed": 1})) as changed:
        assert not changed.resumed


def test_a_study_running_in_a_live_process_is_not_run_twice(store):
    recipe = parse_recipe(RECIPE)
    running = StudyRun(store, recipe)  # this process is alive: the run stays RUNNING
    with pytest.raises(SeglabError, match="is running in another process") as caught:
        StudyRun(store, recipe)
    assert "\n" not in str(caught.value) and "--fresh" in str(caught.value)
    joined = StudyRun.attach(store, recipe, running.run_id)  # a search worker joins on purpose
    assert not joined.owns
    joined.close(RuntimeError("worker died"))
    run = store.client().get_run(running.run_id)
    assert run.info.status == "RUNNING" and "worker died" in run.data.tags["seglab.worker_failure"]
    running.close()
    assert store.client().get_run(running.run_id).info.status == "FINISHED"


def test_an_error_ends_the_study_failed_and_the_next_run_resumes_it(store):
    recipe = parse_recipe(RECIPE)
    with pytest.raises(KeyboardInterrupt), study_run(store, recipe) as first:
        raise KeyboardInterrupt
    assert store.client().get_run(first.run_id).info.status == "KILLED"
    with study_run(store, recipe) as again:
        assert again.resumed and again.run_id == first.run_id
        assert store.client().get_run(first.run_id).info.status == "RUNNING"
