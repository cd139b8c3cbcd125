"""Synthetic lung immunofluorescence images with six-class ground truth (study A).

A phantom mimics a LungMAP confocal image of a developing mouse lung: a 3-channel composite of
three stains (channel 0 red ~ Sftpc, channel 1 green ~ Sox9, Acta2 drawn white, i.e. equally in
all three channels), with the six classes of :data:`seglab.io.labels.LUNG_CLASSES` drawn as
plausible structures:

====  =========================  ==========================================================
 0    Background                 textured parenchyma (mesenchyme) with scattered nuclei
 1    Conductive Airway          large branching tubes entering the field: thin Acta2+ smooth
                                 muscle, dim orange (Sftpc-low) columnar epithelium, dark lumen
 2    Distal Acinar Tubule Bud   clusters of small round blobs at the tubule tips: Sftpc+ with
                                 bright Sox9+ nuclei (yellow-green, grainy)
 3    Proximal Acinar Tubule     mid-size branching tubes, often continuing an airway: brighter
                                 orange (Sftpc+) epithelium with Sox9-low nuclei, small lumen
 4    Pulmonary Artery           the rare class (about 1-2 % of pixels): small round vessels with
                                 a thick bright Acta2+ wall, most of them beside an airway
 5    Pulmonary Vein and Venule  larger, irregular oval vessels with a thin Acta2+ wall and a
                                 wide lumen holding red-autofluorescent blood cells
====  =========================  ==========================================================

**Labels.** A structure's label covers the whole structure as an annotator outlines it: wall
*and* lumen (airway lumen, tubule lumen, vessel lumen all carry the structure's class). Dark
lumens therefore look like background, and airway smooth muscle, artery walls and vein walls
share the Acta2 stain, so single pixels are ambiguous and a classifier needs context.

**Scale.** Structures are defined in micrometres and drawn at ``pixel_size_um``, so a phantom
of a given field of view looks the same at any sampling. The default pixel size is that of the
study's resized images (2475 px at an assumed 0.5 um/px resized to 1024 px: 1.2085 um/px); a
default 256 x 256 phantom thus looks like one 256-px tile of a resized study image, and
``LungPhantomConfig.study()`` gives the whole 1024 x 1024 image (``raw=True``: 2475 x 2475 at
0.5 um/px, the same field). Structure counts are densities per mm^2 of field; each structure
kind with a non-zero density is attempted at least once, so every class appears in fields of
256 px and more (a 64-px field, 77 um wide, is mostly one airway).

**Randomness.** One seed drives three independent streams (geometry, texture, noise), so
changing ``noise`` or ``blur_sigma_um`` changes the image but never the labels.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from seglab.errors import SeglabError
from seglab.io.labels import LUNG_CLASSES, ColourTable
from seglab.phantoms._options import resolve_config

#: Side of the study's raw images, pixels.
RAW_SIZE_PX = 2475
#: Assumed pixel size of the raw images, um (the study does not state it).
RAW_PIXEL_SIZE_UM = 0.5
#: Side of the study's images after resizing, pixels.
RESIZED_SIZE_PX = 1024
#: Pixel size after resizing the raw field to 1024 px, um.
RESIZED_PIXEL_SIZE_UM = RAW_PIXEL_SIZE_UM * RAW_SIZE_PX / RESIZED_SIZE_PX

MIN_SIZE_PX = 64

BACKGROUND, AIRWAY, BUD, TUBULE, ARTERY, VEIN = range(6)


@dataclass(frozen=True)
class LungPhantomConfig:
    """Settings of a lung phantom.

    Attributes
    ----------
    size : int or tuple of int
        Image size in pixels: ``n`` for n x n, or ``(height, width)``; each side >= 64.
    pixel_size_um : float
        Side of one pixel, um (> 0). Structures keep their physical size, so at a fixed
        pixel size a larger ``size`` is a larger field of view.
    seed : int
        Seed (>= 0) of all randomness; the same config gives the same arrays.
    airways_per_mm2, arteries_per_mm2, veins_per_mm2, tubules_per_mm2, bud_clusters_per_mm2
        float
        Number of airway trees, arteries, veins, tubule trees and bud clusters per mm^2 of
        field (>= 0); each kind with a non-zero density is attempted at least once. The
        defaults give about 57-61 % background, 9-12 % each of airway, buds and tubules,
        1.3-1.4 % artery and 6 % vein on a 1024 x 1024 field (1.2 % artery on average at
        256 x 256).
    blur_sigma_um : float
        Standard deviation of the Gaussian point spread, um (>= 0).
    noise : float
        Standard deviation of the additive Gaussian noise, grey levels of the uint8 image
        (>= 0).
    """

    size: int | tuple[int, int] = 256
    pixel_size_um: float = RESIZED_PIXEL_SIZE_UM
    seed: int = 0
    airways_per_mm2: float = 3.0
    arteries_per_mm2: float = 24.0
    veins_per_mm2: float = 18.0
    tubules_per_mm2: float = 22.0
    bud_clusters_per_mm2: float = 110.0
    blur_sigma_um: float = 1.0
    noise: float = 6.0

    def __post_init__(self) -> None:
        _check_size(self.size)
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise SeglabError(
                f"seed must be a non-negative integer, got {seed!r}", "pass e.g. seed=0"
            )
        if not _is_real(self.pixel_size_um) or not self.pixel_size_um > 0:
            raise SeglabError(
                f"pixel_size_um must be a positive number, got {self.pixel_size_um!r}",
                f"pass the pixel side in micrometres, e.g. {RESIZED_PIXEL_SIZE_UM:.4f}",
            )
        for name in (
            "airways_per_mm2",
            "arteries_per_mm2",
            "veins_per_mm2",
            "tubules_per_mm2",
            "bud_clusters_per_mm2",
            "blur_sigma_um",
            "noise",
        ):
            value = getattr(self, name)
            if not _is_real(value) or not value >= 0:
                raise SeglabError(
                    f"{name} must be a finite number >= 0, got {value!r}",
                    f"pass a non-negative {name} (0 switches it off)",
                )

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape ``(height, width)`` in pixels."""
        if isinstance(self.size, int | np.integer):
            return int(self.size), int(self.size)
        return int(self.size[0]), int(self.size[1])

    @classmethod
    def study(cls, *, raw: bool = False, **overrides: object) -> LungPhantomConfig:
        """Config of a whole study-A image.

        Parameters
        ----------
        raw : bool
            False: the resized 1024 x 1024 image (1.2085 um/px); True: the raw 2475 x 2475
            image (0.5 um/px). Both show the same ~1.24 mm field.
        **overrides
            Other config fields (e.g. ``seed``).

        Returns
        -------
        LungPhantomConfig
        """
        if raw:
            base = cls(size=RAW_SIZE_PX, pixel_size_um=RAW_PIXEL_SIZE_UM)
        else:
            base = cls(size=RESIZED_SIZE_PX, pixel_size_um=RESIZED_PIXEL_SIZE_UM)
        return resolve_config(base, LungPhantomConfig, overrides, "lung phantom")


