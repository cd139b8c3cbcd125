"""Per-epoch atomic checkpoints and exact resume: handler units and a killed lung-bundle run."""

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.transforms import Compose, RandFlipd, RandGaussianNoised

from seglab.bundle.checkpoint import (
    CHECKPOINT_FORMAT,
    BestModelState,
    EpochCheckpoint,
    EpochSeeder,
    ResumeFromCheckpoint,
)
from seglab.errors import SeglabError

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "lung" / "configs"


# ---------------------------------------------------------------------------------------------
# A tiny trainer: 6 random 8x8 images, random flips and noise, a 1-layer conv net, SGD+momentum.


def tiny_trainer(
    out: Path,
    epochs: int,
    resume: bool | str = False,
    init_seed: int = 0,
    seeded: bool = True,
    restore: dict | None = None,
) -> SupervisedTrainer:
    torch.manual_seed(123)  # the same data in every call
    data = [{"image": torch.rand(1, 8, 8), "label": torch.rand(2, 8, 8)} for _ in range(6)]
    transform = Compose(
        [RandFlipd(["image", "label"], prob=0.5), RandGaussianNoised("image", prob=1.0, std=0.1)]
    )
    dataset = Dataset(data, transform)
    loader = DataLoader(dataset, batch_size=2, shuffle=True, num_workers=0)
    torch.manual_seed(init_seed)  # resumed runs start from other weights: the file must win
    network = torch.nn.Conv2d(1, 2, 3, padding=1)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)
    objects = {"model": network, "optimizer": optimizer}
    handlers = [
        ResumeFromCheckpoint(out / "checkpoint.pt", objects | (restore or {}), enabled=resume),
        EpochCheckpoint(out, objects),
    ]
    if seeded:
        handlers.insert(1, EpochSeeder(seed=7, dataset=dataset))
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=loader,
        network=network,
        optimizer=optimizer,
        loss_function=torch.nn.MSELoss(),
        train_handlers=handlers,
    )


def epochs_run(trainer: SupervisedTrainer) -> list[int]:
    epochs: list[int] = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs.append(e.state.epoch))
    return epochs


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_the_file_is_complete_after_every_epoch(tmp_path):
    trainer = tiny_trainer(tmp_path, epochs=3)
    seen = []

    def check(engine):  # attached after EpochCheckpoint: runs once the file is written
        saved = load(tmp_path / "checkpoint.pt")
        assert saved["epoch"] == engine.state.epoch and saved["format"] == CHECKPOINT_FORMAT
        assert saved["trainer"]["iteration"] == 3 * engine.state.epoch
        assert_same_tensors(saved["model"], engine.network.state_dict())
        assert saved["optimizer"]["state"], "momentum buffers are saved"
        seen.append(saved["epoch"])

    trainer.add_event_handler(Events.EPOCH_COMPLETED, check)
    trainer.run()
    assert seen == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temp left


def test_resume_reproduces_the_uninterrupted_training(tmp_path):
    whole = tiny_trainer(tmp_path / "whole", epochs=3)
    whole.run()
    first = tiny_trainer(tmp_path / "split", epochs=2)
    first.run()
    second = tiny_trainer(tmp_path / "split", epochs=3, resume="true", init_seed=99)
    epochs = epochs_run(second)
    second.run()
    assert epochs == [3]
    assert second.state.resumed_from_epoch == 2
    assert second.state.iteration == whole.state.iteration == 9
    assert_same_tensors(second.network.state_dict(), whole.network.state_dict())
    done, ref = (
        load(tmp_path / "split" / "checkpoint.pt"),
        load(tmp_path / "whole" / "checkpoint.pt"),
    )
    assert_same_tensors(done["optimizer"]["state"][0], ref["optimizer"]["state"][0])


def test_without_the_seeder_the_resumed_run_differs(tmp_path):
    """The equality above is not trivial: without reseeding, random draws depend on the past."""
    whole = tiny_trainer(tmp_path / "whole", epochs=3, seeded=False)
    whole.run()
    tiny_trainer(tmp_path / "split", epochs=2, seeded=False).run()
    second = tiny_trainer(tmp_path / "split", epochs=3, resume=True, seeded=False)
    second.run()
    assert second.state.resumed_from_epoch == 2
    assert not torch.equal(second.network.weight, whole.network.weight)


