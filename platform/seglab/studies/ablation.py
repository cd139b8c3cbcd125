"""Study B's label-budget ablation: base label sets of one cell plus ``k`` sets of another.

A *label set* is one labelled slice (study B: one hand-labelled SEM image). Every child trains
on ``base_sets`` slices of the base cell (``data``) plus the first ``k`` slices of a seeded
random order of the added cell's slices (``added.data``), for each ``k`` of ``added.sets``, for
every arm (e.g. with and without the intensity remap) and repeat:

- the draws are **nested**: within a repeat the ``k = 10`` sets contain the ``k = 5`` sets and
  the base sets are the same for every ``k``; repeat ``r`` draws other subsets (seed
  ``seed + r``, which is also the child's training seed);
- **validation** (which checkpoint becomes the model) uses a fixed part of the base cell kept
  apart from every draw: ``round(val_fraction * n)`` of its ``n`` labelled slices (at least one;
  ``val_fraction`` is the bundle's config id, settable in ``overrides``). With
  ``val_fraction: 0`` every child validates on its own training slices (CDeep3M had no
  validation set; all of the base cell's slices can then be base sets). The added cell never
  takes part in validation, and ``eval_data`` (held-out labels of the added cell) only in the
  final evaluation, so the ``k = 0`` model has seen nothing of the second cell;
- a child's training data is a dataset folder ``<work>/data/repeat<r>-k<k>`` in
  :mod:`seglab.io.dataset`'s layout with **one stack per label set** (``base-<stack>-z<z>``,
  ``added-<stack>-z<z>``: image, labels, contours), holding the slice twice: ``(2, Y, X)``,
  because a one-page TIFF reads back as a 2D image and the mito bundle takes stacks. The
  loader takes stacks (one pass over them per epoch, ``batch_size // num_samples`` per step)
  and a random slice of each, so every label set weighs the same, as in a training on the
  labelled images themselves (one stack per cell would give the ``k`` added slices as much
  weight as all base slices together). The validation slices are written the same way to
  ``<work>/data/validation`` (a doubled slice leaves Dice unchanged). Arms share the folders
  of their ``(repeat, k)``; a folder whose ``selection.json`` names the same slices of
  unchanged files is reused.

The written stacks suit the 1-slice model (``num_slices: 1``, which the recipes use): it sees
one slice at a time, exactly the label set. A 3- or 5-slice model would get the slice itself as
its neighbour channels (the stack holds it twice, padded by mirroring), not the adjacent images
that the study's 3- and 5-slice CDeep3M models read (those images are unlabelled); a faithful
2.5D ablation needs stacks that carry the unlabelled neighbours, which this module does not
build (it prints a note when a recipe asks for more than one slice).

``init: models:/NAME@ALIAS`` (transfer learning, as the study) fetches the registered model once,
takes the member whose ``num_slices``, network and options match the child's, and sets the
bundle's ``initial_weights`` to it; an unknown model, or one that does not fit, is a one-line
error before any training.

Reports (``out_dir`` and the parent run's ``report/`` artifacts): ``table2.csv`` and
``table2.md`` (study B's Table 2 layout: added sets ``k``, threshold, precision, recall, F, per
arm, mean and 95 % confidence interval over the repeats, Student's t), ``children.csv`` (one row
per child run) and ``f_vs_labels.png`` (F against ``k``, one line per arm). The parent run gets
metrics ``f/<arm>/k<k>`` (mean F), and the best child's model is registered under ``register``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seglab.errors import SeglabError
from seglab.io.atomic import atomic_directory
from seglab.io.dataset import scan_dataset, write_manifest
from seglab.io.images import read_image, write_image
from seglab.studies.recipes import AblationRecipe, Arm
from seglab.studies.report import StudyResult
from seglab.studies.runner import (
    Child,
    ChildResult,
    StudyRun,
    check_config_ids,
    run_children,
    train_child,
    work_folder,
)
from seglab.tracking.store import TrackingStore
from seglab.workflows._outputs import pyplot, save_figure, write_csv, write_json

__all__ = [
    "LabelSet",
    "SetDraw",
    "TABLE_METRICS",
    "ablation_children",
    "draw_sets",
    "label_sets",
    "run_ablation",
    "summarise",
    "write_label_sets",
]

#: Child-run metrics of the table (study B's columns): table name -> run metric.
TABLE_METRICS = {
    "threshold": "final_threshold",
    "precision": "final_precision",
    "recall": "final_recall",
    "F": "final_f_score",
}
#: Config ids the study sets in every child besides the recipe's.
DATA_IDS = ("train#datalist#split", "validate#datalist#root", "validate#datalist#split")
SELECTION_FILE = "selection.json"


# -------------------------------------------------------------------------------- label sets
@dataclass(frozen=True, order=True)
class LabelSet:
    """One labelled slice of a dataset folder.

    Attributes
    ----------
    stack : str
        Sample name (``images/<stack>.tif``).
    z : int
        Slice index in the stack (0 for a 2D image).
    """

    stack: str
    z: int


def label_sets(root: str | os.PathLike[str]) -> list[LabelSet]:
    """Every labelled slice of a dataset folder, in name then z order (headers only).

    Parameters
    ----------
    root : path-like
        Dataset folder of 2D images ``(Y, X)`` or stacks ``(Z, Y, X)`` with labels.

    Returns
    -------
    list of LabelSet
        One per slice of every labelled sample.
    """
    dataset = scan_dataset(root)
    sets = []
    for sample in dataset:
        info = sample.image_info
        depth = info.spatial_shape[0] if len(info.spatial_shape) == 3 else 1
        sets += [LabelSet(sample.name, z) for z in range(depth)]
    return sets


@dataclass(frozen=True)
class SetDraw:
    """Which label sets one repeat uses (indices into the slice lists of the two cells).

    Attributes
    ----------
    validation : tuple of int
        Base-cell slices kept apart for validation (the same in every repeat).
    base : tuple of int
        The repeat's base sets, sorted.
    added_order : tuple of int
        The repeat's random order of the added cell's slices; ``k`` sets are its first ``k``.
    """

    validation: tuple[int, ...]
    base: tuple[int, ...]
    added_order: tuple[int, ...]

    def added(self, k: int) -> tuple[int, ...]:
        """Return the first ``k`` added sets, sorted (``added(5)`` lies in ``added(10)``)."""
        return tuple(sorted(self.added_order[:k]))


def validation_count(n_base: int, val_fraction: float) -> int:
    """Base-cell slices kept for validation: ``round(val_fraction * n)``, at least 1 if > 0."""
    if val_fraction <= 0 or n_base == 0:
        return 0
    return max(1, round(float(val_fraction) * n_base))


def draw_sets(
    n_base: int,
    n_added: int,
    *,
    base_sets: int,
    max_added: int,
    val_fraction: float,
    seed: int,
    repeat: int,
) -> SetDraw:
    """Draw a repeat's base sets, validation sets and order of added sets (seeded, nested).

    Parameters
    ----------
    n_base, n_added : int
        Labelled slices of the base and the added cell.
    base_sets : int
        Base sets per child.
    max_added : int
        The largest ``k``.
    val_fraction : float
        Fraction of the base cell's slices kept for validation, in [0, 1); 0 keeps none.
    seed : int
        The study's seed; the validation slices depend on it only.
    repeat : int
        The repeat; its base sets and added order are drawn with ``(seed, repeat)``.

    Returns
    -------
    SetDraw

    Raises
    ------
    SeglabError
        When the base cell has too few slices for the base and validation sets, or the added
        cell fewer than ``max_added``.
    """
    if not 0.0 <= float(val_fraction) < 1.0:
        raise SeglabError(
            f"val_fraction must be in [0, 1), got {val_fraction!r}", "set e.g. val_fraction: 0.2"
        )
    n_val = validation_count(n_base, val_fraction)
    if base_sets + n_val > n_base:
        raise SeglabError(
            f"the base cell has {n_base} labelled slices, fewer than {base_sets} base sets plus "
            f"{n_val} validation slices (val_fraction {val_fraction})",
            "lower base.sets, label more slices, or set val_fraction: 0 in overrides to "
            "validate on the training slices",
        )
    if max_added > n_added:
        raise SeglabError(
            f"the added cell has {n_added} labelled slices, fewer than k = {max_added}",
            "lower the largest added.sets or label more slices of the added cell",
        )
    validation_rng = np.random.default_rng([seed, 0])
    validation = validation_rng.permutation(n_base)[:n_val]
    pool = np.setdiff1d(np.arange(n_base), validation)
    base = np.random.default_rng([seed, repeat, 1]).permutation(pool)[:base_sets]
    added_order = np.random.default_rng([seed, repeat, 2]).permutation(n_added)
    return SetDraw(
        validation=tuple(sorted(int(i) for i in validation)),
        base=tuple(sorted(int(i) for i in base)),
        added_order=tuple(int(i) for i in added_order),
    )


class SliceSource:
    """Slices of a dataset folder read on demand (each stack read once, kept in memory)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dataset = scan_dataset(root)
        self._cache: dict[str, dict[str, Any]] = {}

    def stack(self, name: str) -> dict[str, Any]:
        """Image, label, optional contour arrays as ``(Z, Y, X)`` and the spacing."""
        if name not in self._cache:
            sample = self.dataset.sample(name)
            image = read_image(sample.image)
            arrays = {"image": image.array, "label": read_image(sample.label).array}  # type: ignore[arg-type]
            if sample.contour is not None:
                arrays["contour"] = read_image(sample.contour).array
            if image.axes != "ZYX":
                if image.axes != "YX":
                    raise SeglabError(
                        f"{sample.image} has axes {image.axes}; the ablation takes grey slices",
                        "use grey (Z, Y, X) stacks or (Y, X) images",
                    )
                arrays = {k: v[np.newaxis] for k, v in arrays.items()}
            spacing = image.spacing
            if spacing is not None and len(spacing) == 2:
                spacing = (1.0, *spacing)
            self._cache[name] = arrays | {"spacing": spacing}
        return self._cache[name]


