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

Engines. Every public function takes ``engine``: ``"fast"`` (default) or ``"reference"``. Both
give *identical* labels (tested); they differ only in how the steps are computed:

* ``"reference"``: the plain scipy/scikit-image primitives, as the algorithm reads: per-slice
  ``scipy.ndimage.gaussian_filter``, ``scipy.ndimage.label`` + ``bincount`` + ``find_objects``
  for the mask components, and a scikit-image watershed for every component that has a seed.
  It is the reference of the tests and the naive path of benchmark B3.
* ``"fast"``: the mask is labelled by ``cc3d.connected_components`` in blocks of at most
  ``_FAST_LABEL_VOXELS`` voxels (3D mode; the 2D mode keeps scipy's labelling), counted slice
  by slice; a component box holding no other component needs no relabelling; the slices are
  blurred by ``cv2.GaussianBlur`` (scipy's kernel radius and reflecting border; the two differ
  by float32 rounding only, about 1e-7), and a slice holding a blurred value within
  ``_SEED_GUARD`` of the seed level is blurred again by scipy, so the seeds are scipy's; a
  component with exactly one seed is the object itself (a watershed from one marker floods
  the whole connected mask and draws no line), so the watershed runs only on components with
  several seeds, on scipy's blur of the component's box with a margin of the kernel radius
  (the same floats as the whole-slice blur). Per-voxel costs: see ``shared/ECOSYSTEM.md``;
  figures in ``benchmarks/RESULTS.md`` (B3).
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
    "ENGINES",
    "Engine",
    "InstanceMatch",
    "SplitParams",
    "SplitResult",
    "canonical_relabel",
    "instance_f1",
    "split_instances",
    "split_instances_chunked",
]

SplitMode = Literal["3d", "2d"]
#: ``"fast"`` (opencv, cc3d and one-seed components without watershed) or ``"reference"``
#: (plain scipy/scikit-image); identical labels (module docstring).
Engine = Literal["fast", "reference"]
ENGINES: tuple[str, ...] = ("fast", "reference")

