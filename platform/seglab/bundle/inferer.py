"""Whole-image inference over a tiling grid, stitched by summing class scores (study A).

MONAI's ``SlidingWindowInferer`` places its own windows (no mirror padding, a grid that ends at
the image border) and averages overlaps, so it cannot reproduce the study's presets
(``"paper-64"``, ``"uniform-81"``). :class:`TilingInferer` cuts exactly the tiles of a
:class:`seglab.transforms.TileGrid`, runs the network on them in mini-batches, and stitches the
scores with :func:`seglab.tiling.stitch` (``C_sum = sum_i C_i``, eq. 1); ``argmax`` over the
class axis (eq. 2) is left to the post-processing (``AsDiscrete(argmax=True)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer

from seglab.errors import SeglabError
from seglab.tiling import PadMode, Weighting, extract_tiles, stitch
from seglab.transforms import TileGrid

__all__ = ["TilingInferer"]


class TilingInferer(Inferer):
    """Run a network on the tiles of a grid and stitch the scores back over each image.

    Parameters
    ----------
    preset : str, optional
        Tiling preset (``"no-overlap"``, ``"paper-64"``, ``"uniform-81"``); or give
        ``tile_size``, ``stride`` and ``padding``.
    tile_size, stride, padding, pad_mode
        Explicit grid; see :class:`seglab.transforms.TileGrid`.
    batch_size : int
        Tiles per forward pass.
    weighting : {"sum", "gaussian"}
        How overlapping scores combine; ``"sum"`` is the study's.
    activation : {"none", "softmax"}
        Applied to each tile's logits before stitching. The study sums the network's class
        scores; with ``"none"`` the logits are summed.

    Notes
    -----
    Call with ``inputs`` ``(B, C, H, W)`` and a network mapping ``(n, C, th, tw)`` to
    ``(n, K, th, tw)``; returns ``(B, K, H, W)`` float32 on the device of ``inputs`` (a
    ``MetaTensor`` with the input's meta when the input is one). Tiles are cut and stitched
    on the CPU with numpy (:mod:`seglab.tiling`); only the network runs on the device.
    """

    def __init__(
        self,
        preset: str | None = None,
        tile_size: int | tuple[int, int] | None = None,
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        pad_mode: PadMode = "mirror",
        batch_size: int = 16,
        weighting: Weighting = "sum",
        activation: str = "none",
    ) -> None:
        super().__init__()
        self.grid = TileGrid(preset, tile_size, stride, padding, pad_mode)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise SeglabError(
                f"batch_size must be a positive integer, got {batch_size!r}", "pass e.g. 16"
            )
        if weighting not in ("sum", "gaussian"):
            raise SeglabError(f"unknown weighting {weighting!r}", "use 'sum' or 'gaussian'")
        if activation not in ("none", "softmax"):
            raise SeglabError(f"unknown activation {activation!r}", "use 'none' or 'softmax'")
        self.batch_size = batch_size
        self.weighting = weighting
        self.activation = activation

    def __call__(
        self,
        inputs: torch.Tensor,
        network: Callable[..., torch.Tensor],
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Return stitched scores ``(B, K, H, W)`` for ``inputs`` ``(B, C, H, W)``."""
        if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4:
            raise SeglabError(
                "TilingInferer needs a (B, C, H, W) tensor, got "
                f"{getattr(inputs, 'shape', type(inputs).__name__)}",
                "batch channel-first 2D images (a 2D bundle's DataLoader does)",
            )
        plan = self.grid.plan(inputs.shape[-2:])
        device = inputs.device
        images = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        images = images.detach().cpu().numpy()
        stitched = []
        for image in images:
            tiles = extract_tiles(image, plan)
            scores = []
            for start in range(0, len(tiles), self.batch_size):
                batch = torch.from_numpy(
                    np.ascontiguousarray(tiles[start : start + self.batch_size])
                ).to(device)
                out = network(batch, *args, **kwargs)
                if self.activation == "softmax":
                    out = torch.softmax(out, dim=1)
                scores.append(out.detach().float().cpu().numpy())
            stitched.append(stitch(np.concatenate(scores), plan, weighting=self.weighting))
        result = torch.as_tensor(np.stack(stitched), device=device)
        if isinstance(inputs, MetaTensor):
            result = MetaTensor(result, meta=inputs.meta, applied_operations=[])
            result.is_batch = inputs.is_batch
        return result
