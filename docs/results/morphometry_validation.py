"""Morphometry and instance splitting against the truth of SEM phantoms (docs/morphometry.md).

Prints the "Validation on phantoms" tables of ``docs/morphometry.md``. About 1 minute on one core::

    .venv/bin/python docs/results/morphometry_validation.py

Phantoms (:func:`seglab.phantoms.sem.make_sem_phantom`):

- ``default``: cell A, ``(40, 192, 192)`` voxels of ``(0.1, 0.04, 0.04)`` um, myofibrils along x,
  seed 0;
- ``tilted``: cell B, ``(40, 192, 192)`` voxels of ``(0.12, 0.04, 0.04)`` um, myofibril axis
  ``(0.3, 0.5, 0.8)`` (z, y, x; 36 degrees from x), seed 3;
- ``study voxels``: cell B, ``(48, 384, 384)`` voxels of the study's ``(0.0701, 0.01397,
  0.01397)`` um, myofibril axis ``(0, 0.5, 0.866)`` (in the xy plane, 30 degrees from x), seed 7.

A sweep of the seed blur ``sigma`` (and ``min_size``) shows how the split defaults were chosen:
instance F1 at IoU >= 0.5 over all objects and over interior objects, ideal and noisy maps.
A last table measures single voxelised prolate spheroids (a = 0.9, b = 0.45 um) in five
orientations against the analytic surface area, with the time per object.

Three label volumes are measured per phantom: the true instances, the split of ideal maps
(object = true mask, contour = true per-slice contours) and the split of noisy maps (ideal maps
blurred by 1 px in-plane, Gaussian noise sd 40 grey levels, 20 % of the contour map erased in
smooth patches; built as in ``tests/test_instances.py``, seed 0). Split objects are matched to
true ones at IoU >= 0.5 and shape errors are taken on matched objects that touch no border of
the stack. The myofibril axis passed to the measurements is the true one, so that the
orientation errors are those of the spheroid fit alone; the axis estimate has its own row.
"""

from __future__ import annotations

import math
import time

import numpy as np

from seglab.instances import SplitParams, instance_f1, split_instances
from seglab.morphometry import (
    estimate_myofibril_axis,
    estimate_sarcomere_length,
    measure_objects,
)
from seglab.phantoms.sem import (
    SemPhantom,
    ideal_probability_maps,
    make_sem_phantom,
    noisy_probability_maps,
)

PHANTOMS = {
    "default": {"shape": (40, 192, 192), "seed": 0},
    "tilted": {
        "shape": (40, 192, 192),
        "voxel_size": (0.12, 0.04, 0.04),
        "myofibril_axis": (0.3, 0.5, 0.8),
        "cell": "B",
        "seed": 3,
    },
    "study voxels": {
        "shape": (48, 384, 384),
        "voxel_size": (0.0701, 0.01397, 0.01397),
        "myofibril_axis": (0.0, 0.5, 0.866),
        "cell": "B",
        "seed": 7,
    },
}
VOXEL_SIZES = {
    "0.04 um isotropic": (0.04, 0.04, 0.04),
    "0.1 x 0.04 x 0.04 um": (0.1, 0.04, 0.04),
    "study: 0.0701 x 0.01397 x 0.01397 um": (0.0701, 0.01397, 0.01397),
}
SPHEROID_AXES = ((0, 0, 1), (1, 0, 0), (0.3, 0.5, 0.8), (0.2, 1.0, 0.0), (0, 1, 1))


def prolate_area(a: float, b: float) -> float:
    """Return the surface area of a prolate spheroid with semi-axes ``a >= b`` (um^2)."""
    if a == b:
        return 4 * math.pi * a * a
    e = math.sqrt(1 - (b / a) ** 2)
    return 2 * math.pi * b * b * (1 + a / (b * e) * math.asin(e))


def angle_deg(u, v) -> float:
    """Return the angle between two axes (sign ignored), in degrees."""
    u, v = np.asarray(u, float), np.asarray(v, float)
    cosine = abs(float(u @ v)) / float(np.linalg.norm(u) * np.linalg.norm(v))
    return math.degrees(math.acos(min(1.0, cosine)))