#: A fast-engine blurred pixel this close to the seed level (on the 0..1 scale) makes its slice
#: be blurred again by scipy, so that the seeds are exactly scipy's: opencv's float32 blur
#: differs from scipy's by one float32 rounding step (measured at most 1.2e-7 on study-size
#: maps, where the nearest blurred value lies 2.3e-6 from the level).
_SEED_GUARD = 1e-6

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
    *,
    engine: Engine = "fast",
) -> SplitResult:
    """Split object and contour probability maps into labelled instances (study B).

    Parameters
    ----------
    object_map, contour_map : (Z, Y, X) or (Y, X) ndarray
        Probability maps of filled objects and of their contours, of the same shape: uint8 in
        0..255, float in 0..1, or bool. A 2D map is one slice.
    params : SplitParams, optional
        Thresholds, blur, seed level, minimum size and mode; defaults to ``SplitParams()``.
    engine : {"fast", "reference"}
        ``"fast"`` (default) uses opencv and cc3d and skips the watershed of one-seed
        components; ``"reference"`` runs the plain scipy/scikit-image primitives. The labels
        are identical (module docstring).

    Returns
    -------
    SplitResult
        Labels (uint32, shape of the input), object count, border flags and voxel counts.

    Raises
    ------
    SeglabError
        If the maps differ in shape, are not 2D or 3D, have an unsupported dtype, a float
        map has values outside [0, 1], or ``engine`` is unknown.

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
    _check_engine(engine)
    object_map, contour_map, flat = _validated_maps(object_map, contour_map)
    result = _split(
        object_map, contour_map, params, slab=max(1, object_map.shape[0]), engine=engine
    )
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
    engine: Engine = "fast",
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
    engine : {"fast", "reference"}
        As in :func:`split_instances` (identical labels).

    Returns
    -------
    SplitResult
        As :func:`split_instances`; ``labels`` is ``out`` when given.

    Raises
    ------
    SeglabError
        As :func:`split_instances`, for a bad ``slab``, ``out``, ``backend``, ``workers``,
        ``scheduler`` or ``engine``, and when ``backend="dask"`` but dask is not installed.

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
    _check_engine(engine)
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
        engine=engine,
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


def _check_engine(engine: object) -> None:
    if engine not in ENGINES:
        raise SeglabError(
            f"engine must be one of {', '.join(ENGINES)}, got {engine!r}",
            "pass engine='fast' (default) or engine='reference' (plain scipy/scikit-image)",
        )


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


#: Voxels per block labelled at a time by the fast engine's pass 1: below glibc's largest
#: mmap threshold (32 MiB) as uint32 labels, so the blocks reuse heap memory; fresh pages of a
#: 64-slice slab's labels cost more than the labelling itself on these machines.
_FAST_LABEL_VOXELS = 8 * 1024 * 1024


def _cc3d_dtype(mask: np.ndarray) -> type:
    """Return the label dtype for cc3d: uint32 unless the block could hold more pieces.

    Naming it is 4x faster than letting cc3d choose (it first estimates the piece count).
    """
    return np.uint32 if mask.size < np.iinfo(np.uint32).max else np.uint64


def _label_pieces(
    mask: np.ndarray, structure: np.ndarray, engine: Engine
) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """Label a slab's mask: ``(labels, n, voxel counts (n,), boxes (n, 6) z0 z1 y0 y1 x0 x1)``.

    Stops are exclusive; the boxes are in slab coordinates. Same pieces with either engine
    (the numbering may differ; only the partition is used).
    """
    fast = engine == "fast"
    labels, n = _label(mask, structure, fast)
    if not n:
        return labels, 0, np.zeros(0, np.int64), np.zeros((0, 6), np.int64)
    if fast:  # slice by slice: no int64 copy of the whole block
        counts = np.zeros(n + 1, dtype=np.int64)
        for plane in labels:
            counts += np.bincount(plane.ravel(), minlength=n + 1)
        counts = counts[1:]
    else:
        counts = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.int64)
    boxes = np.array(
        [[s.start for s in b] + [s.stop for s in b] for b in ndimage.find_objects(labels)],
        dtype=np.int64,
    )[:, [0, 3, 1, 4, 2, 5]]
    return labels, int(n), counts, boxes


def _find_components(
    object_map: np.ndarray,
    params: SplitParams,
    structure: np.ndarray,
    slab: int,
    progress: ProgressCallback | None,
    engine: Engine = "reference",
) -> _Components:
    """Pass 1: label the object mask slab by slab and join pieces across slab boundaries.

    The fast engine labels blocks of at most ``_FAST_LABEL_VOXELS`` voxels (label arrays that
    the allocator reuses instead of mapping fresh pages for every slab).
    """
    depth = object_map.shape[0]
    if engine == "fast":
        plane = max(1, object_map.shape[1] * object_map.shape[2])
        slab = max(1, min(slab, _FAST_LABEL_VOXELS // plane))
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
        labels, n, counts, slab_boxes = _label_pieces(mask, structure, engine)
        del mask
        if n:
            slab_voxels = np.zeros((n, 3), dtype=np.int64)
            for index, (z0, _, y0, y1, x0, x1) in enumerate(slab_boxes.tolist()):
                first_plane = labels[z0, y0:y1, x0:x1] == index + 1
                j, i = np.unravel_index(int(np.argmax(first_plane)), first_plane.shape)
                slab_voxels[index] = (z0 + start, j + y0, i + x0)
            slab_boxes[:, :2] += start
            boxes.append(slab_boxes)
            sizes.append(counts)
            voxels.append(slab_voxels)
        union_find.grow(offset + n)
        first = labels[0]
        if previous_last is not None and joins_z:
            # Face connectivity: a voxel touches the one straight above it.
            touching = (previous_last != 0) & (first != 0)
            if touching.any():
                below = previous_last[touching].astype(np.int64)
                above = first[touching].astype(np.int64) + offset
                # Distinct pairs as one int64 key each (ids < 2**31): a plain sort.
                pairs = np.unique((below << 32) | above)
                for a, b in zip((pairs >> 32).tolist(), (pairs & 0xFFFFFFFF).tolist(), strict=True):
                    union_find.union(a - 1, b - 1)
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
    engine: Engine = "fast",
) -> SplitResult:
    shape = object_map.shape
    structure = _structure(params.mode)
    components = _find_components(object_map, params, structure, slab, progress, engine)
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
                    components.sizes[mine],
                    shape,
                    engine,
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
                    components.sizes[mine],
                    shape,
                    engine,
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
    sizes: np.ndarray,
    shape: tuple[int, ...],
    engine: Engine,
) -> list[_ComponentObjects]:
    """Dask task: split the components of one slab (maps given by reference or as arrays)."""
    object_block, contour_block = (
        source.open() if isinstance(source, MappedArray) else source
        for source in (object_source, contour_source)
    )
    return list(
        _split_slab(object_block, contour_block, params, start, boxes, voxels, sizes, shape, engine)
    )


def _split_slab(
    object_block: np.ndarray,
    contour_block: np.ndarray,
    params: SplitParams,
    start: int,
    boxes: np.ndarray,
    voxels: np.ndarray,
    sizes: np.ndarray,
    shape: tuple[int, ...],
    engine: Engine,
) -> Iterator[_ComponentObjects]:
    """Split the components (boxes, one voxel and voxel count each) in the given blocks.

    The blocks are the maps' slices ``start..start + len(block)``; components without objects
    yield nothing.
    """
    structure = _structure(params.mode)
    block = _SeedBlock(object_block, contour_block, params, start, engine)
    for box, voxel, size in zip(boxes, voxels, sizes.tolist(), strict=True):
        found = _split_component(block, box, voxel, size, params, structure, shape)
        if found is not None:
            yield found


class _SeedBlock:
    """Object mask, rough split image, seeds (and, exact engine, blur) of slices from ``start``."""

    def __init__(
        self,
        object_block: np.ndarray,
        contour_block: np.ndarray,
        params: SplitParams,
        start: int,
        engine: Engine,
    ) -> None:
        self.start = start
        self.sigma = float(params.sigma)
        self.fast = engine == "fast"
        self.mask = _at_least(np.asarray(object_block), params.object_threshold, "object_map")
        contour = _at_least(np.asarray(contour_block), params.contour_threshold, "contour_map")
        # rough = mask & ~contour, in place (no slab-sized temporaries)
        self.rough = np.logical_not(contour, out=contour)
        self.rough &= self.mask
        del contour
        # The study keeps pixels at 255 on uint8 images: blurred * 255 rounds to >= level.
        level = np.float32((params.seed_level * 255.0 - 0.5) / 255.0)
        self.blurred: np.ndarray | None = None
        if self.fast and self.sigma > 0:
            # Seeds from opencv's blur, slice by slice; the blur itself is not kept (the
            # watershed gets scipy's blur of its box from :meth:`watershed_image`).
            self.seeds = _seeds_opencv(self.rough, self.sigma, level)
        else:
            self.blurred = _blur_slices(self.rough, self.sigma)
            self.seeds = (self.blurred >= level) & self.rough

    def watershed_image(self, local: tuple[slice, slice, slice]) -> np.ndarray:
        """Return scipy's blurred image in the block-local box ``local`` (watershed input)."""
        if self.blurred is not None:
            return self.blurred[local]
        # scipy's blur of the box with a margin of the kernel radius (clipped at the image
        # edges, where the reflection is the same) equals the whole-slice blur inside the box.
        radius = _blur_radius(self.sigma)
        z, y, x = local
        height, width = self.rough.shape[1:]
        y0, x0 = max(0, y.start - radius), max(0, x.start - radius)
        y1, x1 = min(height, y.stop + radius), min(width, x.stop + radius)
        blurred = _blur_slices(self.rough[z, y0:y1, x0:x1], self.sigma)
        return blurred[:, y.start - y0 : y.stop - y0, x.start - x0 : x.stop - x0]


