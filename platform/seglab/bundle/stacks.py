"""Pieces of the mito bundle (study B) that work on whole SEM stacks.

* :class:`AdjacentSliceInferer` predicts a stack ``(B, 1, Z, H, W)`` slice by slice, feeding the
  network each slice with its ``num_slices - 1`` neighbours as channels (CDeep3M's 1fm, 3fm and
  5fm inputs; mirrored beyond the ends as :func:`seglab.transforms.adjacent_slice_indices`), and
  returns ``(B, C, Z, H, W)``, so labels, metrics and writers see stacks.
* :class:`SliceEnsemble` averages the class probabilities of networks that see 1, 3 and 5
  slices (CDeep3M's ensemble); it takes the widest input and hands each member its centre
  channels.

Maps are written by :class:`seglab.bundle.LabelMapWriter` (2D maps and stacks, voxel size kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer, SlidingWindowInferer
from torch import nn

from seglab.bundle.acceleration import NetworkRunner
from seglab.errors import SeglabError
from seglab.transforms.slices import SLICE_COUNTS, adjacent_slice_indices

__all__ = ["AdjacentSliceInferer", "SliceEnsemble"]


def _check_count(num_slices: Any, name: str) -> int:
    if isinstance(num_slices, bool) or num_slices not in SLICE_COUNTS:
        raise SeglabError(
            f"{name} must be 1, 3 or 5 (CDeep3M's 1fm, 3fm, 5fm models), got {num_slices!r}",
            f"pass {name}=1, 3 or 5",
        )
    return int(num_slices)


class AdjacentSliceInferer(Inferer):
    """Predict every slice of stacks from 2.5D inputs (the slice and its neighbours).

    Parameters
    ----------
    num_slices : {1, 3, 5}
        Input channels of the network: the slice and ``num_slices // 2`` neighbours each side.
    roi_size : (int, int), optional
        Window (H, W) of a sliding-window pass over each slice (MONAI's
        ``SlidingWindowInferer``, Gaussian-weighted); None runs the network on whole slices.
    slice_batch_size : int
        Slices (or windows) per forward pass.
    overlap : float
        Sliding-window overlap in [0, 1).
    compile, precision
        How the network runs (:class:`seglab.bundle.acceleration.NetworkRunner`):
        ``torch.compile`` once the work pays for it (``"auto"``), and float32 or bfloat16.

    Notes
    -----
    Call as ``inferer(stacks, network)`` with ``stacks`` of shape ``(B, 1, Z, H, W)``; returns
    the network's outputs ``(B, C, Z, H, W)`` (a ``MetaTensor`` with the input's meta when the
    input is one).
    """

    def __init__(
        self,
        num_slices: int = 3,
        roi_size: Sequence[int] | None = None,
        slice_batch_size: int = 8,
        overlap: float = 0.25,
        compile: str | bool = "auto",  # noqa: A002 (the name MONAI's trainer uses)
        precision: str = "float32",
    ) -> None:
        super().__init__()
        self.runner = NetworkRunner(compile=compile, precision=precision)
        self.num_slices = _check_count(num_slices, "num_slices")
        if isinstance(slice_batch_size, bool) or int(slice_batch_size) < 1:
            raise SeglabError(
                f"slice_batch_size must be a positive integer, got {slice_batch_size!r}",
                "pass e.g. slice_batch_size=8",
            )
        self.slice_batch_size = int(slice_batch_size)
        self.window: Inferer | None = None
        if roi_size is not None:
            self.window = SlidingWindowInferer(
                roi_size=list(roi_size),
                sw_batch_size=self.slice_batch_size,
                overlap=overlap,
                mode="gaussian",
            )

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        """Return the network's output for every slice of ``inputs`` (B, 1, Z, H, W)."""
        if not isinstance(inputs, torch.Tensor) or inputs.ndim != 5 or inputs.shape[1] != 1:
            shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs)
            raise SeglabError(
                f"AdjacentSliceInferer takes a batch of stacks (B, 1, Z, H, W), got {shape}",
                "load stacks with EnsureChannelFirst and do not slice them before inference",
            )
        stacks = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        depth = int(stacks.shape[2])
        table = torch.as_tensor(
            np.stack([adjacent_slice_indices(depth, z, self.num_slices) for z in range(depth)]),
            device=stacks.device,
        )
        size = self.slice_batch_size

        def forward(batch: torch.Tensor, *extra: Any, **options: Any) -> torch.Tensor:
            return self.runner(network, batch, *extra, pad_to=size, **options)

        results = []
        for stack in stacks[:, 0]:
            slices = []
            for start in range(0, depth, self.slice_batch_size):
                batch = stack[table[start : start + self.slice_batch_size]]  # (n, k, H, W)
                if self.window is not None:
                    out = self.window(batch, forward, *args, **kwargs)
                else:
                    out = forward(batch, *args, **kwargs)
                slices.append(out)
            results.append(torch.cat(slices).transpose(0, 1))  # (C, Z, H, W)
        result = torch.stack(results)
        if isinstance(inputs, MetaTensor):
            result = MetaTensor(result, meta=inputs.meta, applied_operations=[])
        return result


class SliceEnsemble(nn.Module):
    """Average the class probabilities of 2.5D networks that see different numbers of slices.

    Parameters
    ----------
    networks : sequence of nn.Module
        The members; each returns class logits ``(B, C, H, W)`` (the same C).
    num_slices : sequence of int
        Input slices of each member (1, 3 or 5), in the same order.

    Notes
    -----
    The input is ``(B, K, H, W)`` with ``K = max(num_slices)`` adjacent slices, the centre in
    the middle; a member of k slices gets the centre k channels. The output is the logarithm
    of the mean softmax probabilities, so a softmax of it gives the averaged probabilities
    exactly (and its arg-max is the ensemble's class).
    """

    def __init__(self, networks: Sequence[nn.Module], num_slices: Sequence[int]) -> None:
        super().__init__()
        if len(networks) == 0 or len(networks) != len(num_slices):
            raise SeglabError(
                f"SliceEnsemble needs one slice count per network, got {len(networks)} "
                f"network(s) and num_slices {list(num_slices)}",
                "pass e.g. networks=[net1, net3, net5], num_slices=[1, 3, 5]",
            )
        self.members = nn.ModuleList(networks)
        self.num_slices = [_check_count(k, "num_slices") for k in num_slices]
        self.in_channels = max(self.num_slices)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the log of the members' mean class probabilities for ``x`` (B, K, H, W)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise SeglabError(
                f"SliceEnsemble takes (B, {self.in_channels}, H, W), got {tuple(x.shape)}",
                f"give the inferer num_slices={self.in_channels}",
            )
        centre = self.in_channels // 2
        total = None
        for member, k in zip(self.members, self.num_slices, strict=True):
            channels = x[:, centre - k // 2 : centre + k // 2 + 1]
            probabilities = torch.softmax(member(channels), dim=1)
            total = probabilities if total is None else total + probabilities
        assert total is not None
        return torch.log((total / len(self.members)).clamp_min(1e-12))