@dataclass
class LungPhantom:
    """A synthetic lung image and its ground truth.

    Attributes
    ----------
    image : (H, W, 3) ndarray of uint8
        The stained image, channel-last RGB like the study's images (0 red ~ Sftpc,
        1 green ~ Sox9, 2 blue; Acta2 appears white, in all three).
    labels : (H, W) ndarray of uint8
        Class index per pixel, 0..5 as in ``colour_table``.
    label_rgb : (H, W, 3) ndarray of uint8
        Colour-coded labels, ``colour_table.encode(labels)``.
    colour_table : ColourTable
        The six classes, names and colours (:data:`seglab.io.labels.LUNG_CLASSES`).
    class_fractions : (6,) ndarray of float64
        Fraction of pixels of each class; sums to 1.
    config : LungPhantomConfig
        The settings the phantom was made with.
    """

    image: np.ndarray
    labels: np.ndarray
    label_rgb: np.ndarray
    colour_table: ColourTable
    class_fractions: np.ndarray
    config: LungPhantomConfig = field(repr=False)


def make_lung_phantom(config: LungPhantomConfig | None = None, **overrides: object) -> LungPhantom:
    """Draw a seeded synthetic lung immunofluorescence image with its six-class labels.

    Parameters
    ----------
    config : LungPhantomConfig, optional
        Settings; the defaults (256 x 256 at 1.2085 um/px, seed 0) when omitted.
    **overrides
        Fields of :class:`LungPhantomConfig` to change, e.g. ``size=1024, seed=3``.

    Returns
    -------
    LungPhantom
        ``image`` (H, W, 3) uint8, ``labels`` (H, W) uint8 in 0..5, ``label_rgb``,
        ``colour_table`` and ``class_fractions``.

    Raises
    ------
    SeglabError
        For an unknown option or a bad value (size below 64 px, negative noise, ...).

    Examples
    --------
    >>> phantom = make_lung_phantom(size=128, seed=1)
    >>> phantom.image.shape, phantom.labels.max() <= 5
    ((128, 128, 3), True)
    """
    config = resolve_config(config, LungPhantomConfig, overrides, "lung phantom")

    geometry_seed, texture_seed, noise_seed = np.random.SeedSequence(config.seed).spawn(3)
    canvas = _Canvas(config.shape, config.pixel_size_um)
    _draw_structures(canvas, config, np.random.default_rng(geometry_seed))
    image = _render(
        canvas,
        config,
        np.random.default_rng(texture_seed),
        np.random.default_rng(noise_seed),
    )
    labels = canvas.labels
    fractions = np.bincount(labels.ravel(), minlength=len(LUNG_CLASSES)) / labels.size
    return LungPhantom(
        image=image,
        labels=labels,
        label_rgb=LUNG_CLASSES.encode(labels),
        colour_table=LUNG_CLASSES,
        class_fractions=fractions.astype(np.float64),
        config=config,
    )


