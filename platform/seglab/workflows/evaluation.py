"""The evaluation report behind ``seglab evaluate``: tables, figures and ``report.md``.

Two kinds of evaluation, one per study:

- :func:`evaluate_multiclass` (study A): per-class Dice D_c, total Dice D and the class mean
  ("Avg."), per image and pooled over all images from summed confusion matrices.
- :func:`evaluate_binary` (study B): precision, recall and F over the threshold sweep 0..255
  (``prob >= t``); the model threshold is study B's (the mean of the per-sample best thresholds,
  see :func:`seglab.metrics.choose_threshold`), with t = 128 and the best pooled-F threshold
  reported beside it.

Both stream their samples: only pixel counts and the few samples shown as overlays are kept,
and nothing is written until every sample has been read and validated. Files are written
atomically into ``out_dir``; whether ``out_dir`` may already exist is the caller's policy.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from seglab.errors import SeglabError
from seglab.io.atomic import atomic_file
from seglab.metrics import (
    BinaryScores,
    ThresholdChoice,
    ThresholdSweep,
    choose_threshold_from_sweeps,
    confusion_matrix,
    dice_from_confusion,
    probability_to_uint8,
    threshold_sweep,
)
from seglab.workflows._outputs import Summary, pyplot, save_figure, write_csv, write_json

FIXED_THRESHOLD = 128
"""Threshold 0..255 that corresponds to probability 0.5, reported beside the chosen one."""

THRESHOLD_RULE = (
    "study B: for each sample the threshold with the highest F (the lowest one on ties); "
    "the model threshold is the mean of these, rounded to the nearest integer to binarise "
    "(prob >= t)"
)

MultiSample = tuple[str, np.ndarray | None, np.ndarray, np.ndarray]
BinarySample = tuple[str, np.ndarray | None, np.ndarray, np.ndarray]


@dataclass
class EvaluationResult:
    """What an evaluation computed and wrote.

    Attributes
    ----------
    kind : {"multiclass", "binary"}
    title : str
        Title of ``report.md``.
    n_samples : int
        Number of evaluated samples (images or volumes).
    metrics : dict of str to float
        Flat scalars for MLflow. Multiclass: ``total_dice``, ``mean_dice``, ``dice_C1`` ..
        ``dice_Ck`` (pooled; NaN for a class absent from every truth and prediction),
        ``n_samples``. Binary: ``f_score``, ``precision``, ``recall`` (pooled, at the chosen
        threshold), ``threshold`` (mean of the per-sample best), ``applied_threshold``,
        ``f_score_at_128``, ``precision_at_128``, ``recall_at_128``, ``best_pooled_threshold``,
        ``best_pooled_f_score``, ``n_samples``.
    key_metric : str
        ``"total_dice"`` (multiclass) or ``"f_score"`` (binary).
    key_value : float
        ``metrics[key_metric]``.
    out_dir : Path
    files : list of Path
        Every file written, ``report.md`` last.
    rows : list of dict
        The main table: per-class rows plus class mean and total (multiclass, as
        ``per_class.csv``), or one row per threshold rule (binary, as ``thresholds.csv``).
    per_image : list of dict
        The rows of ``per_image.csv``.
    """

    kind: Literal["multiclass", "binary"]
    title: str
    n_samples: int
    metrics: dict[str, float]
    key_metric: str
    key_value: float
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    per_image: list[dict[str, Any]] = field(default_factory=list)

    @property
    def report_path(self) -> Path:
        """Path of ``report.md``."""
        return self.out_dir / "report.md"

    def summary(self) -> Summary:
        """Return a :class:`Summary` for the command line: the headline scores and the files."""
        summary = Summary(self.title, self.out_dir)
        m = self.metrics
        if self.kind == "multiclass":
            summary.lines.append(
                f"{self.n_samples} images: total Dice {100 * m['total_dice']:.1f} %, "
                f"class mean {100 * m['mean_dice']:.1f} %"
            )
        else:
            summary.lines.append(
                f"{self.n_samples} samples: threshold {m['threshold']:.1f} "
                f"(applied {m['applied_threshold']:.0f}), precision {m['precision']:.3f}, "
                f"recall {m['recall']:.3f}, F {m['f_score']:.3f}"
            )
        summary.outputs = {
            p.relative_to(self.out_dir).as_posix(): p
            for p in self.files
            if p.parent == self.out_dir
        }
        if (self.out_dir / "overlays").is_dir():
            summary.outputs["overlays"] = self.out_dir / "overlays"
        return summary


# --------------------------------------------------------------------------- shared helpers
def _safe_name(name: str, taken: set[str]) -> str:
    """Make a file name of ``name``: ``[A-Za-z0-9._-]`` only, unique within ``taken``."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "sample"
    candidate, i = base, 2
    while candidate in taken:
        candidate, i = f"{base}_{i}", i + 1
    taken.add(candidate)
    return candidate


