"""Study A's Table 2 as a study: networks x tiling presets (x arms x repeats), one child each.

Every combination of the recipe's ``grid`` (e.g. ``network_name`` x ``tiling_preset``), every
arm (e.g. ``weighted``: ``class_balance: inverse-frequency``, the suggested fix for the rare
class C5) and every repeat (seed ``seed + repeat``) trains one child run, nested under the
study's parent run. After its training (whose publisher logs ``final_dice_C1..C6``,
``final_mean_dice`` and ``final_total_dice`` on the evaluation data) each new model is loaded
back from MLflow and

- evaluated on its own training split (``train_total_dice``, ``train_mean_dice``,
  ``train_dice_C<k>``: Table 2's "train Dice"), when the recipe has ``evaluate_train``;
- measured for seam artefacts on the evaluation data: the error rate (prediction != truth)
  within ``SEAM_WIDTH`` px of the no-overlap tile boundaries (every 256 px) against the error
  rate elsewhere (``seam_error_rate``, ``interior_error_rate``, ``seam_excess`` = their
  difference); the label map of the first evaluation image is logged as ``seams/<name>.png``.

A child found FINISHED from an earlier, interrupted run is not trained again; what it lacks of
the above (the process died between training and analysis) is computed then.

The report (``table2.csv``, ``table2.md``, ``seams.png``, ``total_dice.png``) is written to
``out_dir`` and logged on the parent run under ``report/``, with summary metrics
``total_dice/<network>/<preset>[/<arm>]`` (and ``mean_dice/``, ``train_total_dice/``,
``seam_excess/``). The best child (highest ``final_total_dice``) is tagged and, with
``register``, its model registered.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seglab.errors import SeglabError
from seglab.io.dataset import scan_dataset
from seglab.io.images import read_image, write_image
from seglab.io.labels import LUNG_CLASSES, ColourTable
from seglab.studies.recipes import Recipe, TilingRecipe
from seglab.studies.report import StudyResult
from seglab.studies.runner import (
    Child,
    ChildResult,
    StudyRun,
    check_config_ids,
    result_from_run,
    run_children,
    study_run,
    train_child,
    work_folder,
)
from seglab.tracking.runs import close_run
from seglab.tracking.store import TrackingStore, artifact_access
from seglab.workflows._outputs import pyplot, save_figure, write_csv

__all__ = [
    "SEAM_WIDTH",
    "SeamErrors",
    "TableRow",
    "run_tiling",
    "seam_errors",
    "summarise",
    "tiling_children",
]

#: Half-width in pixels of the band around the no-overlap tile boundaries.
SEAM_WIDTH = 4
#: Tile size of study A's tiles (the no-overlap boundaries lie on its multiples).
TILE_SIZE = 256
#: Class columns of Table 2.
CLASS_COLUMNS = [f"C{i}" for i in range(1, 7)]
#: Table metrics: column -> metric of the child run.
TABLE_METRICS = {
    **{c: f"final_dice_{c}" for c in CLASS_COLUMNS},
    "mean": "final_mean_dice",
    "total": "final_total_dice",
    "train_total": "train_total_dice",
    "seam_error": "seam_error_rate",
    "interior_error": "interior_error_rate",
}
NETWORK_NAMES = {"unet": "U-Net", "segnet": "SegNet", "deeplabv3plus": "DeepLabV3+"}
TAG_BEST = "seglab.best_child"
TAG_REGISTERED = "seglab.registered"


# -- children -----------------------------------------------------------------------------------
def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def tiling_children(recipe: TilingRecipe) -> list[Child]:
    """Every child of a tiling recipe: product of the grid, x arms, x repeats.

    Parameters
    ----------
    recipe : TilingRecipe

    Returns
    -------
    list of Child
        Keys like ``network_name=unet tiling_preset=no-overlap arm=weighted repeat=0`` (no
        ``arm=`` part for the unnamed arm); overrides are the grid values, the arm's config ids
        and ``seed = recipe.seed + repeat``; labels hold the grid values, ``arm`` and
        ``repeat``.
    """
    if recipe.data is None:
        raise SeglabError("the tiling recipe has no data", "set data: to a dataset folder")
    keys = list(recipe.grid)
    children = []
    for values in itertools.product(*(recipe.grid[k] for k in keys)):
        for arm in recipe.arms:
            for repeat in range(recipe.repeats):
                parts = [f"{k}={_value_text(v)}" for k, v in zip(keys, values, strict=True)]
                if arm.name:
                    parts.append(f"arm={arm.name}")
                parts.append(f"repeat={repeat}")
                overrides = dict(zip(keys, values, strict=True))
                overrides |= arm.overrides | {"seed": recipe.seed + repeat}
                labels = {k: _value_text(v) for k, v in zip(keys, values, strict=True)}
                labels |= {"arm": arm.name, "repeat": repeat}
                children.append(Child(" ".join(parts), overrides, recipe.data, labels))
    return children


# -- seam measure -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeamErrors:
    """Wrong pixels near the no-overlap tile boundaries and elsewhere (summable over images).

    Attributes
    ----------
    seam_wrong, seam_pixels : int
        Wrong and all pixels within the band around the internal tile boundaries.
    other_wrong, other_pixels : int
        The same for the rest of the image.
    """

    seam_wrong: int = 0
    seam_pixels: int = 0
    other_wrong: int = 0
    other_pixels: int = 0

    def __add__(self, other: SeamErrors) -> SeamErrors:
        """Pool two counts."""
        return SeamErrors(
            self.seam_wrong + other.seam_wrong,
            self.seam_pixels + other.seam_pixels,
            self.other_wrong + other.other_wrong,
            self.other_pixels + other.other_pixels,
        )

    @property
    def seam_rate(self) -> float:
        """Error rate in the band (NaN without band pixels)."""
        return self.seam_wrong / self.seam_pixels if self.seam_pixels else math.nan

    @property
    def other_rate(self) -> float:
        """Error rate elsewhere (NaN without such pixels)."""
        return self.other_wrong / self.other_pixels if self.other_pixels else math.nan


def seam_band(
    shape: tuple[int, int], tile_size: int = TILE_SIZE, width: int = SEAM_WIDTH
) -> np.ndarray:
    """Mask of pixels within ``width`` px of the internal no-overlap tile boundaries.

    Parameters
    ----------
    shape : (int, int)
        Image shape (H, W), pixels.
    tile_size : int
        Tile size, pixels: boundaries lie at its multiples (0 < position < H or W).
    width : int
        Half-width of the band, pixels (rows ``b - width .. b + width - 1`` of boundary ``b``).

    Returns
    -------
    (H, W) ndarray of bool
        All False when the image fits in one tile.
    """
    if tile_size < 1 or width < 1:
        raise SeglabError(
            f"tile_size and width must be >= 1, got {tile_size} and {width}", "use e.g. 256 and 4"
        )
    band = np.zeros(shape, dtype=bool)
    for axis, n in enumerate(shape):
        line = np.zeros(n, dtype=bool)
        for boundary in range(tile_size, n, tile_size):
            line[max(0, boundary - width) : boundary + width] = True
        band |= line[:, None] if axis == 0 else line[None, :]
    return band


def seam_errors(
    prediction: np.ndarray,
    truth: np.ndarray,
    tile_size: int = TILE_SIZE,
    width: int = SEAM_WIDTH,
) -> SeamErrors:
    """Count wrong pixels near the no-overlap tile boundaries and elsewhere.

    Parameters
    ----------
    prediction, truth : (H, W) ndarray of int
        Class indices.
    tile_size, width : int
        See :func:`seam_band`.

    Returns
    -------
    SeamErrors
        Zero counts for an empty image.
    """
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    if prediction.shape != truth.shape or prediction.ndim != 2:
        raise SeglabError(
            f"prediction {prediction.shape} and truth {truth.shape} must be equal 2D shapes",
            "pass (H, W) label maps of one image",
        )
    wrong = prediction != truth
    band = seam_band(prediction.shape, tile_size, width)
    return SeamErrors(
        int(wrong[band].sum()), int(band.sum()), int(wrong[~band].sum()), int((~band).sum())
    )


# -- analysis of one child's model -----------------------------------------------------------------
def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _split_names(result: ChildResult, split: str) -> list[str]:
    """Sample names of the child's training or validation split (as its training drew them)."""
    from seglab.bundle import dataset_dicts

    params = result.params
    fraction = float(params.get("val_fraction", 0.2))
    seed = int(float(params.get("seed", 0)))
    return [d["name"] for d in dataset_dicts(result.child.data, split, fraction, seed)]  # type: ignore[arg-type]