def test_resume_with_no_file_starts_from_scratch(tmp_path, caplog):
    trainer = tiny_trainer(tmp_path, epochs=2, resume=True)
    epochs = epochs_run(trainer)
    with caplog.at_level(logging.INFO, logger="seglab.bundle.checkpoint"):
        trainer.run()
    assert epochs == [1, 2]
    assert trainer.state.resumed_from_epoch is None
    assert "starts from scratch" in caplog.text
    assert load(tmp_path / "checkpoint.pt")["epoch"] == 2


def test_disabled_resume_ignores_an_existing_file(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    trainer = tiny_trainer(tmp_path, epochs=1, resume="false")
    trainer.run()
    assert trainer.state.resumed_from_epoch is None
    assert load(tmp_path / "checkpoint.pt")["epoch"] == 1


def test_a_completed_training_resumed_runs_no_epoch(tmp_path):
    tiny_trainer(tmp_path, epochs=2).run()
    again = tiny_trainer(tmp_path, epochs=2, resume=True)
    epochs = epochs_run(again)
    again.run()
    assert epochs == [] and again.state.resumed_from_epoch == 2


@pytest.mark.parametrize(
    "kept",
    [lambda n: 0, lambda n: 1, lambda n: n // 2, lambda n: n - 1],
    ids=["empty", "one-byte", "half", "all-but-the-last-byte"],
)
def test_a_truncated_checkpoint_is_refused_in_one_line(tmp_path, kept):
    """Each cut reaches another failure inside torch.load; all give the same one-line error."""
    tiny_trainer(tmp_path, epochs=1).run()
    path = tmp_path / "checkpoint.pt"
    data = path.read_bytes()
    path.write_bytes(data[: kept(len(data))])
    with pytest.raises(
        SeglabError, match=r"checkpoint.pt: unreadable or corrupt.*resume=false"
    ) as info:
        tiny_trainer(tmp_path, epochs=2, resume=True).run()
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "delete the file" in message
    assert "weights_only=False" not in message  # torch's advice would run code from the file


def test_the_checkpoint_names_the_run_that_wrote_it(tmp_path):
    first = tiny_trainer(tmp_path, epochs=1)
    first.add_event_handler(Events.STARTED, lambda e: setattr(e.state, "tracking_run_id", "r1"))
    first.run()
    assert load(tmp_path / "checkpoint.pt")["run_id"] == "r1"
    second = tiny_trainer(tmp_path, epochs=2, resume=True)
    second.run()  # no tracking: the new checkpoint names no run
    assert second.state.resumed_from_epoch == 1 and second.state.resumed_from_run == "r1"
    assert load(tmp_path / "checkpoint.pt")["run_id"] is None
    third = tiny_trainer(tmp_path, epochs=3, resume=True)
    third.run()
    assert third.state.resumed_from_epoch == 2 and third.state.resumed_from_run is None
    fresh = tiny_trainer(tmp_path / "fresh", epochs=1, resume=True)
    fresh.run()
    assert fresh.state.resumed_from_run is None


def test_temporary_files_of_a_killed_write_are_removed_at_start(tmp_path):
    tiny_trainer(tmp_path, epochs=1).run()
    torn = (tmp_path / "checkpoint.pt").read_bytes()[:100]
    stale = tmp_path / ".checkpoint.k3j2x.tmp.pt"  # as atomic_file names its temporary
    others = [tmp_path / "model.pt", tmp_path / ".model.ab.tmp.pt", tmp_path / "checkpoint.pt.bak"]
    for path in [stale, *others]:
        path.write_bytes(torn)
    resumed = tiny_trainer(tmp_path, epochs=2, resume=True)
    resumed.run()
    assert resumed.state.resumed_from_epoch == 1 and not stale.exists()
    assert all(other.read_bytes() == torn for other in others)


class Opaque:
    """An arbitrary picklable object: weights_only loading must refuse it."""


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"format": CHECKPOINT_FORMAT, "model": Opaque()}, "unreadable or corrupt"),
        ({"model": {}, "optimizer": {}}, "not a seglab checkpoint"),
        ({"format": CHECKPOINT_FORMAT, "epoch": 1, "trainer": {}}, "lacks model, optimizer"),
        ([], "not a seglab checkpoint"),
    ],
)
def test_foreign_checkpoints_are_refused(tmp_path, content, match):
    torch.save(content, tmp_path / "checkpoint.pt")
    with pytest.raises(SeglabError, match=match) as info:
        tiny_trainer(tmp_path, epochs=2, resume=True).run()
    assert "\n" not in str(info.value) and "delete the file" in str(info.value)


