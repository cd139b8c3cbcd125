"""Size and cost of a network: parameter count and forward FLOPs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from seglab.errors import SeglabError


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Return the number of scalar parameters of ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        Any module; shared parameters are counted once.
    trainable_only : bool
        Count only parameters with ``requires_grad``.

    Returns
    -------
    int
        Sum of ``numel()`` over the parameters (0 for a module without any).
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def forward_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Return the floating-point operations of one forward pass on a zero input.

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode`: 2 per multiply-add of
    convolutions (also transposed), matrix products and linear layers; normalisation, activations,
    pooling, unpooling and interpolation are not counted (they are a few percent at most).

    Parameters
    ----------
    model : torch.nn.Module
        Run in eval mode under ``torch.no_grad``; its train/eval mode is restored afterwards.
    input_shape : sequence of int
        Full input shape including the batch axis, e.g. ``(1, 3, 256, 256)``; the count scales
        linearly with the batch size.

    Returns
    -------
    int
        FLOPs of the forward pass (a 3x3 Conv2d of C_in -> C_out maps on H x W outputs costs
        ``2 * C_in * C_out * 9 * H * W`` per image).
    """
    shape = tuple(input_shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise SeglabError(
            f"input_shape must be a sequence of positive integers, got {input_shape!r}",
            "pass the full shape with the batch axis, e.g. (1, 3, 256, 256)",
        )
    reference = next(model.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None else torch.float32
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros(shape, device=device, dtype=dtype))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
