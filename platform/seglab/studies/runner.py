"""Parent and child runs of a study, and resuming an interrupted one.

A study is one MLflow *parent* run (tags ``seglab.study`` = the recipe's name and
``seglab.recipe_digest`` = a digest of its content) with one *child* run per training, nested
by the tag ``mlflow.parentRunId`` and identified by ``seglab.child_key`` (e.g.
``network_name=unet tiling_preset=no-overlap repeat=0``). Running a recipe again finds its
parent run (same name and digest) and skips every child that already has a FINISHED run:
an interrupted study finishes without repeating completed work. A changed recipe is a new
study (new digest); ``fresh=True`` starts a new parent run for an unchanged one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seglab.errors import SeglabError
from seglab.studies.recipes import Recipe
from seglab.tracking.runs import RunHandle, close_run, log_params, open_run
from seglab.tracking.store import (
    TAG_HOST,
    TAG_PID,
    TrackingStore,
    ensure_experiment,
    fail_dead_runs,
    owner_tags,
)

__all__ = [
    "TAG_CHILD_KEY",
    "TAG_DIGEST",
    "TAG_STUDY",
    "Child",
    "ChildResult",
    "StudyRun",
    "run_children",
]

log = logging.getLogger(__name__)

TAG_STUDY = "seglab.study"
TAG_DIGEST = "seglab.recipe_digest"
TAG_KIND = "seglab.study_kind"
TAG_CHILD_KEY = "seglab.child_key"
TAG_PARENT = "mlflow.parentRunId"


@dataclass(frozen=True)
class Child:
    """One training of a study.

    Attributes
    ----------
    key : str
        Identity within the study, stable across runs of the recipe.
    overrides : dict
        Config ids of this child (on top of the recipe's ``overrides``).
    data : Path
        Its training dataset.
    labels : dict
        What the study's tables group by (e.g. ``{"network_name": "unet", "repeat": 0}``).
    """

    key: str
    overrides: dict[str, Any]
    data: Path
    labels: dict[str, Any] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        """The key as a folder name."""
        return re.sub(r"[^A-Za-z0-9._=-]+", "_", self.key).strip("_") or "child"


@dataclass
class ChildResult:
    """A finished child: its run, metrics and logged model."""

    child: Child
    run_id: str
    metrics: dict[str, float]
    params: dict[str, str]
    model_id: str | None = None
    skipped: bool = False


class StudyRun:
    """The parent run of a study: opened, or found again and resumed.

    Parameters
    ----------
    store : TrackingStore
    recipe : Recipe
    fresh : bool
        Start a new parent run even when one for this recipe exists.
    """

    def __init__(
        self,
        store: TrackingStore,
        recipe: Recipe,
        *,
        fresh: bool = False,
        run_id: str | None = None,
    ) -> None:
        self.store = store
        self.recipe = recipe
        self.client = store.client()
        self.experiment_id = ensure_experiment(store, recipe.experiment)
        fail_dead_runs(store, [self.experiment_id])
        #: Whether this process closes the parent run (a worker joining a search that another
        #: live process runs does not).
        self.owns = True
        previous = None
        joining = run_id is not None
        if joining:
            previous = self.client.get_run(run_id)
        elif not fresh:
            previous = self._find_parent()
        self.resumed = previous is not None
        if previous is not None:
            run_id = previous.info.run_id
            self.handle = RunHandle(store, self.experiment_id, run_id, previous.info.run_name)
            if previous.info.status == "RUNNING":
                # a live process runs it (a dead one on this host was just marked FAILED)
                if not joining:
                    # found by name: a second `seglab run` would train the same children
                    tags = previous.data.tags
                    raise SeglabError(
                        f"study {recipe.name} is running in another process (run "
                        f"{previous.info.run_id}, host {tags.get(TAG_HOST, '?')}, pid "
                        f"{tags.get(TAG_PID, '?')})",
                        "wait for it to finish, or pass --fresh to start a separate study",
                    )
                self.owns = False
            else:
                # ours now: a dead owner would otherwise make the next open_run fail it again
                for key, value in owner_tags().items():
                    self.client.set_tag(run_id, key, value)
                self.client.update_run(run_id, status="RUNNING")
        else:
            tags = {
                TAG_STUDY: recipe.name,
                TAG_DIGEST: recipe.digest,
                TAG_KIND: recipe.kind,
            }
            if recipe.description:
                tags["mlflow.note.content"] = recipe.description
            self.handle = open_run(store, recipe.experiment, f"study-{recipe.name}", tags=tags)
            params = {
                "kind": recipe.kind,
                "bundle": recipe.bundle,
                "data": str(recipe.data),
                "eval_data": str(recipe.eval_data),
                "repeats": recipe.repeats,
                "seed": recipe.seed,
                # MLflow names allow no '#': nested config ids are logged with '/'
                "overrides": {k.replace("#", "/"): v for k, v in recipe.overrides.items()},
            }
            log_params(self.handle, params)
            if recipe.path is not None and recipe.path.is_file():
                self.client.log_artifact(self.handle.run_id, str(recipe.path), "recipe")

    @classmethod
    def attach(cls, store: TrackingStore, recipe: Recipe, run_id: str) -> StudyRun:
        """Join the parent run ``run_id`` (e.g. a search that another worker created)."""
        return cls(store, recipe, run_id=run_id)

    @property
    def run_id(self) -> str:
        """The parent run's id."""
        return self.handle.run_id

    def _find_parent(self) -> Any:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`{TAG_STUDY}` = '{self.recipe.name}' "
                f"and tags.`{TAG_DIGEST}` = '{self.recipe.digest}'"
            ),
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0] if runs else None

    def finished_children(self) -> dict[str, Any]:
        """FINISHED child runs by child key (the latest when a key ran twice)."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`{TAG_PARENT}` = '{self.run_id}' and attributes.status = 'FINISHED'"
            ),
            order_by=["attributes.start_time ASC"],
            max_results=50000,
        )
        return {r.data.tags[TAG_CHILD_KEY]: r for r in runs if TAG_CHILD_KEY in r.data.tags}

    def child_tags(self, child: Child) -> dict[str, str]:
        """Tags that nest a child's run under this study and name it."""
        return {
            TAG_PARENT: self.run_id,
            TAG_CHILD_KEY: child.key,
            TAG_STUDY: self.recipe.name,
        }

    def close(self, error: BaseException | None = None) -> None:
        """End the parent run with a truthful status (when this process owns it)."""
        if self.owns:
            close_run(self.handle, error)
        elif error is not None:
            reason = " ".join(f"{type(error).__name__}: {error}".split())[:500]
            self.client.set_tag(self.run_id, "seglab.worker_failure", reason)


