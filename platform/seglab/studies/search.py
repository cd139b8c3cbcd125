"""Optuna search over bundle config ids (loss, learning rate, ...), each trial a child run.

Every trial trains the bundle once (:func:`seglab.studies.runner.train_child`) with the
sampled config ids; its run is nested under the study's parent run and tagged with the trial
number and state. Median pruning works inside MONAI's engines without raising there (an
exception inside the engine would end the whole search, ECOSYSTEM.md): the
:class:`PruningHandler` reports the validation metric after each validation, and when the
pruner says so it stops the trainer cleanly and marks its state; the objective then raises
``optuna.TrialPruned`` outside the engine. The pruned trial's run ends FINISHED with
``seglab.pruned=true`` and ``seglab.trial_state=PRUNED``; no model is published for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seglab.errors import SeglabError
from seglab.studies.optuna_study import (
    TAG_TRIAL,
    default_out,
    join_study,
    resolve_storage,
    run_trials,
    sample,
    study_name,
)
from seglab.studies.recipes import SearchRecipe
from seglab.studies.report import StudyResult
from seglab.studies.runner import Child, check_config_ids, train_child, work_folder
from seglab.tracking.store import TrackingStore

__all__ = ["BUNDLE_METRICS", "PruningHandler", "run_search"]

#: Per bundle: (final metric optimised, per-epoch validation metric pruned on).
BUNDLE_METRICS = {
    "lung": ("final_total_dice", "val_mean_dice"),
    "mito": ("final_f_score", "val_object_dice"),
}


class PruningHandler:
    """Report a validation metric to an Optuna trial; stop the trainer when it is pruned.

    Attach the handler to the trainer (bundle id ``extra_handlers``) and its
    :attr:`validation` part to the evaluator (``extra_val_handlers``). After each validation
    the metric is reported at the trainer's epoch; if ``trial.should_prune()``, the trainer's
    ``state.seglab_pruned`` is set and it terminates after the current epoch. Nothing is raised
    inside the engine.

    Parameters
    ----------
    trial : optuna.Trial
    metric : str
        Name of the evaluator metric (e.g. ``val_mean_dice``).
    """

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial = trial
        self.metric = metric
        self.trainer: Any = None
        self.pruned = False
        self.reported: dict[int, float] = {}
        self.validation = _ValidationReporter(self)

    def attach(self, engine: Any) -> None:
        """Remember the trainer (the validation part does the work)."""
        self.trainer = engine

    def report(self, evaluator: Any) -> None:
        """Report the metric of a finished validation; prune when the pruner says so."""
        if self.trainer is None or self.pruned:
            return
        value = evaluator.state.metrics.get(self.metric)
        if value is None:
            raise SeglabError(
                f"the evaluator has no metric {self.metric!r} to prune on (it has "
                f"{', '.join(sorted(evaluator.state.metrics)) or 'none'})",
                "set search.prune_on in the recipe to one of those",
            )
        epoch = int(self.trainer.state.epoch)
        self.reported[epoch] = float(value)
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            self.pruned = True
            self.trainer.state.seglab_pruned = True
            self.trainer.terminate()


class _ValidationReporter:
    """The evaluator side of :class:`PruningHandler`."""

    def __init__(self, owner: PruningHandler) -> None:
        self.owner = owner

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.COMPLETED, self.owner.report)


def _pruner(recipe: SearchRecipe) -> Any:
    import optuna

    if recipe.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=recipe.startup_trials, n_warmup_steps=recipe.warmup_epochs
    )


def run_search(
    store: TrackingStore,
    recipe: SearchRecipe,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    fresh: bool = False,
    echo: Callable[[str], Any] = print,
    storage: str | None = None,
    trials: int | None = None,
    root: Path | None = None,
) -> StudyResult:
    """Run (or join) the recipe's Optuna search until the study has ``recipe.trials`` trials.

    Parameters
    ----------
    store : TrackingStore
    recipe : SearchRecipe
    out_dir : path-like, optional
        Report folder (default ``studies/<name>-<digest>/report``).
    fresh : bool
        Not supported for a search: its state is the Optuna study; raises when True.
    echo : callable
    storage : str, optional
        Overrides the recipe's storage (see :func:`~seglab.studies.optuna_study.resolve_storage`).
    trials : int, optional
        Most trials this worker runs; by default it runs until the study holds
        ``recipe.trials`` finished (complete or pruned) trials, whoever ran them.

    root : Path, optional
        Folder of the study work folders (default ``studies`` in the current folder).

    Returns
    -------
    StudyResult
        ``best`` holds the best trial's number, value, parameters and run.
    """
    import optuna

    if fresh:
        raise SeglabError(
            "a search resumes its Optuna study; --fresh does not apply",
            "change the recipe's name (a new study) or delete the study from the storage",
        )
    objective_metric, prune_metric = BUNDLE_METRICS.get(recipe.bundle, (None, None))
    objective_metric = recipe.objective or objective_metric
    prune_metric = recipe.prune_on or prune_metric
    if objective_metric is None or prune_metric is None:
        raise SeglabError(
            f"bundle {recipe.bundle!r} has no default objective",
            "set search.objective and search.prune_on in the recipe",
        )
    check_config_ids(recipe, ["extra_handlers", "extra_val_handlers"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    resolved = resolve_storage(storage or recipe.storage, store)
    sampler = optuna.samplers.TPESampler(seed=recipe.sampler_seed)
    shared = join_study(
        store,
        recipe,
        resolved,
        direction=recipe.direction,
        sampler=sampler,
        pruner=_pruner(recipe),
    )
    parent = shared.parent
    echo(
        f"study {study_name(recipe)} ({'created' if shared.created else 'joined'}), "
        f"MLflow run {parent.run_id}"
    )
    output_root = work_folder(recipe, root) / "trials"

    def objective(trial: Any) -> float:
        params, overrides = sample(trial, recipe.space)
        handler = PruningHandler(trial, prune_metric)
        child = Child(
            key=f"trial={trial.number}",
            overrides={
                **overrides,
                "extra_handlers": [handler],
                "extra_val_handlers": [handler.validation],
                "run_tags": {TAG_TRIAL: str(trial.number)},
            },
            data=recipe.data,
            labels={"trial": trial.number, **params},
        )
        echo(f"trial {trial.number}: {json.dumps(params, default=str)}")
        run_id = train_child(parent, child, output_root=output_root)
        trial.set_user_attr("mlflow_run_id", run_id)
        if handler.pruned:
            echo(f"trial {trial.number}: pruned at epoch {max(handler.reported)}")
            raise optuna.TrialPruned()
        metrics = parent.client.get_run(run_id).data.metrics
        if objective_metric not in metrics:
            raise SeglabError(
                f"trial {trial.number}'s run has no metric {objective_metric!r}",
                "set search.objective to a metric the bundle logs (final_* metrics)",
            )
        value = float(metrics[objective_metric])
        echo(f"trial {trial.number}: {objective_metric} = {value:.4f}")
        return value

    def finish(best: dict[str, Any]) -> dict[str, Any]:
        return _train_best(parent, recipe, best, output_root, echo) if recipe.train_best else best

    return run_trials(
        shared,
        objective,
        total=recipe.trials,
        trials=trials,
        out=default_out(recipe, out_dir, root),
        metric=objective_metric,
        title=f"search {recipe.name}: trials in study {study_name(recipe)}",
        echo=echo,
        catch=(SeglabError, RuntimeError, ValueError),
        finish=finish if recipe.train_best else None,
    )


def _train_best(
    parent: Any,
    recipe: SearchRecipe,
    best: dict[str, Any],
    output_root: Path,
    echo: Callable[[str], Any],
) -> dict[str, Any]:
    """Train the best parameters once more (child ``best``), registering it when asked."""
    from seglab.workflows.training import train_bundle

    overrides: dict[str, Any] = {}
    for parameter in recipe.space:
        value = best["params"][parameter.name]
        overrides |= (
            parameter.options[value] if parameter.options is not None else {parameter.name: value}
        )
    child = Child("best", overrides, recipe.data)
    echo(f"training the best parameters: {json.dumps(best['params'], default=str)}")
    outcome = train_bundle(
        recipe.bundle,
        recipe.data,
        overrides={
            **recipe.overrides,
            **overrides,
            "experiment_name": recipe.experiment,
            "run_tags": parent.child_tags(child),
        },
        register=recipe.register,
        eval_data=recipe.eval_data,
        store_dir=parent.store.local_dir,
        output_dir=output_root / "best",
        quiet=True,
        overwrite=True,  # the study's own folder: an earlier attempt at the best parameters
    )
    return {**best, "final_run_id": outcome.run_id, "registered": outcome.registered}