def write_label_sets(
    out: Path, parts: Sequence[tuple[str, SliceSource, Sequence[LabelSet]]]
) -> Path:
    """Write chosen slices as a dataset folder: one stack per label set (the slice twice).

    Parameters
    ----------
    out : Path
        New or replaced dataset folder (written atomically, with ``manifest.json`` and
        ``selection.json`` naming the slices). An existing folder whose ``selection.json`` names
        the same slices of the same files is kept as it is.
    parts : sequence of (prefix, SliceSource, list of LabelSet)
        E.g. ``("base", cell_a, sets)``; slice ``z`` of ``<stack>`` becomes the ``(2, Y, X)``
        stack ``<prefix>-<stack>-z<zzzz>`` holding it twice (a one-page TIFF would read back
        as 2D); image, labels, and contours when present.

    Returns
    -------
    Path
        ``out``.
    """
    selection = {
        prefix: {
            "data": str(source.root),
            "files": _fingerprint(source, sets),
            "sets": [[s.stack, s.z] for s in sorted(sets)],
        }
        for prefix, source, sets in parts
    }
    marker = out / SELECTION_FILE
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == selection:
                return out
        except (OSError, json.JSONDecodeError):
            pass
    with atomic_directory(out, overwrite=True) as tmp:
        for prefix, source, sets in parts:
            for label_set in sorted(sets):
                arrays = source.stack(label_set.stack)
                name = f"{prefix}-{label_set.stack}-z{label_set.z:04d}"
                for folder, key in (
                    ("images", "image"),
                    ("labels", "label"),
                    ("contours", "contour"),
                ):
                    if key in arrays:
                        write_image(
                            tmp / folder / f"{name}.tif",
                            np.repeat(arrays[key][label_set.z][np.newaxis], 2, axis=0),
                            arrays["spacing"],
                            axes="ZYX",
                        )
        write_json(tmp / SELECTION_FILE, selection)
        write_manifest(tmp)
    return out