@contextmanager
def study_run(store: TrackingStore, recipe: Recipe, *, fresh: bool = False) -> Iterator[StudyRun]:
    """Open or resume the parent run; close it FINISHED, or FAILED with the error."""
    study = StudyRun(store, recipe, fresh=fresh)
    try:
        yield study
    except BaseException as err:
        study.close(err)
        raise
    study.close()


def result_from_run(child: Child, run: Any, skipped: bool) -> ChildResult:
    """Build a :class:`ChildResult` from a child's MLflow run."""
    outputs = getattr(run, "outputs", None)
    model_outputs = getattr(outputs, "model_outputs", None) or []
    model_id = model_outputs[0].model_id if model_outputs else None
    return ChildResult(
        child=child,
        run_id=run.info.run_id,
        metrics=dict(run.data.metrics),
        params=dict(run.data.params),
        model_id=model_id,
        skipped=skipped,
    )


TrainChild = Callable[[StudyRun, Child], str]


def run_children(
    study: StudyRun,
    children: Sequence[Child],
    train: TrainChild,
    *,
    echo: Callable[[str], Any] = print,
) -> tuple[list[ChildResult], list[tuple[Child, str]]]:
    """Run the children that have no FINISHED run yet; return results and failures.

    Parameters
    ----------
    study : StudyRun
    children : sequence of Child
        Keys must be unique.
    train : callable
        ``train(study, child) -> run_id`` trains one child (its run nested by
        :meth:`StudyRun.child_tags`); an exception marks the child failed and the study goes on.
    echo : callable
        Progress lines.

    Returns
    -------
    results : list of ChildResult
        In the order of ``children``, completed ones only.
    failures : list of (Child, str)
        Children that failed, with the one-line reason.
    """
    keys = [c.key for c in children]
    if len(set(keys)) != len(keys):
        raise SeglabError("two children of the study have the same key", "make the grid unique")
    done = study.finished_children()
    results: list[ChildResult] = []
    failures: list[tuple[Child, str]] = []
    for number, child in enumerate(children, start=1):
        prefix = f"[{number}/{len(children)}] {child.key}"
        if child.key in done:
            echo(f"{prefix}: done before (run {done[child.key].info.run_id}), skipped")
            results.append(result_from_run(child, done[child.key], skipped=True))
            continue
        echo(f"{prefix}: training")
        try:
            run_id = train(study, child)
        except Exception as err:  # noqa: BLE001 - one failed child must not end the study
            reason = " ".join(str(err).split())[:300]
            echo(f"{prefix}: failed: {reason}")
            failures.append((child, reason))
            continue
        run = study.client.get_run(run_id)
        result = result_from_run(child, run, skipped=False)
        results.append(result)
        echo(f"{prefix}: finished (run {run_id})")
    return results, failures