def _blur_radius(sigma: float) -> int:
    """Kernel radius of ``scipy.ndimage.gaussian_filter`` (``truncate=4.0``), in pixels."""
    return int(4.0 * sigma + 0.5)


def _blur_slices(rough: np.ndarray, sigma: float) -> np.ndarray:
    """Blur each slice of a binary image in 2D with scipy (float32, reflecting border)."""
    blurred = rough.astype(np.float32)
    if sigma > 0:
        # 2D blur of each slice, as the study; sigma 0 along z keeps slices independent.
        for k in range(blurred.shape[0]):
            blurred[k] = ndimage.gaussian_filter(blurred[k], sigma, mode="reflect")
    return blurred


def _seeds_opencv(rough: np.ndarray, sigma: float, level: np.float32) -> np.ndarray:
    """``(_blur_slices(rough, sigma) >= level) & rough``, blurring by ``cv2.GaussianBlur``.

    opencv gets scipy's kernel radius and border (``BORDER_REFLECT`` is scipy's ``"reflect"``);
    its float32 sums differ from scipy's by rounding only, so a slice with a blurred value
    within ``_SEED_GUARD`` of ``level`` is blurred again by scipy.
    """
    import cv2

    size = 2 * _blur_radius(sigma) + 1
    low, high = level - np.float32(_SEED_GUARD), level + np.float32(_SEED_GUARD)
    seeds = np.empty(rough.shape, dtype=bool)
    for k in range(rough.shape[0]):
        blurred = cv2.GaussianBlur(
            rough[k].astype(np.float32), (size, size), sigma, borderType=cv2.BORDER_REFLECT
        )
        above = blurred >= low
        if np.any(above & (blurred <= high)):
            blurred = _blur_slices(rough[k : k + 1], sigma)[0]
            above = blurred >= level
        np.logical_and(above, rough[k], out=seeds[k])
    return seeds