def _fingerprint(source: SliceSource, sets: Sequence[LabelSet]) -> dict[str, list[int]]:
    """Size and modification time of the files the sets come from (a changed file rewrites)."""
    stacks = sorted({s.stack for s in sets})
    files: dict[str, list[int]] = {}
    for name in stacks:
        sample = source.dataset.sample(name)
        for path in (sample.image, sample.label, sample.contour):
            if path is not None:
                stat = path.stat()
                files[str(path)] = [stat.st_size, stat.st_mtime_ns]
    return files


# ---------------------------------------------------------------------------------- children
def _arm_label(arm: Arm) -> str:
    return arm.name or "all"


def child_key(k: int, arm: Arm, repeat: int) -> str:
    """``k=5 arm=remap repeat=0`` (``arm=`` left out for a recipe without arms)."""
    return f"k={k}" + (f" arm={arm.name}" if arm.name else "") + f" repeat={repeat}"


def ablation_children(
    recipe: AblationRecipe,
    data_folder: Callable[[int, int], Path],
    validation_folder: Callable[[int, int], Path],
    initial_weights: Mapping[str, str] | None = None,
) -> list[Child]:
    """List the study's children: ``added_sets`` x arms x repeats (repeat, then k, then arm).

    Parameters
    ----------
    recipe : AblationRecipe
    data_folder, validation_folder : callable
        ``(repeat, k) -> folder`` of the child's training and validation datasets.
    initial_weights : mapping, optional
        Arm name -> weights file for ``initial_weights`` (transfer learning).

    Returns
    -------
    list of Child
        Labels ``k``, ``arm``, ``repeat`` and ``sets`` (base + k).
    """
    children = []
    for repeat in range(recipe.repeats):
        for k in recipe.added_sets:
            for arm in recipe.arms:
                overrides: dict[str, Any] = {
                    **arm.overrides,
                    "seed": recipe.seed + repeat,
                    "train#datalist#split": "all",
                    "validate#datalist#root": str(validation_folder(repeat, k)),
                    "validate#datalist#split": "all",
                }
                if initial_weights is not None:
                    overrides["initial_weights"] = initial_weights[arm.name]
                children.append(
                    Child(
                        key=child_key(k, arm, repeat),
                        overrides=overrides,
                        data=data_folder(repeat, k),
                        labels={
                            "k": k,
                            "sets": recipe.base_sets + k,
                            "arm": _arm_label(arm),
                            "repeat": repeat,
                        },
                    )
                )
    return children