def child_overrides(
    study: StudyRun, child: Child, base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Config ids of a child's training: the recipe's, the child's, and the nesting tags.

    ``run_tags`` given by ``base`` or the child are kept, with the nesting tags on top.
    """
    base = dict(base or {})
    tags = {**base.get("run_tags", {}), **child.overrides.get("run_tags", {})}
    return {
        **study.recipe.overrides,
        **base,
        **child.overrides,
        "experiment_name": study.recipe.experiment,
        "run_tags": {**tags, **study.child_tags(child)},
    }


def work_folder(recipe: Recipe, root: Path | None = None) -> Path:
    """Where a study keeps its checkpoints and data subsets: ``studies/<name>-<digest>``."""
    return (root if root is not None else Path("studies")) / f"{recipe.name}-{recipe.digest}"


def check_config_ids(recipe: Recipe, extra: Sequence[str] = ()) -> Path:
    """Check that every config id the recipe sets exists in its bundle; return the bundle folder.

    Raises
    ------
    SeglabError
        Naming the unknown ids, before any run is created.
    """
    from monai.bundle import ConfigParser

    from seglab.workflows.training import check_overrides, resolve_bundle

    root = resolve_bundle(recipe.bundle)
    parser = ConfigParser()
    parser.read_config([str(root / "configs" / n) for n in ("common.json", "train.json")])
    ids = [*recipe.config_ids(), *extra]
    unknown = sorted({i for i in ids if i not in parser})
    if unknown:
        where = f" ({recipe.path})" if recipe.path is not None else ""
        raise SeglabError(
            f"recipe{where} sets config id(s) {', '.join(unknown)} that bundle {root.name} "
            "does not have",
            f"see {root / 'configs'} for its ids (nested ids use #)",
        )
    # the values the recipe states (search spaces are sampled later): types and obvious ranges
    where = f"recipe {recipe.path}" if recipe.path is not None else "recipe"
    check_overrides(parser, recipe.overrides, root.name, where)
    for key, values in getattr(recipe, "grid", {}).items():
        for value in values:
            check_overrides(parser, {key: value}, root.name, f"{where}, grid")
    for arm in getattr(recipe, "arms", []):
        check_overrides(parser, arm.overrides, root.name, f"{where}, arm {arm.name}")
    return root


def train_child(
    study: StudyRun,
    child: Child,
    *,
    output_root: Path,
    eval_data: Path | None = None,
    base: Mapping[str, Any] | None = None,
) -> str:
    """Train one child with :func:`seglab.workflows.training.train_bundle`; return its run id.

    The child's run is nested under the study (``run_tags``), in the recipe's experiment, with
    its checkpoints in ``output_root/<child slug>``; its final evaluation uses ``eval_data``
    (default the recipe's).
    """
    from seglab.workflows.training import train_bundle

    recipe = study.recipe
    outcome = train_bundle(
        recipe.bundle,
        child.data,
        overrides=child_overrides(study, child, base),
        eval_data=eval_data if eval_data is not None else recipe.eval_data,
        store_dir=study.store.local_dir,
        output_dir=output_root / child.slug,
        quiet=True,
        overwrite=True,  # the study's own folder: an interrupted attempt of this child
    )
    if outcome.run_id is None:
        raise SeglabError(
            f"child {child.key} logged no run", "keep tracking_enabled true in the recipe"
        )
    return outcome.run_id