def _model_id(store: TrackingStore, result: ChildResult) -> str:
    if result.model_id:
        return result.model_id
    tags = store.client().get_run(result.run_id).data.tags
    if "seglab.model_id" not in tags:
        raise SeglabError(
            f"child {result.child.key} (run {result.run_id}) has no logged model",
            "run the study again with --fresh",
        )
    return tags["seglab.model_id"]


def _load_model(store: TrackingStore, result: ChildResult, folder: Path) -> Any:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from seglab.models.publish import quiet_artifact_progress
    from seglab.models.pyfunc import load_downloaded_model

    location = store.client().get_logged_model(_model_id(store, result)).artifact_location
    quiet_artifact_progress()
    folder.mkdir(parents=True, exist_ok=True)
    with artifact_access(store):
        get_artifact_repository(location).download_artifacts("", str(folder))
    return load_downloaded_model(folder)


def _evaluation_set(recipe: Recipe, result: ChildResult) -> tuple[Path, list[str] | None]:
    """Return what the child's final evaluation used: eval_data, else its validation split."""
    if recipe.eval_data is not None:
        return recipe.eval_data, None
    names = _split_names(result, "val")
    return result.child.data, names or _split_names(result, "all")


def _needs(recipe: TilingRecipe, metrics: Mapping[str, float]) -> tuple[bool, bool]:
    train = recipe.evaluate_train and "train_total_dice" not in metrics
    return train, "seam_band_pixels" not in metrics