def shape_errors(labels: np.ndarray, phantom: SemPhantom, pairs: np.ndarray) -> dict[str, str]:
    """Errors of the measured objects matched to interior true objects."""
    axis = phantom.metadata["myofibril_axis"]
    measured = {m.label: m for m in measure_objects(labels, phantom.voxel_size, axis=axis)}
    truth = {t.label: t for t in phantom.truth}
    volume, surface, eccentricity, orientation = [], [], [], []
    for predicted, true in pairs.tolist():
        m, t = measured[predicted], truth[true]
        if m.touches_border or t.touches_border:
            continue
        a, b = t.semi_axes_um[:2]
        e = math.sqrt(1 - (b / a) ** 2)
        volume.append(m.volume_um3 / t.volume_um3 - 1)
        surface.append(m.surface_um2 / prolate_area(a, b) - 1)
        eccentricity.append(abs(m.eccentricity - e))
        if e >= 0.6:
            orientation.append(abs(m.orientation_deg - t.angle_to_myofibril_deg))
    published = {
        m.label: m
        for m in measure_objects(labels, phantom.voxel_size, axis=axis, method="published")
    }
    valid, published_errors = 0, []
    for predicted, true in pairs.tolist():
        m, t = published[predicted], truth[true]
        if m.touches_border or t.touches_border:
            continue
        valid += m.fit_ok
        a, b = t.semi_axes_um[:2]
        if m.fit_ok and math.sqrt(1 - (b / a) ** 2) >= 0.6:
            published_errors.append(abs(m.orientation_deg - t.angle_to_myofibril_deg))
    volume, surface = 100 * np.array(volume), 100 * np.array(surface)
    eccentricity, orientation = np.array(eccentricity), np.array(orientation)
    return {
        "objects measured (interior, matched)": f"{len(volume)}",
        "volume error: median of abs. (range)": (
            f"{np.median(np.abs(volume)):.2f} % ({volume.min():+.1f}..{volume.max():+.1f} %)"
        ),
        "surface error: median of abs. (range)": (
            f"{np.median(np.abs(surface)):.2f} % ({surface.min():+.1f}..{surface.max():+.1f} %)"
        ),
        "eccentricity error, median (max)": (
            f"{np.median(eccentricity):.4f} ({eccentricity.max():.4f})"
        ),
        "orientation error, e >= 0.6, median (max) [n]": (
            f"{np.median(orientation):.2f} deg ({orientation.max():.2f}) [{len(orientation)}]"
            if len(orientation)
            else "none with e >= 0.6"
        ),
        "published fit: valid fits; orientation error, e >= 0.6, median (max)": (
            f"{valid} of {len(volume)}; "
            + (
                f"{np.median(published_errors):.1f} deg ({max(published_errors):.1f})"
                if published_errors
                else "-"
            )
        ),
    }


def column(phantom: SemPhantom, source: str) -> dict[str, str]:
    """All rows of one column: the truth labels or a split of ideal or noisy maps."""
    truth = phantom.instances.astype(np.int64)
    true_interior = sum(not t.touches_border for t in phantom.truth)
    if source == "truth labels":
        labels = truth
        count, interior = len(phantom.truth), true_interior
        pairs = np.array([[t.label, t.label] for t in phantom.truth], dtype=np.int64)
        rows = {"count (interior)": f"{count} ({interior}) [true]"}
    else:
        maps = (
            ideal_probability_maps(phantom)
            if source == "split, ideal maps"
            else noisy_probability_maps(phantom)
        )
        result = split_instances(*maps)
        labels = result.labels.astype(np.int64)
        interior = int(np.count_nonzero(~result.touches_border))
        match = instance_f1(labels, truth)
        keep = np.zeros(result.count + 1, dtype=bool)
        keep[1:] = ~result.touches_border
        true_keep = np.zeros(len(phantom.truth) + 1, dtype=bool)
        true_keep[1:] = [not t.touches_border for t in phantom.truth]
        inner = instance_f1(np.where(keep[labels], labels, 0), np.where(true_keep[truth], truth, 0))
        pairs = match.pairs
        rows = {
            "count (interior)": (
                f"{result.count} ({interior}): {result.count - len(phantom.truth):+d} "
                f"({interior - true_interior:+d})"
            ),
            "instance F1 at IoU >= 0.5, all objects": (
                f"{match.f1:.3f} (P {match.precision:.3f}, R {match.recall:.3f})"
            ),
            "instance F1 at IoU >= 0.5, interior objects": f"{inner.f1:.3f}",
        }
    return {**rows, **shape_errors(labels, phantom, pairs)}


def image_rows(phantom: SemPhantom) -> dict[str, str]:
    """Myofibril axis and sarcomere length estimated from the image."""
    truth_axis = phantom.metadata["myofibril_axis"]
    true_length = phantom.metadata["sarcomere_length_um"]
    estimate = estimate_myofibril_axis(phantom.image, phantom.voxel_size)
    rows = {
        "myofibril axis error (structure tensor)": (
            f"{angle_deg(estimate.axis, truth_axis):.1f} deg"
        )
    }
    for label, axis, mask in (
        ("no mask, estimated axis", estimate.axis, None),
        ("no mask, true axis", truth_axis, None),
        ("mask = not mitochondria, estimated axis", estimate.axis, phantom.instances == 0),
    ):
        found = estimate_sarcomere_length(phantom.image, phantom.voxel_size, axis, mask=mask)
        error = 100 * (found.length_um / true_length - 1)
        rows[f"sarcomere length, {label}"] = (
            f"{found.length_um:.3f} um ({error:+.1f} %; true {true_length:g})"
        )
    return rows


