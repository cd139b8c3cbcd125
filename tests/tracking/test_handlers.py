import pytest
import torch
from ignite.engine import Engine, Events

from seglab.tracking.handlers import RunLogger
from seglab.tracking.store import TAG_FAILURE, resolve_store


@pytest.fixture
def store_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "mlruns"


def make_engine(fail_at: int | None = None) -> Engine:
    def step(engine, batch):
        if fail_at is not None and engine.state.iteration == fail_at:
            raise RuntimeError("out of memory (simulated)")
        return [{"loss": torch.tensor(float(batch))}]

    engine = Engine(step)
    engine.state.metrics = {}
    return engine


def only_run(store_dir):
    client = resolve_store(store_dir).client()
    exp = client.get_experiment_by_name("unit")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def test_epoch_means_of_the_loss_are_logged_per_epoch(store_dir):
    engine = make_engine()
    RunLogger("unit", "tiny", params={"lr": 0.1}, store_dir=store_dir).attach(engine)
    engine.run([1.0, 2.0, 3.0], max_epochs=3)
    client, run = only_run(store_dir)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1", "max_epochs": "3"}
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.0), (2, 2.0), (3, 2.0)]


def test_a_training_that_raises_leaves_a_failed_run_and_the_error(store_dir):
    engine = make_engine(fail_at=5)
    RunLogger("unit", "tiny", store_dir=store_dir).attach(engine)
    with pytest.raises(RuntimeError, match="simulated"):
        engine.run([1.0, 2.0, 3.0], max_epochs=3)
    client, run = only_run(store_dir)
    assert run.info.status == "FAILED"
    assert "out of memory (simulated)" in run.data.tags[TAG_FAILURE]
    # the completed first epoch is there, the broken second is not
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1]


def test_disabled_logger_records_nothing(store_dir):
    engine = make_engine()
    RunLogger("unit", "tiny", store_dir=store_dir, enabled=False).attach(engine)
    engine.run([1.0], max_epochs=1)
    assert not (store_dir / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("resumed", "expected"),
    [
        ({}, {}),
        ({"resumed_from_epoch": 4, "resumed_from_run": None}, {"seglab.resumed_from_epoch": "4"}),
        (
            {"resumed_from_epoch": 4, "resumed_from_run": "abc123"},
            {"seglab.resumed_from_epoch": "4", "seglab.resumed_from_run": "abc123"},
        ),
    ],
)
def test_the_run_names_what_it_resumed_from_and_its_id_goes_on_the_trainer(
    store_dir, resumed, expected
):
    engine = make_engine()

    def restore(engine):  # what ResumeFromCheckpoint sets before the logger opens its run
        for key, value in resumed.items():
            setattr(engine.state, key, value)

    engine.add_event_handler(Events.STARTED, restore)
    RunLogger("unit", "tiny", store_dir=store_dir).attach(engine)
    engine.run([1.0], max_epochs=1)
    _, run = only_run(store_dir)
    tags = {k: v for k, v in run.data.tags.items() if k.startswith("seglab.resumed_from")}
    assert tags == expected
    assert engine.state.tracking_run_id == run.info.run_id