def analyse_child(
    store: TrackingStore, recipe: TilingRecipe, result: ChildResult, *, train: bool, seams: bool
) -> dict[str, float]:
    """Evaluate a child's logged model on its training split and measure seams; log both.

    Returns
    -------
    dict of str to float
        The metrics logged on the child's run.
    """
    from mlflow.entities import Metric

    from seglab.workflows.analysis import evaluate_model, model_input

    client = store.client()
    metrics: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="seglab-tiling-") as tmp:
        model = _load_model(store, result, Path(tmp) / "model")
        if train:
            names = _split_names(result, "train") or None
            out = Path(tmp) / "evaluation-train"
            out.mkdir()
            evaluation = evaluate_model(
                model, result.child.data, out, names=names, title="evaluation on the training data"
            )
            metrics |= {
                f"train_{k}": float(v)
                for k, v in evaluation.result.metrics.items()
                if k != "n_samples" and _finite(v)
            }
            with artifact_access(store):
                client.log_artifacts(result.run_id, str(out), "evaluation-train")
        if seams:
            data, names = _evaluation_set(recipe, result)
            dataset = scan_dataset(data)
            chosen = [s for s in dataset.samples if names is None or s.name in set(names)]
            pooled = SeamErrors()
            folder = Path(tmp) / "seams"
            for index, sample in enumerate(chosen):
                loaded = dataset.load(sample)
                if loaded.label is None or loaded.label.ndim != 2:
                    continue
                array, _ = model_input(model, loaded.image, loaded.axes)
                labels = model.labels(model.probabilities(array))
                pooled = pooled + seam_errors(labels, loaded.label)
                if index == 0:
                    write_image(folder / f"{sample.name}.png", labels.astype(np.uint8))
            metrics["seam_band_pixels"] = float(pooled.seam_pixels)
            if pooled.seam_pixels:
                metrics |= {
                    "seam_error_rate": pooled.seam_rate,
                    "interior_error_rate": pooled.other_rate,
                    "seam_excess": pooled.seam_rate - pooled.other_rate,
                }
            if folder.is_dir():
                with artifact_access(store):
                    client.log_artifacts(result.run_id, str(folder), "seams")
    now = int(time.time() * 1000)
    if metrics:
        client.log_batch(
            result.run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items() if _finite(v)]
        )
    return metrics


