"""Instance splitting of mitochondria from object and contour probability maps (study B).

The study turns two probability maps of a network (filled mitochondria and their contours,
0..255 per voxel) into separately labelled mitochondria:

1. rough split = (object >= object threshold) and not (contour >= contour threshold);
2. seeds ("cores") = pixels of the rough split image that keep full intensity after a 2D
   Gaussian blur of each slice, i.e. interiors far from any boundary;
3. each connected seed gets a label;
4. the seeds grow inside the object mask (a watershed on the blurred image, flooding from
   the brightest interior down to the contours); voxels where two seeds meet stay
   background, so touching mitochondria are separated by a one-voxel boundary;
5. in 3D, seeds and growth are connected through z, so an object whose seed broke into
   pieces in one slice is rejoined by the slices above and below.

Objects smaller than ``min_size`` voxels are dropped and the rest are numbered ``1..N`` in the
*canonical order*: by the raster position ``(z, y, x)`` of their first voxel. Objects touching
a face of the volume are flagged (study B leaves them out of shape statistics).

Exact chunking. The work is done per connected component of the object mask (face
connectivity): the component's bounding box is cut out, its seeds are labelled and grown there
and nowhere else. Seeds and growth never leave the object mask, and a component contains whole
seeds (seeds are a subset of the mask and use the same connectivity), so the result inside a
component depends only on the maps inside its bounding box and, through the in-plane blur, on
the full slices it spans. The blur is 2D per slice, so a slice's blurred image does not depend
on which slab it is computed in. :func:`split_instances_chunked` therefore finds the components
slab by slab (union-find of the pieces that touch across slab boundaries), then processes every
component with exactly the same code as :func:`split_instances`, which is the one-slab case of
the same engine. The two give identical labels, including for objects cut by slab boundaries.
Memory is bounded by one slab plus the z-extent of the deepest mask component (full slices),
plus the output array (which may be a ``np.memmap``).

Per-voxel costs and faster libraries: see ``shared/ECOSYSTEM.md``. This module uses only
numpy, scipy and scikit-image; ``opencv`` (per-slice blur) and ``connected-components-3d``
(slab labelling) would speed up the two full-volume steps if they were available.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from skimage.segmentation import watershed

from seglab.errors import SeglabError
from seglab.io.parallel import Backend, MappedArray, check_backend, mapped_reference, run_in_waves
from seglab.progress import ProgressCallback

__all__ = [
    "InstanceMatch",
    "SplitParams",
    "SplitResult",
    "canonical_relabel",
    "instance_f1",
    "split_instances",
    "split_instances_chunked",
]

SplitMode = Literal["3d", "2d"]

#: Tolerance (grey levels) when float maps in 0..1 are compared with thresholds on 0..255, so
#: that ``uint8_map / 255`` gives the same mask as ``uint8_map``.
_FLOAT_TOLERANCE = 1e-3


@dataclass(frozen=True)
class SplitParams:
    """Parameters of the instance splitting.

    Parameters
    ----------
    object_threshold : float
        A voxel belongs to the object mask when the object map is at least this value, on the
        0..255 scale (float maps in 0..1 are compared with ``object_threshold / 255``).
        Range (0, 255]. Default 128.
    contour_threshold : float
        A voxel is a contour voxel when the contour map is at least this value (0..255 scale).
        Range (0, 255]. Default 128.
    sigma : float
        Standard deviation of the 2D Gaussian blur of each slice of the rough split image, in
        in-plane **pixels** (not um): the blur has to bridge the contour gaps between touching
        objects, whose width is set by the contour model in pixels, not by the object size.
        0 disables the blur (seeds = rough split). Default 1.0 (chosen on SEM phantoms, see
        ``tests/test_instances.py``): seeds keep the pixels at least about 3.5 sigma = 3.5 px
        away from any contour or background pixel.
    seed_level : float
        Fraction of full intensity a blurred pixel must keep to be a seed, in (0, 1]. The study
        keeps the pixels still at 255 on its uint8 images, i.e. 1.0; as there, the blurred
        value is rounded to the uint8 grid (a pixel with blurred value >= 254.5 is at 255).
        Default 1.0.
    min_size : int
        Objects with fewer voxels are dropped (after splitting). Default 50 voxels (a
        mitochondrion of the default phantom has thousands).
    mode : {"3d", "2d"}
        ``"3d"`` (default): seeds and growth connected through z (face connectivity in 3D), so
        pieces are consolidated through z. ``"2d"``: each slice is split on its own (face
        connectivity in the slice, nothing connects slices), for comparison with the study's
        2D first step; labels are still unique across the stack.
    """

    object_threshold: float = 128.0
    contour_threshold: float = 128.0
    sigma: float = 1.0
    seed_level: float = 1.0
    min_size: int = 50
    mode: SplitMode = "3d"

    def __post_init__(self) -> None:
        """Check every field once."""
        for name in ("object_threshold", "contour_threshold"):
            value = getattr(self, name)
            if not _is_real(value) or not 0 < value <= 255:
                raise SeglabError(
                    f"{name} must lie in (0, 255] on the 0..255 map scale, got {value!r}",
                    "pass a grey level such as 128 (float maps in 0..1 are scaled by 255)",
                )
        if not _is_real(self.sigma) or not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise SeglabError(
                f"sigma must be a finite number of pixels >= 0, got {self.sigma!r}",
                "pass e.g. sigma=2.0 (in-plane pixels)",
            )
        if not _is_real(self.seed_level) or not 0 < self.seed_level <= 1:
            raise SeglabError(
                f"seed_level must lie in (0, 1], got {self.seed_level!r}",
                "pass 1.0 to keep only pixels at full intensity, as the study does",
            )
        if isinstance(self.min_size, bool) or not isinstance(self.min_size, int | np.integer):
            raise SeglabError(
                f"min_size must be an integer number of voxels, got {self.min_size!r}",
                "pass e.g. min_size=50",
            )
        if self.min_size < 0:
            raise SeglabError(
                f"min_size must be >= 0 voxels, got {self.min_size}", "pass e.g. min_size=50"
            )
        if self.mode not in ("3d", "2d"):
            raise SeglabError(f"mode must be '3d' or '2d', got {self.mode!r}", "pass mode='3d'")


@dataclass
class SplitResult:
    """Labelled instances.

    Attributes
    ----------
    labels : ndarray of uint32, shape of the input maps ((Z, Y, X), or (Y, X) for one slice)
        0 for background, ``1..count`` for objects, numbered by the raster position of their
        first voxel (:func:`canonical_relabel` order). May be the ``out`` array passed in.
    count : int
        Number of objects.
    touches_border : (count,) ndarray of bool
        Entry ``i`` is True when object ``i + 1`` has a voxel on a face of the volume (first
        or last index of any axis); such objects are cut off and belong out of shape
        statistics, but are still labelled and counted.
    voxel_counts : (count,) ndarray of int64
        Number of voxels of object ``i + 1``.
    """

    labels: np.ndarray
    count: int
    touches_border: np.ndarray
    voxel_counts: np.ndarray


class InstanceMatch(NamedTuple):
    """Result of :func:`instance_f1`.

    Attributes
    ----------
    f1, precision, recall : float
        ``2 M / (P + T)``, ``M / P`` and ``M / T`` with ``M`` matched pairs, ``P`` predicted
        and ``T`` true instances (1.0 for 0 / 0: nothing predicted and nothing true).
    pairs : (M, 2) ndarray of int64
        Matched ``(predicted label, true label)`` pairs, sorted by predicted label.
    """

    f1: float
    precision: float
    recall: float
    pairs: np.ndarray


def split_instances(
    object_map: np.ndarray,
    contour_map: np.ndarray,
    params: SplitParams | None = None,
) -> SplitResult:
    """Split object and contour probability maps into labelled instances (study B).

    Parameters
    ----------
    object_map, contour_map : (Z, Y, X) or (Y, X) ndarray
        Probability maps of filled objects and of their contours, of the same shape: uint8 in
        0..255, float in 0..1, or bool. A 2D map is one slice.
    params : SplitParams, optional
        Thresholds, blur, seed level, minimum size and mode; defaults to ``SplitParams()``.

    Returns
    -------
    SplitResult
        Labels (uint32, shape of the input), object count, border flags and voxel counts.

    Raises
    ------
    SeglabError
        If the maps differ in shape, are not 2D or 3D, have an unsupported dtype, or a float
        map has values outside [0, 1].

    Notes
    -----
    Steps (module docstring): rough split, per-slice blur and seeds, seed labelling, watershed
    of ``-blurred`` from the seeds inside each connected component of the object mask with
    ``watershed_line=True``, removal of objects below ``min_size``, canonical relabelling.
    Connectivity is face connectivity (6 in 3D, 4 in a slice). An object-mask component
    without any seed yields no object. The whole volume is held in memory; for large stacks
    use :func:`split_instances_chunked`, which gives identical labels.
    """
    params = params if params is not None else SplitParams()
    object_map, contour_map, flat = _validated_maps(object_map, contour_map)
    result = _split(object_map, contour_map, params, slab=max(1, object_map.shape[0]))
    if flat:
        result.labels = result.labels[0]
    return result


def split_instances_chunked(
    object_map: np.ndarray,
    contour_map: np.ndarray,
    params: SplitParams | None = None,
    *,
    slab: int = 64,
    out: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
    backend: Backend = "serial",
    workers: int | None = None,
    scheduler: str | None = None,
) -> SplitResult:
    """Split instances slab by slab with bounded memory; identical to :func:`split_instances`.

    Parameters
    ----------
    object_map, contour_map : (Z, Y, X) ndarray
        As in :func:`split_instances`; may be ``np.memmap`` (read one slab at a time).
    params : SplitParams, optional
        Defaults to ``SplitParams()``.
    slab : int
        Number of slices per slab (>= 1).
    out : (Z, Y, X) ndarray of uint32, optional
        Where to write the labels (e.g. a ``np.memmap`` on disk); zeroed first. A new in-memory
        array when omitted.
    progress : callable, optional
        Called as ``progress(phase, fraction)`` for the phases ``"finding objects"``,
        ``"splitting"`` (once per slab, or per finished dask task) and ``"relabelling"``.
    backend : {"serial", "dask"}
        ``"serial"`` (default) splits the slabs one after the other in this process.
        ``"dask"`` splits them as dask tasks, ``workers`` at a time (see Notes); the result
        is identical. Needs dask (``pip install 'seglab[dask]'``).
    workers : int, optional
        With ``backend="dask"``: slabs split at once (one wave of tasks), and the number of
        threads or processes. Default: the number of CPUs.
    scheduler : str, optional
        With ``backend="dask"``: ``"threads"``, ``"processes"`` or ``"synchronous"``, passed
        to ``dask.compute``; None (default) uses dask's default, i.e. threads, or the active
        ``dask.distributed`` client when there is one.

    Returns
    -------
    SplitResult
        As :func:`split_instances`; ``labels`` is ``out`` when given.

    Raises
    ------
    SeglabError
        As :func:`split_instances`, for a bad ``slab``, ``out``, ``backend``, ``workers`` or
        ``scheduler``, and when ``backend="dask"`` but dask is not installed.

    Notes
    -----
    There is no fixed halo. Pass 1 labels the object mask of each slab and joins pieces that
    touch across slab boundaries (union-find), recording each component's bounding box. Pass 2
    visits the slabs again; a component is processed with the slab holding its first slice,
    and that slab is read and blurred down to the last slice of its deepest component (the
    halo is as deep as needed, and no deeper). Pass 3 renumbers the labels in canonical order.
    Peak memory is about ``(slab + deepest component depth) * Y * X * 12`` bytes plus the
    output; one object-mask component spanning the whole stack (e.g. a noisy map joining all
    objects) makes that the whole stack.

    With ``backend="dask"``, pass 1 and pass 3 run here as before and pass 2 runs one dask task
    per slab that starts a component, ``workers`` tasks at a time (peak memory about
    ``workers`` times that of a slab, in the workers). A task reads its slices of the maps,
    splits its components and returns each one's objects as a small crop of local ids; this
    process writes them into ``labels`` in slab order, so the provisional ids, and hence the
    labels, are those of the serial run, and ``out`` may be any array (tasks never write it).
    Maps that are ``np.memmap`` views stored contiguously (``tifffile.memmap``,
    ``np.lib.format.open_memmap``, :func:`seglab.io.images.read_stack_memmap` of a ZYX stack)
    are handed to tasks as a file reference (name, dtype, shape, offset) and re-opened
    read-only there; other maps are handed over as the slab's slices (a view under the
    threaded scheduler; a pickled copy of those slices under a process scheduler or a
    cluster). On a ``dask.distributed`` cluster the map files must be on a filesystem that
    every worker sees under the same path.
    """
    params = params if params is not None else SplitParams()
    object_map, contour_map, flat = _validated_maps(object_map, contour_map)
    if flat:
        raise SeglabError(
            f"split_instances_chunked needs (Z, Y, X) maps, got shape {object_map.shape[1:]}",
            "use split_instances for a single slice",
        )
    if isinstance(slab, bool) or not isinstance(slab, int | np.integer) or slab < 1:
        raise SeglabError(f"slab must be an integer >= 1, got {slab!r}", "pass e.g. slab=64")
    check_backend(backend, workers, scheduler)
    if out is not None and (out.shape != object_map.shape or out.dtype != np.uint32):
        raise SeglabError(
            f"out must be a uint32 array of shape {object_map.shape}, got {out.dtype} {out.shape}",
            "pass e.g. np.lib.format.open_memmap(path, 'w+', np.uint32, shape)",
        )
    return _split(
        object_map,
        contour_map,
        params,
        slab=int(slab),
        out=out,
        progress=progress,
        backend=backend,
        workers=workers,
        scheduler=scheduler,
    )


def canonical_relabel(labels: np.ndarray) -> np.ndarray:
    """Renumber labels ``1..N`` by the raster position of each object's first voxel.

    Parameters
    ----------
    labels : ndarray of int
        Any label image (0 = background).

    Returns
    -------
    ndarray of uint32
        Same shape; the object whose first voxel (C order) comes first gets 1, and so on.
        Two label images that describe the same partition give equal results.
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
        raise SeglabError(f"labels must be an integer array, got dtype {labels.dtype}")
    flat = labels.ravel()
    values, first = np.unique(flat, return_index=True)
    keep = values != 0
    values, first = values[keep], first[keep]
    order = np.argsort(first, kind="stable")
    new = np.zeros(values.size, dtype=np.uint32)
    new[order] = np.arange(1, values.size + 1, dtype=np.uint32)
    out = np.zeros(flat.shape, dtype=np.uint32)
    nonzero = flat != 0
    out[nonzero] = new[np.searchsorted(values, flat[nonzero])]
    return out.reshape(labels.shape)


