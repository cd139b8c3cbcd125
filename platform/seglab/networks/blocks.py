"""Building blocks shared by the networks: argument checks, normalisation layers, initialisation.

Everything here is plain :mod:`torch.nn`; nothing is downloaded and nothing runs at import time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from seglab.errors import SeglabError

NORMS = ("batch", "instance", "group", "none")
"""Normalisation layers a network can be built with (``norm=`` argument)."""


def check_spatial_dims(network: str, spatial_dims: object) -> None:
    """Raise unless ``spatial_dims`` is 2: the networks written here are 2D (2.5D via channels)."""
    if isinstance(spatial_dims, bool) or spatial_dims != 2:
        raise SeglabError(
            f"{network} is 2D only: spatial_dims must be 2, got {spatial_dims!r}",
            "feed 2.5D data as adjacent slices in the channel axis (in_channels=3 or 5), "
            "or use MONAI's UNet with spatial_dims=3 for 3D volumes",
        )


def check_positive_int(network: str, name: str, value: object) -> int:
    """Return ``value`` as an int if it is an integer >= 1, else raise a :class:`SeglabError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SeglabError(
            f"{network}: {name} must be an integer >= 1, got {value!r}",
            f"pass a positive whole number for {name}",
        )
    return int(value)


def check_positive_ints(network: str, name: str, values: object) -> tuple[int, ...]:
    """Return ``values`` as a non-empty tuple of ints >= 1, else raise a :class:`SeglabError`."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence) or len(values) == 0:
        raise SeglabError(
            f"{network}: {name} must be a non-empty sequence of integers >= 1, got {values!r}",
            f"pass {name} as a list such as [16, 32, 64]",
        )
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SeglabError(
                f"{network}: every entry of {name} must be an integer >= 1, got {list(values)!r}",
                f"pass {name} as a list of positive whole numbers",
            )
    return tuple(int(value) for value in values)


def check_norm(network: str, norm: object) -> str:
    """Return ``norm`` lower-cased if it names a known normalisation, raise otherwise."""
    name = norm.lower() if isinstance(norm, str) else norm
    if name not in NORMS:
        raise SeglabError(
            f"{network}: unknown norm {norm!r}",
            f"use one of {', '.join(repr(n) for n in NORMS)}",
        )
    return name


def check_dropout(network: str, dropout: object) -> float:
    """Return ``dropout`` as a float in [0, 1), raise a :class:`SeglabError` otherwise."""
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise SeglabError(
            f"{network}: dropout must be a probability in [0, 1), got {dropout!r}",
            "pass e.g. dropout=0.0 (off) or dropout=0.1",
        )
    return float(dropout)


def check_input(network: str, x: torch.Tensor, in_channels: int) -> None:
    """Raise unless ``x`` is a ``(B, in_channels, H, W)`` tensor with a non-empty batch."""
    if x.ndim != 4 or x.shape[1] != in_channels or x.shape[0] < 1:
        raise SeglabError(
            f"{network} expects input of shape (B, {in_channels}, H, W) with B >= 1, "
            f"got {tuple(x.shape)}",
            "check in_channels against the data (2.5D: number of adjacent slices) "
            "and add the batch axis",
        )


def norm_layer(norm: str, channels: int) -> nn.Module:
    """Return the normalisation layer for ``channels`` feature maps.

    ``"group"`` uses ``gcd(32, channels)`` groups (32 for the usual widths), ``"none"`` an identity.
    """
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    return nn.Identity()


def conv_norm_relu(
    in_channels: int,
    out_channels: int,
    norm: str,
    kernel_size: int = 3,
    dilation: int = 1,
) -> nn.Sequential:
    """Return a ``kernel_size`` convolution ("same" padding), normalisation and ReLU.

    The convolution has a bias only when there is no normalisation layer to absorb it.
    """
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            padding=dilation * (kernel_size // 2),
            dilation=dilation,
            bias=norm == "none",
        ),
        norm_layer(norm, out_channels),
        nn.ReLU(inplace=True),
    )


def init_weights(module: nn.Module) -> None:
    """Initialise in place: He (Kaiming) normal convolutions, unit/zero norms, zero biases.

    Deterministic for a given ``torch.manual_seed``; no pretrained weights are used.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d | nn.GroupNorm | nn.InstanceNorm2d):
            if layer.weight is not None:
                nn.init.ones_(layer.weight)
                nn.init.zeros_(layer.bias)
