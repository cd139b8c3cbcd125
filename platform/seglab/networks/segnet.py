"""SegNet: an encoder-decoder that upsamples with the encoder's max-pooling indices.

Badrinarayanan, Kendall and Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder Architecture
for Image Segmentation", IEEE TPAMI 39(12), 2017. Written from scratch (no pretrained VGG-16).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seglab.errors import SeglabError
from seglab.networks.blocks import (
    check_dropout,
    check_input,
    check_norm,
    check_positive_int,
    check_positive_ints,
    check_spatial_dims,
    conv_norm_relu,
    init_weights,
)

VGG16_CHANNELS = (64, 128, 256, 512, 512)
"""Stage widths of the original SegNet (the VGG-16 encoder); pass as ``channels=`` to use them."""


class SegNetEncoderStage(nn.Module):
    """Convolutions (3x3, norm, ReLU) followed by 2x2 max pooling that returns its indices.

    Parameters
    ----------
    in_channels, out_channels : int
        Feature maps coming in and going out.
    n_convs : int
        Number of conv-norm-ReLU layers (>= 1).
    norm : str
        One of ``seglab.networks.blocks.NORMS``.
    dropout : float
        Probability of ``Dropout2d`` after the convolutions (0: none).
    """

    def __init__(
        self, in_channels: int, out_channels: int, n_convs: int, norm: str, dropout: float
    ) -> None:
        super().__init__()
        layers = [
            conv_norm_relu(in_channels if i == 0 else out_channels, out_channels, norm)
            for i in range(n_convs)
        ]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        self.convs = nn.Sequential(*layers)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2, return_indices=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Size]:
        """Return the pooled maps ``(B, C, H/2, W/2)``, the pooling indices and ``(H, W)``."""
        features = self.convs(x)
        pooled, indices = self.pool(features)
        return pooled, indices, features.shape[-2:]


class SegNetDecoderStage(nn.Module):
    """Max unpooling with stored indices followed by convolutions (3x3, norm, ReLU).

    The last convolution maps ``in_channels`` to ``out_channels``, the others keep ``in_channels``
    (the mirror of an encoder stage).

    Parameters
    ----------
    in_channels, out_channels : int
        Feature maps coming in and going out.
    n_convs : int
        Number of conv-norm-ReLU layers (>= 1).
    norm : str
        One of ``seglab.networks.blocks.NORMS``.
    dropout : float
        Probability of ``Dropout2d`` after the convolutions (0: none).
    """

    def __init__(
        self, in_channels: int, out_channels: int, n_convs: int, norm: str, dropout: float
    ) -> None:
        super().__init__()
        self.unpool = nn.MaxUnpool2d(kernel_size=2, stride=2)
        layers = [
            conv_norm_relu(in_channels, out_channels if i == n_convs - 1 else in_channels, norm)
            for i in range(n_convs)
        ]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        self.convs = nn.Sequential(*layers)

    def forward(
        self, x: torch.Tensor, indices: torch.Tensor, output_size: Sequence[int]
    ) -> torch.Tensor:
        """Unpool ``x`` to ``output_size`` at ``indices`` (zeros elsewhere), then convolve."""
        return self.convs(self.unpool(x, indices, output_size=output_size))


class SegNet(nn.Module):
    """SegNet for 2D (and 2.5D, slices as channels) multi-class segmentation; outputs logits.

    Encoder stage ``i``: ``convs_per_stage[i]`` conv3x3-norm-ReLU layers of ``channels[i]`` maps,
    then 2x2 max pooling that keeps its argmax indices. The decoder mirrors the encoder: each
    stage unpools with the indices of the matching encoder stage (values go back to the positions
    of the maxima, zeros elsewhere), then applies the same number of conv3x3-norm-ReLU layers, the
    last one narrowing to the width of the stage above. A 1x1 convolution gives the logits.

    Parameters
    ----------
    spatial_dims : int
        Must be 2 (the argument exists so MONAI-style configs can pass it).
    in_channels : int
        Input channels: 3 for RGB immunofluorescence, 1/3/5 for 2.5D stacks of adjacent slices.
    out_channels : int
        Number of classes; the output holds one logit per class (no softmax).
    channels : sequence of int
        Width of each encoder stage (one 2x2 pooling per stage). The default is a quarter of
        the original widths (:data:`VGG16_CHANNELS`, ``(64, 128, 256, 512, 512)``), about 1/16 of
        its compute; see ``docs/networks.md`` for the measured cost of both.
    convs_per_stage : sequence of int
        Convolutions per encoder (and mirrored decoder) stage; VGG-16 has ``(2, 2, 3, 3, 3)``.
    norm : {"batch", "instance", "group", "none"}
        Normalisation after every convolution (the original uses batch norm).
    dropout : float
        ``Dropout2d`` probability after every stage's convolutions (0 turns it off).

    Notes
    -----
    Input ``(B, in_channels, H, W)`` with H and W multiples of ``2 ** len(channels)`` (32 by
    default; 256x256 sliding windows qualify); output ``(B, out_channels, H, W)``. Other sizes
    raise a :class:`~seglab.errors.SeglabError`, because pooling would drop the last rows.
    Weights are He-initialised (deterministic under ``torch.manual_seed``).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 6,
        channels: Sequence[int] = (16, 32, 64, 128, 128),
        convs_per_stage: Sequence[int] = (2, 2, 3, 3, 3),
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_spatial_dims(name, spatial_dims)
        self.in_channels = check_positive_int(name, "in_channels", in_channels)
        self.out_channels = check_positive_int(name, "out_channels", out_channels)
        widths = check_positive_ints(name, "channels", channels)
        n_convs = check_positive_ints(name, "convs_per_stage", convs_per_stage)
        if len(widths) != len(n_convs):
            raise SeglabError(
                f"{name}: channels has {len(widths)} stages but convs_per_stage has "
                f"{len(n_convs)} ({list(widths)} vs {list(n_convs)})",
                "give one number of convolutions per stage",
            )
        norm = check_norm(name, norm)
        dropout = check_dropout(name, dropout)
        self.size_multiple = 2 ** len(widths)

        inputs = (self.in_channels, *widths[:-1])
        self.encoder = nn.ModuleList(
            SegNetEncoderStage(c_in, c_out, n, norm, dropout)
            for c_in, c_out, n in zip(inputs, widths, n_convs, strict=True)
        )
        # Decoder stage k undoes encoder stage i = n_stages - 1 - k: from width i to width i - 1.
        narrowed = (widths[0], *widths[:-1])
        self.decoder = nn.ModuleList(
            SegNetDecoderStage(widths[i], narrowed[i], n_convs[i], norm, dropout)
            for i in reversed(range(len(widths)))
        )
        self.classifier = nn.Conv2d(widths[0], self.out_channels, kernel_size=1)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(B, out_channels, H, W)`` for input ``(B, in_channels, H, W)``."""
        check_input(type(self).__name__, x, self.in_channels)
        height, width = x.shape[-2:]
        if height % self.size_multiple or width % self.size_multiple:
            raise SeglabError(
                f"SegNet with {len(self.encoder)} pooling stages needs H and W to be multiples "
                f"of {self.size_multiple}, got {height} x {width}",
                f"pad or crop the input (or use a window size) to a multiple of "
                f"{self.size_multiple}, e.g. 256",
            )
        skips = []
        for stage in self.encoder:
            x, indices, size = stage(x)
            skips.append((indices, size))
        for stage, (indices, size) in zip(self.decoder, reversed(skips), strict=True):
            x = stage(x, indices, size)
        return self.classifier(x)