def instance_f1(predicted: np.ndarray, truth: np.ndarray, iou: float = 0.5) -> InstanceMatch:
    """Instance F1, precision and recall with one-to-one matching at an IoU threshold.

    Parameters
    ----------
    predicted, truth : ndarray of int
        Label images of the same shape (0 = background; labels need not be consecutive).
    iou : float
        A predicted and a true instance may be matched when their intersection over union is
        at least this value, in (0, 1].

    Returns
    -------
    InstanceMatch
        ``(f1, precision, recall, pairs)``.

    Notes
    -----
    For ``iou > 0.5`` each instance overlaps at most one partner that well, so the matching is
    unique. For ``iou >= 0.5`` the pairs are taken greedily by decreasing IoU (ties by
    predicted, then true label), which is the unique matching except for exact ties at 0.5.
    For ``iou < 0.5`` the matching maximises the summed IoU over candidate pairs (Hungarian
    algorithm, ``scipy.optimize.linear_sum_assignment``).
    """
    predicted = np.asarray(predicted)
    truth = np.asarray(truth)
    if predicted.shape != truth.shape:
        raise SeglabError(
            f"predicted and truth differ in shape: {predicted.shape} vs {truth.shape}",
            "pass label images of the same shape",
        )
    for name, array in (("predicted", predicted), ("truth", truth)):
        if not np.issubdtype(array.dtype, np.integer):
            raise SeglabError(
                f"{name} must be an integer label image, got dtype {array.dtype}",
                "pass labels (0 = background), e.g. SplitResult.labels",
            )
    if not _is_real(iou) or not 0 < iou <= 1:
        raise SeglabError(f"iou must lie in (0, 1], got {iou!r}", "pass e.g. iou=0.5")
    p_values, p_sizes = np.unique(predicted[predicted != 0], return_counts=True)
    t_values, t_sizes = np.unique(truth[truth != 0], return_counts=True)
    both = (predicted != 0) & (truth != 0)
    pair_values, inter = np.unique(
        np.stack([predicted[both], truth[both]]).astype(np.int64), axis=1, return_counts=True
    )
    p_index = np.searchsorted(p_values, pair_values[0])
    t_index = np.searchsorted(t_values, pair_values[1])
    union = p_sizes[p_index] + t_sizes[t_index] - inter
    scores = inter / np.maximum(union, 1)
    candidate = scores >= iou - 1e-12
    p_index, t_index, scores = p_index[candidate], t_index[candidate], scores[candidate]
    if iou >= 0.5:
        order = np.lexsort((t_index, p_index, -scores))
        used_p: set[int] = set()
        used_t: set[int] = set()
        chosen = []
        for k in order:
            if p_index[k] not in used_p and t_index[k] not in used_t:
                used_p.add(int(p_index[k]))
                used_t.add(int(t_index[k]))
                chosen.append(k)
        chosen_p, chosen_t = p_index[chosen], t_index[chosen]
    else:
        rows, row_of = np.unique(p_index, return_inverse=True)
        cols, col_of = np.unique(t_index, return_inverse=True)
        gain = np.zeros((rows.size, cols.size))
        gain[row_of, col_of] = scores
        r, c = linear_sum_assignment(gain, maximize=True)
        valid = gain[r, c] > 0
        chosen_p, chosen_t = rows[r[valid]], cols[c[valid]]
    pairs = np.stack([p_values[chosen_p], t_values[chosen_t]], axis=1).astype(np.int64)
    pairs = pairs[np.argsort(pairs[:, 0], kind="stable")].reshape(-1, 2)
    matched, n_pred, n_true = len(pairs), p_values.size, t_values.size
    precision = matched / n_pred if n_pred else 1.0
    recall = matched / n_true if n_true else 1.0
    f1 = 2 * matched / (n_pred + n_true) if n_pred + n_true else 1.0
    return InstanceMatch(float(f1), float(precision), float(recall), pairs)