# ----------------------------------------------------------------------------- bundle values
def _bundle_values(recipe: AblationRecipe, arm: Arm, ids: Sequence[str]) -> dict[str, Any]:
    """Resolve config values a child of ``arm`` gets (the recipe's and the arm's overrides)."""
    from monai.bundle import ConfigParser

    from seglab.workflows.training import resolve_bundle

    root = resolve_bundle(recipe.bundle)
    parser = ConfigParser()
    parser.read_config([str(root / "configs" / n) for n in ("common.json", "train.json")])
    for key, value in {**recipe.overrides, **arm.overrides}.items():
        parser[key] = value
    values = {}
    for key in ids:
        value = parser.get(key)
        if isinstance(value, str) and value.startswith(("$", "@")):
            value = parser.get_parsed_content(key)
        values[key] = value
    return values


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=list))


def prepare_initial_weights(
    store: TrackingStore, recipe: AblationRecipe, folder: Path
) -> tuple[dict[str, str], str]:
    """Fetch ``recipe.init``'s registered model; return arm -> weights file, and the version.

    Each arm gets the member whose ``num_slices`` equals the arm's; its network name and
    options must equal the arm's (the weights are loaded strictly).

    Raises
    ------
    SeglabError
        Unknown model or alias, or no member that fits an arm (one line, before training).
    """
    from seglab.models.pyfunc import read_settings
    from seglab.models.registry import fetch_model, parse_model_uri

    name, _, _ = parse_model_uri(recipe.init)
    with tempfile.TemporaryDirectory(prefix="seglab-init-") as tmp:
        version = fetch_model(store, recipe.init, tmp)
        bundle_dir = Path(tmp) / "artifacts" / "bundle"
        settings = read_settings(bundle_dir)
        weights: dict[str, str] = {}
        for arm in recipe.arms:
            values = _bundle_values(
                recipe, arm, ["num_slices", "network_name", "network_options", "num_classes"]
            )
            slices, network = int(values["num_slices"]), str(values["network_name"])
            options = _plain(values["network_options"].get(network, {}))
            members = [m for m in settings.members if m.num_slices == slices]
            where = f"model {name} version {version.version} ({recipe.init})"
            if not members:
                have = sorted({m.num_slices for m in settings.members})
                raise SeglabError(
                    f"{where} has no {slices}-slice member (it has {have})",
                    "set num_slices in the recipe's overrides to one the model has",
                )
            member = members[0]
            if settings.num_classes != int(values["num_classes"]):
                raise SeglabError(
                    f"{where} has {settings.num_classes} classes, the bundle "
                    f"{values['num_classes']}",
                    "fine-tune from a model of the same bundle",
                )
            if member.network_name != network or _plain(member.network_options) != options:
                raise SeglabError(
                    f"{where} is a {member.network_name} with options "
                    f"{json.dumps(member.network_options)}, the recipe trains a {network} with "
                    f"{json.dumps(options)}",
                    "set network_name and network_options in overrides to the model's",
                )
            target = folder / f"{name}-v{version.version}-{slices}slice.pt"
            if not target.is_file():
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(bundle_dir / member.weights, target)
            weights[arm.name] = str(target)
    return weights, f"{name}/{version.version}"


