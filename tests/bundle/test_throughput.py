"""TrainingThroughput counts patches and splits step time into data waiting and the rest."""

from __future__ import annotations

import time

import pytest
import torch
from monai.engines import SupervisedTrainer
from torch.utils.data import DataLoader, Dataset

from seglab.bundle import TrainingThroughput


class _SlowPatches(Dataset):
    """``count`` random 2-channel 8 x 8 patches, each taking ``delay`` seconds to load."""

    def __init__(self, count: int, delay: float) -> None:
        self.count = count
        self.delay = delay

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        time.sleep(self.delay)
        return {"image": torch.rand(2, 8, 8), "label": torch.rand(1, 8, 8)}


def _train(
    delay: float, epochs: int = 2, decollate: bool = True
) -> tuple[TrainingThroughput, dict]:
    network = torch.nn.Conv2d(2, 1, 3, padding=1)
    throughput = TrainingThroughput()
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=DataLoader(_SlowPatches(12, delay), batch_size=4),
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.1),
        loss_function=torch.nn.MSELoss(),
        train_handlers=[throughput],
        decollate=decollate,
    )
    trainer.run()
    return throughput, dict(trainer.state.metrics)


def test_patches_steps_and_epochs_are_counted():
    throughput, metrics = _train(delay=0.0, epochs=3)
    assert [row["epoch"] for row in throughput.history] == [1.0, 2.0, 3.0]
    for row in throughput.history:
        # 12 patches in 3 steps of 4: patches per second = 12 / (3 x mean step time)
        assert row["train_patches_per_s"] * 3 * row["train_step_s"] == pytest.approx(12)
        assert 0.0 <= row["train_data_wait_share"] <= 1.0
    assert set(metrics) >= {"train_patches_per_s", "train_data_wait_share", "train_step_s"}


def test_a_batch_dict_output_counts_its_first_dimension():
    throughput, _ = _train(delay=0.0, epochs=1, decollate=False)
    row = throughput.history[0]
    assert row["train_patches_per_s"] * 3 * row["train_step_s"] == pytest.approx(12)


def test_a_slow_loader_shows_as_data_waiting():
    # 4 patches x 30 ms of loading per step against a step of well under a millisecond on an
    # 8 x 8 convolution: waiting must be most of the step time
    slow, _ = _train(delay=0.03, epochs=1)
    fast, _ = _train(delay=0.0, epochs=1)
    assert slow.history[0]["train_data_wait_share"] > 0.5
    assert slow.history[0]["train_data_wait_share"] > fast.history[0]["train_data_wait_share"]