def _label(mask: np.ndarray, structure: np.ndarray, fast: bool) -> tuple[np.ndarray, int]:
    """``scipy.ndimage.label``, by cc3d when fast and in 3D (same partition, other numbers)."""
    if fast and structure[0].any():
        import cc3d

        labels, n = cc3d.connected_components(
            mask, connectivity=6, return_N=True, out_dtype=_cc3d_dtype(mask)
        )
        return labels, int(n)
    labels, n = ndimage.label(mask, structure=structure)
    return labels, int(n)


def _split_component(
    block: _SeedBlock,
    box: np.ndarray,
    voxel: np.ndarray,
    size: int,
    params: SplitParams,
    structure: np.ndarray,
    shape: tuple[int, ...],
) -> _ComponentObjects | None:
    """Label the seeds of one object-mask component (``size`` voxels) and grow them inside it.

    Returns the kept objects numbered ``1..k`` in order of their seed labels, or None.
    """
    z0, z1, y0, y1, x0, x1 = (int(v) for v in box)
    local = (slice(z0 - block.start, z1 - block.start), slice(y0, y1), slice(x0, x1))
    mask = block.mask[local]
    if block.fast and np.count_nonzero(mask) == size:
        component = mask  # no other component reaches into the box
    else:
        pieces, _ = _label(mask, structure, block.fast)
        component = pieces == pieces[voxel[0] - z0, voxel[1] - y0, voxel[2] - x0]
        del pieces
    seeds = block.seeds[local] & component
    if not seeds.any():
        return None
    markers, n_seeds = _label(seeds, structure, block.fast)
    if n_seeds == 1 and block.fast:
        # One marker floods the whole connected mask and draws no watershed line: the object
        # is the component (size >= min_size, see _split), its box the component's box.
        z, y, x = np.unravel_index(int(np.argmax(component)), component.shape)
        first_index = int(np.ravel_multi_index((z + z0, y + y0, x + x0), shape))
        touches = min(z0, y0, x0) == 0 or any(
            e == n for e, n in zip((z1, y1, x1), shape, strict=True)
        )
        ids = np.ascontiguousarray(component).view(np.uint8)
        return _ComponentObjects(
            (z0, z1, y0, y1, x0, x1), ids, [first_index], [bool(touches)], [int(size)]
        )
    grown = watershed(
        -block.watershed_image(local),
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
    np.copyto(target, found.ids + np.uint32(offset), where=found.ids != 0)
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
    # Blocks of at most _FAST_LABEL_VOXELS (the temporary reuses heap memory), progress by slab.
    plane = max(1, labels.shape[1] * labels.shape[2])
    step = max(1, min(slab, _FAST_LABEL_VOXELS // plane))
    if n:
        for start in range(0, depth, slab):
            for block in range(start, min(depth, start + slab), step):
                part = labels[block : min(start + slab, block + step)]
                part[...] = lookup[part]
            if progress is not None:
                progress("relabelling", min(depth, start + slab) / depth)
    touches = np.asarray(objects.touches_border, dtype=bool)[order] if n else np.zeros(0, bool)
    counts = np.asarray(objects.voxel_counts, dtype=np.int64)[order] if n else np.zeros(0, np.int64)
    return SplitResult(labels=labels, count=n, touches_border=touches, voxel_counts=counts)