# ---------------------------------------------------------------------------------- validation
def _is_real(value: object) -> bool:
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _check_size(size: object) -> None:
    def is_side(v: object) -> bool:
        return isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= MIN_SIZE_PX

    ok = is_side(size) or (
        isinstance(size, tuple | list) and len(size) == 2 and all(is_side(v) for v in size)
    )
    if not ok:
        raise SeglabError(
            f"size must be an integer or an (height, width) pair of integers >= {MIN_SIZE_PX}, "
            f"got {size!r}",
            f"pass e.g. size=256 or size=(256, 384); phantoms smaller than {MIN_SIZE_PX} px "
            "cannot hold the structures",
        )


# ---------------------------------------------------------------------------------- geometry
# Tissue components of the rendered image; each has its own stain signature (see _render).
(
    PARENCHYMA,
    AIRWAY_MUSCLE,
    AIRWAY_EPITHELIUM,
    AIRWAY_LUMEN,
    BUD_EPITHELIUM,
    TUBULE_EPITHELIUM,
    TUBULE_LUMEN,
    ARTERY_WALL,
    ARTERY_LUMEN,
    VEIN_WALL,
    VEIN_LUMEN,
) = range(11)

_GAP_UM = 3.0  # free space kept around vessels and growing tubes


@dataclass(frozen=True)
class _TreeShape:
    """Geometry of a branching tube, um."""

    trunk_radius_um: tuple[float, float]
    min_radius_um: float
    child_ratio: tuple[float, float]  # child radius / parent radius
    branch_length_radii: tuple[float, float]  # branch length in multiples of its radius
    curvature_rad: float  # sd of the direction change per step
    max_generations: int
    # (outer limit of relative depth 1 - distance / radius, component), from the outside in
    layers: tuple[tuple[float, int], ...]


_AIRWAY_SHAPE = _TreeShape(
    trunk_radius_um=(30.0, 42.0),
    min_radius_um=16.0,
    child_ratio=(0.72, 0.86),
    branch_length_radii=(3.5, 6.0),
    curvature_rad=0.1,
    max_generations=4,
    layers=((0.1, AIRWAY_MUSCLE), (0.55, AIRWAY_EPITHELIUM), (math.inf, AIRWAY_LUMEN)),
)
_TUBULE_SHAPE = _TreeShape(
    trunk_radius_um=(13.0, 18.0),
    min_radius_um=8.0,
    child_ratio=(0.75, 0.9),
    branch_length_radii=(4.0, 7.0),
    curvature_rad=0.22,
    max_generations=4,
    layers=((0.7, TUBULE_EPITHELIUM), (math.inf, TUBULE_LUMEN)),
)


class _Canvas:
    """Label, component and gain maps being painted, plus a depth map for collision tests.

    Painting is first come, first served: a structure only takes pixels still background.
    """

    def __init__(self, shape: tuple[int, int], pixel_size_um: float) -> None:
        self.shape = shape
        self.um = 1.0 / pixel_size_um  # pixels per um
        self.labels = np.zeros(shape, dtype=np.uint8)
        self.component = np.full(shape, PARENCHYMA, dtype=np.uint8)
        self.gain = np.ones(shape, dtype=np.float32)
        self.occupied_depth = np.full(shape, -np.inf, dtype=np.float32)  # max over structures
        self.gap = _GAP_UM * self.um

    def inside(self, y: float, x: float, margin: float = 0.0) -> bool:
        h, w = self.shape
        return -margin <= y < h + margin and -margin <= x < w + margin

    def is_free(
        self,
        y: float,
        x: float,
        depth_map: np.ndarray | None = None,
        clearance: float | None = None,
    ) -> bool:
        """Whether (y, x) is ``clearance`` px (default: the gap) away from drawn structures.

        Points off the image are free. ``depth_map`` defaults to all structures drawn so far.
        """
        iy, ix = int(round(y)), int(round(x))
        h, w = self.shape
        if not (0 <= iy < h and 0 <= ix < w):
            return True
        depth = self.occupied_depth if depth_map is None else depth_map
        return bool(depth[iy, ix] <= -(self.gap if clearance is None else clearance))

    def footprint_is_free(self, slices: tuple[slice, slice], depth: np.ndarray) -> bool:
        near = depth > -self.gap
        return not bool((self.occupied_depth[slices][near] > -self.gap).any())

    def paint(
        self,
        slices: tuple[slice, slice],
        depth: np.ndarray,
        label: int,
        layers: tuple[tuple[float, int], ...],
        gain: float,
        layer_depth: np.ndarray | None = None,
    ) -> None:
        """Give the free pixels with depth > 0 the label, and components by depth, outside in.

        ``depth`` is in pixels (positive inside). ``layers`` are ``(outer depth limit,
        component)`` from the outside in, tested on ``layer_depth`` (default ``depth``).
        """
        inside = (depth > 0) & (self.labels[slices] == 0)
        component = self.component[slices]
        by = depth if layer_depth is None else layer_depth
        for limit, comp in reversed(layers):
            component[inside & (by <= limit)] = comp
        self.labels[slices][inside] = label
        self.gain[slices][inside] = gain
        np.maximum(self.occupied_depth[slices], depth, out=self.occupied_depth[slices])


