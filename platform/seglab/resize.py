"""Resizing images and label maps, as study A does (2475 x 2475 -> 1024 x 1024).

Images are resized by pixel-area averaging (``"area"``, exact: every output pixel is the mean of
the input area it covers, so the image mean is preserved) or bilinear interpolation
(``"linear"``, scikit-image's, with its anti-aliasing when shrinking). Label maps are resized by
nearest neighbour with centre alignment, so no new class values appear.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import sparse

from seglab.errors import SeglabError

ResizeMethod = Literal["area", "linear"]


def _output_shape(output_shape: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(output_shape, (int, np.integer)):
        shape = (int(output_shape), int(output_shape))
    else:
        shape = tuple(int(v) for v in output_shape)  # type: ignore[assignment]
    if len(shape) != 2 or min(shape) < 1:
        raise SeglabError(
            f"output shape must be two positive sizes (H, W), got {output_shape!r}",
            "pass e.g. 1024 or (1024, 1024)",
        )
    return shape  # type: ignore[return-value]


def _spatial_axes(ndim: int, channel_axis: int | None) -> tuple[int, int]:
    if channel_axis is None:
        if ndim != 2:
            raise SeglabError(
                f"an image without channel_axis must be 2D (H, W), got {ndim} axes",
                "pass channel_axis (e.g. -1 for (H, W, C) or 0 for (C, H, W))",
            )
        return (0, 1)
    if ndim != 3 or not -3 <= channel_axis < 3:
        raise SeglabError(
            f"channel_axis {channel_axis} does not fit an array with {ndim} axes",
            "pass a 3D array with channel_axis 0 or -1",
        )
    spatial = [a for a in range(3) if a != channel_axis % 3]
    return spatial[0], spatial[1]


def area_matrix(n_in: int, n_out: int) -> sparse.csr_matrix:
    """Weights of pixel-area resampling along one axis.

    Parameters
    ----------
    n_in, n_out : int
        Input and output lengths, pixels.

    Returns
    -------
    (n_out, n_in) scipy.sparse.csr_matrix of float64
        Row ``i`` holds the fraction of output pixel ``i``'s extent covered by each input pixel;
        rows sum to 1.
    """
    scale = n_in / n_out
    rows, cols, vals = [], [], []
    for i in range(n_out):
        lo, hi = i * scale, (i + 1) * scale
        for j in range(int(np.floor(lo)), min(n_in, int(np.ceil(hi)))):
            overlap = min(hi, j + 1) - max(lo, j)
            if overlap > 1e-12:
                rows.append(i)
                cols.append(j)
                vals.append(overlap / scale)
    return sparse.csr_matrix((vals, (rows, cols)), shape=(n_out, n_in))


def resize_image(
    image: np.ndarray,
    output_shape: int | tuple[int, int],
    *,
    channel_axis: int | None = None,
    method: ResizeMethod = "area",
) -> np.ndarray:
    """Resize an image's two spatial axes.

    Parameters
    ----------
    image : (H, W) or (H, W, C) or (C, H, W) ndarray
        Grey-level or multi-channel image, any real dtype; must be finite.
    output_shape : int or (int, int)
        New (H, W) in pixels.
    channel_axis : int, optional
        Axis of the channels (-1 for (H, W, C), 0 for (C, H, W)); None for 2D images.
    method : {"area", "linear"}
        ``"area"``: exact pixel-area averaging (for shrinking; also valid for enlarging).
        ``"linear"``: bilinear interpolation (scikit-image, anti-aliased when shrinking).

    Returns
    -------
    ndarray
        Same layout and dtype as ``image``; integer images are rounded and clipped to their
        dtype's range.
    """
    image = np.asarray(image)
    shape = _output_shape(output_shape)
    ay, ax = _spatial_axes(image.ndim, channel_axis)
    if image.size == 0:
        raise SeglabError(f"cannot resize an empty image of shape {image.shape}", "pass pixels")
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise SeglabError(f"cannot resize an image of dtype {image.dtype}", "pass numbers")
    data = image.astype(np.float64)
    if not np.isfinite(data).all():
        raise SeglabError(
            "image has NaN or infinite pixels", "replace them (e.g. numpy.nan_to_num) first"
        )
    moved = np.moveaxis(data, (ay, ax), (0, 1))  # (H, W[, C])
    if method == "area":
        my = area_matrix(moved.shape[0], shape[0])
        mx = area_matrix(moved.shape[1], shape[1])
        flat = moved.reshape(moved.shape[0], -1)
        out = (my @ flat).reshape(shape[0], moved.shape[1], *moved.shape[2:])
        out = np.moveaxis(out, 1, 0)  # (W, H', [C])
        out = (mx @ out.reshape(out.shape[0], -1)).reshape(shape[1], shape[0], *moved.shape[2:])
        out = np.moveaxis(out, 0, 1)
    elif method == "linear":
        from skimage.transform import resize

        out = resize(
            moved,
            (*shape, *moved.shape[2:]),
            order=1,
            preserve_range=True,
            anti_aliasing=shape[0] < moved.shape[0] or shape[1] < moved.shape[1],
        )
    else:
        raise SeglabError(f"unknown resize method {method!r}", "use 'area' or 'linear'")
    out = np.moveaxis(out, (0, 1), (ay, ax))
    if np.issubdtype(image.dtype, np.integer) or image.dtype == bool:
        info = np.iinfo(image.dtype) if image.dtype != bool else None
        out = np.rint(out)
        if info is not None:
            out = np.clip(out, info.min, info.max)
        return out.astype(image.dtype)
    return out.astype(image.dtype)


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Input index sampled by each output pixel, centre-aligned.

    Output pixel ``i`` samples input ``floor((i + 0.5) * n_in / n_out)``.

    Returns
    -------
    (n_out,) ndarray of intp
    """
    idx = np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.intp)
    return np.minimum(idx, n_in - 1)


def resize_labels(labels: np.ndarray, output_shape: int | tuple[int, int]) -> np.ndarray:
    """Resize a label map by nearest neighbour, keeping its values.

    Parameters
    ----------
    labels : (H, W) or (..., H, W) ndarray of int or bool
        Class indices; leading axes (e.g. slices) are carried along.
    output_shape : int or (int, int)
        New (H, W) in pixels.

    Returns
    -------
    (..., H', W') ndarray, same dtype
        Only values present in ``labels`` occur.
    """
    labels = np.asarray(labels)
    shape = _output_shape(output_shape)
    if labels.ndim < 2 or labels.size == 0:
        raise SeglabError(
            f"a label map must be a non-empty (..., H, W) array, got shape {labels.shape}",
            "pass a 2D label map",
        )
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise SeglabError(
            f"a label map must hold integers, got dtype {labels.dtype}",
            "cast it to an integer type; resize images with resize_image instead",
        )
    iy = nearest_indices(labels.shape[-2], shape[0])
    ix = nearest_indices(labels.shape[-1], shape[1])
    return labels[..., iy[:, None], ix[None, :]]