def test_a_checkpoint_of_another_network_is_refused(tmp_path):
    tiny_trainer(tmp_path, epochs=1).run()
    saved = load(tmp_path / "checkpoint.pt")
    saved["model"]["weight"] = torch.zeros(3, 1, 3, 3)
    torch.save(saved, tmp_path / "checkpoint.pt")
    with pytest.raises(SeglabError, match="its model does not fit"):
        tiny_trainer(tmp_path, epochs=2, resume=True).run()


def test_a_checkpoint_with_another_epoch_length_is_refused(tmp_path):
    tiny_trainer(tmp_path, epochs=1).run()
    saved = load(tmp_path / "checkpoint.pt")
    saved["trainer"]["epoch_length"] = 5
    torch.save(saved, tmp_path / "checkpoint.pt")
    with pytest.raises(SeglabError, match="5 iterations per epoch, this training has 3"):
        tiny_trainer(tmp_path, epochs=2, resume=True).run()


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: EpochCheckpoint("out", {}), "non-empty mapping"),
        (lambda: EpochCheckpoint("out", {"trainer": torch.nn.Linear(1, 1)}), "reserved name"),
        (lambda: EpochCheckpoint("out", {"run_id": torch.nn.Linear(1, 1)}), "reserved name"),
        (lambda: EpochCheckpoint("out", {"model": object()}), "no state_dict"),
        (lambda: EpochCheckpoint("out", {"model": torch.nn.Linear(1, 1)}, "a/b.pt"), "plain file"),
        (lambda: ResumeFromCheckpoint("c.pt", {"model": 3}), "no load_state_dict"),
        (lambda: ResumeFromCheckpoint("c.pt", {"m": torch.nn.Linear(1, 1)}, "maybe"), "true or"),
        (lambda: EpochSeeder(-1), "non-negative integer"),
        (lambda: EpochSeeder(1.5), "non-negative integer"),
    ],
)
def test_bad_arguments_are_refused(make, match):
    with pytest.raises(SeglabError, match=match):
        make()


# ---------------------------------------------------------------------------------------------
# The best-model bookkeeping of MONAI's CheckpointSaver survives a resume.


def validated_saver(out: Path, network: torch.nn.Module):
    """An evaluator whose ``val`` metric is what ``scores`` says, and its key-metric saver."""
    from ignite.engine import Engine
    from monai.handlers import CheckpointSaver

    scores: list[float] = []

    def step(engine, batch):
        return None

    evaluator = Engine(step)

    @evaluator.on(Events.EPOCH_COMPLETED)
    def metric(engine):
        engine.state.metrics["val"] = scores.pop(0)
        network.weight.data.fill_(engine.state.metrics["val"])  # the weights show the score

    saver = CheckpointSaver(
        str(out), {"model": network}, save_key_metric=True, key_metric_filename="model.pt"
    )
    evaluator.state.key_metric_name = "val"  # what MONAI's evaluators set
    saver.attach(evaluator)

    def validate(score: float) -> None:
        scores.append(score)
        evaluator.run([0], max_epochs=1)

    return saver, validate


def best_weight(out: Path) -> float:
    return float(load(out / "model.pt")["weight"].flatten()[0])


def test_the_best_model_survives_a_resume_only_with_its_state(tmp_path):
    first, validate = validated_saver(tmp_path, torch.nn.Conv2d(1, 1, 1))
    validate(0.9)
    validate(0.5)
    assert best_weight(tmp_path) == pytest.approx(0.9)
    state = BestModelState(first).state_dict()
    torch.save({"best_model": state}, tmp_path / "state.pt")  # through weights_only loading
    saved = load(tmp_path / "state.pt")["best_model"]
    assert [score for score, _ in saved["_saved"]] == [pytest.approx(0.9)]

    resumed, validate = validated_saver(tmp_path, torch.nn.Conv2d(1, 1, 1))
    BestModelState(resumed).load_state_dict(saved)
    validate(0.6)  # worse than the best before the interruption: model.pt stays
    assert best_weight(tmp_path) == pytest.approx(0.9)
    validate(0.95)
    assert best_weight(tmp_path) == pytest.approx(0.95)

    forgetful, validate = validated_saver(tmp_path, torch.nn.Conv2d(1, 1, 1))
    validate(0.6)  # without the state, a worse score replaces the best model
    assert best_weight(tmp_path) == pytest.approx(0.6)