def _analyse_or_fail(
    store: TrackingStore, recipe: TilingRecipe, result: ChildResult, *, train: bool, seams: bool
) -> dict[str, float]:
    """:func:`analyse_child`, with MLflow's errors as one-line :class:`SeglabError`."""
    from mlflow.exceptions import MlflowException

    try:
        return analyse_child(store, recipe, result, train=train, seams=seams)
    except MlflowException as err:
        raise SeglabError(
            f"analysis of child {result.child.key} (run {result.run_id}) failed: {err.message}",
            "check the store and run the recipe again (the training is kept)",
        ) from err


# -- the table -----------------------------------------------------------------------------------
@dataclass
class TableRow:
    """One row of Table 2: a grid combination x arm, over its repeats.

    Attributes
    ----------
    labels : dict of str to str
        Grid values and ``arm``.
    values : dict of str to list of float
        Column (``C1``..``C6``, ``mean``, ``total``, ``train_total``, ``seam_error``,
        ``interior_error``) -> the repeats' values as fractions (NaN where a run lacks it).
    run_ids : list of str
    """

    labels: dict[str, str]
    values: dict[str, list[float]]
    run_ids: list[str]

    @property
    def name(self) -> str:
        """Table 2's row name, e.g. ``U-Net (uniform-81, weighted)``."""
        labels = dict(self.labels)
        network = labels.pop("network_name", None)
        preset = labels.pop("tiling_preset", None)
        arm = labels.pop("arm", "")
        inside = [p for p in (preset, *(f"{k}={v}" for k, v in labels.items()), arm) if p]
        head = NETWORK_NAMES.get(network, network) if network else "model"
        return f"{head} ({', '.join(inside)})" if inside else head

    def stat(self, column: str) -> tuple[float, float, int]:
        """Mean, 95 % confidence half-width (t distribution; NaN for one value) and count."""
        from scipy import stats

        values = np.array([v for v in self.values[column] if math.isfinite(v)], dtype=float)
        n = len(values)
        if n == 0:
            return math.nan, math.nan, 0
        mean = float(values.mean())
        if n == 1:
            return mean, math.nan, 1
        sem = float(values.std(ddof=1)) / math.sqrt(n)
        return mean, float(stats.t.ppf(0.975, n - 1) * sem), n


def summarise(results: Sequence[ChildResult]) -> list[TableRow]:
    """Group child results by grid values and arm (over repeats), in the children's order."""
    rows: dict[tuple, TableRow] = {}
    for result in results:
        labels = {k: str(v) for k, v in result.child.labels.items() if k != "repeat"}
        key = tuple(labels.items())
        row = rows.setdefault(key, TableRow(labels, {c: [] for c in TABLE_METRICS}, []))
        for column, metric in TABLE_METRICS.items():
            row.values[column].append(float(result.metrics.get(metric, math.nan)))
        row.run_ids.append(result.run_id)
    return list(rows.values())


def _percent(mean: float, half: float) -> str:
    if not math.isfinite(mean):
        return "-"
    text = f"{100 * mean:.1f}"
    return text + (f" ± {100 * half:.1f}" if math.isfinite(half) else "")