def _bbox(
    shape: tuple[int, int], y0: float, y1: float, x0: float, x1: float
) -> tuple[slice, slice] | None:
    h, w = shape
    ya, yb = max(int(math.floor(y0)), 0), min(int(math.ceil(y1)) + 1, h)
    xa, xb = max(int(math.floor(x0)), 0), min(int(math.ceil(x1)) + 1, w)
    if ya >= yb or xa >= xb:
        return None
    return slice(ya, yb), slice(xa, xb)


def _capsule_depth(
    shape: tuple[int, int],
    p0: tuple[float, float],
    p1: tuple[float, float],
    r0: float,
    r1: float,
    pad: float,
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """Depth inside a tapered capsule, absolute and relative to the local radius.

    The depth is ``radius(t) - distance to the axis`` in pixels, the relative depth
    ``1 - distance / radius(t)``. Both are evaluated on the capsule's bounding box grown by
    ``pad``; None when that is off the image.
    """
    reach = max(r0, r1) + pad
    slices = _bbox(
        shape,
        min(p0[0], p1[0]) - reach,
        max(p0[0], p1[0]) + reach,
        min(p0[1], p1[1]) - reach,
        max(p0[1], p1[1]) + reach,
    )
    if slices is None:
        return None
    yy = np.arange(slices[0].start, slices[0].stop, dtype=np.float32)[:, None] - p0[0]
    xx = np.arange(slices[1].start, slices[1].stop, dtype=np.float32)[None, :] - p0[1]
    dy, dx = p1[0] - p0[0], p1[1] - p0[1]
    length2 = dy * dy + dx * dx
    if length2 > 0:
        t = np.clip((yy * dy + xx * dx) / length2, 0.0, 1.0)
    else:
        t = np.zeros((1, 1), dtype=np.float32)
    distance = np.hypot(yy - t * dy, xx - t * dx)
    radius = r0 + t * (r1 - r0)
    return slices, radius - distance, 1.0 - distance / radius


def _blob_depth(
    shape: tuple[int, int],
    centre: tuple[float, float],
    semi_axes: tuple[float, float],
    orientation: float,
    wobble: np.ndarray,
    pad: float,
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Radial depth inside a wobbly ellipse, ``boundary radius - radius`` along each ray.

    ``wobble`` is (K, 2): amplitude and phase of the boundary's harmonics 2..K+1.
    """
    a, b = semi_axes
    reach = max(a, b) * (1.0 + float(np.abs(wobble[:, 0]).sum())) + pad
    cy, cx = centre
    slices = _bbox(shape, cy - reach, cy + reach, cx - reach, cx + reach)
    if slices is None:
        return None
    yy = np.arange(slices[0].start, slices[0].stop, dtype=np.float32)[:, None] - cy
    xx = np.arange(slices[1].start, slices[1].stop, dtype=np.float32)[None, :] - cx
    cos_o, sin_o = math.cos(orientation), math.sin(orientation)
    u = xx * cos_o + yy * sin_o
    v = yy * cos_o - xx * sin_o
    radius = np.hypot(u, v)
    theta = np.arctan2(v, u)
    boundary = a * b / np.sqrt((b * np.cos(theta)) ** 2 + (a * np.sin(theta)) ** 2)
    shape_factor = np.ones_like(theta)
    for k, (amplitude, phase) in enumerate(wobble, start=2):
        shape_factor += amplitude * np.cos(k * theta + phase)
    return slices, boundary * shape_factor - radius


def _count(density_per_mm2: float, canvas: _Canvas) -> int:
    if density_per_mm2 <= 0:
        return 0
    h, w = canvas.shape
    area_mm2 = h * w / canvas.um**2 * 1e-6
    return max(1, int(round(density_per_mm2 * area_mm2)))


def _wobble(rng: np.random.Generator, amplitude: float, harmonics: int = 3) -> np.ndarray:
    amps = rng.normal(0.0, amplitude, harmonics) / np.arange(1, harmonics + 1)
    return np.stack([amps, rng.uniform(0, 2 * np.pi, harmonics)], axis=1)


@dataclass
class _Tree:
    segments: list[tuple[tuple[float, float], tuple[float, float], float]]  # p0, p1, radius
    tips: list[tuple[float, float, float, float]]  # y, x, direction, radius (inside image)


def _grow_tree(
    canvas: _Canvas,
    rng: np.random.Generator,
    start: tuple[float, float],
    direction: float,
    shape: _TreeShape,
    label: int,
) -> _Tree:
    """Grow a branching tube by random walks, stopping branches that run into structures.

    Branches are grown breadth first; each step looks ahead (and 45 degrees to each side) for
    other structures, tries a 0.5 rad turn either way when blocked, and ends the branch as a
    tip when all three are blocked. The tree is painted once complete.
    """
    um = canvas.um
    gap = canvas.gap
    own_depth = np.full(canvas.shape, -np.inf, dtype=np.float32)
    own_relative = np.full(canvas.shape, -np.inf, dtype=np.float32)
    tree = _Tree([], [])
    min_radius = shape.min_radius_um * um
    queue = deque([(start, direction, rng.uniform(*shape.trunk_radius_um) * um, 0)])
    bounds = [math.inf, -math.inf, math.inf, -math.inf]
    first_branch = True
    while queue:
        (y, x), angle, radius, generation = queue.popleft()
        step = max(1.0, 0.8 * radius)
        n_steps = max(2, int(math.ceil(radius * rng.uniform(*shape.branch_length_radii) / step)))
        stopped = False
        for i in range(n_steps):
            heading = angle + rng.normal(0.0, shape.curvature_rad)
            if not (first_branch and i == 0):  # a tree may start in another one's margin
                for turn in (0.0, *rng.permutation([0.5, -0.5])):
                    if _way_is_free(canvas, own_depth if i >= 2 else None, y, x, heading + turn,
                                    step, radius + gap):  # fmt: skip
                        heading += turn
                        break
                else:
                    stopped = True
                    break
            ny, nx = y + step * math.sin(heading), x + step * math.cos(heading)
            next_radius = max(radius * 0.985, min_radius)
            piece = _capsule_depth(canvas.shape, (y, x), (ny, nx), radius, next_radius, gap)
            if piece is not None:
                slices, depth, relative = piece
                np.maximum(own_depth[slices], depth, out=own_depth[slices])
                np.maximum(own_relative[slices], relative, out=own_relative[slices])
            tree.segments.append(((y, x), (ny, nx), radius))
            reach = radius + gap
            bounds = [
                min(bounds[0], y - reach, ny - reach),
                max(bounds[1], y + reach, ny + reach),
                min(bounds[2], x - reach, nx - reach),
                max(bounds[3], x + reach, nx + reach),
            ]
            y, x, angle, radius = ny, nx, heading, next_radius
            if not canvas.inside(y, x, margin=2 * radius):
                stopped = True  # left the field of view
                break
        first_branch = False
        child_radius = radius * rng.uniform(*shape.child_ratio)
        if not stopped and generation < shape.max_generations and child_radius >= min_radius:
            side = rng.choice([-1.0, 1.0])
            other_radius = max(radius * rng.uniform(*shape.child_ratio), min_radius)
            queue.append(((y, x), angle + side * rng.uniform(0.15, 0.45), child_radius,
                          generation + 1))  # fmt: skip
            queue.append(((y, x), angle - side * rng.uniform(0.55, 0.95), other_radius,
                          generation + 1))  # fmt: skip
        elif canvas.inside(y, x):
            tree.tips.append((y, x, angle, radius))
    slices = _bbox(canvas.shape, *bounds) if tree.segments else None
    if slices is not None:
        canvas.paint(
            slices,
            own_depth[slices],
            label,
            shape.layers,
            rng.uniform(0.8, 1.2),
            layer_depth=own_relative[slices],
        )
    return tree


def _way_is_free(
    canvas: _Canvas,
    own_depth: np.ndarray | None,
    y: float,
    x: float,
    heading: float,
    step: float,
    ahead: float,
) -> bool:
    """Whether a step from (y, x) along ``heading`` keeps ``ahead`` px clear of structures."""
    ny, nx = y + step * math.sin(heading), x + step * math.cos(heading)
    probes = [
        (
            ny + ahead * math.sin(heading + turn) * scale,
            nx + ahead * math.cos(heading + turn) * scale,
        )
        for turn, scale in ((0.0, 1.0), (0.8, 0.7), (-0.8, 0.7))
    ]
    if not all(canvas.is_free(py, px) for py, px in probes):
        return False
    return own_depth is None or all(canvas.is_free(py, px, own_depth) for py, px in probes)


def _edge_start(canvas: _Canvas, rng: np.random.Generator) -> tuple[tuple[float, float], float]:
    """Return a point just outside a random edge, heading into the field."""
    h, w = canvas.shape
    along = rng.uniform(0.15, 0.85)
    edge = rng.choice(4, p=np.array([w, w, h, h]) / (2 * (h + w)))
    tilt = rng.uniform(-0.5, 0.5)
    if edge == 0:  # top, heading down (+y)
        return (0.0, along * w), math.pi / 2 + tilt
    if edge == 1:  # bottom
        return (h - 1.0, along * w), -math.pi / 2 + tilt
    if edge == 2:  # left
        return (along * h, 0.0), tilt
    return (along * h, w - 1.0), math.pi + tilt


def _start_is_free(
    canvas: _Canvas, start: tuple[float, float], direction: float, clearance: float
) -> bool:
    """Whether a tube starting at ``start`` has ``clearance`` px of room for its first steps."""
    y, x = start
    return all(
        canvas.is_free(
            y + k * clearance * math.sin(direction),
            x + k * clearance * math.cos(direction),
            clearance=clearance,
        )
        for k in (0.0, 1.0, 2.0)
    )


def _place_blob(
    canvas: _Canvas,
    rng: np.random.Generator,
    candidates: list[tuple[float, float]],
    semi_axes: tuple[float, float],
    orientation: float,
    wobble: np.ndarray,
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Return the first candidate whose blob lies on free ground, else the last one tried."""
    last = None
    for centre in candidates:
        piece = _blob_depth(canvas.shape, centre, semi_axes, orientation, wobble, canvas.gap)
        if piece is None:
            continue
        last = piece
        if canvas.footprint_is_free(*piece):
            return piece
    return last


def _random_points(
    canvas: _Canvas, rng: np.random.Generator, n: int, margin: float
) -> list[tuple[float, float]]:
    h, w = canvas.shape
    my, mx = min(margin, h / 4), min(margin, w / 4)
    return [(rng.uniform(my, h - my), rng.uniform(mx, w - mx)) for _ in range(n)]


def _draw_structures(canvas: _Canvas, config: LungPhantomConfig, rng: np.random.Generator) -> None:
    """Airways, then arteries beside them, veins, tubules (from airway tips) and buds."""
    um = canvas.um

    # Airway trees: half enter from an edge, half start inside as an in-plane cut.
    airway_tips: list[tuple[float, float, float, float]] = []
    airway_segments: list[tuple[tuple[float, float], tuple[float, float], float]] = []
    for _ in range(_count(config.airways_per_mm2, canvas)):
        clearance = _AIRWAY_SHAPE.trunk_radius_um[1] * um + canvas.gap
        if rng.random() < 0.5:
            tries = [_edge_start(canvas, rng) for _ in range(20)]
        else:
            tries = [
                (p, rng.uniform(0, 2 * np.pi)) for p in _random_points(canvas, rng, 20, 40 * um)
            ]
        free = [(p, d) for p, d in tries if _start_is_free(canvas, p, d, clearance)]
        start, direction = free[0] if free else tries[0]
        tree = _grow_tree(canvas, rng, start, direction, _AIRWAY_SHAPE, AIRWAY)
        airway_tips += tree.tips
        airway_segments += [s for s in tree.segments if canvas.inside(*s[1])]

    # Arteries: small, round, thick-walled; 70 % beside an airway (bronchovascular bundle).
    for _ in range(_count(config.arteries_per_mm2, canvas)):
        outer = rng.uniform(11.0, 17.0) * um
        semi_axes = (outer, outer * rng.uniform(0.85, 1.0))
        candidates: list[tuple[float, float]] = []
        if airway_segments and rng.random() < 0.7:
            for _ in range(40):
                (y0, x0), (y1, x1), r = airway_segments[rng.integers(len(airway_segments))]
                t = rng.random()
                heading = math.atan2(y1 - y0, x1 - x0) + rng.choice([-1, 1]) * math.pi / 2
                offset = r + canvas.gap + outer + rng.uniform(0, 6) * um
                cy = y0 + t * (y1 - y0) + offset * math.sin(heading)
                cx = x0 + t * (x1 - x0) + offset * math.cos(heading)
                if canvas.inside(cy, cx, margin=-outer):
                    candidates.append((cy, cx))
        candidates += _random_points(canvas, rng, 40, outer)
        piece = _place_blob(
            canvas, rng, candidates, semi_axes, rng.uniform(0, np.pi), _wobble(rng, 0.03)
        )
        if piece is not None:
            wall = semi_axes[1] * rng.uniform(0.4, 0.5)
            layers = ((wall, ARTERY_WALL), (math.inf, ARTERY_LUMEN))
            canvas.paint(*piece, ARTERY, layers, rng.uniform(0.85, 1.15))

    # Veins and venules: larger irregular ovals with a thin wall.
    for _ in range(_count(config.veins_per_mm2, canvas)):
        major = rng.uniform(25.0, 50.0) * um
        semi_axes = (major, major * rng.uniform(0.45, 0.9))
        candidates = _random_points(canvas, rng, 40, 0.5 * major)
        piece = _place_blob(
            canvas, rng, candidates, semi_axes, rng.uniform(0, np.pi), _wobble(rng, 0.08)
        )
        if piece is not None:
            layers = ((2.5 * um, VEIN_WALL), (math.inf, VEIN_LUMEN))
            canvas.paint(*piece, VEIN, layers, rng.uniform(0.85, 1.15))

    # Proximal tubules: continue airway tips when there are any, else start in free space.
    tubule_tips: list[tuple[float, float, float, float]] = []
    order = rng.permutation(len(airway_tips))
    for i in range(_count(config.tubules_per_mm2, canvas)):
        if i < len(order):
            y, x, direction, radius = airway_tips[order[i]]
            start = (y + 0.8 * radius * math.sin(direction), x + 0.8 * radius * math.cos(direction))
        else:
            clearance = _TUBULE_SHAPE.trunk_radius_um[1] * um + canvas.gap
            tries = [
                (p, rng.uniform(0, 2 * np.pi)) for p in _random_points(canvas, rng, 30, 20 * um)
            ]
            free = [(p, d) for p, d in tries if _start_is_free(canvas, p, d, clearance)]
            start, direction = free[0] if free else tries[0]
        tree = _grow_tree(canvas, rng, start, direction, _TUBULE_SHAPE, TUBULE)
        tubule_tips += tree.tips
    # A tubule continuing an airway tip near the edge can leave the field without a pixel in
    # it; then grow one from free space, so that every class with a density appears.
    for _ in range(10):
        if config.tubules_per_mm2 <= 0 or (canvas.labels == TUBULE).any():
            break
        free = [p for p in _random_points(canvas, rng, 30, 20 * um) if canvas.is_free(*p)]
        if not free:
            break
        tree = _grow_tree(canvas, rng, free[0], rng.uniform(0, 2 * np.pi), _TUBULE_SHAPE, TUBULE)
        tubule_tips += tree.tips

    # Distal buds: clusters of small round blobs at tubule tips, the rest in free space.
    tip_order = rng.permutation(len(tubule_tips))
    for i in range(_count(config.bud_clusters_per_mm2, canvas)):
        if i < len(tip_order):
            y, x, direction, radius = tubule_tips[tip_order[i]]
            blob = rng.uniform(9.0, 13.0) * um
            reach = radius + 0.9 * blob
            cy, cx = y + reach * math.sin(direction), x + reach * math.cos(direction)
        else:
            free = [p for p in _random_points(canvas, rng, 30, 15 * um) if canvas.is_free(*p)]
            if not free:
                continue
            (cy, cx), direction = free[0], rng.uniform(0, 2 * np.pi)
        _draw_bud_cluster(canvas, rng, (cy, cx), direction)


def _draw_bud_cluster(
    canvas: _Canvas, rng: np.random.Generator, first: tuple[float, float], direction: float
) -> None:
    """Draw a grape-like cluster of 6-11 touching round blobs budding forward from ``first``."""
    um = canvas.um
    gain = rng.uniform(0.85, 1.15)
    centres: list[tuple[float, float, float]] = []
    for k in range(rng.integers(6, 12)):
        radius = rng.uniform(9.0, 13.0) * um
        if k == 0:
            cy, cx = first
        elif not centres:
            return  # no room for the first blob
        else:
            py, px, pr = centres[rng.integers(len(centres))]
            heading = direction + rng.normal(0.0, 1.1)
            spacing = rng.uniform(0.75, 0.95) * (pr + radius)
            cy, cx = py + spacing * math.sin(heading), px + spacing * math.cos(heading)
        if not (canvas.inside(cy, cx) and canvas.is_free(cy, cx, clearance=0.5 * radius)):
            continue
        piece = _blob_depth(
            canvas.shape,
            (cy, cx),
            (radius, radius * rng.uniform(0.8, 1.0)),
            rng.uniform(0, np.pi),
            _wobble(rng, 0.04),
            canvas.gap,
        )
        if piece is not None:
            canvas.paint(*piece, BUD, ((math.inf, BUD_EPITHELIUM),), gain)
            centres.append((cy, cx, radius))


# ---------------------------------------------------------------------------------- rendering
# Stain signature of each component, grey levels 0..255 in (red ~ Sftpc, green ~ Sox9, blue);
# Acta2 (smooth muscle) is white. Columns: cytoplasm/matrix colour, coarse texture amplitude,
# nuclear colour (added on the nuclei dots: Sox9 is nuclear, blood cells are red).
_COMPONENT_COLOUR = np.array(
    [
        (30, 28, 34),  # parenchyma
        (125, 125, 125),  # airway smooth muscle (Acta2)
        (115, 80, 48),  # airway epithelium (Sftpc-low)
        (14, 12, 14),  # airway lumen
        (150, 150, 40),  # bud epithelium (Sftpc+)
        (150, 88, 42),  # tubule epithelium (Sftpc+)
        (24, 18, 18),  # tubule lumen
        (170, 170, 170),  # artery wall (Acta2, thick)
        (55, 24, 24),  # artery lumen (blood)
        (120, 120, 120),  # vein wall (Acta2, thin)
        (34, 18, 18),  # vein lumen (blood)
    ],
    dtype=np.float32,
)
_COARSE_AMPLITUDE = np.array(
    [0.35, 0.12, 0.10, 0.25, 0.18, 0.22, 0.25, 0.08, 0.25, 0.12, 0.3], dtype=np.float32
)
_NUCLEAR_COLOUR = np.array(
    [
        (8, 12, 10),  # parenchyma: faint
        (0, 0, 0),
        (12, 22, 6),  # airway epithelium: Sox9-negative, nuclei barely visible
        (0, 0, 0),
        (10, 95, 5),  # bud: bright Sox9+ nuclei
        (20, 32, 8),  # tubule: Sox9-low nuclei, grainy
        (0, 0, 0),
        (0, 0, 0),
        (60, 10, 10),  # artery lumen: red blood cells
        (0, 0, 0),
        (60, 10, 10),  # vein lumen: red blood cells
    ],
    dtype=np.float32,
)
_COARSE_SCALE_UM = 10.0
_NUCLEUS_SIGMA_UM = 1.6
_NUCLEUS_AREA_UM2 = 60.0  # tissue area per nucleus


def _render(
    canvas: _Canvas,
    config: LungPhantomConfig,
    texture_rng: np.random.Generator,
    noise_rng: np.random.Generator,
) -> np.ndarray:
    """Stain signatures x texture x per-structure gain, + nuclei, blurred, noisy, uint8."""
    h, w = canvas.shape
    um = canvas.um
    coarse = ndimage.gaussian_filter(
        texture_rng.standard_normal((h, w), dtype=np.float32), _COARSE_SCALE_UM * um
    )
    coarse /= max(float(coarse.std()), 1e-6)

    n_nuclei = texture_rng.poisson(h * w / um**2 / _NUCLEUS_AREA_UM2)
    nuclei = np.zeros((h, w), dtype=np.float32)
    np.add.at(
        nuclei,
        (texture_rng.integers(0, h, n_nuclei), texture_rng.integers(0, w, n_nuclei)),
        texture_rng.uniform(0.6, 1.4, n_nuclei).astype(np.float32),
    )
    sigma = _NUCLEUS_SIGMA_UM * um
    nuclei = ndimage.gaussian_filter(nuclei, sigma) * np.float32(2 * np.pi * max(sigma, 0.4) ** 2)
    np.minimum(nuclei, 1.5, out=nuclei)

    comp = canvas.component
    modulation = (1.0 + _COARSE_AMPLITUDE[comp] * coarse) * canvas.gain
    image = _COMPONENT_COLOUR[comp] * modulation[..., None]
    image += _NUCLEAR_COLOUR[comp] * nuclei[..., None]
    if config.blur_sigma_um > 0:
        s = config.blur_sigma_um * um
        image = ndimage.gaussian_filter(image, sigma=(s, s, 0))
    if config.noise > 0:
        image += noise_rng.standard_normal(image.shape, dtype=np.float32) * np.float32(config.noise)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