def _unpack(sample: Any, index: int) -> tuple[str, Any, np.ndarray, np.ndarray]:
    try:
        name, image, first, second = sample
    except (TypeError, ValueError) as err:
        raise SeglabError(
            f"sample {index} is not a (name, image, prediction, truth) tuple",
            "yield 4-tuples: name, image (or None), prediction or probability, truth",
        ) from err
    return str(name), image, np.asarray(first), np.asarray(second)


def _check_pair(name: str, what: str, first: np.ndarray, truth: np.ndarray) -> None:
    if first.shape != truth.shape:
        raise SeglabError(
            f"sample {name!r}: {what} shape {first.shape} differs from truth shape {truth.shape}",
            f"give the {what} and the truth the same (H, W) or (Z, H, W) shape "
            "(resize or crop one of them, and check that the sample names are paired)",
        )
    if first.ndim not in (2, 3):
        raise SeglabError(
            f"sample {name!r}: {what} has shape {first.shape}, expected (H, W) or (Z, H, W)",
            "pass one 2D image or one 3D volume per sample, without batch or channel axes",
        )


def _display_image(name: str, image: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """Image as (H, W) or (H, W, 3) uint8 for display (middle slice of a volume); checked."""
    if image is None:
        return None
    image = np.asarray(image)
    if (
        len(shape) == 2
        and image.ndim == 3
        and image.shape[0] in (3, 4)
        and image.shape[1:] == shape
    ):
        image = np.moveaxis(image, 0, -1)  # channel-first colour image
    if not (
        image.shape == shape or (image.shape[:-1] == shape and image.shape[-1] in (3, 4))
    ) or not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise SeglabError(
            f"sample {name!r}: image shape {image.shape} (dtype {image.dtype}) does not fit the "
            f"label shape {shape}",
            "pass the image as (H, W) or (H, W, 3) numbers matching the labels, or None",
        )
    if len(shape) == 3:
        image = image[shape[0] // 2]
    if image.ndim == 3:
        image = image[..., :3]
    if image.dtype != np.uint8:
        a = image.astype(np.float64)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        image = np.rint(255 * (a - lo) / (hi - lo if hi > lo else 1.0)).astype(np.uint8)
    return np.ascontiguousarray(image)


def _middle(a: np.ndarray) -> np.ndarray:
    return np.array(a[a.shape[0] // 2] if a.ndim == 3 else a)


def _shape_text(shapes: set[tuple[int, ...]]) -> str:
    text = ", ".join(" x ".join(str(n) for n in s) for s in sorted(shapes)[:5])
    return text + (", ..." if len(shapes) > 5 else "")


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}"


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _write_report(path: Path, lines: list[str]) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path


def _nanmean(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Mean over ``axis`` ignoring NaN; NaN where every value is NaN (without a warning)."""
    defined = ~np.isnan(values)
    count = defined.sum(axis=axis)
    total = np.where(defined, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.where(count > 0, count, 1), np.nan)


# --------------------------------------------------------------------------- multiclass
def _class_colours(colours: Any, n_classes: int) -> np.ndarray:
    if colours is None:
        plt = pyplot()
        cmap = plt.get_cmap("tab10" if n_classes <= 10 else "tab20")
        rgb = [cmap(i % cmap.N)[:3] for i in range(n_classes)]
        return np.rint(np.array(rgb) * 255).astype(np.uint8)
    table = np.asarray(colours)
    if (
        table.shape != (n_classes, 3)
        or not np.issubdtype(table.dtype, np.number)
        or table.min() < 0
        or table.max() > 255
    ):
        raise SeglabError(
            f"class colours must be {n_classes} RGB triples of 0..255, got shape {table.shape}",
            "pass one (r, g, b) per class in class order, e.g. colour_table.colours",
        )
    return table.astype(np.uint8)


def _check_class_names(class_names: Sequence[str]) -> list[str]:
    names = [str(n) for n in class_names]
    if not names:
        raise SeglabError("no class names given", "pass one name per class, in label order")
    if len(set(names)) != len(names):
        raise SeglabError(f"class names repeat in {names}", "give each class its own name")
    return names


def evaluate_multiclass(
    samples: Iterable[MultiSample],
    class_names: Sequence[str],
    out_dir: str | os.PathLike[str],
    *,
    title: str = "",
    overlays: int = 3,
    colours: Sequence[Sequence[int]] | np.ndarray | None = None,
) -> EvaluationResult:
    """Evaluate multi-class label maps as study A does and write tables, figures and a report.

    Parameters
    ----------
    samples : iterable of (str, ndarray or None, ndarray, ndarray)
        ``(name, image, prediction, truth)`` per image, read once: ``image`` is (H, W) or
        (H, W, 3) uint8 (other numbers are min-max scaled; (3, H, W) is accepted; None leaves
        the image panel out), used only for overlays; ``prediction`` and ``truth`` are (H, W)
        (or (Z, H, W)) ndarray of int, class indices 0..k-1.
    class_names : sequence of str
        Name of class 0..k-1; columns are labelled C1..Ck in this order.
    out_dir : path-like
        Folder to write into (created if missing; existing files of the same names replaced).
    title : str
        Title of the report; default "Multiclass evaluation".
    overlays : int
        Number of images (the first ones) drawn as image | truth | prediction.
    colours : (k, 3) array-like of int 0..255, optional
        RGB colour of each class for the overlays (e.g. ``ColourTable.colours``); default a
        tab10/tab20 palette.

    Returns
    -------
    EvaluationResult
        Writes ``per_image.csv`` (name, C1..Ck, mean, total, absent), ``per_class.csv`` (one
        row per class with the pooled Dice, then the class mean and the total), ``confusion.csv``
        (pixel counts, true class per row), ``confusion.png`` (row-normalised),
        ``overlays/<name>.png``, ``metrics.json`` and ``report.md``.

    Notes
    -----
    A class absent from both the truth and the prediction of an image has Dice 0/0: it is
    NaN, left out of that image's class mean, and listed in the ``absent`` column. Pooled Dice
    comes from the confusion matrix summed over all images (so large images weigh more); a
    class absent from every image is NaN and left out of the pooled class mean.
    """
    names = _check_class_names(class_names)
    n_classes = len(names)
    palette = _class_colours(colours, n_classes)
    out_dir = Path(out_dir)
    columns = [f"C{i + 1}" for i in range(n_classes)]

    pooled = np.zeros((n_classes, n_classes), dtype=np.int64)
    per_image_rows: list[dict[str, Any]] = []
    per_image_dice: list[np.ndarray] = []
    shown: list[tuple[str, np.ndarray | None, np.ndarray, np.ndarray, float]] = []
    shapes: set[tuple[int, ...]] = set()
    for index, sample in enumerate(samples):
        name, image, prediction, truth = _unpack(sample, index)
        _check_pair(name, "prediction", prediction, truth)
        try:
            matrix = confusion_matrix(prediction, truth, n_classes)
        except SeglabError as err:
            raise SeglabError(f"sample {name!r}: {err.problem}", err.fix) from err
        display = _display_image(name, image, truth.shape) if len(shown) < overlays else None
        dice = dice_from_confusion(matrix)
        pooled += matrix
        shapes.add(truth.shape)
        per_image_dice.append(dice.per_class)
        per_image_rows.append(
            {"name": name}
            | {c: float(v) for c, v in zip(columns, dice.per_class, strict=True)}
            | {
                "mean": dice.mean,
                "total": dice.total,
                "absent": " ".join(columns[i] for i in dice.absent),
            }
        )
        if len(shown) < overlays:
            shown.append((name, display, _middle(truth), _middle(prediction), dice.total))
    if not per_image_rows:
        raise SeglabError("no samples to evaluate", "pass at least one (name, image, pred, truth)")

    scores = dice_from_confusion(pooled)
    image_mean = _nanmean(np.stack(per_image_dice))
    images_with = (~np.isnan(np.stack(per_image_dice))).sum(axis=0)
    n = len(per_image_rows)
    truth_px, predicted_px = pooled.sum(axis=1), pooled.sum(axis=0)
    per_class_rows: list[dict[str, Any]] = [
        {
            "class": columns[i],
            "name": names[i],
            "dice": float(scores.per_class[i]),
            "image_mean": float(image_mean[i]),
            "images": int(images_with[i]),
            "truth_pixels": int(truth_px[i]),
            "predicted_pixels": int(predicted_px[i]),
        }
        for i in range(n_classes)
    ]
    image_mean_of_mean = float(_nanmean(np.array([r["mean"] for r in per_image_rows])))
    image_mean_of_total = float(np.mean([r["total"] for r in per_image_rows]))
    per_class_rows.append(
        {"class": "mean", "name": "class mean (Avg.)", "dice": scores.mean}
        | {"image_mean": image_mean_of_mean, "images": n}
    )
    per_class_rows.append(
        {"class": "total", "name": "total Dice", "dice": scores.total}
        | {"image_mean": image_mean_of_total, "images": n}
        | {"truth_pixels": int(pooled.sum()), "predicted_pixels": int(pooled.sum())}
    )

    metrics = {"total_dice": scores.total, "mean_dice": scores.mean}
    metrics |= {f"dice_{c}": float(v) for c, v in zip(columns, scores.per_class, strict=True)}
    metrics["n_samples"] = float(n)

    files = [
        write_csv(
            out_dir / "per_image.csv",
            per_image_rows,
            ["name", *columns, "mean", "total"] + ["absent"],
        ),
        write_csv(
            out_dir / "per_class.csv",
            per_class_rows,
            ["class", "name", "dice", "image_mean", "images", "truth_pixels", "predicted_pixels"],
        ),
        write_csv(
            out_dir / "confusion.csv",
            [
                {"truth \\ prediction": names[i]}
                | dict(zip(names, pooled[i].tolist(), strict=True))
                for i in range(n_classes)
            ],
            ["truth \\ prediction", *names],
        ),
        _plot_confusion(out_dir / "confusion.png", pooled, names),
    ]
    taken: set[str] = set()
    overlay_files = [
        _plot_multiclass_overlay(out_dir / "overlays", item, palette, names, taken)
        for item in shown
    ]
    files += overlay_files
    files.append(write_json(out_dir / "metrics.json", metrics))

    title = title or "Multiclass evaluation"
    lines = [f"# {title}", ""]
    lines.append(
        f"{n} image{'s' if n != 1 else ''} ({_shape_text(shapes)} px; {int(pooled.sum())} pixels "
        f"in all), {n_classes} classes."
    )
    lines += ["", "## Dice (percent, study A Table 2 layout)", ""]
    header = ["", *columns, "Avg.", "Dice"]
    lines += _markdown_table(
        header,
        [
            [f"pooled over {n} images"]
            + [_percent(v) for v in scores.per_class]
            + [_percent(scores.mean), _percent(scores.total)],
            ["mean over images"]
            + [_percent(v) for v in image_mean]
            + [_percent(image_mean_of_mean), _percent(image_mean_of_total)],
        ],
    )
    lines += [
        "",
        "Classes: " + "; ".join(f"{c} {nm}" for c, nm in zip(columns, names, strict=True)),
    ]
    lines += [
        "",
        "Per-class Dice D_c = 2 |P_c ∩ G_c| / (|P_c| + |G_c|); total Dice D = 2 |P ∩ G| / "
        "(|P| + |G|), which for one label per pixel is the fraction of correctly labelled "
        "pixels; Avg. = mean of the defined D_c. *Pooled* counts pixels over all images (one "
        "confusion matrix); *mean over images* averages the per-image values.",
        "",
        "## Absent classes",
        "",
        "A class absent from both the truth and the prediction of an image has an undefined Dice "
        "(0/0): it is written as NaN (`nan` in the CSV files, n/a here) and left out of that "
        "image's class mean and of the mean over images. A class absent from the truth but "
        "predicted scores 0.",
        "",
    ]
    if scores.absent:
        lines.append(
            "Absent from every image (n/a in the pooled row, not in the pooled Avg.): "
            + ", ".join(f"{columns[i]} {names[i]}" for i in scores.absent)
            + "."
        )
    else:
        lines.append("Every class occurs in the truth or the prediction of some image.")
    partly = [i for i in range(n_classes) if 0 < n - images_with[i] and i not in scores.absent]
    if partly:
        lines.append(
            "Absent from some images: "
            + ", ".join(f"{columns[i]} ({n - images_with[i]} of {n})" for i in partly)
            + "."
        )
    lines += ["", "## Per class (pooled)", ""]
    lines += _markdown_table(
        ["class", "name", "Dice %", "mean over images %", "images", "true px", "predicted px"],
        [
            [
                r["class"],
                r["name"],
                _percent(r["dice"]),
                _percent(r["image_mean"]),
                str(r["images"]),
                str(r.get("truth_pixels", "")),
                str(r.get("predicted_pixels", "")),
            ]
            for r in per_class_rows
        ],
    )
    lines += ["", "## Figures", "", "Confusion matrix, each row divided by its true pixels:", ""]
    lines += ["![confusion matrix](confusion.png)", ""]
    if overlay_files:
        lines += ["Image | truth | prediction:", ""]
        lines += [f"![{p.stem}](overlays/{p.name})" for p in overlay_files]
        lines.append("")
    lines += _files_section(files, out_dir)
    files.append(_write_report(out_dir / "report.md", lines))
    return EvaluationResult(
        "multiclass",
        title,
        n,
        metrics,
        "total_dice",
        metrics["total_dice"],
        out_dir,
        files,
        per_class_rows,
        per_image_rows,
    )


def _files_section(files: list[Path], out_dir: Path) -> list[str]:
    described = {
        "per_image.csv": "scores per sample",
        "per_class.csv": "Dice per class, pooled and mean over images",
        "confusion.csv": "pooled confusion matrix, pixel counts (true class per row)",
        "confusion.png": "row-normalised confusion matrix",
        "sweep.csv": "pooled precision, recall, F and counts at every threshold",
        "sweep.png": "precision, recall and F against threshold; precision-recall curve",
        "thresholds.csv": "scores at the chosen, the fixed and the best pooled threshold",
        "metrics.json": "the scalar metrics",
    }
    lines = ["## Files", ""]
    for p in files:
        if p.name in described:
            rel = p.relative_to(out_dir).as_posix()
            lines.append(f"- [{rel}]({rel}): {described[p.name]}")
    if any(p.parent.name == "overlays" for p in files):
        lines.append("- overlays/: example images")
    return lines


def _plot_confusion(path: Path, matrix: np.ndarray, names: list[str]) -> Path:
    plt = pyplot()
    k = len(names)
    rows = matrix.sum(axis=1, keepdims=True).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.where(rows > 0, matrix / np.where(rows > 0, rows, 1), np.nan)
    size = 2.5 + 0.7 * k
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    shown = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    if k <= 12:
        for i in range(k):
            for j in range(k):
                v = normalised[i, j]
                text = "–" if math.isnan(v) else f"{v:.2f}"
                colour = "white" if not math.isnan(v) and v > 0.6 else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="fraction of true pixels")
    return save_figure(fig, path)


def _plot_multiclass_overlay(
    folder: Path,
    item: tuple[str, np.ndarray | None, np.ndarray, np.ndarray, float],
    palette: np.ndarray,
    names: list[str],
    taken: set[str],
) -> Path:
    from matplotlib.patches import Patch

    name, image, truth, prediction, total = item
    plt = pyplot()
    panels = [] if image is None else [("image", image)]
    panels += [
        ("truth", palette[truth]),
        (f"prediction (Dice {100 * total:.1f} %)", palette[prediction]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 4.4), squeeze=False)
    for ax, (label, img) in zip(axes[0], panels, strict=True):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        ax.set_title(label, fontsize=10)
        ax.axis("off")
    handles = [
        Patch(facecolor=palette[i] / 255, edgecolor="0.5", label=f"C{i + 1} {nm}")
        for i, nm in enumerate(names)
    ]
    axes[0][-1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=7)
    fig.suptitle(name, fontsize=10)
    return save_figure(fig, folder / f"{_safe_name(name, taken)}.png")


# --------------------------------------------------------------------------- binary
def evaluate_binary(
    samples: Iterable[BinarySample],
    out_dir: str | os.PathLike[str],
    *,
    title: str = "",
    overlays: int = 3,
) -> EvaluationResult:
    """Evaluate probability maps as study B does and write tables, figures and a report.

    Parameters
    ----------
    samples : iterable of (str, ndarray or None, ndarray, ndarray)
        ``(name, image, probability, truth)`` per sample, read once: ``probability`` is (H, W)
        or (Z, H, W) ndarray of uint8 0..255 (float 0..1 is scaled by 255); ``truth`` a bool
        mask of the same shape; ``image`` (uint8, same shape, optionally with a trailing
        colour axis; None leaves the panel out) is used only for overlays (the middle slice
        of a volume).
    out_dir : path-like
        Folder to write into.
    title : str
        Title of the report; default "Binary evaluation".
    overlays : int
        Number of samples (the first ones) drawn as image | probability | truth | prediction.

    Returns
    -------
    EvaluationResult
        Writes ``sweep.csv`` (pooled precision, recall, F and counts per threshold 0..255),
        ``thresholds.csv`` (scores at the chosen threshold, at 128 and at the best pooled F),
        ``per_image.csv`` (name, the sample's best threshold and F there, precision, recall
        and F at the chosen threshold), ``sweep.png``, ``overlays/<name>.png``,
        ``metrics.json`` and ``report.md``.

    Notes
    -----
    The chosen threshold follows study B (:data:`THRESHOLD_RULE`). A volume sample counts as
    one label image: pass its slices as separate samples for the per-slice rule. Precision,
    recall and F with a zero denominator are 0 (as scikit-learn's default).
    """
    out_dir = Path(out_dir)
    sweeps: list[ThresholdSweep] = []
    names: list[str] = []
    shown: list[tuple[str, np.ndarray | None, np.ndarray, np.ndarray, int | None]] = []
    shapes: set[tuple[int, ...]] = set()
    for index, sample in enumerate(samples):
        name, image, probability, truth = _unpack(sample, index)
        _check_pair(name, "probability", probability, truth)
        try:
            probability = probability_to_uint8(probability)
            sweep = threshold_sweep(probability, truth)
        except SeglabError as err:
            raise SeglabError(f"sample {name!r}: {err.problem}", err.fix) from err
        sweeps.append(sweep)
        names.append(name)
        shapes.add(truth.shape)
        if len(shown) < overlays:
            slice_index = truth.shape[0] // 2 if truth.ndim == 3 else None
            shown.append(
                (
                    name,
                    _display_image(name, image, truth.shape),
                    _middle(probability),
                    _middle(truth.astype(bool)),
                    slice_index,
                )
            )
    if not sweeps:
        raise SeglabError("no samples to evaluate", "pass at least one (name, image, prob, truth)")

    choice = choose_threshold_from_sweeps(sweeps)
    pooled = choice.sweep
    best_pooled = pooled.best_threshold
    at_fixed = pooled.scores_at(FIXED_THRESHOLD)
    at_best = pooled.scores_at(best_pooled)
    n = len(sweeps)

    def row(rule: str, threshold: float, applied: int, s: BinaryScores) -> dict[str, Any]:
        return {
            "rule": rule,
            "threshold": threshold,
            "applied_threshold": applied,
            "precision": s.precision,
            "recall": s.recall,
            "f": s.f,
            "tp": s.tp,
            "fp": s.fp,
            "fn": s.fn,
        }

    table = [
        row(
            "chosen (mean of per-sample best)",
            choice.threshold,
            choice.applied_threshold,
            choice.pooled,
        ),
        row("fixed 0.5", float(FIXED_THRESHOLD), FIXED_THRESHOLD, at_fixed),
        row("best pooled F", float(best_pooled), best_pooled, at_best),
    ]
    per_image_rows = [
        {
            "name": nm,
            "best_threshold": int(b),
            "best_f": float(s.f[int(b)]),
            "precision": sc.precision,
            "recall": sc.recall,
            "f": sc.f,
        }
        for nm, b, s, sc in zip(names, choice.per_image_best, sweeps, choice.per_image, strict=True)
    ]
    sweep_rows = [
        {
            "threshold": t,
            "precision": float(pooled.precision[t]),
            "recall": float(pooled.recall[t]),
            "f": float(pooled.f[t]),
            "tp": int(pooled.tp[t]),
            "fp": int(pooled.fp[t]),
            "fn": int(pooled.fn[t]),
        }
        for t in range(256)
    ]
    metrics = {
        "f_score": choice.pooled.f,
        "precision": choice.pooled.precision,
        "recall": choice.pooled.recall,
        "threshold": choice.threshold,
        "applied_threshold": float(choice.applied_threshold),
        "f_score_at_128": at_fixed.f,
        "precision_at_128": at_fixed.precision,
        "recall_at_128": at_fixed.recall,
        "best_pooled_threshold": float(best_pooled),
        "best_pooled_f_score": at_best.f,
        "n_samples": float(n),
    }

    files = [
        write_csv(out_dir / "sweep.csv", sweep_rows, list(sweep_rows[0])),
        write_csv(out_dir / "thresholds.csv", table, list(table[0])),
        write_csv(out_dir / "per_image.csv", per_image_rows, list(per_image_rows[0])),
        _plot_sweep(out_dir / "sweep.png", choice),
    ]
    taken: set[str] = set()
    overlay_files = [
        _plot_binary_overlay(out_dir / "overlays", item, choice.applied_threshold, taken)
        for item in shown
    ]
    files += overlay_files
    files.append(write_json(out_dir / "metrics.json", metrics))

    title = title or "Binary evaluation"
    n_pixels = pooled.n_pixels
    n_true = int(pooled.tp[0] + pooled.fn[0])
    lines = [f"# {title}", ""]
    lines.append(
        f"{n} sample{'s' if n != 1 else ''} ({_shape_text(shapes)} px; {n_pixels} pixels in all, "
        f"{n_true} of them foreground in the truth, {100 * n_true / max(n_pixels, 1):.2f} %)."
    )
    lines += [
        "",
        "## Threshold",
        "",
        f"Rule — {THRESHOLD_RULE}. Per-sample best thresholds: "
        f"{_threshold_text(choice.per_image_best)}; mean {choice.threshold:.1f}, applied "
        f"{choice.applied_threshold}. For comparison: t = {FIXED_THRESHOLD} (probability 0.5) and "
        f"the threshold with the best F on the pooled counts ({best_pooled}).",
        "",
        "## Scores (pooled over all samples, study B Table 2 layout)",
        "",
    ]
    lines += _markdown_table(
        ["rule", "threshold", "precision", "recall", "F"],
        [
            [
                r["rule"],
                f"{r['threshold']:.1f} (applied {r['applied_threshold']})"
                if r is table[0]
                else str(r["applied_threshold"]),
                f"{r['precision']:.3f}",
                f"{r['recall']:.3f}",
                f"{r['f']:.3f}",
            ]
            for r in table
        ],
    )
    lines += [
        "",
        "Precision = TP / (TP + FP), recall = TP / (TP + FN), F = 2 TP / (2 TP + FP + FN), "
        "counted per pixel over all samples, foreground where prob >= t; a score with a zero "
        "denominator is 0.",
        "",
        "## Per sample (at the chosen threshold)",
        "",
    ]
    shown_rows = per_image_rows[:20]
    lines += _markdown_table(
        ["sample", "best t", "F at best t", "precision", "recall", "F"],
        [
            [
                r["name"],
                str(r["best_threshold"]),
                f"{r['best_f']:.3f}",
                f"{r['precision']:.3f}",
                f"{r['recall']:.3f}",
                f"{r['f']:.3f}",
            ]
            for r in shown_rows
        ],
    )
    if len(per_image_rows) > len(shown_rows):
        lines += ["", f"(first {len(shown_rows)} of {n}; all in per_image.csv)"]
    lines += ["", "## Figures", "", "Precision, recall and F against threshold (pooled):", ""]
    lines += ["![threshold sweep](sweep.png)", ""]
    if overlay_files:
        lines += [
            f"Image | probability | truth | prediction at t = {choice.applied_threshold} "
            "(middle slice of a volume):",
            "",
        ]
        lines += [f"![{p.stem}](overlays/{p.name})" for p in overlay_files]
        lines.append("")
    lines += _files_section(files, out_dir)
    files.append(_write_report(out_dir / "report.md", lines))
    return EvaluationResult(
        "binary",
        title,
        n,
        metrics,
        "f_score",
        metrics["f_score"],
        out_dir,
        files,
        table,
        per_image_rows,
    )


def _threshold_text(best: np.ndarray) -> str:
    values = [str(int(b)) for b in best[:20]]
    return ", ".join(values) + (f", ... ({len(best)} in all)" if len(best) > 20 else "")


def _plot_sweep(path: Path, choice: ThresholdChoice) -> Path:
    plt = pyplot()
    sweep = choice.sweep
    t = choice.applied_threshold
    fig, (ax, ax_pr) = plt.subplots(1, 2, figsize=(10, 4))
    ax.plot(sweep.thresholds, sweep.precision, label="precision")
    ax.plot(sweep.thresholds, sweep.recall, label="recall")
    ax.plot(sweep.thresholds, sweep.f, label="F")
    ax.axvline(choice.threshold, color="k", lw=0.9, ls="--", label=f"chosen {choice.threshold:.1f}")
    ax.axvline(FIXED_THRESHOLD, color="0.5", lw=0.8, ls=":", label=f"fixed {FIXED_THRESHOLD}")
    ax.set_xlim(0, 255)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("threshold (prob >= t, 0..255)")
    ax.set_title(f"F {choice.pooled.f:.3f} at t = {t}", fontsize=10)
    ax.legend(loc="lower left", fontsize=8)
    ax_pr.plot(sweep.recall, sweep.precision, color="C3")
    ax_pr.plot(choice.pooled.recall, choice.pooled.precision, "ko", label=f"chosen t = {t}")
    fixed = sweep.scores_at(FIXED_THRESHOLD)
    ax_pr.plot(fixed.recall, fixed.precision, "s", color="0.5", label=f"t = {FIXED_THRESHOLD}")
    ax_pr.set_xlim(0, 1.02)
    ax_pr.set_ylim(0, 1.02)
    ax_pr.set_xlabel("recall")
    ax_pr.set_ylabel("precision")
    ax_pr.set_title("precision-recall curve", fontsize=10)
    ax_pr.legend(loc="lower left", fontsize=8)
    return save_figure(fig, path)


def _plot_binary_overlay(
    folder: Path,
    item: tuple[str, np.ndarray | None, np.ndarray, np.ndarray, int | None],
    threshold: int,
    taken: set[str],
) -> Path:
    name, image, probability, truth, slice_index = item
    prediction = probability >= threshold
    tp, fp, fn = prediction & truth, prediction & ~truth, ~prediction & truth
    errors = np.zeros((*truth.shape, 3), dtype=np.uint8)
    errors[tp] = (255, 255, 255)
    errors[fp] = (255, 0, 255)
    errors[fn] = (0, 200, 255)
    plt = pyplot()
    panels: list[tuple[str, np.ndarray, str, int]] = []
    if image is not None:
        panels.append(("image", image, "gray", 255))
    panels += [
        ("probability", probability, "magma", 255),
        ("truth", truth.astype(np.uint8), "gray", 1),
        (f"prediction t = {threshold}\nwhite TP, magenta FP, cyan FN", errors, "gray", 255),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.9), squeeze=False)
    for ax, (label, img, cmap, vmax) in zip(axes[0], panels, strict=True):
        if img.ndim == 2:
            ax.imshow(img, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.suptitle(name if slice_index is None else f"{name}, slice {slice_index}", fontsize=10)
    return save_figure(fig, folder / f"{_safe_name(name, taken)}.png")
