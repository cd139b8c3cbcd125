"""Morphometry of mitochondria in SBF-SEM stacks (study B): split, measure, compare, log.

:func:`measure_stack` measures a label volume and writes ``instances.csv``, ``summary.json``,
``labels.tif``, ``figures/`` and ``meshes/``; :func:`split_stack` turns object and contour
probability maps into a labels TIFF; :func:`run_morphometry` does both with a registered model
(segment, split, measure) and logs an MLflow run in experiment ``morphometry`` linked to the
model version; :func:`postprocess_stack` goes from probability maps on disk to the whole
morphometry folder with bounded memory; :func:`compare_summaries` lays several ``summary.json``
side by side as study B's Table 3. Every output folder is written atomically.

Memory. Label volumes and probability maps are read through memory maps one slab (or one object
box) at a time: splitting is :func:`seglab.instances.split_instances_chunked` into a scratch
memory map, measuring is :func:`seglab.morphometry.measure_objects_chunked` and meshes are
streamed object by object. Pages of a memory map that were read stay mapped into the process
(and count in its resident memory) until the map is closed, so the phases drop them after each
slab (``madvise(MADV_DONTNEED)``: the data stay in the page cache and on disk). Study B's cell B
(690 x 1024 x 1024) runs in well under 4 GiB this way (``benchmarks/RESULTS.md``, B3).
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from seglab.d4 import D4_SUBSETS
from seglab.errors import DataFileError, SeglabError
from seglab.instances import SplitParams, SplitResult, split_instances_chunked
from seglab.io.atomic import atomic_directory
from seglab.io.images import Image, read_image, read_stack_memmap, write_image
from seglab.io.parallel import check_backend
from seglab.metrics import probability_to_uint8
from seglab.morphometry import (
    MEASUREMENT_COLUMNS,
    TABLE3_COLUMNS,
    MeshWriter,
    compare_stacks,
    estimate_myofibril_axis,
    estimate_sarcomere_length,
    measure_objects_chunked,
    rows,
    summarise,
)
from seglab.progress import ProgressCallback
from seglab.workflows._outputs import (
    Summary,
    phase_progress,
    pyplot,
    save_figure,
    write_csv,
    write_json,
)

__all__ = [
    "MORPHOMETRY_EXPERIMENT",
    "MorphometryResult",
    "Parallelism",
    "compare_summaries",
    "measure_stack",
    "postprocess_stack",
    "predict_maps",
    "run_morphometry",
    "split_stack",
]

MORPHOMETRY_EXPERIMENT = "morphometry"
MeshFormat = Literal["ply", "obj", "stl", "none"]
ArrayOrPath = np.ndarray | str | os.PathLike[str]

#: Default myofibril axis when neither an axis nor an image is given: along x.
DEFAULT_AXIS = (0.0, 0.0, 1.0)
#: Label volumes above this many voxels are split into a memory-mapped file, not into RAM.
MEMMAP_VOXELS = 64 * 1024 * 1024
#: Slices per slab of the chunked splitting and measuring.
SPLIT_SLAB = 64
#: Slices segmented at a time by :func:`run_morphometry` (plus the model's adjacent slices).
PREDICT_SLAB = 16
#: Largest central block (voxels) of the image that the axis and sarcomere estimates read;
#: 16 full 1024 x 1024 slices, about 0.7 GiB of working memory for the structure tensor.
ESTIMATE_VOXELS = 16 * 1024 * 1024
#: Fewest slices of that block (the structure tensor and its smoothing need depth).
ESTIMATE_MIN_SLICES = 16


@dataclass(frozen=True)
class Parallelism:
    """How the chunked splitting and measuring run: in this process, or as dask tasks.

    Attributes
    ----------
    backend : {"serial", "dask"}
        ``"dask"`` runs the slabs of the split and the batches of objects of the measurement
        as dask tasks (:mod:`seglab.io.parallel`); results are identical to serial.
    workers : int or None
        Tasks in flight at once (and pool size); None: the number of CPUs.
    scheduler : str or None
        dask scheduler: ``"processes"`` (default), ``"threads"``, ``"synchronous"``, or None
        for dask's default, which is the active ``dask.distributed`` client when there is one
        (a cluster: the stack's files must then be on a filesystem every worker sees).
    """

    backend: str = "serial"
    workers: int | None = None
    scheduler: str | None = "processes"

    def __post_init__(self) -> None:
        check_backend(self.backend, self.workers, self.scheduler)

    def options(self) -> dict[str, Any]:
        """Keyword arguments of the chunked engines."""
        if self.backend == "serial":
            return {}
        return {"backend": "dask", "workers": self.workers, "scheduler": self.scheduler}


SERIAL = Parallelism()


@dataclass
class MorphometryResult(Summary):
    """What a morphometry workflow wrote: :class:`Summary` plus the figures of ``summary.json``.

    Attributes
    ----------
    values : dict
        The content of ``summary.json`` (empty for :func:`split_stack`, which has none).
    run_id : str
        MLflow run of :func:`run_morphometry` (empty otherwise).
    timings_s : dict
        Wall time of each phase in seconds (:func:`postprocess_stack` fills it).
    """

    values: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    timings_s: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _voxel_size(voxel_size: Sequence[float] | None, image: Image | None, what: str) -> tuple:
    """Return ``((z, y, x), source)``: the given voxel size, or the one the file stores."""
    if voxel_size is not None:
        try:
            values = tuple(float(v) for v in voxel_size)
        except (TypeError, ValueError):
            values = ()
        if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
            raise SeglabError(
                f"voxel size must be three positive lengths Z Y X in um, got {voxel_size!r}",
                "pass e.g. --voxel-size 0.07 0.014 0.014",
            )
        return values, "given"
    spacing = image.spacing if image is not None else None
    if spacing is None or len(spacing) != 3:
        raise SeglabError(
            f"{what} stores no voxel size and none was given",
            "pass --voxel-size Z Y X in um",
        )
    if not all(math.isfinite(v) and v > 0 for v in spacing):
        raise SeglabError(
            f"{what} stores an invalid voxel size {tuple(spacing)}",
            "pass --voxel-size Z Y X in um",
        )
    return tuple(float(v) for v in spacing), f"read from {image.path.name if image.path else what}"


def _stack(source: ArrayOrPath, name: str, *, memmap: bool = False) -> Image:
    """Return a (Z, Y, X) stack from an array or a file (memory-mapped when possible)."""
    if isinstance(source, np.ndarray):
        if source.ndim != 3:
            raise SeglabError(
                f"{name} must be a (Z, Y, X) stack, got shape {source.shape}",
                "pass a 3D array or a stack file",
            )
        return Image(source, axes="ZYX")
    image = None
    if memmap:
        try:
            image = read_stack_memmap(source)
        except DataFileError as err:
            if not Path(source).exists():
                raise
            if "memory-mapped" not in str(err) and "not a TIFF" not in str(err):
                raise
    mapped = image is not None
    if image is None:
        image = read_image(source)  # refuses NaN and infinite pixels itself
    if image.axes != "ZYX":
        raise DataFileError(
            f"{source} holds {image.axes} data of shape {image.shape}, not a (Z, Y, X) stack",
            f"give a single-channel z-stack as {name}",
        )
    if mapped and image.array.dtype.kind == "f":
        _check_finite_slabs(image.array, source)
    return image


def _check_finite_slabs(stack: np.ndarray, source: ArrayOrPath) -> None:
    """Refuse a float stack with NaN or infinite voxels, reading a memory map slab by slab."""
    for start in range(0, stack.shape[0], SPLIT_SLAB):
        finite = np.isfinite(np.asarray(stack[start : start + SPLIT_SLAB]))
        _drop_resident_pages(stack)
        if not finite.all():
            first = start + int(np.argmin(finite.reshape(finite.shape[0], -1).all(axis=1)))
            raise DataFileError(
                f"{source} has NaN or infinite voxel values (the first in slice {first})",
                "replace them with finite grey levels (e.g. 0) and save the stack again",
            )


def _same_shape(shape: tuple[int, ...], other: tuple[int, ...], what: str) -> None:
    if tuple(other) != tuple(shape):
        raise SeglabError(
            f"{what} has shape {tuple(other)}, the labels {tuple(shape)}",
            f"pass the {what} of the same stack",
        )


def _finite_or_none(value: Any) -> Any:
    """NaN -> None recursively, so that summary.json is strict JSON."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float | np.floating) and not math.isfinite(float(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def _drop_resident_pages(*arrays: np.ndarray) -> None:
    """Unmap the pages of memory-mapped arrays that reading or writing made resident.

    The data stay in the page cache and in the file (for a shared writable map the kernel keeps
    the written pages), so later reads see the same values; only the process's resident memory
    shrinks. Arrays that are not memory maps are left alone.
    """
    for array in arrays:
        base: Any = array
        while base is not None and not isinstance(getattr(base, "_mmap", None), mmap.mmap):
            base = getattr(base, "base", None)
        if base is None:
            continue
        with contextlib.suppress(AttributeError, ValueError, OSError):
            base._mmap.madvise(mmap.MADV_DONTNEED)


class _PageDropper:
    """A ``progress(phase, fraction)`` callback that also drops mapped pages now and then."""

    def __init__(self, report: ProgressCallback | None, *arrays: np.ndarray) -> None:
        self.report = report
        self.arrays = list(arrays)
        self._last: tuple[str, float] = ("", 0.0)

    def __call__(self, phase: str, fraction: float) -> None:
        if self.report is not None:
            self.report(phase, fraction)
        last_phase, last_fraction = self._last
        if phase != last_phase or fraction - last_fraction >= 0.02 or fraction >= 1.0:
            _drop_resident_pages(*self.arrays)
            self._last = (phase, fraction)


@contextlib.contextmanager
def _progress_or(progress: ProgressCallback | None) -> Iterator[ProgressCallback]:
    """Yield the given callback, or one driving progress bars on stderr."""
    if progress is not None:
        yield progress
        return
    with phase_progress() as report:
        yield report


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def measure_stack(
    labels: ArrayOrPath,
    voxel_size: Sequence[float] | None,
    out_dir: str | os.PathLike[str],
    *,
    axis: Sequence[float] | None = None,
    image: ArrayOrPath | None = None,
    method: str = "moments",
    meshes: MeshFormat = "ply",
    cell_mask: ArrayOrPath | None = None,
    overwrite: bool = False,
    parallel: Parallelism | None = None,
) -> MorphometryResult:
    """Measure every object of a label volume and write the morphometry folder.

    Parameters
    ----------
    labels : (Z, Y, X) ndarray of int, or path
        Instance labels (0 background) or a stack file holding them.
    voxel_size : tuple of float or None
        ``(z, y, x)`` in um; None reads it from the ``labels`` file (then from ``image``).
    out_dir : path-like
        New folder (replaced only with ``overwrite``) receiving ``instances.csv`` (columns
        :data:`seglab.morphometry.MEASUREMENT_COLUMNS`), ``summary.json``, ``labels.tif``
        (uint16, or uint32 above 65535 labels, with the voxel size), ``figures/*.png`` and
        ``meshes/`` (one file per object plus ``model.<format>``, coordinates x, y, z in um).
    axis : tuple of float, optional
        ``(z, y, x)`` myofibril direction. When omitted it is estimated from ``image``
        (structure tensor), or taken along x when there is no image; ``summary.json`` says which.
    image : (Z, Y, X) ndarray or path, optional
        The SEM stack; gives the axis when none is given and the sarcomere length (Z-disc
        period along the axis, measured outside the objects).
    method : {"moments", "published"}
        Spheroid fit (:func:`seglab.morphometry.measure_objects`).
    meshes : {"ply", "obj", "stl", "none"}
        Mesh format, or no meshes.
    cell_mask : (Z, Y, X) ndarray or path, optional
        The cell (non-zero voxels) or a stack file holding it; adds the volume fraction of the
        cell, and restricts the sarcomere estimate to the cell's myofibrils.
    overwrite : bool
        Whether an existing non-empty ``out_dir`` is replaced.
    parallel : Parallelism, optional
        Serial (default) or dask tasks for the chunked steps; the same results either way.

    Returns
    -------
    MorphometryResult
        Report lines, output paths and the ``summary.json`` content.

    Raises
    ------
    SeglabError
        Bad voxel size (or none known), axis, mesh format, or image/mask of another shape.
    DataFileError
        Missing or unreadable files.
    """
    _check_meshes(meshes)
    label_image = _stack(labels, "labels", memmap=True)
    grey = _stack(image, "image", memmap=True) if image is not None else None
    cell = _stack(cell_mask, "cell mask", memmap=True) if cell_mask is not None else None
    if voxel_size is None and label_image.spacing is None and grey is not None:
        spacing, source = _voxel_size(None, grey, "the image")
    else:
        spacing, source = _voxel_size(voxel_size, label_image, "the labels")
    array = label_image.array
    out = Path(out_dir)
    with atomic_directory(out, overwrite=overwrite) as tmp, phase_progress() as report:
        values, outputs = _write_measurements(
            tmp,
            array,
            spacing,
            axis=axis,
            image=None if grey is None else grey.array,
            method=method,
            meshes=meshes,
            cell_mask=None if cell is None else cell.array,
            extra={"voxel_size_source": source},
            progress=report,
            parallel=parallel or SERIAL,
        )
    result = MorphometryResult(f"measured {values['count']} objects", out, values=values)
    result.lines = _summary_lines(values)
    result.outputs = {name: out / rel for name, rel in outputs.items()}
    return result


def _write_measurements(
    folder: Path,
    labels: np.ndarray,
    voxel_size: tuple[float, float, float],
    *,
    axis: Sequence[float] | None,
    image: np.ndarray | None,
    method: str,
    meshes: MeshFormat,
    cell_mask: np.ndarray | None,
    extra: dict[str, Any],
    write_labels: bool = True,
    progress: ProgressCallback | None = None,
    timings: dict[str, float] | None = None,
    parallel: Parallelism = SERIAL,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Measure and write into ``folder``; return summary.json's content and relative outputs.

    ``labels`` may be a memory map: it is read one slab or one object box at a time.
    """
    timings = timings if timings is not None else {}
    pages = _PageDropper(progress, labels)
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise SeglabError(
            f"labels must hold integer instance labels, got dtype {labels.dtype}",
            "pass a label volume (0 background, 1..N objects), e.g. from `morphometry split`",
        )
    if image is not None:
        _same_shape(labels.shape, image.shape, "image")
    if cell_mask is not None:
        _same_shape(labels.shape, np.shape(cell_mask), "cell mask")
    block = _estimation_block(labels.shape)
    grey = None if image is None else np.asarray(image[block])
    cell = None if cell_mask is None or grey is None else np.asarray(cell_mask[block]) != 0
    axis_info: dict[str, Any]
    if axis is not None:
        unit = np.asarray(axis, dtype=float).reshape(-1)
        norm = float(np.linalg.norm(unit)) if unit.size == 3 else 0.0
        if unit.size != 3 or not np.all(np.isfinite(unit)) or norm == 0:
            raise SeglabError(
                f"axis must be a non-zero (z, y, x) vector, got {axis!r}",
                "pass e.g. --axis 0 0 1 for myofibrils along x",
            )
        axis_info = {"axis": [float(v) for v in unit / norm], "axis_source": "given"}
    elif grey is not None:
        # Inside the cell only: extracellular space would dominate the structure tensor.
        estimate = estimate_myofibril_axis(grey, voxel_size, region=cell)
        axis_info = {
            "axis": list(estimate.axis),
            "axis_source": f"estimated: {estimate.method}, coherence {estimate.confidence:.3f}",
            "axis_coherence": estimate.confidence,
        }
    else:
        axis_info = {
            "axis": list(DEFAULT_AXIS),
            "axis_source": "default: along x (no axis given and no image to estimate it from)",
        }
    sarcomere: dict[str, Any] = {"sarcomere_length_um": None}
    if grey is not None:
        # Myofibril voxels: outside the objects, and inside the cell when a mask is given.
        background = np.asarray(labels[block]) == 0
        where = "outside the objects"
        if cell is not None:
            background &= cell
            where += ", inside the cell"
        if background.any():
            found = estimate_sarcomere_length(grey, voxel_size, axis_info["axis"], mask=background)
            sarcomere = {
                "sarcomere_length_um": found.length_um,
                "sarcomere_source": f"estimated: {found.method}, {where}",
                "sarcomere_peak_ratio": found.peak_ratio,
            }
        del background
    if grey is not None and grey.shape != labels.shape:
        extent = [[int(s.start), int(s.stop)] for s in block]
        axis_info["estimated_on"] = {"z": extent[0], "y": extent[1], "x": extent[2]}
    del grey, cell
    started = time.perf_counter()
    outputs: dict[str, Path] = {}
    # One marching cubes per object: the surface measured is the mesh written.
    writer = (
        MeshWriter(folder / "meshes", meshes, largest_label=_largest_label(labels))
        if meshes != "none"
        else contextlib.nullcontext()
    )
    with writer as mesh_writer:
        measurements = measure_objects_chunked(
            labels,
            voxel_size,
            axis_info["axis"],
            method=method,
            slab=SPLIT_SLAB,
            progress=pages,
            on_surface=None if mesh_writer is None else mesh_writer.add,
            **parallel.options(),
        )
    if meshes == "none":
        timings["measuring"] = time.perf_counter() - started
    else:
        timings["measuring and meshes"] = time.perf_counter() - started
        outputs["meshes"] = Path("meshes")
    values = summarise(measurements, labels.shape, voxel_size, cell_mask)
    values = {
        **{k: values[k] for k in ("count", "count_interior", "mean_volume_um3")},
        **values,
        **axis_info,
        **sarcomere,
        "shape": [int(n) for n in labels.shape],
        "fit_method": method,
        **extra,
    }
    values = _finite_or_none(values)
    write_csv(folder / "instances.csv", rows(measurements), MEASUREMENT_COLUMNS)
    outputs["instances"] = Path("instances.csv")
    write_json(folder / "summary.json", values)
    outputs["summary"] = Path("summary.json")
    if write_labels:
        started = time.perf_counter()
        _write_labels(folder / "labels.tif", labels, voxel_size)
        timings["labels.tif"] = time.perf_counter() - started
        outputs["labels"] = Path("labels.tif")
    _figures(folder / "figures", measurements)
    outputs["figures"] = Path("figures")
    _drop_resident_pages(labels)
    return values, outputs


def _estimation_block(shape: Sequence[int]) -> tuple[slice, slice, slice]:
    """Central block of a ``(Z, Y, X)`` stack read by the axis and sarcomere estimates.

    The whole stack when it has at most :data:`ESTIMATE_VOXELS` voxels; else full slices
    around the middle (at least :data:`ESTIMATE_MIN_SLICES`), cropped to a central square
    when even that many full slices are too large. Memory stays bounded at any stack size and
    the estimates see the middle of the stack, where the cell usually is.
    """
    depth, height, width = (int(n) for n in shape)
    if depth * height * width <= ESTIMATE_VOXELS:
        return (slice(0, depth), slice(0, height), slice(0, width))
    slices = min(depth, max(ESTIMATE_MIN_SLICES, ESTIMATE_VOXELS // max(1, height * width)))
    side = int(math.isqrt(ESTIMATE_VOXELS // slices))
    rows_, cols = min(height, side), min(width, side)

    def centred(size: int, keep: int) -> slice:
        start = (size - keep) // 2
        return slice(start, start + keep)

    return (centred(depth, slices), centred(height, rows_), centred(width, cols))


def _label_dtype(top: int) -> np.dtype:
    """uint16 (ImageJ-readable) when the labels fit, else uint32."""
    return np.dtype(np.uint16 if top <= np.iinfo(np.uint16).max else np.uint32)


def _largest_label(labels: np.ndarray) -> int:
    """Largest value of a label volume, read slab by slab (0 when empty)."""
    top = 0
    for start in range(0, labels.shape[0], SPLIT_SLAB):
        part = labels[start : start + SPLIT_SLAB]
        if part.size:
            top = max(top, int(part.max()))
        del part
        _drop_resident_pages(labels)
    return top


def _write_labels(path: Path, labels: np.ndarray, voxel_size: Sequence[float]) -> None:
    """Labels TIFF: uint16 (ImageJ-readable) when the labels fit, else uint32.

    A large volume of another dtype is converted slab by slab into a scratch memory map next to
    ``path``, never as a whole copy in memory.
    """
    dtype = _label_dtype(_largest_label(labels))
    if labels.dtype == dtype:
        write_image(path, labels, voxel_size, axes="ZYX")
    elif labels.size <= MEMMAP_VOXELS:
        write_image(path, labels.astype(dtype), voxel_size, axes="ZYX")
    else:
        with tempfile.TemporaryDirectory(prefix=".seglab-labels-", dir=path.parent) as scratch:
            narrow = np.lib.format.open_memmap(
                Path(scratch) / "labels.npy", mode="w+", dtype=dtype, shape=labels.shape
            )
            for start in range(0, labels.shape[0], SPLIT_SLAB):
                narrow[start : start + SPLIT_SLAB] = labels[start : start + SPLIT_SLAB]
                _drop_resident_pages(labels, narrow)
            write_image(path, narrow, voxel_size, axes="ZYX")
            del narrow
    _drop_resident_pages(labels)


def _figures(folder: Path, measurements: Sequence[Any]) -> list[str]:
    """Histograms of volume, eccentricity and orientation, and e vs orientation (interior)."""
    plt = pyplot()
    interior = [m for m in measurements if not m.touches_border]
    fitted = [m for m in interior if m.fit_ok]
    volumes = np.array([m.volume_um3 for m in interior])
    ecc = np.array([m.eccentricity for m in fitted])
    angles = np.array([m.orientation_deg for m in fitted])
    note = f"{len(interior)} interior objects ({len(fitted)} with a valid fit)"
    names = []
    for name, data, bins, label in (
        ("volume_histogram", volumes, 20, "volume (um^3)"),
        ("eccentricity_histogram", ecc, np.linspace(0, 1, 11), "eccentricity"),
        (
            "orientation_histogram",
            angles,
            np.linspace(0, 90, 10),
            "orientation to myofibrils (deg)",
        ),
    ):
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        if data.size:
            ax.hist(data, bins=bins, color="tab:blue", edgecolor="white")
        else:
            ax.text(0.5, 0.5, "no objects", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(label)
        ax.set_ylabel("objects")
        ax.set_title(note, fontsize=8)
        save_figure(fig, folder / f"{name}.png")
        names.append(name)
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.scatter(angles, ecc, s=12, color="tab:blue")
    ax.set_xlim(0, 90)
    ax.set_ylim(0, 1)
    ax.set_xlabel("orientation to myofibrils (deg)")
    ax.set_ylabel("eccentricity")
    ax.set_title(note, fontsize=8)
    save_figure(fig, folder / "eccentricity_vs_orientation.png")
    names.append("eccentricity_vs_orientation")
    return names


def _timing_line(timings: dict[str, float]) -> str:
    """``time: segmenting 70.2 s, ...`` from the wall time of each phase."""
    return "time: " + ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in timings.items())


def _summary_lines(values: dict[str, Any]) -> list[str]:
    def number(key: str, fmt: str, unit: str = "") -> str:
        value = values.get(key)
        return "n/a" if value is None else f"{value:{fmt}}{unit}"

    axis = ", ".join(f"{v:.3f}" for v in values["axis"])
    voxel = " x ".join(f"{v:g}" for v in values["voxel_size_um"])
    lines = [
        f"objects: {values['count']} ({values['count_interior']} interior)",
        f"mean volume (interior): {number('mean_volume_um3', '.4f', ' um^3')}",
        f"volume fraction: {100 * values['volume_fraction']:.2f} % of the imaged volume",
        f"voxel size: {voxel} um (z y x), {values.get('voxel_size_source', 'given')}",
        f"myofibril axis (z, y, x): ({axis}), {values['axis_source']}",
        f"sarcomere length: {number('sarcomere_length_um', '.3f', ' um')}",
    ]
    if values.get("volume_fraction_of_cell") is not None:
        lines.insert(
            3, f"volume fraction of the cell: {100 * values['volume_fraction_of_cell']:.2f} %"
        )
    return lines


# --------------------------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------------------------


def _split_to_file(
    object_map: np.ndarray,
    contour_map: np.ndarray,
    out_path: Path,
    params: SplitParams,
    voxel_size: Sequence[float] | None,
    *,
    slab: int | None = None,
    progress: ProgressCallback | None = None,
    parallel: Parallelism = SERIAL,
) -> SplitResult:
    """Split (chunked) and write the labels TIFF (uint16 when the count fits, else uint32).

    Above :data:`MEMMAP_VOXELS` voxels the labels go into a scratch memory map next to
    ``out_path`` and ``result.labels`` is a read-only memory map of the written TIFF.
    """
    shape = tuple(object_map.shape)
    slab = SPLIT_SLAB if slab is None else slab
    with (
        _progress_or(progress) as report,
        tempfile.TemporaryDirectory(prefix=".seglab-split-", dir=out_path.parent) as scratch,
    ):
        if int(np.prod(shape)) <= MEMMAP_VOXELS:
            result = split_instances_chunked(
                object_map, contour_map, params, slab=slab, progress=report, **parallel.options()
            )
            result.labels = result.labels.astype(_label_dtype(result.count), copy=False)
            write_image(out_path, result.labels, voxel_size, axes="ZYX")
            return result
        out = np.lib.format.open_memmap(
            Path(scratch) / "labels.npy", mode="w+", dtype=np.uint32, shape=shape
        )
        pages = _PageDropper(report, object_map, contour_map, out)
        result = split_instances_chunked(
            object_map,
            contour_map,
            params,
            slab=slab,
            out=out,
            progress=pages,
            **parallel.options(),
        )
        _drop_resident_pages(object_map, contour_map)
        result.labels = np.zeros(0, dtype=np.uint32)
        out.flush()
        _write_labels(out_path, out, voxel_size)
        del out, pages
    result.labels = read_stack_memmap(out_path).array
    return result


def split_stack(
    object_map: ArrayOrPath,
    contour_map: ArrayOrPath,
    out_path: str | os.PathLike[str],
    params: SplitParams | None = None,
    *,
    voxel_size: Sequence[float] | None = None,
    overwrite: bool = False,
    parallel: Parallelism | None = None,
) -> MorphometryResult:
    """Split object and contour probability maps into a labels TIFF (study B).

    Parameters
    ----------
    object_map, contour_map : (Z, Y, X) ndarray or path
        Probability maps (uint8 0..255 or float 0..1), or stack files holding them (TIFFs are
        memory-mapped when uncompressed).
    out_path : path-like
        Labels TIFF to write (uint16, or uint32 above 65535 objects), with the voxel size.
    params : SplitParams, optional
        Thresholds, blur, seed level, minimum size and mode.
    voxel_size : tuple of float, optional
        ``(z, y, x)`` in um stored in the TIFF; defaults to the object map file's, if any.
    overwrite : bool
        Whether an existing ``out_path`` is replaced.
    parallel : Parallelism, optional
        Serial (default) or dask tasks for the chunked steps; the same results either way.

    Returns
    -------
    MorphometryResult
        Count, interior count and the output path (``values`` holds ``count``,
        ``count_interior`` and the split parameters).
    """
    params = params if params is not None else SplitParams()
    out = Path(out_path)
    if out.exists() and not overwrite:
        raise SeglabError(f"{out} already exists", "pass --overwrite to replace it")
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise SeglabError(
            f"labels output must be a .tif file, got {out}", "name it e.g. labels.tif"
        )
    objects = _stack(object_map, "object map", memmap=True)
    contours = _stack(contour_map, "contour map", memmap=True)
    if voxel_size is not None:
        spacing, source = _voxel_size(voxel_size, None, "the object map")
    elif objects.spacing is not None:
        spacing, source = _voxel_size(None, objects, "the object map")
    else:
        spacing, source = None, "unknown"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = _split_to_file(
        objects.array, contours.array, out, params, spacing, parallel=parallel or SERIAL
    )
    interior = int(np.count_nonzero(~result.touches_border))
    values = {
        "count": result.count,
        "count_interior": interior,
        "split": {k: getattr(params, k) for k in params.__dataclass_fields__},
        "voxel_size_um": None if spacing is None else list(spacing),
    }
    summary = MorphometryResult(f"split {result.count} objects", out, values=values)
    summary.lines = [
        f"objects: {result.count} ({interior} not touching the border)",
        "parameters: " + ", ".join(f"{k} {v}" for k, v in values["split"].items()),
        f"voxel size: {'unknown' if spacing is None else ' x '.join(f'{v:g}' for v in spacing)}"
        f" ({source})",
    ]
    summary.outputs = {"labels": out}
    return summary


def postprocess_stack(
    object_map: ArrayOrPath,
    contour_map: ArrayOrPath,
    voxel_size: Sequence[float] | None,
    out_dir: str | os.PathLike[str],
    *,
    axis: Sequence[float] | None = None,
    image: ArrayOrPath | None = None,
    cell_mask: ArrayOrPath | None = None,
    params: SplitParams | None = None,
    method: str = "moments",
    meshes: MeshFormat = "ply",
    slab: int = SPLIT_SLAB,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    parallel: Parallelism | None = None,
) -> MorphometryResult:
    """Go from probability maps on disk to the morphometry folder with bounded memory.

    Split (:func:`seglab.instances.split_instances_chunked`, labels into a scratch memory
    map), write ``labels.tif`` slab by slab, then measure and mesh from a memory map of it
    (:func:`seglab.morphometry.measure_objects_chunked`, meshes streamed object by object).
    The outputs are those of :func:`split_stack` followed by :func:`measure_stack` (the same
    ``instances.csv`` and ``summary.json``), at any stack size.

    Parameters
    ----------
    object_map, contour_map : (Z, Y, X) ndarray or path
        Probability maps (uint8 0..255 or float 0..1), or stack files holding them;
        uncompressed TIFFs are memory-mapped and read one slab at a time.
    voxel_size : tuple of float or None
        ``(z, y, x)`` in um; None reads it from the object map file.
    out_dir : path-like
        New folder (replaced only with ``overwrite``) receiving ``labels.tif`` (uint16, or
        uint32 above 65535 objects), ``instances.csv``, ``summary.json`` (with the split
        parameters), ``figures/`` and ``meshes/``.
    axis : tuple of float, optional
        ``(z, y, x)`` myofibril direction; estimated from ``image`` when omitted, else along x.
    image : (Z, Y, X) ndarray or path, optional
        The SEM stack the maps come from: the axis (when not given) and the sarcomere length.
    cell_mask : (Z, Y, X) ndarray or path, optional
        The cell (non-zero voxels): adds the volume fraction of the cell.
    params : SplitParams, optional
        Thresholds, blur, seed level, minimum size and mode.
    method : {"moments", "published"}
        Spheroid fit.
    meshes : {"ply", "obj", "stl", "none"}
        Mesh format, or no meshes.
    slab : int
        Slices per slab (>= 1); memory grows with it (about ``slab * Y * X * 12`` bytes while
        splitting).
    overwrite : bool
        Whether an existing non-empty ``out_dir`` is replaced.
    progress : callable, optional
        ``progress(phase, fraction)`` for each phase; progress bars on stderr when omitted.
    parallel : Parallelism, optional
        Serial (default) or dask tasks for the chunked steps; the same results either way.

    Returns
    -------
    MorphometryResult
        As :func:`measure_stack`; ``timings_s`` gives the wall time of each phase.

    Raises
    ------
    SeglabError
        Bad voxel size (or none known), axis, mesh format, slab or maps of different shapes.
    DataFileError
        Missing or unreadable files.
    """
    params = params if params is not None else SplitParams()
    _check_meshes(meshes)
    _check_slab(slab)
    objects = _stack(object_map, "object map", memmap=True)
    contours = _stack(contour_map, "contour map", memmap=True)
    spacing, source = _voxel_size(voxel_size, objects, "the object map")
    grey = _stack(image, "image", memmap=True) if image is not None else None
    cell = _stack(cell_mask, "cell mask", memmap=True) if cell_mask is not None else None
    timings: dict[str, float] = {}
    out = Path(out_dir)
    with atomic_directory(out, overwrite=overwrite) as tmp, _progress_or(progress) as report:
        values, outputs = _maps_to_folder(
            tmp,
            objects.array,
            contours.array,
            spacing,
            params,
            slab=int(slab),
            axis=axis,
            image=None if grey is None else grey.array,
            cell_mask=None if cell is None else cell.array,
            method=method,
            meshes=meshes,
            extra={"voxel_size_source": source},
            progress=report,
            timings=timings,
            parallel=parallel or SERIAL,
        )
        del objects, contours
    result = MorphometryResult(
        f"split and measured {values['count']} objects", out, values=values, timings_s=timings
    )
    result.lines = [*_summary_lines(values), _timing_line(timings)]
    result.outputs = {k: out / r for k, r in outputs.items()}
    return result


def _check_meshes(meshes: str) -> None:
    if meshes not in ("ply", "obj", "stl", "none"):
        raise SeglabError(f"unknown mesh format {meshes!r}", "use ply, obj, stl or none")


def _check_slab(slab: Any) -> None:
    if isinstance(slab, bool) or not isinstance(slab, int | np.integer) or slab < 1:
        raise SeglabError(f"slab must be an integer >= 1, got {slab!r}", "pass e.g. slab=64")


def _maps_to_folder(
    folder: Path,
    object_map: np.ndarray,
    contour_map: np.ndarray,
    voxel_size: tuple[float, float, float],
    params: SplitParams,
    *,
    slab: int,
    axis: Sequence[float] | None,
    image: np.ndarray | None,
    cell_mask: np.ndarray | None,
    method: str,
    meshes: MeshFormat,
    extra: dict[str, Any],
    progress: ProgressCallback,
    timings: dict[str, float],
    parallel: Parallelism,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Split maps into ``folder/labels.tif`` and measure it there (memory-mapped above a size)."""
    started = time.perf_counter()
    split = _split_to_file(
        object_map,
        contour_map,
        folder / "labels.tif",
        params,
        voxel_size,
        slab=slab,
        progress=progress,
        parallel=parallel,
    )
    timings["splitting and labels.tif"] = time.perf_counter() - started
    labels = split.labels
    del split
    split_values = {k: getattr(params, k) for k in params.__dataclass_fields__}
    values, outputs = _write_measurements(
        folder,
        labels,
        voxel_size,
        axis=axis,
        image=image,
        method=method,
        meshes=meshes,
        cell_mask=cell_mask,
        extra={**extra, "split": split_values},
        write_labels=False,
        progress=progress,
        timings=timings,
        parallel=parallel,
    )
    _drop_resident_pages(labels)
    del labels
    return values, {"labels": Path("labels.tif"), **outputs}


# --------------------------------------------------------------------------------------------
# With a registered model
# --------------------------------------------------------------------------------------------


def _mito_model_classes(model: Any) -> tuple[int, int]:
    """Return ``(contour class index, adjacent-slice halo)`` of a binary mito model."""
    settings = model.settings
    if settings is None or settings.kind != "binary" or "contour" not in settings.class_names:
        kind = None if settings is None else settings.kind
        names = None if settings is None else settings.class_names
        raise SeglabError(
            f"morphometry needs a binary mitochondria model with a 'contour' class, got a "
            f"{kind} model with classes {names}",
            "pass a model trained with `seglab train mito`",
        )
    if settings.in_channels != 1:
        raise SeglabError(
            f"the model takes {settings.in_channels}-channel images, not SEM stacks",
            "pass a model trained with `seglab train mito`",
        )
    halo = max(int(member.num_slices) for member in settings.members) // 2
    return settings.class_names.index("contour"), halo


def predict_maps(
    model: Any,
    stack: np.ndarray,
    object_out: np.ndarray,
    contour_out: np.ndarray,
    *,
    tta: str = "off",
    precision: str = "float32",
    slab: int = PREDICT_SLAB,
    progress: ProgressCallback | None = None,
) -> None:
    """Segment a stack slab by slab into object and contour probability maps.

    Each slab of ``slab`` slices is read with the model's adjacent slices on either side (the
    halo a 3- or 5-slice member needs), predicted, and its own slices are written; slices at
    the ends of the stack are mirrored as in a whole-stack prediction. The intensity remap is
    per slice. The maps are therefore those of one whole-stack prediction, with memory bounded
    by one slab of class probabilities (about ``(slab + 4) * K * Y * X * 8`` bytes).

    Parameters
    ----------
    model : BundleRunner
        A loaded binary mitochondria model (classes background, interior, contour).
    stack : (Z, Y, X) ndarray
        Raw SEM grey levels; may be a ``np.memmap`` (read one slab at a time).
    object_out, contour_out : (Z, Y, X) ndarray of uint8
        Receive the object (foreground classes summed) and contour probabilities, 0..255;
        may be ``np.memmap`` files.
    tta : {"off", "flips", "all"}
        Test-time augmentation.
    precision : {"float32", "bfloat16"}
        Network precision; ``"bfloat16"`` is opt-in (faster, changes a few voxels' maps).
    slab : int
        Slices predicted at a time (>= 1).
    progress : callable, optional
        ``progress("segmenting", fraction)`` after each slab.
    """
    contour_index, halo = _mito_model_classes(model)
    _check_slab(slab)
    depth = stack.shape[0]
    for start in range(0, depth, int(slab)):
        stop = min(depth, start + int(slab))
        first, last = max(0, start - halo), min(depth, stop + halo)
        probabilities = model.probabilities(
            np.asarray(stack[first:last]), stack=True, tta=tta, precision=precision
        )
        own = probabilities[start - first : stop - first]  # (n, K, Y, X)
        object_out[start:stop] = probability_to_uint8(model.object_probability(own, class_axis=1))
        contour_out[start:stop] = probability_to_uint8(own[:, contour_index])
        del probabilities, own
        _drop_resident_pages(stack, object_out, contour_out)
        if progress is not None:
            progress("segmenting", stop / depth)


def run_morphometry(
    store: Any,
    model_uri: str,
    stack_path: str | os.PathLike[str],
    voxel_size: Sequence[float] | None,
    out_dir: str | os.PathLike[str],
    *,
    axis: Sequence[float] | None = None,
    cell_mask: ArrayOrPath | None = None,
    split_params: SplitParams | None = None,
    tta: str = "off",
    precision: str = "float32",
    method: str = "moments",
    meshes: MeshFormat = "ply",
    slab: int = SPLIT_SLAB,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    parallel: Parallelism | None = None,
) -> MorphometryResult:
    """Segment a stack with a registered model, split, measure, write and log a run.

    The stack is memory-mapped when it is an uncompressed TIFF and segmented slab by slab
    (:func:`predict_maps`) into memory-mapped maps; splitting and measuring then run as in
    :func:`postprocess_stack`, so memory stays bounded at study B's full stack size.

    Parameters
    ----------
    store : TrackingStore
        Where the model is registered and the run is logged.
    model_uri : str
        ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``models:/NAME`` of a binary
        mitochondria model (classes background, interior, contour).
    stack_path : path-like
        The SEM stack, a single-channel ``(Z, Y, X)`` file.
    voxel_size : tuple of float or None
        ``(z, y, x)`` in um; None reads it from the stack file.
    out_dir : path-like
        New folder: :func:`measure_stack`'s outputs plus ``object.tif`` and ``contour.tif``
        (uint8 0..255 probability maps).
    axis : tuple of float, optional
        ``(z, y, x)`` myofibril direction; estimated from the stack when omitted.
    cell_mask : (Z, Y, X) ndarray or path, optional
        The cell (non-zero voxels): adds the volume fraction of the cell.
    split_params : SplitParams, optional
    tta : {"off", "flips", "all"}
    precision : {"float32", "bfloat16"}
        Network precision (``"bfloat16"`` opt-in), see :func:`predict_maps`.
    method : {"moments", "published"}
    meshes : {"ply", "obj", "stl", "none"}
    slab : int
        Slices per slab of the splitting and measuring (>= 1).
    overwrite : bool
    progress : callable, optional
        ``progress(phase, fraction)``; progress bars on stderr when omitted.
    parallel : Parallelism, optional
        Serial (default) or dask tasks for the chunked steps; the same results either way.

    Returns
    -------
    MorphometryResult
        As :func:`measure_stack`, with ``run_id`` of the MLflow run (experiment
        ``morphometry``: parameters, metrics linked to the model, tags ``seglab.model`` and
        ``seglab.model_id``, the model as run input, instances.csv, summary.json and figures as
        artifacts) and the wall time of each phase in ``timings_s``.
    """
    from mlflow.entities import LoggedModelInput, Metric

    from seglab.models.registry import load_model, model_id_of
    from seglab.tracking.runs import tracked_run

    params_split = split_params if split_params is not None else SplitParams()
    _check_meshes(meshes)
    _check_slab(slab)
    if tta not in D4_SUBSETS:
        raise SeglabError(f"unknown tta {tta!r}", f"use one of {', '.join(D4_SUBSETS)}")
    stack = _stack(stack_path, "stack", memmap=True)
    spacing, source = _voxel_size(voxel_size, stack, "the stack")
    cell = _stack(cell_mask, "cell mask", memmap=True) if cell_mask is not None else None
    if cell is not None:
        _same_shape(stack.shape, cell.shape, "cell mask")
    if axis is not None:
        axis = [float(v) for v in axis]
    out = Path(out_dir)
    model, version = load_model(store, model_uri)
    _mito_model_classes(model)
    name, number = version.name, str(version.version)
    model_id = model_id_of(version)
    params = {
        "model_uri": model_uri,
        "model": f"{name}/{number}",
        "stack": str(stack_path),
        "voxel_size_um": list(spacing),
        "voxel_size_source": source,
        "axis": "estimate" if axis is None else axis,
        "cell_mask": "none" if cell_mask is None else str(cell_mask),
        "split": {k: getattr(params_split, k) for k in params_split.__dataclass_fields__},
        "tta": tta,
        "precision": precision,
        "fit_method": method,
        "backend": (parallel or SERIAL).backend,
    }
    tags = {"seglab.model": f"{name}/{number}", "seglab.model_id": model_id or ""}
    timings: dict[str, float] = {}
    with tracked_run(
        store, MORPHOMETRY_EXPERIMENT, f"morph-{name}", params=params, tags=tags
    ) as run:
        if model_id:
            run.client.log_inputs(run.run_id, models=[LoggedModelInput(model_id)])
        with (
            atomic_directory(out, overwrite=overwrite) as tmp,
            _progress_or(progress) as report,
            tempfile.TemporaryDirectory(prefix=".seglab-maps-", dir=tmp) as scratch,
        ):
            started = time.perf_counter()
            shape = tuple(stack.shape)
            object_map = np.lib.format.open_memmap(
                Path(scratch) / "object.npy", mode="w+", dtype=np.uint8, shape=shape
            )
            contour_map = np.lib.format.open_memmap(
                Path(scratch) / "contour.npy", mode="w+", dtype=np.uint8, shape=shape
            )
            predict_maps(
                model,
                stack.array,
                object_map,
                contour_map,
                tta=tta,
                precision=precision,
                progress=report,
            )
            for name_, array in (("object.tif", object_map), ("contour.tif", contour_map)):
                array.flush()
                write_image(tmp / name_, array, spacing, axes="ZYX")
                _drop_resident_pages(array)
            timings["segmenting"] = time.perf_counter() - started
            values, outputs = _maps_to_folder(
                tmp,
                object_map,
                contour_map,
                spacing,
                params_split,
                slab=int(slab),
                axis=axis,
                image=stack.array,
                cell_mask=None if cell is None else cell.array,
                method=method,
                meshes=meshes,
                extra={
                    "voxel_size_source": source,
                    "model": f"{name}/{number}",
                    "model_uri": model_uri,
                    "stack": str(stack_path),
                    "run_id": run.run_id,
                },
                progress=report,
                timings=timings,
                parallel=parallel or SERIAL,
            )
            del object_map, contour_map
        outputs = {"object map": Path("object.tif"), "contour map": Path("contour.tif"), **outputs}
        now = int(time.time() * 1000)
        metrics = [
            Metric(key, float(values[key]), now, 0, model_id=model_id, run_id=run.run_id)
            for key in (
                "count",
                "count_interior",
                "mean_volume_um3",
                "volume_fraction",
                "volume_fraction_of_cell",
                "sarcomere_length_um",
            )
            if values.get(key) is not None
        ]
        run.client.log_batch(run.run_id, metrics=metrics)
        for rel in ("instances.csv", "summary.json"):
            run.client.log_artifact(run.run_id, str(out / rel), "morphometry")
        run.client.log_artifacts(run.run_id, str(out / "figures"), "morphometry/figures")
    result = MorphometryResult(
        f"{name} version {number} on {Path(stack_path).name}: {values['count']} objects",
        out,
        values=values,
        run_id=run.run_id,
        timings_s=timings,
    )
    result.lines = [*_summary_lines(values), _timing_line(timings)]
    result.outputs = {key: out / rel for key, rel in outputs.items()}
    return result


# --------------------------------------------------------------------------------------------
# Comparing stacks
# --------------------------------------------------------------------------------------------


def _nan_for_none(summary: dict[str, Any]) -> dict[str, Any]:
    """Undo :func:`_finite_or_none` for the numbers of Table 3 (no interior object: NaN)."""
    return {
        key: math.nan if value is None and key != "volume_fraction_of_cell" else value
        for key, value in summary.items()
    }


def compare_summaries(
    paths: Sequence[str | os.PathLike[str]],
    out_csv: str | os.PathLike[str] | None = None,
) -> list[dict[str, Any]]:
    """Lay morphometry summaries side by side as study B's Table 3.

    Parameters
    ----------
    paths : sequence of path-like
        Morphometry folders (holding ``summary.json``) or ``summary.json`` files. Each stack is
        named by its folder.
    out_csv : path-like, optional
        CSV to write with the columns :data:`seglab.morphometry.TABLE3_COLUMNS`.

    Returns
    -------
    list of dict
        One row per stack (:func:`seglab.morphometry.compare_stacks`).
    """
    if not paths:
        raise SeglabError("no morphometry folders to compare", "pass one or more output folders")
    summaries: dict[str, dict[str, Any]] = {}
    for given in paths:
        path = Path(given)
        file = path / "summary.json" if path.is_dir() else path
        if not file.is_file():
            raise DataFileError(
                f"{file} does not exist", "pass folders written by `seglab morphometry`"
            )
        try:
            summary = json.loads(file.read_text())
        except (OSError, ValueError) as err:
            raise DataFileError(
                f"{file} is not readable JSON ({err})", "re-run the morphometry"
            ) from err
        if not isinstance(summary, dict):
            raise DataFileError(f"{file} is not a morphometry summary", "re-run the morphometry")
        name = file.parent.name or str(file.parent)
        if name in summaries:
            name = str(file.parent)
        summaries[name] = _nan_for_none(summary)
    table = compare_stacks(summaries)
    if out_csv is not None:
        write_csv(out_csv, table, TABLE3_COLUMNS)
    return table