MARKDOWN_COLUMNS = [
    *((c, c) for c in CLASS_COLUMNS),
    ("Avg", "mean"),
    ("Dice", "total"),
    ("train Dice", "train_total"),
    ("seam err", "seam_error"),
    ("other err", "interior_error"),
]


def table_markdown(rows: Sequence[TableRow]) -> list[str]:
    """Table 2 as Markdown lines (percent; mean ± 95 % CI half-width with repeats)."""
    header = ["model (tiling)", *(h for h, _ in MARKDOWN_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.name, *(_percent(*row.stat(c)[:2]) for _, c in MARKDOWN_COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _table_records(rows: Sequence[TableRow], keys: Sequence[str]) -> tuple[list[dict], list[str]]:
    columns = [*keys, "arm", "model", "n"]
    for column in TABLE_METRICS:
        columns += [column, f"{column}_ci95"]
    columns.append("run_ids")
    records = []
    for row in rows:
        record: dict[str, Any] = dict(row.labels) | {"model": row.name}
        record["n"] = max(row.stat(c)[2] for c in TABLE_METRICS)
        for column in TABLE_METRICS:
            mean, half, _ = row.stat(column)
            record[column] = round(100 * mean, 4) if math.isfinite(mean) else ""
            record[f"{column}_ci95"] = round(100 * half, 4) if math.isfinite(half) else ""
        record["run_ids"] = " ".join(row.run_ids)
        records.append(record)
    return records, columns


# -- figures -------------------------------------------------------------------------------------
def _group(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in labels.items() if k != "tiling_preset")


def _preset(labels: Mapping[str, str]) -> str:
    return labels.get("tiling_preset", "")


def _group_name(group: tuple[tuple[str, str], ...]) -> str:
    labels = dict(group)
    network = labels.pop("network_name", None)
    arm = labels.pop("arm", "")
    parts = [NETWORK_NAMES.get(network, network)] if network else []
    parts += [f"{k}={v}" for k, v in labels.items()] + ([arm] if arm else [])
    return " ".join(parts) or "model"


def plot_total_dice(path: Path, rows: Sequence[TableRow]) -> Path:
    """Bar chart of total Dice (%) per network (x arm) and tiling preset, with 95 % CIs."""
    plt = pyplot()
    groups = list(dict.fromkeys(_group(r.labels) for r in rows))
    presets = list(dict.fromkeys(_preset(r.labels) for r in rows))
    width = 0.8 / max(1, len(presets))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(groups) + 1), 3.2))
    for p, preset in enumerate(presets):
        xs, heights, errors = [], [], []
        for g, group in enumerate(groups):
            row = next(
                (r for r in rows if _group(r.labels) == group and _preset(r.labels) == preset),
                None,
            )
            if row is None:
                continue
            mean, half, _ = row.stat("total")
            xs.append(g + (p - (len(presets) - 1) / 2) * width)
            heights.append(100 * mean if math.isfinite(mean) else 0.0)
            errors.append(100 * half if math.isfinite(half) else 0.0)
        ax.bar(xs, heights, width, yerr=errors, capsize=3, label=preset or "default")
    ax.set_xticks(range(len(groups)), [_group_name(g) for g in groups])
    ax.set_ylabel("total Dice (%)")
    ax.set_ylim(0, 100)
    ax.legend(title="tiling", fontsize=8)
    ax.set_title("total Dice on the evaluation data")
    return save_figure(fig, path)


def _seam_panels(
    store: TrackingStore, results: Sequence[ChildResult], folder: Path
) -> tuple[str | None, dict[tuple, dict[str, tuple[np.ndarray, ChildResult]]]]:
    """Download each first-repeat child's ``seams/`` label map; group by row, then preset."""
    client = store.client()
    panels: dict[tuple, dict[str, tuple[np.ndarray, ChildResult]]] = {}
    name = None
    for result in results:
        if result.child.labels.get("repeat", 0) != 0:
            continue
        target = folder / result.run_id
        target.mkdir(parents=True)
        try:
            with artifact_access(store):
                client.download_artifacts(result.run_id, "seams", str(target))
        except Exception:  # noqa: BLE001 - a child without the artifact is left out of the figure
            continue
        files = sorted((target / "seams").glob("*.png"))
        if not files:
            continue
        name = name or files[0].stem
        chosen = next((f for f in files if f.stem == name), None)
        if chosen is None:
            continue
        labels = {k: str(v) for k, v in result.child.labels.items() if k != "repeat"}
        preset = labels.get("tiling_preset", "")
        panels.setdefault(_group(labels), {})[preset] = (read_image(chosen).array, result)
    return name, panels


