"""Optuna studies shared by several workers, each with one MLflow parent run.

Several processes (or machines) join one search by naming the same recipe and storage: the
standard Optuna way. Exactly one of them creates the study -- the storage refuses a second
study of the same name, so creation is the lock -- and that one opens the study's MLflow
parent run and stores its id in the study's user attributes; the others wait for it and nest
their trials under the same run. Each trial is a child run tagged with its number and, when it
ends, its state (``seglab.trial_state``: COMPLETE, PRUNED or FAIL).
"""

from __future__ import annotations

import json
import os
import random
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seglab.errors import SeglabError
from seglab.io.atomic import atomic_file
from seglab.studies.recipes import Recipe, SearchParameter
from seglab.studies.report import StudyResult
from seglab.studies.runner import StudyRun
from seglab.tracking.runs import RunHandle
from seglab.tracking.store import TrackingStore

__all__ = [
    "TAG_TRIAL",
    "TAG_TRIAL_STATE",
    "SharedStudy",
    "join_study",
    "resolve_storage",
    "run_trials",
    "sample",
    "study_name",
]

TAG_TRIAL = "seglab.trial_number"
TAG_TRIAL_STATE = "seglab.trial_state"
#: User attribute of the Optuna study holding its MLflow parent run id.
ATTR_RUN = "mlflow_parent_run_id"
#: Heartbeat of running trials in database storages (s).
HEARTBEAT_S = 60
#: How long a joining worker waits for the creator to open the parent run (s).
JOIN_TIMEOUT_S = 120.0


def study_name(recipe: Recipe) -> str:
    """Name a recipe's Optuna study: its name and content digest (a changed recipe is new)."""
    return f"{recipe.name}-{recipe.digest}"


def resolve_storage(spec: str | None, store: TrackingStore) -> Any:
    """Turn a storage spec into an Optuna storage.

    Parameters
    ----------
    spec : str or None
        ``None``: SQLite file ``optuna.db`` in the embedded MLflow store's folder;
        ``journal:PATH``: a journal file (good for several processes on one machine);
        anything else: an SQLAlchemy URL (``sqlite:///...``, ``postgresql://...``).
    store : TrackingStore
        The MLflow store (its folder holds the default SQLite file).

    Returns
    -------
    optuna.storages.BaseStorage

    Raises
    ------
    SeglabError
        No default with a server store, or a storage that cannot be opened.
    """
    import optuna

    if spec is None:
        if store.local_dir is None:
            raise SeglabError(
                "the MLflow store is a server, so there is no default Optuna storage",
                "pass --storage URL (e.g. the lab's PostgreSQL database) or set storage in "
                "the recipe",
            )
        spec = f"sqlite:///{(Path(store.local_dir) / 'optuna.db').resolve()}"
    if spec.startswith("journal:"):
        path = Path(spec.removeprefix("journal:")).expanduser()
        if not path.parent.is_dir():
            raise SeglabError(
                f"the folder of journal storage {path} does not exist", "create it first"
            )
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if spec.startswith("sqlite:///"):
        database = spec.removeprefix("sqlite:///").split("?", 1)[0]
        if database and database != ":memory:" and not Path(database).parent.is_dir():
            raise SeglabError(
                f"the folder of SQLite storage {spec} does not exist",
                "create it first, or fix --storage (sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db)",
            )
    try:
        kwargs: dict[str, Any] = {}
        if spec.startswith("sqlite"):
            # several workers on one file: wait for the lock instead of failing at once
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
        # a killed worker's RUNNING trial is marked FAIL by the next worker after the grace
        kwargs["heartbeat_interval"] = HEARTBEAT_S
        kwargs["grace_period"] = 3 * HEARTBEAT_S
        return _rdb_storage(spec, kwargs)
    except ImportError as err:  # SQLAlchemy found no driver for the URL's database
        scheme = spec.split(":", 1)[0]
        raise SeglabError(
            f"cannot open Optuna storage {_redacted(spec)}: the database driver for {scheme} "
            "is not installed",
            "install it (for postgresql:// pip install 'seglab[team]', i.e. psycopg[binary]; "
            "pymysql for mysql+pymysql), or use sqlite:///PATH or journal:PATH",
        ) from err
    except Exception as err:  # SQLAlchemy and drivers raise many kinds
        reason = " ".join(str(err).split())[:200]
        raise SeglabError(
            f"cannot open Optuna storage {_redacted(spec)} ({type(err).__name__}: {reason})",
            "check the URL, that the database server is up, and its driver is installed",
        ) from err