# -------------------------------------------------------------------------------- the report
def _interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the 95 % Student-t interval (NaN half-width for one value)."""
    from scipy import stats

    data = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if data.size == 0:
        return math.nan, math.nan
    mean = float(data.mean())
    if data.size < 2:
        return mean, math.nan
    half = stats.t.ppf(0.975, data.size - 1) * data.std(ddof=1) / math.sqrt(data.size)
    return mean, float(half)


def summarise(results: Sequence[ChildResult]) -> list[dict[str, Any]]:
    """Table 2 rows: per arm and ``k``, the mean and 95 % half-width of each metric.

    Parameters
    ----------
    results : sequence of ChildResult
        Finished children (labels ``arm``, ``k``, ``sets``).

    Returns
    -------
    list of dict
        Keys ``arm``, ``k``, ``sets``, ``repeats``, and for each of :data:`TABLE_METRICS`
        ``<name>`` (mean) and ``<name>_ci`` (half-width; NaN with one repeat). Sorted by arm
        (in order of appearance) then ``k``. Empty for no results.
    """
    groups: dict[tuple[str, int], list[ChildResult]] = {}
    for result in results:
        key = (str(result.child.labels["arm"]), int(result.child.labels["k"]))
        groups.setdefault(key, []).append(result)
    arms = list(dict.fromkeys(arm for arm, _ in groups))
    rows = []
    for arm, k in sorted(groups, key=lambda g: (arms.index(g[0]), g[1])):
        members = groups[(arm, k)]
        row: dict[str, Any] = {
            "arm": arm,
            "k": k,
            "sets": members[0].child.labels["sets"],
            "repeats": len(members),
        }
        for name, metric in TABLE_METRICS.items():
            mean, half = _interval([r.metrics.get(metric, math.nan) for r in members])
            row[name], row[f"{name}_ci"] = mean, half
        rows.append(row)
    return rows


def _cell(mean: float, half: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "n/a"
    text = f"{mean:.{digits}f}"
    return text + (f" ± {half:.{digits}f}" if math.isfinite(half) else "")


def _table_markdown(recipe: AblationRecipe, rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        f"# {recipe.name}: label-budget ablation (study B, Table 2 layout)",
        "",
        f"Base: {recipe.base_sets} sets of {recipe.data}; added sets from {recipe.added_data}; "
        f"init {recipe.init}; evaluated on {recipe.eval_data} (threshold sweep 0..255, threshold "
        "= mean of the per-image best, precision/recall/F pooled at it). Mean ± 95 % "
        "confidence half-width (Student's t) over repeats.",
        "",
    ]
    for arm in dict.fromkeys(r["arm"] for r in rows):
        lines += [
            f"## arm {arm}",
            "",
            "| added sets | total sets | repeats | threshold | precision | recall | F |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in (r for r in rows if r["arm"] == arm):
            lines.append(
                f"| {r['k']} | {r['sets']} | {r['repeats']} | "
                f"{_cell(r['threshold'], r['threshold_ci'], 1)} | "
                f"{_cell(r['precision'], r['precision_ci'], 3)} | "
                f"{_cell(r['recall'], r['recall_ci'], 3)} | {_cell(r['F'], r['F_ci'], 3)} |"
            )
        lines.append("")
    return "\n".join(lines)


def _plot(path: Path, recipe: AblationRecipe, rows: Sequence[Mapping[str, Any]]) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for arm in dict.fromkeys(r["arm"] for r in rows):
        points = [r for r in rows if r["arm"] == arm]
        errors = [r["F_ci"] if math.isfinite(r["F_ci"]) else 0.0 for r in points]
        ax.errorbar(
            [r["k"] for r in points],
            [r["F"] for r in points],
            yerr=errors,
            marker="o",
            capsize=3,
            label=arm,
        )
    ax.set_xticks(sorted({int(r["k"]) for r in rows}))
    ax.set_xlabel(f"added label sets k (base: {recipe.base_sets})")
    ax.set_ylabel("F on held-out labels")
    ax.set_title(f"{recipe.name}: F vs labels (95 % CI over repeats)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(title="arm")
    return save_figure(fig, path)


def _metric_name(arm: str, k: int) -> str:
    """Parent-run metric of an arm's mean F at ``k``: ``f/<arm>/k<k>``."""
    safe = re.sub(r"[^A-Za-z0-9_.\- ]+", "_", arm)
    return f"f/{safe}/k{k}"


