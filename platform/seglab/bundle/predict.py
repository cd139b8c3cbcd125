"""Predict class scores or probabilities for a 2D image or, slice by slice, for a stack.

The entry points for code that holds a trained network (a bundle's inference, a registered
model's wrapper): :func:`predict_image` for one channel-first image (study A),
:func:`predict_stack` for an SEM stack (study B) with 1, 3 or 5 adjacent slices as the input
channels of each slice (CDeep3M's 1fm, 3fm and 5fm models; beyond the stack ends the slices are
mirrored as in :func:`seglab.transforms.slices.adjacent_slice_indices`). Both run the network
through an inferer, normally a :class:`~seglab.bundle.inferer.TilingInferer`; with
``activation="softmax"`` and ``average=True`` the result is per-pixel class probabilities.

:func:`probability_maps` brings probabilities to CDeep3M's 0..255 maps (or float32 0..1),
:func:`write_probability_maps` and :func:`write_label_map` write them (atomically) with
:func:`seglab.io.images.write_image`.

The network must already be on ``device`` and in evaluation mode (``network.eval()``); these
functions change neither.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer

from seglab.bundle.inferer import TilingInferer
from seglab.errors import SeglabError
from seglab.io.images import image_format, write_image
from seglab.metrics import probability_to_uint8
from seglab.transforms.slices import SLICE_COUNTS, adjacent_slice_indices

__all__ = [
    "predict_image",
    "predict_stack",
    "probability_maps",
    "write_label_map",
    "write_probability_maps",
]

Network = Callable[..., torch.Tensor]
Device = str | torch.device

#: How slices beyond the ends of a stack are filled for 2.5D inputs (``d c b | a b c d``).
SLICE_MODE = "mirror"

#: Slack allowed on float probabilities outside [0, 1] (rounding of averaged softmax outputs).
PROBABILITY_TOLERANCE = 1e-4


def _network_channels(network: Network) -> int | None:
    """Input channels the network expects, when it says (``in_channels`` or its first conv)."""
    value = getattr(network, "in_channels", None)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(network, torch.nn.Module):
        for module in network.modules():
            if isinstance(module, torch.nn.modules.conv._ConvNd):
                return int(module.in_channels)
    return None


def _check_network_channels(network: Network, channels: int, what: str, fix: str) -> None:
    expected = _network_channels(network)
    if expected is not None and expected != channels:
        raise SeglabError(
            f"the network takes {expected} input channels but {what} gives {channels}", fix
        )


def _as_float_array(array: Any, name: str, expected: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise SeglabError(
            f"{name} must be a numeric array {expected}, got {type(array).__name__}"
            + (f" of dtype {array.dtype}" if isinstance(array, np.ndarray) else ""),
            f"pass a float32 numpy array {expected}",
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def _run(
    network: Network, batch: np.ndarray, inferer: Inferer | Callable[..., Any], device: Device
) -> np.ndarray:
    """Run ``inferer`` on a (B, C, H, W) batch; return (B, K, H, W) float32 on the CPU."""
    inputs = torch.from_numpy(batch).to(device)
    with torch.inference_mode():
        out = inferer(inputs, network)
    if isinstance(out, MetaTensor):
        out = out.as_tensor()
    if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != batch.shape[0]:
        raise SeglabError(
            f"the inferer returned {getattr(out, 'shape', type(out).__name__)} for an input of "
            f"shape {batch.shape}",
            "use an inferer that maps (B, C, H, W) to (B, K, H, W), e.g. TilingInferer",
        )
    if tuple(out.shape[-2:]) != batch.shape[-2:]:
        raise SeglabError(
            f"the inferer returned spatial shape {tuple(out.shape[-2:])} for an image of "
            f"{batch.shape[-2:]}",
            "use an inferer that stitches back to the image size, e.g. TilingInferer",
        )
    return out.detach().float().cpu().numpy()


def predict_image(
    network: Network,
    image: np.ndarray,
    inferer: Inferer | Callable[..., Any],
    device: Device = "cpu",
) -> np.ndarray:
    """Predict one 2D image.

    Parameters
    ----------
    network : torch.nn.Module or callable
        Maps ``(n, C, th, tw)`` to ``(n, K, th, tw)``; already on ``device`` and in eval mode.
    image : (C, H, W) ndarray of float32
        Preprocessed image (normalised intensities), channels first.
    inferer : TilingInferer or monai.inferers.Inferer
        Called as ``inferer(inputs, network)`` on ``(1, C, H, W)``.
    device : str or torch.device
        Where the network runs.

    Returns
    -------
    (K, H, W) ndarray of float32
        The stitched output: summed class scores, or class probabilities with a
        ``TilingInferer(activation="softmax", average=True)``.
    """
    array = _as_float_array(image, "image", "(C, H, W)")
    if array.ndim != 3:
        raise SeglabError(
            f"predict_image needs an image (C, H, W), got shape {array.shape}",
            "add a channel axis to a grey-level image (image[None]); use predict_stack for a stack",
        )
    if array.size == 0:
        raise SeglabError(f"predict_image got an empty image of shape {array.shape}", "pass pixels")
    _check_network_channels(
        network, array.shape[0], f"the image of shape {array.shape}", "pass the image's channels"
    )
    return _run(network, array[None], inferer, device)[0]


def _slices_per_batch(inferer: Any, image_shape: tuple[int, int]) -> int:
    """Slices whose tiles together fill about one of the inferer's forward passes."""
    if isinstance(inferer, TilingInferer):
        return max(1, inferer.batch_size // inferer.grid.plan(image_shape).n_tiles)
    return 1


def predict_stack(
    network: Network,
    stack: np.ndarray,
    inferer: Inferer | Callable[..., Any],
    num_slices: int = 1,
    device: Device = "cpu",
    progress: Callable[[int, int], Any] | None = None,
    slices_per_batch: int | None = None,
) -> np.ndarray:
    """Predict every slice of a one-channel stack, each with its adjacent slices as channels.

    Parameters
    ----------
    network : torch.nn.Module or callable
        Maps ``(n, num_slices, th, tw)`` to ``(n, K, th, tw)``; already on ``device`` and in eval
        mode. When the network states its input channels (``in_channels`` or its first
        convolution), they must equal ``num_slices``.
    stack : (Z, H, W) ndarray of float32
        Preprocessed stack, e.g. SBF-SEM slices; ``(1, Z, H, W)`` is taken as ``(Z, H, W)``.
    inferer : TilingInferer or monai.inferers.Inferer
        Called as ``inferer(inputs, network)`` on ``(b, num_slices, H, W)``.
    num_slices : {1, 3, 5}
        Input channels per slice: slices ``z - num_slices // 2 .. z + num_slices // 2``, the
        centre in the middle channel, mirrored at the stack ends (CDeep3M's 1fm, 3fm, 5fm).
    device : str or torch.device
        Where the network runs.
    progress : callable, optional
        Called as ``progress(done, total)`` in slices after each batch of slices.
    slices_per_batch : int, optional
        Slices passed to the inferer at once. By default as many as fill one forward pass of a
        :class:`TilingInferer` (``batch_size // tiles per slice``, at least 1), else 1.

    Returns
    -------
    (K, Z, H, W) ndarray of float32
        The stitched output of every slice, classes first.
    """
    array = _as_float_array(stack, "stack", "(Z, H, W)")
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise SeglabError(
            f"predict_stack needs a one-channel stack (Z, H, W), got shape {array.shape}",
            "pass the stack's grey levels as (Z, H, W); use predict_image for a 2D image",
        )
    if array.size == 0:
        raise SeglabError(
            f"predict_stack got an empty stack of shape {array.shape}", "pass a stack with slices"
        )
    if isinstance(num_slices, bool) or num_slices not in SLICE_COUNTS:
        raise SeglabError(
            f"num_slices must be 1, 3 or 5 (CDeep3M's 1fm, 3fm, 5fm models), got {num_slices!r}",
            "pass num_slices=1, 3 or 5, as the network was trained",
        )
    _check_network_channels(
        network,
        int(num_slices),
        f"num_slices={num_slices}",
        "pass the num_slices the network was trained with",
    )
    if slices_per_batch is None:
        slices_per_batch = _slices_per_batch(inferer, array.shape[-2:])
    elif (
        isinstance(slices_per_batch, bool)
        or not isinstance(slices_per_batch, int)
        or slices_per_batch < 1
    ):
        raise SeglabError(
            f"slices_per_batch must be a positive integer, got {slices_per_batch!r}",
            "pass e.g. 4, or None to size it from the inferer",
        )
    if progress is not None and not callable(progress):
        raise SeglabError(
            f"progress must be callable(done, total), got {type(progress).__name__}",
            "pass a function or None",
        )
    depth = array.shape[0]
    table = np.stack(
        [adjacent_slice_indices(depth, z, int(num_slices), SLICE_MODE) for z in range(depth)]
    )
    result: np.ndarray | None = None
    for start in range(0, depth, slices_per_batch):
        stop = min(depth, start + slices_per_batch)
        out = _run(network, array[table[start:stop]], inferer, device)  # (b, K, H, W)
        if result is None:
            result = np.empty((out.shape[1], depth, *array.shape[1:]), dtype=np.float32)
        result[:, start:stop] = out.transpose(1, 0, 2, 3)
        if progress is not None:
            progress(stop, depth)
    assert result is not None  # the stack has at least one slice
    return result


def probability_maps(
    probabilities: np.ndarray, dtype: Literal["uint8", "float32"] = "uint8"
) -> np.ndarray:
    """Turn probabilities into maps: uint8 0..255 as CDeep3M writes them, or float32 0..1.

    Parameters
    ----------
    probabilities : ndarray of float in [0, 1], or of uint8 0..255
        Any shape, e.g. one class's ``(Z, H, W)`` taken from :func:`predict_stack`'s output.
        Float values up to :data:`PROBABILITY_TOLERANCE` outside [0, 1] (rounding of averaged
        softmax outputs) are clipped.
    dtype : {"uint8", "float32"}
        ``"uint8"``: ``round(255 * p)`` (:func:`seglab.metrics.probability_to_uint8`);
        ``"float32"``: ``p`` (uint8 input is divided by 255).

    Returns
    -------
    ndarray of uint8 or float32
        Same shape as ``probabilities``; an empty input gives an empty output.
    """
    if dtype not in ("uint8", "float32"):
        raise SeglabError(f"unknown probability map dtype {dtype!r}", "use 'uint8' or 'float32'")
    if isinstance(probabilities, torch.Tensor):
        probabilities = probabilities.detach().cpu().numpy()
    a = np.asarray(probabilities)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise SeglabError("probabilities have NaN or infinite values", "fix the model output")
        if a.size and (a.min() < -PROBABILITY_TOLERANCE or a.max() > 1 + PROBABILITY_TOLERANCE):
            raise SeglabError(
                f"probabilities must lie in [0, 1], got {a.min():.4g}..{a.max():.4g}",
                "predict with TilingInferer(activation='softmax', average=True)",
            )
        a = np.clip(a, 0, 1).astype(np.float32)
        return probability_to_uint8(a) if dtype == "uint8" else a
    maps = probability_to_uint8(a)  # checks integer ranges, rejects other dtypes
    return maps if dtype == "uint8" else maps.astype(np.float32) / np.float32(255)


def _tiff_path(path: str | os.PathLike[str], what: str) -> Path:
    path = Path(path)
    if image_format(path) not in ("tiff", "ome-tiff"):
        raise SeglabError(
            f"{what} are written as TIFF, got the file name {path.name!r}",
            "give the file a .tif or .tiff ending",
        )
    return path


def write_probability_maps(
    path: str | os.PathLike[str],
    maps: np.ndarray,
    spacing: tuple[float, ...] | None = None,
) -> Path:
    """Write one class's probability maps as a TIFF (one page per slice), atomically.

    Parameters
    ----------
    path : path-like
        ``.tif``/``.tiff`` (ImageJ TIFF) or ``.ome.tif``; an existing file is replaced.
    maps : (H, W) or (Z, H, W) ndarray of uint8 (0..255) or float32 (0..1)
        From :func:`probability_maps`. A one-slice stack reads back as (H, W).
    spacing : tuple of float, optional
        Pixel size in um, ``(y, x)`` or ``(z, y, x)`` matching ``maps``.

    Returns
    -------
    Path
        The written file.
    """
    path = _tiff_path(path, "probability maps")
    a = np.asarray(maps)
    if a.ndim not in (2, 3):
        raise SeglabError(
            f"probability maps must be (H, W) or (Z, H, W), got shape {a.shape}",
            "write one class at a time, e.g. maps[1] of a (K, Z, H, W) prediction",
        )
    if a.dtype not in (np.uint8, np.float32):
        raise SeglabError(
            f"probability maps must be uint8 or float32, got dtype {a.dtype}",
            "convert them with probability_maps(probabilities, dtype=...)",
        )
    if a.dtype == np.float32 and a.size and not (np.nanmin(a) >= 0 and np.nanmax(a) <= 1):
        raise SeglabError(
            f"float32 probability maps must lie in [0, 1], got {a.min():.4g}..{a.max():.4g}",
            "convert them with probability_maps(probabilities, dtype='float32')",
        )
    return write_image(path, a, spacing, axes="YX" if a.ndim == 2 else "ZYX")


def write_label_map(
    path: str | os.PathLike[str],
    labels: np.ndarray,
    spacing: tuple[float, ...] | None = None,
) -> Path:
    """Write class indices as a label map (PNG or TIFF by the file name), atomically.

    Parameters
    ----------
    path : path-like
        ``.png`` (2D only, no spacing) or ``.tif``/``.tiff``; an existing file is replaced.
    labels : (H, W) or (Z, H, W) ndarray of int or bool
        Class index per pixel (e.g. the argmax over classes), 0..65535. Written as uint8 when
        every value fits in 0..255, else as uint16.
    spacing : tuple of float, optional
        Pixel size in um, ``(y, x)`` or ``(z, y, x)`` (TIFF only).

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    a = np.asarray(labels)
    if a.dtype.kind not in "biu":
        raise SeglabError(
            f"a label map holds class indices, got dtype {a.dtype}",
            "take the argmax over the class axis first",
        )
    if a.ndim not in (2, 3):
        raise SeglabError(
            f"a label map must be (H, W) or (Z, H, W), got shape {a.shape}",
            "take the argmax over the class axis first",
        )
    if a.ndim == 3 and image_format(path) == "png":
        raise SeglabError(
            f"PNG holds one 2D image, but the label stack has shape {a.shape} ({path.name})",
            "write a stack to a .tif file",
        )
    low, high = (int(a.min()), int(a.max())) if a.size else (0, 0)
    if low < 0 or high > np.iinfo(np.uint16).max:
        raise SeglabError(
            f"label values must lie in 0..65535, got {low}..{high}", "write class indices"
        )
    out = a.astype(np.uint8 if high <= 255 else np.uint16)
    return write_image(path, out, spacing, axes="YX" if a.ndim == 2 else "ZYX")
