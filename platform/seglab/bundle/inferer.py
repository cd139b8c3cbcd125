"""Whole-image inference over a tiling grid, stitched by summing class scores (study A).

MONAI's ``SlidingWindowInferer`` places its own windows (no mirror padding, a grid that ends at
the image border) and averages overlaps, so it cannot reproduce the study's presets
(``"paper-64"``, ``"uniform-81"``). :class:`TilingInferer` cuts exactly the tiles of a
:class:`seglab.transforms.TileGrid`, runs the network on them in mini-batches, and stitches the
scores with :func:`seglab.tiling.stitch` (``C_sum = sum_i C_i``, eq. 1); ``argmax`` over the
class axis (eq. 2) is left to the post-processing (``AsDiscrete(argmax=True)``).

Test-time augmentation (``tta``) runs the network on every tile transformed by each element of a
subset of the dihedral group D4 (:func:`seglab.d4.d4_subset`), maps each output back with the
inverse transform and averages them per tile, before stitching.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer

from seglab.bundle.acceleration import NetworkRunner, even_batches
from seglab.d4 import D4Element, d4_subset
from seglab.errors import SeglabError
from seglab.tiling import PadMode, Weighting, extract_tiles, stitch
from seglab.transforms import TileGrid

__all__ = ["TilingInferer", "apply_d4", "invert_d4"]


def apply_d4(batch: torch.Tensor, element: D4Element) -> torch.Tensor:
    """Transform the last two axes of a tensor as :meth:`seglab.d4.D4Element.apply` does."""
    out = (
        torch.rot90(batch, element.quarter_turns, dims=(-2, -1)) if element.quarter_turns else batch
    )
    return torch.flip(out, dims=(-1,)) if element.flip else out


def invert_d4(batch: torch.Tensor, element: D4Element) -> torch.Tensor:
    """Undo :func:`apply_d4`: ``invert_d4(apply_d4(x, e), e)`` equals ``x``."""
    out = torch.flip(batch, dims=(-1,)) if element.flip else batch
    return torch.rot90(out, -element.quarter_turns, dims=(-2, -1)) if element.quarter_turns else out


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
        Tiles per forward pass (tiles of all images of the input batch are pooled, so small
        images with one tile each still fill a forward pass).
    weighting : {"sum", "gaussian"}
        How overlapping scores combine; ``"sum"`` is the study's.
    activation : {"none", "softmax"}
        Applied to each tile's logits (over the class axis) before test-time averaging and
        stitching. The study sums the network's class scores; with ``"none"`` the logits are
        summed.
    tta : {"off", "flips", "all"}
        Test-time augmentation over D4 (:data:`seglab.d4.D4_SUBSETS`): ``"off"`` runs the
        network once per tile; ``"flips"`` 4 times (identity, horizontal and vertical flip,
        rotation by 180 degrees); ``"all"`` 8 times (every rotation by 90 degrees, with and
        without a flip). Outputs (after ``activation``) are mapped back and averaged per tile.
        ``"all"`` needs square tiles, since a quarter turn would change a tile's shape; for
        non-square tiles use ``"flips"``, whose elements keep the shape.
    average : bool
        Divide the stitched scores by the per-pixel coverage (by the summed weights for
        ``"gaussian"``), giving a per-pixel mean instead of the study's sum. With
        ``activation="softmax"`` the result is then class probabilities that sum to 1 at each
        pixel. The argmax is the same either way.
    compile : {"auto", "on", "off"}
        ``torch.compile`` the network (:class:`seglab.bundle.acceleration.NetworkRunner`):
        ``"auto"`` once it has run enough tiles eagerly to pay for the compilation. Outputs
        equal the eager ones up to float rounding.
    precision : {"float32", "bfloat16"}
        ``"bfloat16"`` runs the network under autocast (opt-in; faster on CPUs with bf16
        instructions and on GPUs, and changes a few argmax pixels).

    Notes
    -----
    Call with ``inputs`` ``(B, C, H, W)`` and a network mapping ``(n, C, th, tw)`` to
    ``(n, K, th, tw)``; returns ``(B, K, H, W)`` float32 on the device of ``inputs`` (a
    ``MetaTensor`` with the input's meta when the input is one). Tiles are cut and stitched
    on the CPU with numpy (:mod:`seglab.tiling`); only the network runs on the device, under
    :func:`torch.inference_mode`. Putting the network in evaluation mode (``network.eval()``,
    which fixes dropout and batch-norm statistics) is the caller's job; MONAI's evaluators do it.
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
        tta: str = "off",
        average: bool = False,
        compile: str | bool = "auto",  # noqa: A002 (the name MONAI's trainer uses)
        precision: str = "float32",
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
        if not isinstance(average, bool):
            raise SeglabError(f"average must be True or False, got {average!r}", "pass a bool")
        elements = d4_subset(tta)
        th, tw = self.grid.plan((1, 1)).tile_size
        if th != tw and any(e.quarter_turns % 2 for e in elements):
            raise SeglabError(
                f"tta={tta!r} rotates tiles by 90 degrees, which needs square tiles, but the "
                f"tiles are {th} x {tw}",
                "use tta='flips' (shape-preserving) or a square tile_size",
            )
        self.batch_size = batch_size
        self.weighting = weighting
        self.activation = activation
        self.tta = tta
        self.tta_elements = elements
        self.average = average
        self.runner = NetworkRunner(compile=compile, precision=precision)

    def _forward(
        self,
        batch: torch.Tensor,
        network: Callable[..., torch.Tensor],
        pad_to: int,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Mean over the TTA elements of the back-transformed (activated) network output."""
        total: torch.Tensor | None = None
        for element in self.tta_elements:
            out = self.runner(network, apply_d4(batch, element), *args, pad_to=pad_to, **kwargs)
            if self.activation == "softmax":
                out = torch.softmax(out, dim=1)
            out = invert_d4(out, element).float()
            total = out if total is None else total + out
        assert total is not None  # d4_subset never returns an empty subset
        return total / len(self.tta_elements) if len(self.tta_elements) > 1 else total

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
        n_images = images.shape[0]
        if n_images == 0:
            raise SeglabError(
                f"TilingInferer got an empty batch of shape {tuple(inputs.shape)}",
                "pass at least one image",
            )
        # (n_tiles, B, C, th, tw) -> one row per (tile, image), tile-major.
        tiles = extract_tiles(images, plan)
        tiles = tiles.reshape((plan.n_tiles * n_images, *tiles.shape[2:]))
        tiles = np.require(tiles, requirements=["C", "W"])  # a view of the input when unpadded
        scores: np.ndarray | None = None
        size = even_batches(len(tiles), self.batch_size)  # one batch shape for compiled runs
        with torch.inference_mode():
            for start in range(0, len(tiles), size):
                batch = torch.from_numpy(tiles[start : start + size]).to(device)
                out = self._forward(batch, network, size, *args, **kwargs).cpu().numpy()
                if out.ndim != 4 or len(out) != len(batch) or out.shape[-2:] != plan.tile_size:
                    raise SeglabError(
                        f"the network returned shape {out.shape} for tiles of shape "
                        f"{tuple(batch.shape)}",
                        "use a network that maps (n, C, th, tw) to (n, K, th, tw)",
                    )
                if scores is None:
                    scores = np.empty((len(tiles), *out.shape[1:]), dtype=np.float32)
                scores[start : start + len(out)] = out
        assert scores is not None  # plan_grid guarantees at least one tile
        scores = scores.reshape((plan.n_tiles, n_images, *scores.shape[1:]))
        stitched = stitch(scores, plan, weighting=self.weighting, average=self.average)
        result = torch.as_tensor(stitched, device=device)
        if isinstance(inputs, MetaTensor):
            result = MetaTensor(result, meta=inputs.meta, applied_operations=[])
            result.is_batch = inputs.is_batch
        return result