# --------------------------------------------------------------------------------------------
# Engine
# --------------------------------------------------------------------------------------------


def _is_real(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _validated_maps(
    object_map: np.ndarray, contour_map: np.ndarray
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Check shapes and dtypes; return (Z, Y, X) views and whether the input was one slice."""
    maps = []
    for name, array in (("object_map", object_map), ("contour_map", contour_map)):
        if not isinstance(array, np.ndarray):
            array = np.asarray(array)
        if array.ndim not in (2, 3):
            raise SeglabError(
                f"{name} must be a (Z, Y, X) stack or a (Y, X) slice, got shape {array.shape}",
                "pass a 2D or 3D probability map",
            )
        if not (
            array.dtype == np.uint8
            or array.dtype == bool
            or np.issubdtype(array.dtype, np.floating)
        ):
            raise SeglabError(
                f"{name} must be uint8 (0..255), float (0..1) or bool, got dtype {array.dtype}",
                "convert the map, e.g. with seglab.metrics.probability_to_uint8",
            )
        maps.append(array)
    if maps[0].shape != maps[1].shape:
        raise SeglabError(
            f"object_map and contour_map differ in shape: {maps[0].shape} vs {maps[1].shape}",
            "pass maps of the same stack",
        )
    flat = maps[0].ndim == 2
    if flat:
        maps = [m[np.newaxis] for m in maps]
    return maps[0], maps[1], flat


def _at_least(block: np.ndarray, threshold: float, name: str) -> np.ndarray:
    """Binarise a map block at a 0..255 threshold."""
    if block.dtype == bool:
        return block.copy()
    if block.dtype == np.uint8:
        return block >= threshold
    if block.size and not (np.nanmin(block) >= 0 and np.nanmax(block) <= 1):
        raise SeglabError(
            f"float {name} must lie in [0, 1], got values in "
            f"[{np.nanmin(block):.4g}, {np.nanmax(block):.4g}]",
            "scale the map to 0..1 or pass it as uint8 0..255",
        )
    if block.size and np.isnan(block).any():
        raise SeglabError(f"float {name} contains NaN", "replace NaN before splitting")
    return block >= (threshold - _FLOAT_TOLERANCE) / 255.0


def _structure(mode: SplitMode) -> np.ndarray:
    """Face connectivity in 3D, or in each slice only."""
    structure = ndimage.generate_binary_structure(3, 1)
    if mode == "2d":
        structure[0] = False
        structure[2] = False
    return structure


class _UnionFind:
    """Union-find over integer ids 0..n-1 (arrays grow on demand)."""

    def __init__(self) -> None:
        self.parent = np.zeros(0, dtype=np.int64)

    def grow(self, n: int) -> None:
        old = self.parent.size
        if n > old:
            self.parent = np.concatenate([self.parent, np.arange(old, n, dtype=np.int64)])

    def find(self, i: int) -> int:
        parent = self.parent
        root = i
        while parent[root] != root:
            root = int(parent[root])
        while parent[i] != root:
            parent[i], i = root, int(parent[i])
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def roots(self) -> np.ndarray:
        roots = self.parent.copy()
        while True:  # pointer jumping until every entry points at its root
            jumped = roots[roots]
            if np.array_equal(jumped, roots):
                return roots
            roots = jumped


@dataclass
class _Components:
    """Object-mask components: bounding boxes, voxel counts and one voxel of each."""

    boxes: np.ndarray  # (n, 6) int64: z0, z1, y0, y1, x0, x1 (stop exclusive)
    sizes: np.ndarray  # (n,) int64
    voxels: np.ndarray  # (n, 3) int64: one (z, y, x) voxel of the component


def _find_components(
    object_map: np.ndarray,
    params: SplitParams,
    structure: np.ndarray,
    slab: int,
    progress: ProgressCallback | None,
) -> _Components:
    """Pass 1: label the object mask slab by slab and join pieces across slab boundaries."""
    depth = object_map.shape[0]
    boxes: list[np.ndarray] = []
    sizes: list[np.ndarray] = []
    voxels: list[np.ndarray] = []
    union_find = _UnionFind()
    offset = 0
    previous_last: np.ndarray | None = None
    joins_z = bool(structure[0].any())
    for start in range(0, depth, slab):
        stop = min(depth, start + slab)
        mask = _at_least(np.asarray(object_map[start:stop]), params.object_threshold, "object_map")
        labels, n = ndimage.label(mask, structure=structure)
        del mask
        if n:
            counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
            slab_boxes = np.zeros((n, 6), dtype=np.int64)
            slab_voxels = np.zeros((n, 3), dtype=np.int64)
            for index, box in enumerate(ndimage.find_objects(labels)):
                z, y, x = box
                slab_boxes[index] = (
                    z.start + start,
                    z.stop + start,
                    y.start,
                    y.stop,
                    x.start,
                    x.stop,
                )
                first_plane = labels[z.start, y, x] == index + 1
                j, i = np.unravel_index(int(np.argmax(first_plane)), first_plane.shape)
                slab_voxels[index] = (z.start + start, j + y.start, i + x.start)
            boxes.append(slab_boxes)
            sizes.append(counts.astype(np.int64))
            voxels.append(slab_voxels)
        union_find.grow(offset + n)
        first = labels[0]
        if previous_last is not None and joins_z:
            # Face connectivity: a voxel touches the one straight above it.
            touching = (previous_last != 0) & (first != 0)
            if touching.any():
                below = previous_last[touching].astype(np.int64)
                above = first[touching].astype(np.int64) + offset
                for a, b in np.unique(np.stack([below, above]), axis=1).T:
                    union_find.union(int(a) - 1, int(b) - 1)
        last = labels[-1].astype(np.int64)
        last[last != 0] += offset
        previous_last = last
        offset += n
        del labels
        if progress is not None:
            progress("finding objects", stop / depth)
    if offset == 0:
        empty = np.zeros((0, 6), dtype=np.int64)
        return _Components(empty, np.zeros(0, dtype=np.int64), np.zeros((0, 3), dtype=np.int64))
    piece_boxes = np.concatenate(boxes)
    piece_sizes = np.concatenate(sizes)
    piece_voxels = np.concatenate(voxels)
    roots = union_find.roots()
    unique_roots, component = np.unique(roots, return_inverse=True)
    n = unique_roots.size
    merged = np.zeros((n, 6), dtype=np.int64)
    merged[:, 0::2] = np.iinfo(np.int64).max
    np.minimum.at(merged[:, 0::2], component, piece_boxes[:, 0::2])
    np.maximum.at(merged[:, 1::2], component, piece_boxes[:, 1::2])
    merged_sizes = np.bincount(component, weights=piece_sizes, minlength=n).astype(np.int64)
    merged_voxels = piece_voxels[unique_roots]  # the root piece's voxel
    return _Components(merged, merged_sizes, merged_voxels)


@dataclass
class _Objects:
    """Objects found so far, under provisional ids 1..n (in the output array)."""

    first_index: list[int]
    touches_border: list[bool]
    voxel_counts: list[int]


@dataclass
class _ComponentObjects:
    """The objects of one object-mask component, numbered ``1..k`` in a crop of its box."""

    box: tuple[int, int, int, int, int, int]  # z0, z1, y0, y1, x0, x1 (stop exclusive)
    ids: np.ndarray  # box crop: 0 outside the objects, 1..k inside (smallest unsigned dtype)
    first_index: list[int]  # raster index (whole volume) of each object's first voxel
    touches_border: list[bool]
    voxel_counts: list[int]


def _split(
    object_map: np.ndarray,
    contour_map: np.ndarray,
    params: SplitParams,
    slab: int,
    out: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
    backend: Backend = "serial",
    workers: int | None = None,
    scheduler: str | None = None,
) -> SplitResult:
    shape = object_map.shape
    structure = _structure(params.mode)
    components = _find_components(object_map, params, structure, slab, progress)
    labels = out if out is not None else np.zeros(shape, dtype=np.uint32)
    if out is not None:
        for start in range(0, shape[0], slab):
            labels[start : start + slab] = 0
            if progress is not None:  # lets a caller release the memmap's written pages
                progress("clearing labels", min(shape[0], start + slab) / shape[0])
    # Components that cannot hold an object of min_size voxels are skipped at once.
    todo = np.flatnonzero(components.sizes >= max(1, params.min_size))
    first_slice = components.boxes[todo, 0]
    objects = _Objects([], [], [])
    depth = shape[0]
    # (start, stop, extended stop, components) of each slab: a component is split with the
    # slab holding its first slice, which is read down to the deepest such component's end.
    slabs = []
    for start in range(0, depth, slab):
        stop = min(depth, start + slab)
        mine = todo[(first_slice >= start) & (first_slice < stop)]
        extended_stop = int(max(stop, components.boxes[mine, 1].max())) if mine.size else stop
        slabs.append((start, stop, extended_stop, mine))
    if backend == "serial":
        for start, stop, extended_stop, mine in slabs:
            if mine.size:
                for found in _split_slab(
                    object_map[start:extended_stop],
                    contour_map[start:extended_stop],
                    params,
                    start,
                    components.boxes[mine],
                    components.voxels[mine],
                    shape,
                ):
                    _commit(labels, objects, found)
            if progress is not None:
                progress("splitting", stop / depth)
    else:
        busy = [item for item in slabs if item[3].size]
        calls = (
            (
                _split_slab_task,
                (
                    _task_source(object_map, start, extended_stop),
                    _task_source(contour_map, start, extended_stop),
                    params,
                    start,
                    components.boxes[mine],
                    components.voxels[mine],
                    shape,
                ),
            )
            for start, _, extended_stop, mine in busy
        )
        results = run_in_waves(calls, scheduler=scheduler, workers=workers)
        for (_, stop, _, _), found_in_slab in zip(busy, results, strict=True):
            for found in found_in_slab:  # in slab order, as the serial path: same ids
                _commit(labels, objects, found)
            if progress is not None:
                progress("splitting", stop / depth)
        if progress is not None:
            progress("splitting", 1.0)
    return _relabel(labels, objects, slab, progress)


def _task_source(array: np.ndarray, start: int, stop: int) -> np.ndarray | MappedArray:
    """Slices ``start..stop`` of a map for a task: a file reference when possible, else a view."""
    part = array[start:stop]
    reference = mapped_reference(part)
    return reference if reference is not None else part


def _split_slab_task(
    object_source: np.ndarray | MappedArray,
    contour_source: np.ndarray | MappedArray,
    params: SplitParams,
    start: int,
    boxes: np.ndarray,
    voxels: np.ndarray,
    shape: tuple[int, ...],
) -> list[_ComponentObjects]:
    """Dask task: split the components of one slab (maps given by reference or as arrays)."""
    object_block, contour_block = (
        source.open() if isinstance(source, MappedArray) else source
        for source in (object_source, contour_source)
    )
    return list(_split_slab(object_block, contour_block, params, start, boxes, voxels, shape))


def _split_slab(
    object_block: np.ndarray,
    contour_block: np.ndarray,
    params: SplitParams,
    start: int,
    boxes: np.ndarray,
    voxels: np.ndarray,
    shape: tuple[int, ...],
) -> Iterator[_ComponentObjects]:
    """Split the components (boxes, one voxel each) whose slices lie in the given blocks.

    The blocks are the maps' slices ``start..start + len(block)``; components without objects
    yield nothing.
    """
    structure = _structure(params.mode)
    block = _SeedBlock(object_block, contour_block, params, start)
    for box, voxel in zip(boxes, voxels, strict=True):
        found = _split_component(block, box, voxel, params, structure, shape)
        if found is not None:
            yield found


class _SeedBlock:
    """Object mask, blurred rough split image and seeds of full slices from ``start`` on."""

    def __init__(
        self,
        object_block: np.ndarray,
        contour_block: np.ndarray,
        params: SplitParams,
        start: int,
    ) -> None:
        self.start = start
        self.mask = _at_least(np.asarray(object_block), params.object_threshold, "object_map")
        contour = _at_least(np.asarray(contour_block), params.contour_threshold, "contour_map")
        rough = self.mask & ~contour
        del contour
        self.blurred = rough.astype(np.float32)
        if params.sigma > 0:
            # 2D blur of each slice, as the study; sigma 0 along z keeps slices independent.
            for k in range(self.blurred.shape[0]):
                self.blurred[k] = ndimage.gaussian_filter(
                    self.blurred[k], params.sigma, mode="reflect"
                )
        # The study keeps pixels at 255 on uint8 images: blurred * 255 rounds to >= level.
        level = np.float32((params.seed_level * 255.0 - 0.5) / 255.0)
        self.seeds = (self.blurred >= level) & rough


def _split_component(
    block: _SeedBlock,
    box: np.ndarray,
    voxel: np.ndarray,
    params: SplitParams,
    structure: np.ndarray,
    shape: tuple[int, ...],
) -> _ComponentObjects | None:
    """Label the seeds of one object-mask component and grow them inside it.

    Returns the kept objects numbered ``1..k`` in order of their seed labels, or None.
    """
    z0, z1, y0, y1, x0, x1 = (int(v) for v in box)
    local = (slice(z0 - block.start, z1 - block.start), slice(y0, y1), slice(x0, x1))
    mask = block.mask[local]
    pieces, _ = ndimage.label(mask, structure=structure)
    component = pieces == pieces[voxel[0] - z0, voxel[1] - y0, voxel[2] - x0]
    del pieces
    seeds = block.seeds[local] & component
    if not seeds.any():
        return None
    markers, n_seeds = ndimage.label(seeds, structure=structure)
    grown = watershed(
        -block.blurred[local],
        markers,
        connectivity=structure,
        mask=component,
        watershed_line=True,
    )
    flat = grown.ravel()
    counts = np.bincount(flat, minlength=n_seeds + 1)
    kept = np.flatnonzero(counts[1:] >= max(1, params.min_size)) + 1
    if not kept.size:
        return None
    local_ids = np.zeros(n_seeds + 1, dtype=np.min_scalar_type(kept.size))
    local_ids[kept] = np.arange(1, kept.size + 1)
    nonzero = np.flatnonzero(flat)
    values, first = np.unique(flat[nonzero], return_index=True)
    first_local = dict(zip(values.tolist(), nonzero[first].tolist(), strict=True))
    boxes = ndimage.find_objects(grown)
    found = _ComponentObjects((z0, z1, y0, y1, x0, x1), local_ids[grown], [], [], [])
    for label in kept.tolist():
        z, y, x = np.unravel_index(first_local[label], grown.shape)
        found.first_index.append(int(np.ravel_multi_index((z + z0, y + y0, x + x0), shape)))
        bz, by, bx = boxes[label - 1]
        starts = (bz.start + z0, by.start + y0, bx.start + x0)
        stops = (bz.stop + z0, by.stop + y0, bx.stop + x0)
        found.touches_border.append(
            any(s == 0 for s in starts) or any(e == n for e, n in zip(stops, shape, strict=True))
        )
        found.voxel_counts.append(int(counts[label]))
    return found


def _commit(labels: np.ndarray, objects: _Objects, found: _ComponentObjects) -> None:
    """Write one component's objects under the next provisional ids (canonical order later)."""
    offset = len(objects.first_index)
    if offset + len(found.first_index) > np.iinfo(np.uint32).max:
        raise SeglabError(
            f"more than {np.iinfo(np.uint32).max} objects do not fit uint32 labels",
            "raise min_size or split the stack into parts",
        )
    z0, z1, y0, y1, x0, x1 = found.box
    target = labels[z0:z1, y0:y1, x0:x1]
    inside = found.ids != 0
    target[inside] = found.ids[inside].astype(np.uint32) + np.uint32(offset)
    objects.first_index.extend(found.first_index)
    objects.touches_border.extend(found.touches_border)
    objects.voxel_counts.extend(found.voxel_counts)


def _relabel(
    labels: np.ndarray, objects: _Objects, slab: int, progress: ProgressCallback | None
) -> SplitResult:
    """Pass 3: renumber provisional ids by the raster position of each object's first voxel."""
    n = len(objects.first_index)
    order = np.argsort(np.asarray(objects.first_index, dtype=np.int64), kind="stable")
    lookup = np.zeros(n + 1, dtype=np.uint32)
    lookup[order + 1] = np.arange(1, n + 1, dtype=np.uint32)
    depth = labels.shape[0]
    if n:
        for start in range(0, depth, slab):
            part = labels[start : start + slab]
            part[...] = lookup[part]
            if progress is not None:
                progress("relabelling", min(depth, start + slab) / depth)
    touches = np.asarray(objects.touches_border, dtype=bool)[order] if n else np.zeros(0, bool)
    counts = np.asarray(objects.voxel_counts, dtype=np.int64)[order] if n else np.zeros(0, np.int64)
    return SplitResult(labels=labels, count=n, touches_border=touches, voxel_counts=counts)
