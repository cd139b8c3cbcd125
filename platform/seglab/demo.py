"""The demo: the platform's main job on phantoms, end to end, with what exists so far.

Study A part (lung):
  1. Lung phantoms at the study's raw size (2475 px), resized to 1024 px (area for images,
     nearest for labels), written as a dataset folder.
  2. The three tiling presets planned on the 1024 px images: tile counts and per-pixel coverage.
  3. A baseline per-tile classifier (linear discriminant analysis on blurred colour features,
     computed per tile so tiles see no context beyond their borders, like a network would),
     trained on D4-augmented no-overlap tiles of two training images, applied to a test image
     with each preset and stitched by summing scores; per-class Dice, class mean, total Dice.
     It is a stand-in for the networks that arrive with the bundles, and shows the stitching
     at work: its seams and their removal by overlap.

Study B part (SEM):
  4. Simulated cells A and B; per-slice two-peak detection on cell A gives the reference peaks
     P1, P2; cell B is remapped slice by slice (eq. 2.4), failed slices are reported.
  5. A baseline darkness-based mitochondria probability map (calibrated on cell A) is scored on
     cell B with and without the remap by the study's threshold sweep (precision, recall, F).

Training, registry and routine analysis (:class:`DemoTraining`):
  6. The lung bundle trains a U-Net on lung phantoms, the mito bundle a 2.5D U-Net on cell-A
     stacks; each run lands in MLflow with its model and its evaluation on held-out phantoms
     (lung test images; a cell-B stack), and the model is registered.
  7. Each new version goes through the promotion gate to ``@champion`` (a re-run of the demo
     compares it with the previous champion on the same test data).
  8. ``models:/lung-demo@champion`` and ``models:/mito-demo@champion`` are loaded back from the
     registry and evaluated, as ``seglab evaluate`` does: the study-A Dice table and the
     study-B threshold sweep, logged to MLflow next to the training runs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from seglab.d4 import D4
from seglab.intensity import ReferencePeaks, reference_peaks, remap_to_reference
from seglab.io.atomic import atomic_directory
from seglab.io.dataset import write_manifest
from seglab.io.images import write_image
from seglab.io.labels import LUNG_CLASSES
from seglab.metrics import ThresholdChoice, choose_threshold, dice_scores
from seglab.phantoms.lung import LungPhantomConfig, make_lung_phantom
from seglab.phantoms.sem import SEM_TRUTH_COLUMNS, make_sem_cells, truth_table_rows
from seglab.resize import resize_image, resize_labels
from seglab.tiling import PRESETS, extract_tiles, plan_preset, stitch
from seglab.workflows._outputs import (
    Summary,
    progress,
    pyplot,
    save_figure,
    write_csv,
    write_json,
)

N_CLASSES = len(LUNG_CLASSES)
FEATURE_SIGMAS = (1.0, 4.0, 12.0)


# --------------------------------------------------------------------------- lung baseline
def tile_features(tiles: np.ndarray) -> np.ndarray:
    """Per-pixel features of tiles: channels blurred at several scales, normalised per tile.

    Parameters
    ----------
    tiles : (n, 3, th, tw) ndarray
        Image tiles, channel-first.

    Returns
    -------
    (n, 3 * len(FEATURE_SIGMAS), th, tw) ndarray of float32
        Blurring stops at the tile border (mirror), and each tile is standardised by its own
        mean and standard deviation, so a pixel's features depend on its tile.
    """
    x = tiles.astype(np.float32)
    mean = x.mean(axis=(2, 3), keepdims=True)
    std = x.std(axis=(2, 3), keepdims=True) + 1.0
    x = (x - mean) / std
    feats = [ndimage.gaussian_filter(x, (0, 0, s, s), mode="mirror") for s in FEATURE_SIGMAS]
    return np.concatenate(feats, axis=1)


@dataclass
class LinearDiscriminant:
    """Linear discriminant analysis on per-pixel features (shared covariance, class priors).

    Attributes
    ----------
    weights : (n_classes, n_features) ndarray
    bias : (n_classes,) ndarray
    """

    weights: np.ndarray
    bias: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, n_classes: int) -> LinearDiscriminant:
        """Fit on features (n_pixels, n_features) and labels (n_pixels,)."""
        means = np.stack([features[labels == c].mean(0) for c in range(n_classes)])
        centred = features - means[labels]
        cov = centred.T @ centred / len(features) + 1e-3 * np.eye(features.shape[1])
        prec = np.linalg.inv(cov)
        priors = np.bincount(labels, minlength=n_classes) / len(labels)
        weights = means @ prec
        bias = -0.5 * np.einsum("cf,cf->c", weights, means) + np.log(priors)
        return cls(weights, bias)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Class posteriors (softmax of discriminants), (n, C, th, tw) from (n, F, th, tw)."""
        logits = np.einsum("cf,nfyx->ncyx", self.weights, features) + self.bias[:, None, None]
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def _lung_images(seed: int, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Raw-size phantoms resized to 1024 px: (image (3, 1024, 1024) uint8, labels (1024, 1024))."""
    out = []
    for i in progress(range(count), "lung phantoms (2475 px)"):
        raw = make_lung_phantom(LungPhantomConfig.study(raw=True, seed=seed + i))
        image = resize_image(raw.image, 1024, channel_axis=-1, method="area")
        out.append((np.moveaxis(image, -1, 0), resize_labels(raw.labels, 1024)))
    return out


def _lung_part(tmp: Path, seed: int, summary: Summary) -> dict:
    images = _lung_images(seed, 3)
    for i, (image, labels) in enumerate(images):
        name = f"lung_{i:03d}"
        write_image(tmp / "lung" / "images" / f"{name}.png", np.moveaxis(image, 0, -1))
        write_image(tmp / "lung" / "labels" / f"{name}.png", LUNG_CLASSES.encode(labels))
    LUNG_CLASSES.save(tmp / "lung" / "classes.json")
    write_manifest(tmp / "lung")

    # tiling presets on the study image
    tiling_rows = []
    for name in PRESETS:
        plan = plan_preset(name, (1024, 1024))
        cov = plan.coverage()
        tiling_rows.append(
            {
                "preset": name,
                "tiles": plan.n_tiles,
                "grid": f"{plan.grid_shape[0]}x{plan.grid_shape[1]}",
                "padding": plan.padding[0],
                "stride": plan.stride[0],
                "coverage_min": int(cov.min()),
                "coverage_max": int(cov.max()),
                "uniform": bool(cov.min() == cov.max()),
            }
        )
    write_csv(tmp / "tiling.csv", tiling_rows, list(tiling_rows[0]))

    # baseline: fit on D4-augmented no-overlap tiles of the two training images
    train_plan = plan_preset("no-overlap", (1024, 1024))
    feats, labs = [], []
    rng = np.random.default_rng(seed)
    for image, labels in images[:2]:
        tiles = extract_tiles(image, train_plan)
        label_tiles = extract_tiles(labels, train_plan)
        for element in D4:
            f = tile_features(np.ascontiguousarray(element.apply(tiles)))
            lab = np.ascontiguousarray(element.apply(label_tiles))
            pick = rng.random(lab.shape) < 0.05  # a 5 % pixel sample keeps the fit small
            feats.append(np.moveaxis(f, 1, -1)[pick])
            labs.append(lab[pick])
    model = LinearDiscriminant.fit(np.concatenate(feats), np.concatenate(labs), N_CLASSES)

    test_image, test_labels = images[2]
    dice_rows, predictions = [], {}
    for name in progress(list(PRESETS), "baseline inference per preset"):
        plan = plan_preset(name, test_image.shape)
        started = time.perf_counter()
        scores = model.scores(tile_features(extract_tiles(test_image, plan)))
        combined = stitch(scores, plan)  # eq. 1: sum over covering tiles
        predicted = combined.argmax(axis=0).astype(np.uint8)  # eq. 2
        seconds = time.perf_counter() - started
        predictions[name] = predicted
        write_image(tmp / "lung_predictions" / f"{name}.png", LUNG_CLASSES.encode(predicted))
        dice = dice_scores(predicted, test_labels, N_CLASSES)
        dice_rows.append(
            {"preset": name, "tiles": plan.n_tiles, "seconds": round(seconds, 3)}
            | {f"C{c + 1}": float(v) for c, v in enumerate(dice.per_class)}
            | {"class_mean": dice.mean, "total_dice": dice.total}
        )
        if name == "no-overlap":  # seams: score jumps across tile borders vs elsewhere
            jumps = np.abs(np.diff(combined, axis=-1)).sum(0)
            border = jumps[:, 255::256].mean()
            inner = np.delete(jumps, np.s_[255::256], axis=-1).mean()
            summary.lines.append(
                f"no-overlap seams: score jump across tile borders {border:.3f} vs "
                f"{inner:.3f} between other neighbouring pixels"
            )
    write_csv(tmp / "lung_dice.csv", dice_rows, list(dice_rows[0]))
    _plot_lung(tmp / "lung_predictions.png", test_image, test_labels, predictions, dice_rows)
    for row in dice_rows:
        summary.lines.append(
            f"lung baseline, {row['preset']:<10} ({row['tiles']:>2} tiles): total Dice "
            f"{100 * row['total_dice']:.1f} %, class mean {100 * row['class_mean']:.1f} %, "
            f"C5 (artery) {100 * row['C5']:.1f} %"
        )
    return {"tiling": tiling_rows, "dice": dice_rows}


def _plot_lung(
    path: Path,
    image: np.ndarray,
    truth: np.ndarray,
    predictions: dict[str, np.ndarray],
    rows: list[dict],
) -> None:
    plt = pyplot()
    panels = [("image", np.moveaxis(image, 0, -1)), ("truth", LUNG_CLASSES.encode(truth))]
    for row in rows:
        name = row["preset"]
        panels.append(
            (
                f"{name}: Dice {100 * row['total_dice']:.1f} %",
                LUNG_CLASSES.encode(predictions[name]),
            )
        )
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.4))
    for ax, (title, img) in zip(axes, panels, strict=True):
        ax.imshow(img)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    save_figure(fig, path)


# --------------------------------------------------------------------------- SEM part
SEM_SHAPE = (24, 160, 160)


def darkness_probability(stack: np.ndarray, reference: ReferencePeaks) -> np.ndarray:
    """Baseline mitochondria probability: how much darker than midway between the peaks.

    Parameters
    ----------
    stack : (Z, Y, X) ndarray of uint8
        SEM slices.
    reference : ReferencePeaks
        Peaks of the training cell; the logistic is centred midway between P1 and P2, with a
        width of an eighth of their distance.

    Returns
    -------
    (Z, Y, X) ndarray of uint8
        Probability 0..255, as CDeep3M writes it.
    """
    blurred = ndimage.gaussian_filter(stack.astype(np.float32), (0, 2.0, 2.0))
    mid = 0.5 * (reference.P1 + reference.P2)
    width = (reference.P2 - reference.P1) / 8
    prob = 1 / (1 + np.exp(np.clip((blurred - mid) / width, -50, 50)))
    return np.rint(prob * 255).astype(np.uint8)


def _sem_part(tmp: Path, seed: int, summary: Summary) -> dict:
    cells = make_sem_cells(shape=SEM_SHAPE, seed=seed)
    for name, cell in cells.items():
        folder = tmp / "sem" / f"cell{name}"
        write_image(folder / "images" / f"cell{name}.tif", cell.image, cell.voxel_size, axes="ZYX")
        write_image(
            folder / "labels" / f"cell{name}.tif",
            cell.instances.astype(np.uint16),
            cell.voxel_size,
            axes="ZYX",
        )
        write_csv(folder / "truth.csv", truth_table_rows(cell), SEM_TRUTH_COLUMNS)
        write_manifest(folder)

    a, b = cells["A"], cells["B"]
    reference = reference_peaks(list(a.image))
    remapped, report = remap_to_reference(b.image, reference, fallback="neighbours")
    write_image(tmp / "sem" / "cellB_remapped.tif", remapped, b.voxel_size, axes="ZYX")
    peak_rows = [
        {"cell": "A", "slice": i} | d.as_dict() for i, d in enumerate(reference.detections)
    ] + [{"cell": "B", "slice": i} | d.as_dict() for i, d in enumerate(report.detections)]
    write_csv(tmp / "sem_peaks.csv", peak_rows, list(peak_rows[0]))
    summary.lines.append(
        f"SEM reference peaks from cell A: P1 {reference.P1:.2f}, P2 {reference.P2:.2f} "
        f"({reference.n_used} slices, {len(reference.failed)} failed)"
    )
    summary.lines.append(f"cell B remap: {report.summary()}")

    arms = {
        "cell A": (a.image, a.instances > 0),
        "cell B, raw": (b.image, b.instances > 0),
        "cell B, remapped": (remapped, b.instances > 0),
    }
    rows, choices = [], {}
    for arm, (stack, truth) in arms.items():
        prob = darkness_probability(stack, reference)
        choice = choose_threshold(list(prob), list(truth))
        choices[arm] = choice
        rows.append(
            {
                "data": arm,
                "threshold": choice.threshold,
                "applied_threshold": choice.applied_threshold,
                "precision": choice.pooled.precision,
                "recall": choice.pooled.recall,
                "f": choice.pooled.f,
            }
        )
        summary.lines.append(
            f"SEM baseline, {arm:<16}: threshold {choice.threshold:6.1f}, precision "
            f"{choice.pooled.precision:.3f}, recall {choice.pooled.recall:.3f}, "
            f"F {choice.pooled.f:.3f}"
        )
    write_csv(tmp / "sem_threshold.csv", rows, list(rows[0]))
    _plot_sweeps(tmp / "sem_threshold_sweep.png", choices)
    return {"reference": reference.as_dict(), "remap": report.as_dict(), "threshold": rows}


def _plot_sweeps(path: Path, choices: dict[str, ThresholdChoice]) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(choices), figsize=(5 * len(choices), 3.6), sharey=True)
    for ax, (arm, choice) in zip(axes, choices.items(), strict=True):
        sweep = choice.sweep
        ax.plot(sweep.thresholds, sweep.precision, label="precision")
        ax.plot(sweep.thresholds, sweep.recall, label="recall")
        ax.plot(sweep.thresholds, sweep.f, label="F")
        ax.axvline(choice.threshold, color="k", lw=0.8, ls="--")
        ax.set_title(f"{arm}: F {choice.pooled.f:.3f} at {choice.threshold:.0f}", fontsize=10)
        ax.set_xlabel("threshold (0..255)")
        ax.set_xlim(0, 255)
    axes[0].set_ylim(0, 1.02)
    axes[0].legend(loc="lower left", fontsize=8)
    save_figure(fig, path)


# --------------------------------------------------------------------------- training part
@dataclass(frozen=True)
class DemoStudies:
    """The scaled-down studies of the demo: the recipes ``pipelines/*-demo.yaml`` on its data.

    Attributes
    ----------
    tiling, ablation, search : bool
        Which studies run.
    search_trials : int
        Trials of the loss x learning-rate search.
    ablation_repeats : int
        Repeats of each ablation child (the recipe has 2; the demo needs 1).
    overrides : dict
        Config ids set on top of every recipe's (tests make the networks tiny with it).
    """

    tiling: bool = True
    ablation: bool = True
    search: bool = True
    search_trials: int = 4
    ablation_repeats: int = 1
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoTraining:
    """Sizes and settings of the demo's training part (defaults: about 3 minutes on 2 cores).

    Attributes
    ----------
    lung_size : int
        Lung phantom size in pixels.
    lung_train, lung_test : int
        Training images (one is held out for validation) and held-out test images.
    sem_shape : tuple of int
        Z, Y, X of each SEM stack (two cell-A stacks for training/validation, one cell-B test).
    lung, mito : dict
        Bundle config overrides.
    studies : DemoStudies or None
        The scaled-down studies run after the trainings (None: none).
    """

    lung_size: int = 512
    lung_train: int = 5
    lung_test: int = 2
    sem_shape: tuple[int, int, int] = (24, 256, 256)
    lung: dict[str, Any] = field(
        default_factory=lambda: {
            "network_options#unet#channels": [16, 32, 64, 128],
            "network_options#unet#strides": [2, 2, 2],
            "network_options#unet#num_res_units": 1,
            "epochs": 28,
            "val_interval": 4,
            "loss_name": "dicece",
            "optimizer_name": "adam",
            "learning_rate": 0.002,
        }
    )
    mito: dict[str, Any] = field(
        default_factory=lambda: {
            "network_options#unet#channels": [16, 32, 64, 128],
            "network_options#unet#strides": [2, 2, 2],
            "network_options#unet#num_res_units": 1,
            "num_slices": 3,
            "epochs": 20,
            "iterations_per_epoch": 10,
            "val_interval": 5,
        }
    )
    studies: DemoStudies | None = field(default_factory=DemoStudies)


def _training_part(
    out: Path,
    store_dir: str | os.PathLike[str] | None,
    seed: int,
    summary: Summary,
    cfg: DemoTraining,
) -> dict:
    from seglab.models.registry import PromotionRefused, promote
    from seglab.tracking.store import resolve_store
    from seglab.workflows.phantoms import write_lung_phantoms, write_sem_phantom
    from seglab.workflows.routine import evaluate_registered
    from seglab.workflows.training import train_bundle

    data = out / "training-data"
    write_lung_phantoms(data / "lung-train", count=cfg.lung_train, size=cfg.lung_size, seed=seed)
    write_lung_phantoms(
        data / "lung-test", count=cfg.lung_test, size=cfg.lung_size, seed=seed + 100
    )
    write_sem_phantom(data / "mito-train", shape=cfg.sem_shape, cell="A", count=2, seed=seed)
    write_sem_phantom(data / "mito-test", shape=cfg.sem_shape, cell="B", seed=seed + 10)
    store = resolve_store(store_dir)
    results: dict[str, Any] = {}
    for bundle, overrides in (("lung", cfg.lung), ("mito", cfg.mito)):
        name = f"{bundle}-demo"
        test = data / f"{bundle}-test"
        started = time.perf_counter()
        outcome = train_bundle(
            bundle,
            data / f"{bundle}-train",
            overrides=overrides | {"seed": seed},
            register=name,
            eval_data=test,
            store_dir=store_dir,
            output_dir=out / "models" / bundle,
        )
        trained = time.perf_counter() - started
        assert outcome.registered is not None
        version = outcome.registered.split("/")[1]
        try:
            entry = promote(store, name, version, reason="demo")
            gate = f"@champion: version {entry.from_version or 'none'} -> {version}"
        except PromotionRefused as err:
            gate = f"@champion kept, the gate refused version {version}: {err.problem}"
        evaluation = evaluate_registered(
            store, f"models:/{name}@champion", test, out / f"evaluation-{bundle}", overwrite=True
        )
        metrics = evaluation.evaluation.result.metrics
        results[bundle] = {
            "run_id": outcome.run_id,
            "registered": outcome.registered,
            "gate": gate,
            "train_seconds": round(trained, 1),
            "champion_version": evaluation.version,
            "evaluation_run_id": evaluation.run_id,
            "metrics": metrics,
        }
        summary.lines.append(
            f"{bundle} bundle: trained and registered {outcome.registered} in {trained:.0f} s; "
            f"{gate}"
        )
        if bundle == "lung":
            classes = ", ".join(f"C{c} {100 * metrics[f'dice_C{c}']:.1f}" for c in range(1, 7))
            summary.lines.append(
                f"models:/{name}@champion on {cfg.lung_test} test phantoms: total Dice "
                f"{100 * metrics['total_dice']:.1f} %, class mean "
                f"{100 * metrics['mean_dice']:.1f} % ({classes} %)"
            )
        else:
            summary.lines.append(
                f"models:/{name}@champion on a cell-B stack: F {metrics['f_score']:.3f} "
                f"(precision {metrics['precision']:.3f}, recall {metrics['recall']:.3f}) at "
                f"threshold {metrics['threshold']:.0f}"
            )
    if cfg.studies is not None:
        results["studies"] = _studies_part(out, store, seed, summary, cfg.studies)
    summary.lines.append(f"runs and models in {store.tracking_uri}; browse them with `seglab ui`")
    return results


#: The recipes the demo runs, shipped in the repository's ``pipelines/`` folder.
PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def _studies_part(
    out: Path, store: Any, seed: int, summary: Summary, cfg: DemoStudies
) -> dict[str, Any]:
    """Run the demo recipes (tiling, ablation, search) on phantoms written for them."""
    import dataclasses

    from seglab.errors import SeglabError
    from seglab.studies.recipes import load_recipe
    from seglab.studies.run import run_recipe
    from seglab.workflows.phantoms import write_lung_phantoms, write_sem_phantom

    if not PIPELINES.is_dir():
        raise SeglabError(
            f"the demo recipes are not in {PIPELINES}", "run the demo from a seglab checkout"
        )
    data = out / "studies-data"
    root = out / "studies"
    results: dict[str, Any] = {}
    plans = []
    if cfg.tiling:
        write_lung_phantoms(data / "lung-tiling" / "train", count=3, size=512, seed=seed)
        write_lung_phantoms(data / "lung-tiling" / "test", count=1, size=512, seed=seed + 100)
        plans.append(
            ("tiling-demo.yaml", {"data": data / "lung-tiling" / "train",
                                  "eval_data": data / "lung-tiling" / "test"})
        )  # fmt: skip
    if cfg.ablation:
        shape = (12, 128, 128)
        write_sem_phantom(data / "mito-ablation" / "cellA", shape=shape, cell="A", seed=seed)
        write_sem_phantom(data / "mito-ablation" / "cellB", shape=shape, cell="B", seed=seed + 1)
        write_sem_phantom(
            data / "mito-ablation" / "cellB-test", shape=(8, 128, 128), cell="B", seed=seed + 2
        )
        plans.append(
            ("ablation-demo.yaml", {"data": data / "mito-ablation" / "cellA",
                                    "added_data": data / "mito-ablation" / "cellB",
                                    "eval_data": data / "mito-ablation" / "cellB-test",
                                    "repeats": cfg.ablation_repeats})
        )  # fmt: skip
    if cfg.search:
        write_lung_phantoms(data / "lung-search" / "train", count=3, size=256, seed=seed)
        write_lung_phantoms(data / "lung-search" / "test", count=1, size=256, seed=seed + 100)
        plans.append(
            ("search-demo.yaml", {"data": data / "lung-search" / "train",
                                  "eval_data": data / "lung-search" / "test",
                                  "trials": cfg.search_trials})
        )  # fmt: skip
    for file, changes in plans:
        recipe = load_recipe(PIPELINES / file)
        changes = {**changes, "overrides": {**recipe.overrides, **cfg.overrides}}
        # the changed recipe is a study of its own (new digest): a re-run resumes it
        recipe = dataclasses.replace(recipe, **changes)
        recipe = dataclasses.replace(recipe, digest=_demo_digest(recipe))
        started = time.perf_counter()
        lines: list[str] = []
        result = run_recipe(
            store, recipe, out_dir=root / recipe.name, echo=lines.append, root=root / "work"
        )
        seconds = time.perf_counter() - started
        results[recipe.name] = {
            "run_id": result.run_id,
            "children": result.children,
            "failed": result.failed,
            "seconds": round(seconds, 1),
            "lines": result.lines,
        }
        earlier = f" ({result.skipped} finished before, not rerun)" if result.skipped else ""
        summary.lines.append(
            f"study {recipe.name} ({recipe.kind}): {result.children} child runs{earlier} in "
            f"{seconds:.0f} s, parent run {result.run_id}; report in {root / recipe.name}"
        )
        summary.lines += [f"  {line}" for line in result.lines[:12]]
        if result.failed:
            raise SeglabError(
                f"the demo study {recipe.name} had {result.failed} failed child run(s): "
                + "; ".join(line for line in result.lines if "failed" in line)[:400],
                f"see the study's runs in the MLflow UI (parent run {result.run_id})",
            )
    return results


def _demo_digest(recipe: Any) -> str:
    """Digest of a recipe changed in code (its file's digest no longer describes it)."""
    import hashlib
    import json

    fields = {
        k: v for k, v in recipe.__dict__.items() if k not in ("digest", "path", "description")
    }
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- entry point
def run_demo(
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    overwrite: bool = False,
    store: str | os.PathLike[str] | None = None,
    training: DemoTraining | None = None,
) -> Summary:
    """Run the demo and write everything under ``out``.

    Parameters
    ----------
    out : path-like
        Output folder; must not exist or be empty unless ``overwrite``.
    seed : int
        Seed of every phantom.
    overwrite : bool
        Replace ``out`` when it exists (only once the new outputs are complete).
    store : path-like, optional
        Embedded MLflow store folder (default ``./mlruns``; ``MLFLOW_TRACKING_URI`` wins).
    training : DemoTraining, optional
        Train, register, promote and evaluate the bundles with these settings; None skips it.

    Returns
    -------
    Summary
        Figures and the list of outputs; ``summary.json`` in ``out`` holds the same.
    """
    out = Path(out)
    summary = Summary("seglab demo", out)
    started = time.perf_counter()
    with atomic_directory(out, overwrite=overwrite) as tmp:
        lung = _lung_part(tmp, seed, summary)
        sem = _sem_part(tmp, seed, summary)
        if training is None:
            summary.lines.append(f"finished in {time.perf_counter() - started:.1f} s")
        write_json(tmp / "summary.json", {"lines": summary.lines, "lung": lung, "sem": sem})
    if training is not None:
        trained = _training_part(out, store, seed, summary, training)
        summary.lines.append(f"finished in {time.perf_counter() - started:.1f} s")
        write_json(
            out / "summary.json",
            {"lines": summary.lines, "lung": lung, "sem": sem, "training": trained},
        )
    summary.outputs = {
        "lung dataset": out / "lung",
        "tiling presets": out / "tiling.csv",
        "lung Dice table": out / "lung_dice.csv",
        "lung predictions": out / "lung_predictions",
        "lung figure": out / "lung_predictions.png",
        "SEM cells": out / "sem",
        "SEM peaks": out / "sem_peaks.csv",
        "SEM threshold sweep": out / "sem_threshold.csv",
        "SEM figure": out / "sem_threshold_sweep.png",
        "summary": out / "summary.json",
    }
    if training is not None:
        summary.outputs |= {
            "training data": out / "training-data",
            "checkpoints": out / "models",
            "lung evaluation": out / "evaluation-lung" / "report.md",
            "mito evaluation": out / "evaluation-mito" / "report.md",
        }
        if training.studies is not None:
            summary.outputs["studies"] = out / "studies"
    return summary