def write_report(
    out: Path, recipe: AblationRecipe, results: Sequence[ChildResult]
) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """Write ``table2.csv``, ``table2.md``, ``children.csv`` and ``f_vs_labels.png``."""
    out.mkdir(parents=True, exist_ok=True)
    rows = summarise(results)
    columns = ["arm", "k", "sets", "repeats"]
    columns += [c for name in TABLE_METRICS for c in (name, f"{name}_ci")]
    files = {"table2.csv": write_csv(out / "table2.csv", rows, columns)}
    md = out / "table2.md"
    from seglab.io.atomic import atomic_file

    with atomic_file(md) as tmp:
        tmp.write_text(_table_markdown(recipe, rows))
    files["table2.md"] = md
    child_rows = [
        {
            "key": r.child.key,
            **r.child.labels,
            "run_id": r.run_id,
            "model_id": r.model_id or "",
            **{name: r.metrics.get(metric, math.nan) for name, metric in TABLE_METRICS.items()},
        }
        for r in results
    ]
    child_columns = ["key", "arm", "k", "sets", "repeat", "run_id", "model_id", *TABLE_METRICS]
    files["children.csv"] = write_csv(out / "children.csv", child_rows, child_columns)
    if rows:
        files["f_vs_labels.png"] = _plot(out / "f_vs_labels.png", recipe, rows)
    return rows, files