def plot_seams(
    path: Path,
    image: np.ndarray | None,
    truth: np.ndarray,
    panels: Mapping[tuple, Mapping[str, tuple[np.ndarray, ChildResult]]],
    title: str,
    table: ColourTable = LUNG_CLASSES,
) -> Path:
    """Image | truth | one predicted label map per preset, per row; tile boundaries drawn."""
    plt = pyplot()
    presets = list(dict.fromkeys(p for row in panels.values() for p in row))
    n_cols = 2 + len(presets)
    fig, axes = plt.subplots(
        len(panels), n_cols, figsize=(2.6 * n_cols, 2.7 * len(panels)), squeeze=False
    )
    boundaries = [range(TILE_SIZE, n, TILE_SIZE) for n in truth.shape]

    def draw(ax: Any, array: np.ndarray | None, text: str, lines: bool) -> None:
        if array is not None:
            ax.imshow(array, interpolation="nearest")
        if lines:
            for y in boundaries[0]:
                ax.axhline(y - 0.5, color="white", lw=0.6, ls="--")
            for x in boundaries[1]:
                ax.axvline(x - 0.5, color="white", lw=0.6, ls="--")
        ax.set_title(text, fontsize=8)
        ax.set_axis_off()

    for r, (group, row) in enumerate(panels.items()):
        draw(axes[r, 0], image, f"{_group_name(group)}: image", False)
        draw(axes[r, 1], table.encode(truth), "truth", True)
        for c, preset in enumerate(presets, start=2):
            if preset not in row:
                draw(axes[r, c], None, f"{preset}: missing", False)
                continue
            labels, result = row[preset]
            seam = result.metrics.get("seam_error_rate", math.nan)
            other = result.metrics.get("interior_error_rate", math.nan)
            text = (
                f"{preset or 'default'}\n"
                f"error {100 * seam:.1f} % at seams, {100 * other:.1f} % else"
            )
            draw(axes[r, c], table.encode(labels.astype(np.uint8)), text, True)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def _seam_figure(
    store: TrackingStore, recipe: TilingRecipe, results: Sequence[ChildResult], path: Path
) -> Path | None:
    with tempfile.TemporaryDirectory(prefix="seglab-seams-") as tmp:
        name, panels = _seam_panels(store, results, Path(tmp))
        if name is None or not panels:
            return None
        data = recipe.eval_data if recipe.eval_data is not None else recipe.data
        dataset = scan_dataset(data)  # type: ignore[arg-type]
        sample = next((s for s in dataset.samples if s.name == name), None)
        if sample is None:
            return None
        loaded = dataset.load(sample)
        if loaded.label is None or loaded.label.ndim != 2:
            return None
        image = loaded.image if loaded.axes in ("YX", "YXC") else None
        title = (
            f"{name}: predicted classes; dashed lines = the no-overlap tile boundaries "
            f"(every {TILE_SIZE} px); seam band ±{SEAM_WIDTH} px"
        )
        table = dataset.colour_table or LUNG_CLASSES
        return plot_seams(path, image, loaded.label, panels, title, table)


# -- the study -----------------------------------------------------------------------------------
def _metric_name(*parts: str) -> str:
    return "/".join(re.sub(r"[^A-Za-z0-9_.\- ]+", "_", p) for p in parts if p)