def test_an_empty_best_model_state_changes_nothing_and_a_non_saver_is_refused(tmp_path):
    saver, _ = validated_saver(tmp_path, torch.nn.Conv2d(1, 1, 1))
    assert BestModelState(saver).state_dict() == {"_saved": []}
    BestModelState(saver).load_state_dict({})
    with pytest.raises(SeglabError, match="needs a MONAI CheckpointSaver"):
        BestModelState(object())


def test_a_checkpoint_without_best_model_state_resumes_with_a_warning(tmp_path, caplog):
    tiny_trainer(tmp_path, epochs=1).run()  # its checkpoint has no best_model entry
    saver, _ = validated_saver(tmp_path / "best", torch.nn.Conv2d(1, 1, 1))
    best = {"best_model": BestModelState(saver)}
    trainer = tiny_trainer(tmp_path, epochs=2, resume=True, restore=best)
    with caplog.at_level(logging.WARNING, logger="seglab.bundle.checkpoint"):
        trainer.run()
    assert "holds no best-model state" in caplog.text
    assert load(tmp_path / "checkpoint.pt")["epoch"] == 2


# ---------------------------------------------------------------------------------------------
# The lung bundle killed with SIGKILL in epoch 2, then resumed, ends with the same weights.

TINY_UNET = [
    "--network_options#unet#channels", "[4,8]",
    "--network_options#unet#strides", "[2]",
    "--network_options#unet#num_res_units", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def lung_dataset(tmp_path_factory, write_lung_dataset) -> Path:
    """Ten 128x128 phantoms: eight train images (one iteration each), two validation images."""
    return write_lung_dataset(tmp_path_factory.mktemp("lung"), range(10), size=128)


def train_command(dataset: Path, output: Path, *extra: str) -> list[str]:
    configs = str([str(CONFIGS / "common.json"), str(CONFIGS / "train.json")])
    return [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", configs,
        "--dataset_dir", str(dataset),
        "--output_dir", str(output),
        "--tracking_enabled", "False",
        "--epochs", "3",
        "--num_samples", "4",
        "--batch_size", "4",
        "--tiling_preset", "no-overlap",
        *TINY_UNET,
        *extra,
    ]  # fmt: skip


def start(command: list[str], log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["OMP_NUM_THREADS"] = "1"
    with open(log, "w") as out:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen, log: Path) -> None:
    assert process.wait(timeout=300) == 0, log.read_text()[-4000:]


def wait_until(condition, process: subprocess.Popen, log: Path, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "training ended early:\n" + log.read_text()[-4000:]
        assert time.monotonic() < deadline, "timed out:\n" + log.read_text()[-4000:]
        time.sleep(0.02)


@pytest.mark.slow
def test_a_killed_and_resumed_bundle_training_equals_an_uninterrupted_one(lung_dataset, tmp_path):
    whole_dir, split_dir = tmp_path / "whole", tmp_path / "split"
    whole = start(train_command(lung_dataset, whole_dir), tmp_path / "whole.log")

    killed_log = tmp_path / "killed.log"
    killed = start(train_command(lung_dataset, split_dir), killed_log)
    checkpoint = split_dir / "checkpoint.pt"
    # Epoch 1 is saved and epoch 2 has done its first optimizer step (of eight): mid-epoch.
    wait_until(
        lambda: checkpoint.is_file() and "Epoch: 2/3, Iter: 1/8" in killed_log.read_text(),
        killed,
        killed_log,
    )
    assert killed.poll() is None
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL
    assert "Epoch: 2/3, Iter: 8/8" not in killed_log.read_text()
    assert load(checkpoint)["epoch"] == 1

    resumed_log = tmp_path / "resumed.log"
    resumed = start(train_command(lung_dataset, split_dir, "--resume", "true"), resumed_log)
    finish(resumed, resumed_log)
    finish(whole, tmp_path / "whole.log")
    log = resumed_log.read_text()
    assert "resumed from" in log and "after epoch 1" in log
    assert "Epoch: 2/3, Iter: 1/8" in log and "Epoch: 1/3" not in log

    expected, got = load(whole_dir / "checkpoint.pt"), load(checkpoint)
    assert got["epoch"] == expected["epoch"] == 3
    assert got["trainer"] == expected["trainer"]
    assert_same_tensors(got["model"], expected["model"])
    assert got["optimizer"] == expected["optimizer"]
    # the best-model bookkeeping resumed too: the same best score and the same model.pt
    assert got["best_model"] == expected["best_model"] and got["best_model"]["_saved"]
    assert_same_tensors(load(split_dir / "model.pt"), load(whole_dir / "model.pt"))
