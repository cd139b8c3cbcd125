"""Overlapped tiling with mirror padding, and stitching of per-tile class scores.

Study A cuts each 1024 x 1024 image into 256 x 256 tiles, predicts class scores per tile, puts the
tiles back at their positions, sums the score vectors of all tiles covering a pixel
(``C_sum = sum_i C_i``, the study's eq. 1) and takes ``argmax(C_sum)`` (eq. 2) after cropping the
padding. This module plans such grids for any image size, reports tile counts and per-pixel
coverage, extracts tiles and stitches scores back.

Arrays are ``(..., H, W)``: the last two axes are spatial (y, x); leading axes (channels, classes,
slices of a stack) are carried along, so a stack ``(Z, H, W)`` is tiled slice by slice.

Grid rule. The image is padded by ``padding`` on every side, then tiles start at ``0, stride,
2 * stride, ...`` in the padded frame. When ``padded - tile`` is not a multiple of ``stride`` the
padding at the bottom/right is extended just enough for the last tile to fit (``extra_padding``),
so the grid stays regular and coverage stays uniform wherever it was uniform, for any image size.

Presets (on a 1024 x 1024 image; SPEC.md explains why the published text does not add up):

============ ====== ======== ======= ======= =========================================
name         tile   stride   padding tiles   coverage of image pixels (per axis)
============ ====== ======== ======= ======= =========================================
no-overlap   256    256      0       16      1 everywhere
paper-64     256    128      64      64      2 inside, 1 in the outer 64 px band
uniform-81   256    128      128     81      2 everywhere (2 x 2 = 4 tiles per pixel)
============ ====== ======== ======= ======= =========================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from seglab.errors import SeglabError

PadMode = Literal["mirror", "symmetric", "edge", "constant"]
Weighting = Literal["sum", "gaussian"]

#: Pad modes: seglab name -> numpy.pad mode. "mirror" reflects about the edge pixel without
#: repeating it (``d c b | a b c d``), like torch's and MONAI's "reflect".
PAD_MODES: dict[str, str] = {
    "mirror": "reflect",
    "symmetric": "symmetric",
    "edge": "edge",
    "constant": "constant",
}


@dataclass(frozen=True)
class TilingPreset:
    """Named tile size, stride and padding (pixels, the same on both axes)."""

    name: str
    tile_size: int
    stride: int
    padding: int
    description: str


PRESETS: dict[str, TilingPreset] = {
    p.name: p
    for p in (
        TilingPreset("no-overlap", 256, 256, 0, "study A method 1: 4 x 4 = 16 tiles on 1024 px"),
        TilingPreset(
            "paper-64",
            256,
            128,
            64,
            "study A method 2 as literally written: pad 64, stride 128 -> 8 x 8 = 64 tiles; "
            "the outer 64 px are covered once per axis",
        ),
        TilingPreset(
            "uniform-81",
            256,
            128,
            128,
            "study A method 2 as intended: pad 128, stride 128 -> 9 x 9 = 81 tiles; "
            "every pixel covered 2 x 2 times",
        ),
    )
}


def _pair(value: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        pair = (int(value), int(value))
    else:
        try:
            pair = tuple(int(v) for v in value)  # type: ignore[assignment]
        except (TypeError, ValueError) as err:
            raise SeglabError(
                f"{name} must be an integer or a pair of integers (y, x), got {value!r}",
                f"pass {name} as e.g. 256 or (256, 256)",
            ) from err
        if len(pair) != 2:
            raise SeglabError(
                f"{name} must have 2 values (y, x), got {len(pair)}: {value!r}",
                f"pass {name} as e.g. 256 or (256, 256)",
            )
        if any(float(v) != int(v) for v in value):  # type: ignore[union-attr]
            raise SeglabError(f"{name} must be integers, got {value!r}", "pass whole pixels")
    return pair  # type: ignore[return-value]


@dataclass(frozen=True)
class TilingPlan:
    """A regular grid of tiles over a padded image.

    Attributes
    ----------
    image_shape : tuple of int, (H, W)
        Spatial shape of the image, pixels.
    tile_size : tuple of int, (th, tw)
        Tile shape, pixels.
    stride : tuple of int, (sy, sx)
        Distance between tile origins, pixels.
    padding : tuple of int, (py, px)
        Requested padding on each side of each axis, pixels.
    pad_mode : str
        One of :data:`PAD_MODES`.
    """

    image_shape: tuple[int, int]
    tile_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    pad_mode: str = "mirror"

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Number of tiles along (y, x)."""
        return tuple(  # type: ignore[return-value]
            1 + max(0, -(-(n + 2 * p - t) // s))
            for n, t, s, p in zip(
                self.image_shape, self.tile_size, self.stride, self.padding, strict=True
            )
        )

    @property
    def n_tiles(self) -> int:
        """Total number of tiles."""
        ny, nx = self.grid_shape
        return ny * nx

    @property
    def extra_padding(self) -> tuple[int, int]:
        """Padding added at the bottom/right beyond ``padding`` so the last tile fits (y, x)."""
        return tuple(  # type: ignore[return-value]
            (g - 1) * s + t - (n + 2 * p)
            for g, n, t, s, p in zip(
                self.grid_shape,
                self.image_shape,
                self.tile_size,
                self.stride,
                self.padding,
                strict=True,
            )
        )

    @property
    def pad_width(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """``((top, bottom), (left, right))`` padding in pixels, as for :func:`numpy.pad`."""
        (py, px), (ey, ex) = self.padding, self.extra_padding
        return ((py, py + ey), (px, px + ex))

    @property
    def padded_shape(self) -> tuple[int, int]:
        """Spatial shape after padding, (H', W')."""
        return tuple(  # type: ignore[return-value]
            n + a + b for n, (a, b) in zip(self.image_shape, self.pad_width, strict=True)
        )

    @property
    def origins(self) -> np.ndarray:
        """Top-left corner of every tile in the padded frame, shape (n_tiles, 2), row-major."""
        ny, nx = self.grid_shape
        sy, sx = self.stride
        yy, xx = np.meshgrid(np.arange(ny) * sy, np.arange(nx) * sx, indexing="ij")
        return np.stack([yy.ravel(), xx.ravel()], axis=1)

    def coverage(self) -> np.ndarray:
        """Count how many tiles cover each image pixel.

        Returns
        -------
        (H, W) ndarray of int32
            Number of tiles covering each pixel of the (unpadded) image.
        """
        per_axis = []
        for axis in range(2):
            count = np.zeros(self.padded_shape[axis], dtype=np.int32)
            for g in range(self.grid_shape[axis]):
                start = g * self.stride[axis]
                count[start : start + self.tile_size[axis]] += 1
            lo = self.pad_width[axis][0]
            per_axis.append(count[lo : lo + self.image_shape[axis]])
        return np.multiply.outer(per_axis[0], per_axis[1]).astype(np.int32)

    def describe(self) -> str:
        """One line: tile count, grid, padding and the coverage range."""
        cov = self.coverage()
        lo, hi = (int(cov.min()), int(cov.max())) if cov.size else (0, 0)
        ny, nx = self.grid_shape
        return (
            f"{self.n_tiles} tiles ({ny} x {nx}) of {self.tile_size[0]} x {self.tile_size[1]} at "
            f"stride {self.stride[0]} x {self.stride[1]}, padding {self.padding[0]} x "
            f"{self.padding[1]} ({self.pad_mode}), per-pixel coverage {lo}..{hi}"
        )


def plan_grid(
    image_shape: tuple[int, ...],
    tile_size: int | tuple[int, int] = 256,
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    pad_mode: PadMode = "mirror",
) -> TilingPlan:
    """Plan a grid of tiles over an image.

    Parameters
    ----------
    image_shape : tuple of int
        Shape of the image; the last two entries are the spatial (H, W) in pixels.
    tile_size : int or (int, int)
        Tile shape (th, tw), pixels.
    stride : int or (int, int), optional
        Step between tile origins; defaults to ``tile_size`` (no overlap). Must not exceed
        ``tile_size``, which would leave pixels uncovered.
    padding : int or (int, int)
        Padding on every side, pixels (the study's method 2 uses mirror padding).
    pad_mode : {"mirror", "symmetric", "edge", "constant"}
        How the padding is filled; see :data:`PAD_MODES`.

    Returns
    -------
    TilingPlan
        The grid. ``plan.n_tiles``, ``plan.coverage()`` and ``plan.describe()`` report it.
    """
    shape = tuple(image_shape)
    if len(shape) < 2:
        raise SeglabError(
            f"an image needs at least 2 spatial axes (H, W), got shape {shape}",
            "pass the shape of a 2D image or of a (..., H, W) array",
        )
    hw = (int(shape[-2]), int(shape[-1]))
    if min(hw) < 1:
        raise SeglabError(
            f"cannot tile an empty image of spatial shape {hw}", "pass an image with pixels"
        )
    tile = _pair(tile_size, "tile_size")
    step = tile if stride is None else _pair(stride, "stride")
    pad = _pair(padding, "padding")
    if min(tile) < 1:
        raise SeglabError(f"tile_size must be positive, got {tile}", "use tiles of at least 1 px")
    if min(step) < 1:
        raise SeglabError(f"stride must be positive, got {step}", "use a stride of at least 1 px")
    if any(s > t for s, t in zip(step, tile, strict=True)):
        raise SeglabError(
            f"stride {step} is larger than tile_size {tile}, which leaves pixels uncovered",
            "use a stride no larger than the tile",
        )
    if min(pad) < 0:
        raise SeglabError(f"padding must be >= 0, got {pad}", "use a non-negative padding")
    if pad_mode not in PAD_MODES:
        raise SeglabError(
            f"unknown pad_mode {pad_mode!r}", f"use one of {', '.join(sorted(PAD_MODES))}"
        )
    return TilingPlan(hw, tile, step, pad, pad_mode)


def plan_preset(name: str, image_shape: tuple[int, ...] = (1024, 1024)) -> TilingPlan:
    """Plan the named preset's grid on an image of the given shape.

    Parameters
    ----------
    name : str
        One of :data:`PRESETS`: ``"no-overlap"``, ``"paper-64"``, ``"uniform-81"``.
    image_shape : tuple of int
        Image shape; the last two entries are (H, W). The preset keeps its tile, stride and
        padding, so the tile count changes with the image size.

    Returns
    -------
    TilingPlan
    """
    if name not in PRESETS:
        raise SeglabError(f"unknown tiling preset {name!r}", f"use one of {', '.join(PRESETS)}")
    p = PRESETS[name]
    return plan_grid(image_shape, p.tile_size, p.stride, p.padding)


def _check_image(image: np.ndarray, plan: TilingPlan, what: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim < 2 or tuple(image.shape[-2:]) != plan.image_shape:
        raise SeglabError(
            f"{what} of shape {image.shape} does not match the plan's image shape "
            f"{plan.image_shape} in its last two axes",
            "plan the grid for this image (plan_grid(image.shape, ...))",
        )
    return image


def pad_image(image: np.ndarray, plan: TilingPlan) -> np.ndarray:
    """Pad the last two axes of an image as the plan says.

    Parameters
    ----------
    image : (..., H, W) ndarray
        Image, any dtype; leading axes are not padded.
    plan : TilingPlan

    Returns
    -------
    (..., H', W') ndarray
        The padded image, ``(H', W') = plan.padded_shape``.
    """
    image = _check_image(image, plan)
    widths = [(0, 0)] * (image.ndim - 2) + list(plan.pad_width)
    if all(a == 0 and b == 0 for a, b in plan.pad_width):
        return image
    return np.pad(image, widths, mode=PAD_MODES[plan.pad_mode])  # type: ignore[call-overload]


def tile_view(image: np.ndarray, plan: TilingPlan) -> np.ndarray:
    """All tiles as a read-only view into the padded image (no copy beyond the padding).

    Parameters
    ----------
    image : (..., H, W) ndarray
    plan : TilingPlan

    Returns
    -------
    (ny, nx, ..., th, tw) ndarray
        ``view[i, j]`` is the tile whose origin is ``(i * sy, j * sx)`` in the padded frame.
    """
    padded = pad_image(image, plan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, plan.tile_size, axis=(-2, -1))
    sy, sx = plan.stride
    ny, nx = plan.grid_shape
    lead = padded.ndim - 2
    windows = windows[
        (Ellipsis, slice(0, ny * sy, sy), slice(0, nx * sx, sx), slice(None), slice(None))
    ]
    # windows: (..., ny, nx, th, tw) -> (ny, nx, ..., th, tw)
    return np.moveaxis(windows, (lead, lead + 1), (0, 1))


def extract_tiles(image: np.ndarray, plan: TilingPlan) -> np.ndarray:
    """Cut an image into the plan's tiles.

    Parameters
    ----------
    image : (..., H, W) ndarray
    plan : TilingPlan

    Returns
    -------
    (n_tiles, ..., th, tw) ndarray
        Contiguous tiles in row-major grid order (the order of ``plan.origins``).
    """
    view = tile_view(image, plan)
    return np.ascontiguousarray(view.reshape((plan.n_tiles, *view.shape[2:])))


def gaussian_weights(tile_size: tuple[int, int], sigma_scale: float = 0.125) -> np.ndarray:
    """Separable Gaussian importance map for a tile, peak 1 at the centre.

    Parameters
    ----------
    tile_size : (int, int)
        Tile shape (th, tw), pixels.
    sigma_scale : float
        Standard deviation as a fraction of the tile size (MONAI's default is 0.125).

    Returns
    -------
    (th, tw) ndarray of float32
        Weights in (0, 1]; clipped below at 1e-3 so that no pixel has zero weight.
    """
    if sigma_scale <= 0:
        raise SeglabError(f"sigma_scale must be positive, got {sigma_scale}", "use e.g. 0.125")
    axes = []
    for n in tile_size:
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2
        axes.append(np.exp(-0.5 * (x / (sigma_scale * n)) ** 2))
    w = np.multiply.outer(axes[0], axes[1])
    return np.maximum(w / w.max(), 1e-3).astype(np.float32)


def stitch(
    tile_scores: np.ndarray,
    plan: TilingPlan,
    *,
    weighting: Weighting = "sum",
    average: bool = False,
    sigma_scale: float = 0.125,
) -> np.ndarray:
    """Put per-tile scores back at their positions, combine overlaps, crop the padding.

    Parameters
    ----------
    tile_scores : (n_tiles, ..., th, tw) ndarray
        Scores per tile in the order of ``plan.origins`` (e.g. class scores ``(n, C, th, tw)``).
    plan : TilingPlan
    weighting : {"sum", "gaussian"}
        ``"sum"`` adds the score vectors of all covering tiles (study A's eq. 1);
        ``"gaussian"`` weights each tile by :func:`gaussian_weights` first, which down-weights
        tile borders.
    average : bool
        Divide by the summed weights (for ``"sum"``: the coverage count), giving a weighted mean
        instead of a sum. The argmax is the same either way.
    sigma_scale : float
        Gaussian width as a fraction of the tile size.

    Returns
    -------
    (..., H, W) ndarray of float32
        Combined scores over the image.
    """
    scores = np.asarray(tile_scores)
    if scores.ndim < 3 or scores.shape[0] != plan.n_tiles or scores.shape[-2:] != plan.tile_size:
        raise SeglabError(
            f"tile scores of shape {scores.shape} do not match the plan: expected "
            f"({plan.n_tiles}, ..., {plan.tile_size[0]}, {plan.tile_size[1]})",
            "pass one score array per tile, in the order of plan.origins",
        )
    if weighting not in ("sum", "gaussian"):
        raise SeglabError(f"unknown weighting {weighting!r}", "use 'sum' or 'gaussian'")
    th, tw = plan.tile_size
    lead = scores.shape[1:-2]
    acc = np.zeros((*lead, *plan.padded_shape), dtype=np.float32)
    weights = gaussian_weights(plan.tile_size, sigma_scale) if weighting == "gaussian" else None
    for tile, (y, x) in zip(scores, plan.origins, strict=True):
        if weights is None:
            acc[..., y : y + th, x : x + tw] += tile
        else:
            acc[..., y : y + th, x : x + tw] += tile * weights
    if average:
        norm = np.zeros(plan.padded_shape, dtype=np.float32)
        w = np.ones(plan.tile_size, np.float32) if weights is None else weights
        for y, x in plan.origins:
            norm[y : y + th, x : x + tw] += w
        acc /= norm
    (top, _), (left, _) = plan.pad_width
    h, w_ = plan.image_shape
    return np.ascontiguousarray(acc[..., top : top + h, left : left + w_])


def stitch_labels(
    tile_scores: np.ndarray,
    plan: TilingPlan,
    *,
    weighting: Weighting = "sum",
    class_axis: int = 1,
) -> np.ndarray:
    """Stitch class scores and take the arg-max class per pixel (study A's eq. 1 and 2).

    Parameters
    ----------
    tile_scores : (n_tiles, ..., th, tw) ndarray
        Class scores per tile; the classes lie on ``class_axis`` of this array (1 for
        ``(n, C, th, tw)``, 2 for a stack's ``(n, Z, C, th, tw)``).
    plan : TilingPlan
    weighting : {"sum", "gaussian"}
    class_axis : int
        Axis of ``tile_scores`` holding the classes.

    Returns
    -------
    (..., H, W) ndarray of uint8 (int32 past 256 classes)
        Predicted class per pixel, with the class axis removed.
    """
    scores = np.asarray(tile_scores)
    if not 1 <= class_axis < scores.ndim - 2:
        raise SeglabError(
            f"class_axis {class_axis} is not a leading per-tile axis of shape {scores.shape}",
            "give the axis that holds the classes, e.g. 1 for (n, C, th, tw)",
        )
    combined = stitch(scores, plan, weighting=weighting)
    labels = combined.argmax(axis=class_axis - 1)
    return labels.astype(np.uint8 if scores.shape[class_axis] <= 256 else np.int32)