def _parent_metrics(rows: Sequence[TableRow]) -> dict[str, float]:
    metrics = {}
    for row in rows:
        path = [*(v for k, v in row.labels.items() if k != "arm"), row.labels.get("arm", "")]
        for column, prefix in (
            ("total", "total_dice"),
            ("mean", "mean_dice"),
            ("train_total", "train_total_dice"),
        ):
            mean = row.stat(column)[0]
            if math.isfinite(mean):
                metrics[_metric_name(prefix, *path)] = mean
        seam, other = row.stat("seam_error")[0], row.stat("interior_error")[0]
        if math.isfinite(seam) and math.isfinite(other):
            metrics[_metric_name("seam_excess", *path)] = seam - other
    return metrics


def _mark_best(
    study: StudyRun, results: Sequence[ChildResult], echo: Callable[[str], Any]
) -> dict[str, object]:
    scored = [r for r in results if _finite(r.metrics.get("final_total_dice"))]
    if not scored:
        return {}
    best = max(scored, key=lambda r: r.metrics["final_total_dice"])
    client = study.client
    for result in results:
        if result is not best and TAG_BEST in client.get_run(result.run_id).data.tags:
            client.delete_tag(result.run_id, TAG_BEST)
    client.set_tag(best.run_id, TAG_BEST, "true")
    client.set_tag(study.run_id, TAG_BEST, best.run_id)
    info: dict[str, object] = {
        "key": best.child.key,
        "run_id": best.run_id,
        "total_dice": best.metrics["final_total_dice"],
    }
    name = study.recipe.register
    if name:
        registered = client.get_run(best.run_id).data.tags.get(TAG_REGISTERED)
        if registered and registered.startswith(f"{name}/"):
            info["registered"] = registered
        else:
            info["registered"] = _register(study, best, name)
            echo(f"registered the best child's model as {info['registered']}")
    return info


def _register(study: StudyRun, best: ChildResult, name: str) -> str:
    from datetime import UTC, datetime

    from seglab.models.publish import LoggedBundleModel, register_model
    from seglab.models.registry import Evaluation, record_evaluation

    store, client = study.store, study.client
    model_id = _model_id(store, best)
    logged = LoggedBundleModel(
        model_id, client.get_logged_model(model_id).artifact_location, best.run_id
    )
    version = register_model(store, name, logged, description=f"study {study.recipe.name}")
    tags = client.get_run(best.run_id).data.tags
    if "seglab.eval_digest" in tags:
        data = study.recipe.eval_data or study.recipe.data
        record = Evaluation(
            metric="total_dice",
            value=float(best.metrics["final_total_dice"]),
            dataset=Path(str(data)).name,
            digest=tags["seglab.eval_digest"],
            time=datetime.now(UTC).isoformat(timespec="seconds"),
            run_id=best.run_id,
        )
        record_evaluation(store, name, str(version.version), record)
    text = f"{name}/{version.version}"
    client.set_tag(best.run_id, TAG_REGISTERED, text)
    return text