def spheroid_mask(voxel_size, a: float, b: float, axis) -> np.ndarray:
    """Voxels whose centre lies inside a prolate spheroid centred in its box."""
    shape = tuple(int(2.3 * a / v) + 4 for v in voxel_size)
    unit = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    grids = [(np.arange(n) + 0.5 - n / 2) * v for n, v in zip(shape, voxel_size, strict=True)]
    offset = np.stack(np.meshgrid(*grids, indexing="ij"), axis=-1)
    along = offset @ unit
    across2 = (offset * offset).sum(-1) - along**2
    return ((along / a) ** 2 + across2 / b**2 <= 1.0).astype(np.uint8)


def spheroid_table(a: float = 0.9, b: float = 0.45) -> None:
    """Print surface-area errors of single spheroids and the time per object."""
    print(f"\n### single spheroids, a = {a} um, b = {b} um, axes (z, y, x) {SPHEROID_AXES}\n")
    print("| voxels | surface error per axis | ms per object (median) |")
    print("|---|---|---|")
    for name, voxel_size in VOXEL_SIZES.items():
        errors, times = [], []
        for axis in SPHEROID_AXES:
            labels = spheroid_mask(voxel_size, a, b, axis)
            start = time.perf_counter()
            (m,) = measure_objects(labels, voxel_size)
            times.append(1e3 * (time.perf_counter() - start))
            errors.append(100 * (m.surface_um2 / prolate_area(a, b) - 1))
        listed = ", ".join(f"{e:+.1f}" for e in errors)
        print(f"| {name} | {listed} % | {np.median(times):.0f} |")


def split_sweep(phantom: SemPhantom) -> None:
    """Print instance F1 for several seed blurs and minimum sizes."""
    truth = phantom.instances.astype(np.int64)
    true_keep = np.zeros(len(phantom.truth) + 1, dtype=bool)
    true_keep[1:] = [not t.touches_border for t in phantom.truth]
    inner_truth = np.where(true_keep[truth], truth, 0)
    maps = {"ideal": ideal_probability_maps(phantom), "noisy": noisy_probability_maps(phantom)}
    print(
        "\n| sigma (px) | min_size | F1 all, ideal | F1 interior, ideal | F1 all, noisy "
        "| F1 interior, noisy |"
    )
    print("|---|---|---|---|---|---|")
    for sigma, min_size in (
        (0.0, 50),
        (0.5, 50),
        (1.0, 50),
        (1.5, 50),
        (2.0, 50),
        (1.0, 10),
        (1.0, 200),
    ):
        cells = []
        for name in ("ideal", "noisy"):
            result = split_instances(*maps[name], SplitParams(sigma=sigma, min_size=min_size))
            labels = result.labels.astype(np.int64)
            keep = np.zeros(result.count + 1, dtype=bool)
            keep[1:] = ~result.touches_border
            every = instance_f1(labels, truth).f1
            inner = instance_f1(np.where(keep[labels], labels, 0), inner_truth).f1
            cells += [f"{every:.3f}", f"{inner:.3f}"]
        print(f"| {sigma:g} | {min_size} | " + " | ".join(cells) + " |")


def main() -> None:
    """Print the table."""
    sources = ("truth labels", "split, ideal maps", "split, noisy maps")
    for name, options in PHANTOMS.items():
        phantom = make_sem_phantom(**options)
        extent = " x ".join(
            f"{n * v:.2f}" for n, v in zip(phantom.instances.shape, phantom.voxel_size, strict=True)
        )
        print(
            f"\n### {name}: cell {phantom.metadata['cell']}, shape {phantom.instances.shape}, "
            f"voxels {phantom.voxel_size} um ({extent} um), myofibril axis "
            f"{tuple(round(v, 3) for v in phantom.metadata['myofibril_axis'])}, "
            f"seed {options['seed']}\n"
        )
        columns = {source: column(phantom, source) for source in sources}
        keys = list(dict.fromkeys(k for c in columns.values() for k in c))
        print("| figure | " + " | ".join(sources) + " |")
        print("|---" * (len(sources) + 1) + "|")
        for key in keys:
            print(f"| {key} | " + " | ".join(columns[s].get(key, "-") for s in sources) + " |")
        print()
        print("| from the image | value |")
        print("|---|---|")
        for key, value in image_rows(phantom).items():
            print(f"| {key} | {value} |")
        if name != "tilted":
            split_sweep(phantom)
    spheroid_table()


if __name__ == "__main__":
    main()