def _register_best(
    study: StudyRun, recipe: AblationRecipe, best: ChildResult, echo: Callable[[str], Any]
) -> str | None:
    """Register the best child's model once (a resumed study does not register it again)."""
    from datetime import UTC, datetime

    from seglab.models.publish import LoggedBundleModel, register_model
    from seglab.models.registry import Evaluation, record_evaluation

    if recipe.register is None or best.model_id is None:
        return None
    tags = study.client.get_run(study.run_id).data.tags
    if tags.get("seglab.registered_run") == best.run_id and tags.get("seglab.registered"):
        return tags["seglab.registered"]
    logged = study.client.get_logged_model(best.model_id)
    model = LoggedBundleModel(best.model_id, logged.artifact_location, best.run_id)
    version = register_model(
        study.store, recipe.register, model, description=f"best child {best.child.key}"
    )
    run_tags = study.client.get_run(best.run_id).data.tags
    digest = run_tags.get("seglab.eval_digest")
    f_score = best.metrics.get("final_f_score")
    if digest and f_score is not None:
        record_evaluation(
            study.store,
            recipe.register,
            str(version.version),
            Evaluation(
                metric="f_score",
                value=float(f_score),
                dataset=Path(str(recipe.eval_data)).name,
                digest=digest,
                time=datetime.now(UTC).isoformat(timespec="seconds"),
                run_id=best.run_id,
            ),
        )
    registered = f"{recipe.register}/{version.version}"
    study.client.set_tag(study.run_id, "seglab.registered", registered)
    study.client.set_tag(study.run_id, "seglab.registered_run", best.run_id)
    study.client.set_tag(best.run_id, "seglab.registered", registered)
    echo(f"registered {best.child.key} (run {best.run_id}) as {registered}")
    return registered


# ---------------------------------------------------------------------------------- the study
def prepare_data(
    recipe: AblationRecipe, work: Path, val_fraction: float
) -> tuple[Callable[[int, int], Path], Callable[[int, int], Path]]:
    """Write every child's training folder and the validation folder; return their lookups."""
    base = SliceSource(recipe.data)
    added = SliceSource(recipe.added_data)
    base_sets, added_sets = label_sets(recipe.data), label_sets(recipe.added_data)
    root = work / "data"
    folders: dict[tuple[int, int], Path] = {}
    validation: Path | None = None
    for repeat in range(recipe.repeats):
        draw = draw_sets(
            len(base_sets),
            len(added_sets),
            base_sets=recipe.base_sets,
            max_added=max(recipe.added_sets),
            val_fraction=val_fraction,
            seed=recipe.seed,
            repeat=repeat,
        )
        if draw.validation and validation is None:
            validation = write_label_sets(
                root / "validation", [("validation", base, [base_sets[i] for i in draw.validation])]
            )
        for k in recipe.added_sets:
            parts = [("base", base, [base_sets[i] for i in draw.base])]
            if k:
                parts.append(("added", added, [added_sets[i] for i in draw.added(k)]))
            folders[(repeat, k)] = write_label_sets(root / f"repeat{repeat}-k{k}", parts)

    def training(repeat: int, k: int) -> Path:
        return folders[(repeat, k)]

    def validating(repeat: int, k: int) -> Path:
        return validation if validation is not None else folders[(repeat, k)]

    return training, validating


def _check_recipe(recipe: AblationRecipe) -> None:
    if not recipe.added_sets:
        raise SeglabError("recipe has no added.sets", "write added: {sets: [0, 5, 10]}")
    if len(set(recipe.added_sets)) != len(recipe.added_sets):
        raise SeglabError(f"added.sets {recipe.added_sets} repeats a value", "list each k once")
    if recipe.eval_data is None:
        raise SeglabError("recipe has no eval_data", "set eval_data: held-out labels of the cell")
    same = [
        name
        for name, path in (("data", recipe.data), ("added.data", recipe.added_data))
        if path is not None and Path(path).resolve() == Path(recipe.eval_data).resolve()
    ]
    if same:
        raise SeglabError(
            f"eval_data {recipe.eval_data} is also {same[0]}",
            "evaluate on held-out labels that no child trains on",
        )