def run_tiling(
    store: TrackingStore,
    recipe: Recipe,
    *,
    out_dir: Path | None = None,
    fresh: bool = False,
    echo: Callable[[str], Any] = print,
    root: Path | None = None,
) -> StudyResult:
    """Run a tiling recipe (study A's Table 2) as a parent run with one child per training.

    Parameters
    ----------
    store : TrackingStore
    recipe : TilingRecipe
    out_dir : Path, optional
        Report folder (default ``<work folder>/report``); also logged as ``report/`` on the
        parent run.
    fresh : bool
        Start a new parent run instead of resuming this recipe's.
    echo : callable
        Progress lines.
    root : Path, optional
        Folder of the study work folders (default ``studies`` in the current folder); this
        study's checkpoints go to ``root/<name>-<digest>/children``.

    Returns
    -------
    StudyResult
        Lines: the table; ``best``: the best child's key, run id, total Dice (and registered
        version); ``failed``: children that failed (the parent run then ends FAILED).

    Raises
    ------
    SeglabError
        A recipe of another kind, or config ids the bundle lacks (before any run).
    """
    if not isinstance(recipe, TilingRecipe):
        raise SeglabError(
            f"recipe {recipe.name} is a {recipe.kind} recipe, not tiling", "run it with run_recipe"
        )
    check_config_ids(recipe, extra=["seed"])
    children = tiling_children(recipe)
    work = work_folder(recipe, root)
    out = out_dir if out_dir is not None else work / "report"

    def train(study: StudyRun, child: Child) -> str:
        run_id = train_child(study, child, output_root=work / "children")
        run = study.client.get_run(run_id)
        result = result_from_run(child, run, skipped=False)
        want_train, want_seams = _needs(recipe, result.metrics)
        _analyse_or_fail(store, recipe, result, train=want_train, seams=want_seams)
        return run_id

    with study_run(store, recipe, fresh=fresh) as study:
        echo(
            f"study {recipe.name} ({'resumed' if study.resumed else 'new'} parent run "
            f"{study.run_id}): {len(children)} children"
        )
        results, failures = run_children(study, children, train, echo=echo)
        for result in results:
            want_train, want_seams = _needs(recipe, result.metrics)
            if want_train or want_seams:
                echo(f"{result.child.key}: completing its analysis")
                result.metrics |= _analyse_or_fail(
                    store, recipe, result, train=want_train, seams=want_seams
                )
        rows = summarise(results)
        out.mkdir(parents=True, exist_ok=True)
        outputs: dict[str, Path] = {}
        lines = table_markdown(rows)
        if rows:
            records, columns = _table_records(rows, list(recipe.grid))
            outputs["table"] = write_csv(out / "table2.csv", records, columns)
            notes = [
                "",
                "Dice in percent on the evaluation data (train Dice: on each model's training "
                "split); with repeats mean ± 95 % confidence half-width (t distribution).",
                f"seam err / other err: pixel error rate within ±{SEAM_WIDTH} px of the "
                f"no-overlap tile boundaries (every {TILE_SIZE} px) / elsewhere.",
            ]
            from seglab.io.atomic import atomic_file

            with atomic_file(out / "table2.md") as tmp:
                tmp.write_text(f"# {recipe.name}: Table 2\n\n" + "\n".join(lines + notes) + "\n")
            outputs["table (Markdown)"] = out / "table2.md"
            outputs["total Dice chart"] = plot_total_dice(out / "total_dice.png", rows)
            seams = _seam_figure(store, recipe, results, out / "seams.png")
            if seams is not None:
                outputs["seam figure"] = seams
            metrics = _parent_metrics(rows)
            if metrics:
                from mlflow.entities import Metric

                now = int(time.time() * 1000)
                study.client.log_batch(
                    study.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()]
                )
            with artifact_access(store):
                study.client.log_artifacts(study.run_id, str(out), "report")
        best = _mark_best(study, results, echo)
    if failures:
        close_run(
            study.handle,
            SeglabError(
                f"{len(failures)} of {len(children)} children failed: "
                + "; ".join(f"{c.key}: {reason}" for c, reason in failures)[:300],
                "fix the cause and run the recipe again (finished children are kept)",
            ),
        )
    skipped = sum(r.skipped for r in results)
    result = StudyResult(
        title=(
            f"tiling study {recipe.name}: {len(results)} of {len(children)} children finished "
            f"({skipped} from an earlier run), {len(failures)} failed; parent run {study.run_id}"
        ),
        out=out,
        lines=lines,
        outputs=outputs,
        run_id=study.run_id,
        children=len(results),
        skipped=skipped,
        failed=len(failures),
        best=best,
    )
    if best:
        result.lines.append(
            f"best: {best['key']} (run {best['run_id']}), total Dice "
            f"{100 * float(best['total_dice']):.1f} %"  # type: ignore[arg-type]
        )
    for child, reason in failures:
        result.lines.append(f"failed: {child.key}: {reason}")
    return result
