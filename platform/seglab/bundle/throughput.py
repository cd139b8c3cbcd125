"""Training throughput per epoch: patches per second and the share of time spent waiting for data.

:class:`TrainingThroughput` is an ignite handler for a MONAI trainer. It times each iteration
from the moment the trainer asks the data loader for a batch (``GET_BATCH_STARTED``) to the end
of its step (``ITERATION_COMPLETED``, after the forward and backward passes, the optimiser step
and the metric updates attached before it), and the part of that spent waiting for the batch
(``GET_BATCH_STARTED`` to ``GET_BATCH_COMPLETED``: loading and the random transforms when the
loader has no workers, the wait for a worker otherwise). At each epoch's end it puts into
``engine.state.metrics``, which :class:`seglab.tracking.handlers.RunLogger` logs to MLflow:

``train_patches_per_s``
    patches (batch items) trained per second of step time;
``train_data_wait_share``
    waiting time over step time, 0..1;
``train_step_s``
    mean step time in seconds.

Validation, checkpointing and other epoch-end work are outside the steps and not counted.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["TrainingThroughput"]


class TrainingThroughput:
    """Measure a trainer's patches per second and data-wait share, epoch by epoch.

    Parameters
    ----------
    batch_key : str
        Key of the image batch in the trainer's output (``engine.state.output``); its first
        dimension is the number of patches of the step.

    Notes
    -----
    Attach it before the handlers that read ``engine.state.metrics`` at ``EPOCH_COMPLETED``
    (the bundles list it first). :attr:`history` keeps one dict per epoch.
    """

    def __init__(self, batch_key: str = "image") -> None:
        self.batch_key = batch_key
        self.history: list[dict[str, float]] = []
        self._reset()

    def _reset(self) -> None:
        self._fetch_started = 0.0
        self._waiting = 0.0
        self._stepping = 0.0
        self._patches = 0
        self._steps = 0

    def attach(self, engine: Any) -> None:
        """Register on the trainer's batch, iteration and epoch events."""
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.GET_BATCH_STARTED, self.fetch_started)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self.fetch_completed)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def epoch_started(self, engine: Any) -> None:
        """Start counting an epoch."""
        self._reset()

    def fetch_started(self, engine: Any) -> None:
        """Note the time: the trainer asks the loader for a batch."""
        self._fetch_started = time.perf_counter()

    def fetch_completed(self, engine: Any) -> None:
        """Add the time spent waiting for the batch."""
        self._waiting += time.perf_counter() - self._fetch_started

    def iteration_completed(self, engine: Any) -> None:
        """Add the step's time and patches."""
        self._stepping += time.perf_counter() - self._fetch_started
        self._steps += 1
        self._patches += self._batch_size(engine.state.output)

    def _batch_size(self, output: Any) -> int:
        """Patches in a step's output: a batch dict, or the list MONAI decollates it into."""
        if isinstance(output, list | tuple):
            return len(output)
        batch = output.get(self.batch_key) if isinstance(output, dict) else None
        return int(batch.shape[0]) if hasattr(batch, "shape") else 1

    def epoch_completed(self, engine: Any) -> None:
        """Put the epoch's figures into ``engine.state.metrics``."""
        if self._steps == 0 or self._stepping <= 0:
            return
        figures = {
            "train_patches_per_s": self._patches / self._stepping,
            "train_data_wait_share": self._waiting / self._stepping,
            "train_step_s": self._stepping / self._steps,
        }
        self.history.append(figures | {"epoch": float(engine.state.epoch)})
        engine.state.metrics.update(figures)