#: Attempts at opening a database storage that another worker is creating at the same moment.
STORAGE_ATTEMPTS = 5


def _rdb_storage(url: str, kwargs: dict[str, Any]) -> Any:
    """Open an RDB storage, retrying while another worker creates its tables.

    Two workers that open a new database at once both create the schema; the loser's insert of
    the schema version fails (an integrity or lock error) although the database is then ready.
    """
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(STORAGE_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, **kwargs)
        except (IntegrityError, OperationalError) as err:
            # only the race is worth waiting for; an unreachable server or a file that cannot
            # be opened fails the same way every time
            racing = isinstance(err, IntegrityError) or any(
                word in str(err).lower() for word in ("locked", "already exists", "duplicate")
            )
            if not racing or attempt == STORAGE_ATTEMPTS - 1:
                raise
            time.sleep(0.5 * (attempt + 1) + random.random())
    raise AssertionError("unreachable")


def _write_best(path: Path, best: dict[str, Any]) -> None:
    """Write ``best.json`` atomically: other workers may be uploading the folder meanwhile."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(best, indent=2, default=str) + "\n")


def _redacted(url: str) -> str:
    """Return a storage URL without its password."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user, has_password, _ = credentials.partition(":")
        return f"{scheme}://{user}{':***' if has_password else ''}@{host}"
    return url


@dataclass
class SharedStudy:
    """An Optuna study and its MLflow parent run, created or joined by this worker."""

    study: Any
    parent: StudyRun
    created: bool


def join_study(
    store: TrackingStore,
    recipe: Recipe,
    storage: Any,
    *,
    direction: str,
    sampler: Any,
    pruner: Any,
) -> SharedStudy:
    """Create the recipe's Optuna study and parent run, or join them.

    The creator opens the MLflow parent run (:class:`StudyRun`, fresh) and records its id in
    the study; a joiner waits up to :data:`JOIN_TIMEOUT_S` for that id and attaches to the run.
    A joiner reseeds ``sampler`` at random, so that workers do not repeat each other's trials;
    only the creator's draws follow the recipe's seed.
    """
    import optuna

    name = study_name(recipe)
    try:
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            direction=direction,
            sampler=sampler,
            pruner=pruner,
            load_if_exists=False,
        )
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        # Every worker seeds its sampler from the recipe: a joiner (or a resumed worker) with
        # the creator's seed would draw the creator's parameters again, trial for trial.
        sampler.reseed_rng()
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        created = False
    if created:
        parent = StudyRun(store, recipe, fresh=True)
        study.set_user_attr(ATTR_RUN, parent.run_id)
        return SharedStudy(study, parent, created=True)
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while ATTR_RUN not in study.user_attrs:
        if time.monotonic() > deadline:
            raise SeglabError(
                f"Optuna study {name} has no MLflow run after {JOIN_TIMEOUT_S:.0f} s (its "
                "creator died before opening it?)",
                "delete the study (optuna delete-study) and start again",
            )
        time.sleep(1.0)
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    parent = StudyRun.attach(store, recipe, study.user_attrs[ATTR_RUN])
    return SharedStudy(study, parent, created=False)