def run_ablation(
    store: TrackingStore,
    recipe: AblationRecipe,
    *,
    out_dir: Path | None = None,
    fresh: bool = False,
    echo: Callable[[str], Any] = print,
    root: Path | None = None,
) -> StudyResult:
    """Run study B's label-budget ablation as a parent run with one child per training.

    Parameters
    ----------
    store : TrackingStore
        Where the runs (and the model of ``init``) are.
    recipe : AblationRecipe
    out_dir : Path, optional
        Report folder (default ``<work>/report``, ``<work>`` = ``studies/<name>-<digest>``).
    fresh : bool
        Start a new parent run instead of resuming this recipe's.
    echo : callable
        Progress lines.
    root : Path, optional
        Folder of the study work folders (default ``studies`` in the current folder).

    Returns
    -------
    StudyResult
        ``best``: the best child's key, run, F and registered version.

    Raises
    ------
    SeglabError
        Before any run: unknown config ids, an unknown or unfitting ``init`` model, too few
        labelled slices, ``eval_data`` equal to a training cell.
    """
    _check_recipe(recipe)
    extra = list(DATA_IDS) + (["initial_weights"] if recipe.init != "scratch" else [])
    check_config_ids(recipe, extra)
    work = work_folder(recipe, root)
    out = out_dir if out_dir is not None else work / "report"
    slices = {int(_bundle_values(recipe, arm, ["num_slices"])["num_slices"]) for arm in recipe.arms}
    if slices != {1}:
        echo(
            f"note: num_slices {sorted(slices)}: each label set is written as its own stack, "
            "so the neighbour channels repeat the slice, not adjacent images (use num_slices 1)"
        )
    weights, init_version = None, ""
    if recipe.init != "scratch":
        weights, init_version = prepare_initial_weights(store, recipe, work / "init")
        echo(f"fine-tuning from {recipe.init} (version {init_version})")
    val_fraction = float(
        recipe.overrides.get(
            "val_fraction", _bundle_values(recipe, Arm("", {}), ["val_fraction"])["val_fraction"]
        )
    )
    training, validating = prepare_data(recipe, work, val_fraction)
    children = ablation_children(recipe, training, validating, weights)

    study = StudyRun(store, recipe, fresh=fresh)
    try:
        client = study.client
        client.set_tag(study.run_id, "seglab.init", recipe.init)
        if init_version:
            client.set_tag(study.run_id, "seglab.init_version", init_version)
        echo(f"study {recipe.name}: {len(children)} children, parent run {study.run_id}")
        results, failures = run_children(
            study,
            children,
            lambda s, c: train_child(s, c, output_root=work / "checkpoints"),
            echo=echo,
        )
        rows, files = write_report(out, recipe, results)
        for path in files.values():
            client.log_artifact(study.run_id, str(path), "report")
        for row in rows:
            if math.isfinite(row["F"]):
                client.log_metric(study.run_id, _metric_name(row["arm"], row["k"]), row["F"])
        scored = [r for r in results if math.isfinite(r.metrics.get("final_f_score", math.nan))]
        best: dict[str, object] = {}
        if scored:
            top = max(scored, key=lambda r: r.metrics["final_f_score"])
            client.set_tag(study.run_id, "seglab.best_run", top.run_id)
            client.set_tag(study.run_id, "seglab.best_child", top.child.key)
            client.set_tag(top.run_id, "seglab.best_child", "true")
            registered = None
            if not failures:
                registered = _register_best(study, recipe, top, echo)
            best = {
                "key": top.child.key,
                "run_id": top.run_id,
                "f_score": top.metrics["final_f_score"],
                "registered": registered,
            }
    except BaseException as err:
        study.close(err)
        raise
    error = None
    if failures:
        error = SeglabError(
            f"{len(failures)} of {len(children)} children failed "
            f"({failures[0][0].key}: {failures[0][1]})",
            "fix the cause and run the recipe again; finished children are skipped",
        )
    study.close(error)
    lines = [
        f"{'arm':<12} {'k':>4} {'sets':>5} {'n':>3} {'threshold':>10} {'precision':>10} "
        f"{'recall':>8} {'F':>16}"
    ]
    lines += [
        f"{r['arm']:<12} {r['k']:>4} {r['sets']:>5} {r['repeats']:>3} {r['threshold']:>10.1f} "
        f"{r['precision']:>10.3f} {r['recall']:>8.3f} {_cell(r['F'], r['F_ci'], 3):>16}"
        for r in rows
    ]
    if failures:
        lines += [f"failed: {child.key}: {reason}" for child, reason in failures]
    return StudyResult(
        title=f"ablation {recipe.name}: parent run {study.run_id}",
        out=out,
        lines=lines,
        outputs=files,
        run_id=study.run_id,
        children=len(results) + len(failures),
        skipped=sum(r.skipped for r in results),
        failed=len(failures),
        best=best,
    )
