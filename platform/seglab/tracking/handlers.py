"""An ignite handler that records a MONAI training in the tracking store.

MONAI's own MLflow handler logs little (no hyper-parameters, no dataset digests, no tags) and,
without a run name, appends to any unfinished run of the experiment (ECOSYSTEM.md). This one
opens its own run when training starts (:func:`seglab.tracking.runs.open_run`: unique name,
owner, git and package tags, parameters, dataset digest), logs per-epoch metrics of the trainer
and of the validator, and ends the run FINISHED, or FAILED with the reason when training raises.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from seglab.tracking.runs import RunHandle, close_run, log_dataset, open_run
from seglab.tracking.store import resolve_store


class RunLogger:
    """Record a training run in MLflow; attach to a MONAI/ignite trainer.

    Parameters
    ----------
    experiment : str
        MLflow experiment name.
    run_prefix : str
        Start of the unique run name.
    params : mapping, optional
        Hyper-parameters to log (nested mappings become dotted names).
    store_dir : path-like, optional
        Embedded store folder (default ``./mlruns``); ``MLFLOW_TRACKING_URI`` or
        ``tracking_uri`` replace it.
    tracking_uri : str, optional
    evaluator : ignite Engine, optional
        The validation engine; its metrics are logged as they are after each epoch (attach this
        handler after the ``ValidationHandler`` so they are fresh).
    dataset_dir : path-like, optional
        Dataset folder; when it holds a ``manifest.json`` its digest is logged as the training
        input.
    enabled : bool
        False makes the handler do nothing (e.g. ``--tracking_enabled false``).
    """

    def __init__(
        self,
        experiment: str,
        run_prefix: str,
        params: Mapping[str, Any] | None = None,
        store_dir: str | os.PathLike[str] | None = None,
        tracking_uri: str | None = None,
        evaluator: Any = None,
        dataset_dir: str | os.PathLike[str] | None = None,
        enabled: bool = True,
    ) -> None:
        self.experiment = experiment
        self.run_prefix = run_prefix
        self.params = dict(params or {})
        self.store_dir = store_dir
        self.tracking_uri = tracking_uri
        self.evaluator = evaluator
        self.dataset_dir = dataset_dir
        self.enabled = enabled
        self.handle: RunHandle | None = None
        self._losses: list[float] = []

    def attach(self, engine: Any) -> None:
        """Register on the trainer's STARTED, ITERATION/EPOCH_COMPLETED, COMPLETED, EXCEPTION."""
        from ignite.engine import Events

        if not self.enabled:
            return
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)

    def started(self, engine: Any) -> None:
        """Open the run (once: a resumed engine fires STARTED again)."""
        if self.handle is not None:
            return
        store = resolve_store(self.store_dir, tracking_uri=self.tracking_uri)
        params = self.params | {"max_epochs": engine.state.max_epochs}
        self.handle = open_run(store, self.experiment, self.run_prefix, params=params)
        if self.dataset_dir is not None:
            manifest = Path(self.dataset_dir) / "manifest.json"
            if manifest.is_file():
                log_dataset(self.handle, Path(self.dataset_dir).name, manifest)

    def iteration_completed(self, engine: Any) -> None:
        """Collect the iteration's loss for the epoch mean."""
        loss = _loss_of(engine.state.output)
        if loss is not None:
            self._losses.append(loss)

    def epoch_completed(self, engine: Any) -> None:
        """Log the epoch's mean loss, the trainer's and the validator's metrics, the lr."""
        from mlflow.entities import Metric

        if self.handle is None:
            return
        epoch = int(engine.state.epoch)
        values: dict[str, float] = {}
        if self._losses:
            values["train_loss"] = sum(self._losses) / len(self._losses)
        self._losses = []
        values |= _scalars(engine.state.metrics)
        if self.evaluator is not None and getattr(self.evaluator.state, "epoch", 0):
            values |= _scalars(self.evaluator.state.metrics)
        optimizer = getattr(engine, "optimizer", None)
        if optimizer is not None and optimizer.param_groups:
            values["learning_rate"] = float(optimizer.param_groups[0]["lr"])
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, epoch) for k, v in values.items()]
        self.handle.client.log_batch(self.handle.run_id, metrics=metrics)

    def completed(self, engine: Any) -> None:
        """End the run FINISHED."""
        if self.handle is not None:
            close_run(self.handle)
            self.handle = None

    def exception_raised(self, engine: Any, error: BaseException) -> None:
        """End the run FAILED (KILLED on Ctrl+C) and let the error go on."""
        if self.handle is not None:
            close_run(self.handle, error)
            self.handle = None
        raise error


def _loss_of(output: Any) -> float | None:
    """Return the loss in a MONAI engine output (a dict, or a list of dicts after decollation)."""
    if isinstance(output, list | tuple) and output:
        output = output[0]
    if isinstance(output, Mapping) and "loss" in output:
        value = output["loss"]
        return float(value.item() if hasattr(value, "item") else value)
    return None


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for name, value in metrics.items():
        try:
            out[str(name)] = float(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError):
            continue
    return out