def sample(trial: Any, space: list[SearchParameter]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Draw a trial's parameters; return ``(params, config overrides)``.

    A parameter with ``options`` is a categorical over option names whose config ids are
    merged into the overrides; the others set the config id of their name.
    """
    params: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    for parameter in space:
        if parameter.options is not None:
            choice = trial.suggest_categorical(parameter.name, list(parameter.options))
            params[parameter.name] = choice
            overrides |= parameter.options[choice]
            continue
        if parameter.choices is not None:
            value = trial.suggest_categorical(parameter.name, parameter.choices)
        elif parameter.integer:
            assert parameter.low is not None and parameter.high is not None
            value = trial.suggest_int(
                parameter.name, int(parameter.low), int(parameter.high), log=parameter.log
            )
        else:
            assert parameter.low is not None and parameter.high is not None
            value = trial.suggest_float(
                parameter.name, parameter.low, parameter.high, log=parameter.log
            )
        params[parameter.name] = value
        overrides[parameter.name] = value
    return params, overrides


def tag_trial_runs(handle: RunHandle, study: Any) -> None:
    """Tag every trial's child run with the trial's final state (COMPLETE, PRUNED, FAIL)."""
    client = handle.client
    for trial in study.get_trials(deepcopy=False):
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id and trial.state.is_finished():
            client.set_tag(run_id, TAG_TRIAL_STATE, trial.state.name)


def log_study_summary(
    parent: StudyRun,
    study: Any,
    out_dir: Path,
    *,
    objective: str,
    extra: Mapping[str, Any] | None = None,
    echo: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Write and log the study's trials table, best parameters and figures; return the best.

    Files (in ``out_dir`` and under ``report/`` of the parent run): ``trials.csv``,
    ``best.json``, ``optimization_history.png`` and, with two or more finished trials whose
    parameters vary, ``param_importances.png``. Parent metrics: ``best_<objective>``,
    ``trials_complete``, ``trials_pruned``, ``trials_failed``.
    """
    import optuna

    from seglab.workflows._outputs import pyplot, save_figure, write_csv

    out_dir.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    states = optuna.trial.TrialState
    complete = [t for t in trials if t.state == states.COMPLETE]
    rows = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value if t.state == states.COMPLETE else None,
            "run_id": t.user_attrs.get("mlflow_run_id", ""),
            "epochs_reported": len(t.intermediate_values),
            "last_reported": (
                t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
            ),
            **{f"param_{k}": v for k, v in t.params.items()},
        }
        for t in trials
    ]
    names = sorted({k for row in rows for k in row if k.startswith("param_")})
    columns = ["number", "state", "value", "run_id", "epochs_reported", "last_reported", *names]
    write_csv(out_dir / "trials.csv", rows, columns)
    best: dict[str, Any] = {}
    if complete:
        chosen = study.best_trial
        best = {
            "trial": chosen.number,
            objective: chosen.value,
            "params": chosen.params,
            "run_id": chosen.user_attrs.get("mlflow_run_id", ""),
            **dict(extra or {}),
        }
    _write_best(out_dir / "best.json", best)
    plt = pyplot()
    figures = []
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if complete:
        axes = optuna.visualization.matplotlib.plot_optimization_history(study)
        figures.append(save_figure(axes.figure, out_dir / "optimization_history.png"))
        varying = any(
            len({repr(t.params.get(name)) for t in complete}) > 1 for name in complete[0].params
        )
        if len(complete) >= 2 and varying:
            try:
                axes = optuna.visualization.matplotlib.plot_param_importances(study)
                figures.append(save_figure(axes.figure, out_dir / "param_importances.png"))
            except (RuntimeError, ValueError) as err:  # e.g. all values equal
                echo(f"parameter importances not drawn: {err}")
    plt.close("all")
    client = parent.client
    counts = {
        s: sum(t.state == getattr(states, s) for t in trials)
        for s in ("COMPLETE", "PRUNED", "FAIL")
    }
    metrics = {f"trials_{k.lower()}": float(v) for k, v in counts.items()}
    if best:
        metrics[f"best_{objective}"] = float(best[objective])
        client.set_tag(parent.run_id, "seglab.best_trial", str(best["trial"]))
        client.set_tag(parent.run_id, "seglab.best_params", json.dumps(best["params"])[:5000])
    for key, value in metrics.items():
        client.log_metric(parent.run_id, key, value)
    # only this worker's files: another worker on this machine may be writing the same folder
    # (its temporary files vanish while a whole-folder upload lists them)
    for path in (out_dir / "trials.csv", out_dir / "best.json", *figures):
        client.log_artifact(parent.run_id, str(path), "report")
    return best


def default_out(
    recipe: Recipe, out_dir: str | os.PathLike[str] | None, root: Path | None = None
) -> Path:
    """``out_dir``, or ``<root>/<name>-<digest>/report`` (root default ``studies``)."""
    from seglab.studies.runner import work_folder

    return Path(out_dir) if out_dir is not None else work_folder(recipe, root) / "report"


#: Consecutive failed trials after which a worker stops.
FAILURES_BEFORE_STOP = 3


def run_trials(
    shared: SharedStudy,
    objective: Callable[[Any], float],
    *,
    total: int,
    trials: int | None,
    out: Path,
    metric: str,
    title: str,
    echo: Callable[[str], Any] = print,
    catch: tuple[type[BaseException], ...] = (),
    finish: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> StudyResult:
    """Run trials until the study holds ``total`` finished ones; summarise; close the parent.

    Parameters
    ----------
    shared : SharedStudy
        From :func:`join_study`.
    objective : callable
        ``objective(trial) -> float``.
    total : int
        Finished (complete or pruned) trials the study should hold, whoever ran them.
    trials : int or None
        Most trials this worker runs.
    out : Path
        Report folder (:func:`log_study_summary`).
    metric : str
        Name of the objective's value in the report.
    title : str
        First line of the result.
    echo : callable
    catch : tuple of exception types
        Exceptions that fail one trial instead of the worker; three failed trials in a row stop
        the worker.
    finish : callable, optional
        ``finish(best) -> best`` after the summary (e.g. train the best parameters); its
        ``best`` is written to ``best.json`` again.

    Returns
    -------
    StudyResult
    """
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    study, parent = shared.study, shared.parent
    finished = (TrialState.COMPLETE, TrialState.PRUNED)

    def stop_after_repeated_failures(s: Any, t: Any) -> None:
        # the same mistake in every trial (e.g. a metric the bundle does not log) would
        # otherwise use up the whole budget
        last = s.get_trials(deepcopy=False)[-FAILURES_BEFORE_STOP:]
        if len(last) == FAILURES_BEFORE_STOP and all(x.state == TrialState.FAIL for x in last):
            echo(f"the last {FAILURES_BEFORE_STOP} trials failed; stopping this worker")
            s.stop()

    callbacks = [
        MaxTrialsCallback(total, states=finished),
        lambda s, t: tag_trial_runs(parent.handle, s),
        stop_after_repeated_failures,
    ]
    done = len(study.get_trials(deepcopy=False, states=finished))
    error: BaseException | None = None
    try:
        if done < total:
            study.optimize(
                objective,
                n_trials=trials if trials is not None else total - done,
                callbacks=callbacks,
                catch=catch,
            )
        else:
            echo(f"the study already has {done} finished trials; nothing to run")
        best = log_study_summary(parent, study, out, objective=metric, echo=echo)
        if finish is not None and best:
            best = finish(best)
            _write_best(out / "best.json", best)
            parent.client.log_artifact(parent.run_id, str(out / "best.json"), "report")
    except BaseException as err:
        error = err
        parent.close(err)
        raise
    finally:
        if error is None:
            parent.close()
    states = [t.state for t in study.get_trials(deepcopy=False)]
    result = StudyResult(
        title,
        out,
        run_id=parent.run_id,
        children=len(states),
        skipped=done,
        failed=sum(s == TrialState.FAIL for s in states),
        best=best,
    )
    result.lines = [
        f"complete {states.count(TrialState.COMPLETE)}, pruned {states.count(TrialState.PRUNED)}, "
        f"failed {states.count(TrialState.FAIL)}",
    ]
    if best:
        result.lines.append(
            f"best: trial {best['trial']}, {metric} = {best[metric]:.4f}, "
            f"{json.dumps(best['params'], default=str)}"
        )
    result.outputs = {
        p.stem: p for p in sorted(out.iterdir()) if p.is_file() and not p.name.startswith(".")
    }
    return result
