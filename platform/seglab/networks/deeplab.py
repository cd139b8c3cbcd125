"""DeepLabV3+: a dilated residual encoder, atrous spatial pyramid pooling and a light decoder.

Chen, Zhu, Papandreou, Schroff and Adam, "Encoder-Decoder with Atrous Separable Convolution for
Semantic Image Segmentation", ECCV 2018, with a ResNet-style encoder (He et al., CVPR 2016) built
from basic residual blocks and trained from scratch (no pretrained weights). The convolutions are
ordinary (not depthwise-separable) as in the ResNet-backed variants of the paper.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
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
    norm_layer,
)

RESNET18_WIDTHS = {
    "encoder_channels": (64, 128, 256, 512),
    "blocks": (2, 2, 2, 2),
    "aspp_channels": 256,
    "decoder_channels": 256,
}
"""Keyword arguments for the standard widths: ResNet-18 encoder, 256-wide ASPP and decoder."""


class BasicBlock(nn.Module):
    """Residual block: two 3x3 conv-norm layers and a shortcut, ReLU after the sum.

    The shortcut is a 1x1 conv-norm projection when the stride or the width changes.

    Parameters
    ----------
    in_channels, out_channels : int
        Feature maps coming in and going out.
    stride : int
        Stride of the first convolution (1 or 2).
    dilation : int
        Dilation of both convolutions (padding follows, so the size only changes with stride).
    norm : str
        One of ``seglab.networks.blocks.NORMS``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, dilation: int, norm: str
    ) -> None:
        super().__init__()
        bias = norm == "none"
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, 3, stride, padding=dilation, dilation=dilation, bias=bias
        )
        self.norm1 = norm_layer(norm, out_channels)
        self.conv2 = nn.Conv2d(
            out_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=bias
        )
        self.norm2 = norm_layer(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=bias),
                norm_layer(norm, out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``relu(norm(conv(relu(norm(conv(x))))) + shortcut(x))``."""
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: five parallel branches, concatenated and projected.

    Branches: a 1x1 conv, one 3x3 conv per atrous rate, and image-level pooling (global average,
    1x1 conv, ReLU, broadcast back). The pooling branch has a bias and no normalisation: batch
    norm over a 1x1 map would fail in training with batch size 1.

    Parameters
    ----------
    in_channels : int
        Feature maps of the encoder's last stage.
    out_channels : int
        Width of every branch and of the projection.
    rates : sequence of int
        Dilation rates of the 3x3 branches.
    norm : str
        One of ``seglab.networks.blocks.NORMS``.
    dropout : float
        ``Dropout2d`` probability after the projection.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        rates: Sequence[int],
        norm: str,
        dropout: float,
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_norm_relu(in_channels, out_channels, norm, kernel_size=1)]
            + [conv_norm_relu(in_channels, out_channels, norm, dilation=r) for r in rates]
        )
        self.image_pooling = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=True),
            nn.ReLU(inplace=True),
        )
        project: list[nn.Module] = [
            conv_norm_relu((len(rates) + 2) * out_channels, out_channels, norm, kernel_size=1)
        ]
        if dropout > 0:
            project.append(nn.Dropout2d(dropout))
        self.project = nn.Sequential(*project)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``(B, out_channels, h, w)`` for encoder features ``(B, in_channels, h, w)``."""
        pooled = self.image_pooling(x).expand(-1, -1, x.shape[-2], x.shape[-1])
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1))


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ for 2D (and 2.5D, slices as channels) multi-class segmentation; outputs logits.

    Encoder: a stem (7x7 conv with stride 2, norm, ReLU, 3x3 max pooling with stride 2; stride 4)
    and residual stages of :class:`BasicBlock`. Stage 0 keeps stride 4 and gives the low-level
    features; each later stage halves the resolution until ``output_stride`` is reached and then
    dilates instead (doubling the dilation per stage), as in DeepLab. :class:`ASPP` runs on the
    last stage. Decoder: the low-level features are narrowed to ``low_level_channels`` by a 1x1
    conv and concatenated with the ASPP output upsampled bilinearly to stride 4; two 3x3
    conv-norm-ReLU layers and a 1x1 conv give the logits, upsampled bilinearly to the input size.

    Parameters
    ----------
    spatial_dims : int
        Must be 2 (the argument exists so MONAI-style configs can pass it).
    in_channels : int
        Input channels: 3 for RGB immunofluorescence, 1/3/5 for 2.5D stacks of adjacent slices.
    out_channels : int
        Number of classes; the output holds one logit per class (no softmax).
    encoder_channels : sequence of int
        Width of each residual stage (at least 2 stages). The default is half of ResNet-18's
        ``(64, 128, 256, 512)``; ``DeepLabV3Plus(**RESNET18_WIDTHS)`` builds the standard widths
        (about 4x the compute, see ``docs/networks.md``).
    blocks : sequence of int
        Basic blocks per stage (ResNet-18: ``(2, 2, 2, 2)``); same length as ``encoder_channels``.
    output_stride : {8, 16, 32}
        Ratio of the input size to the size of the ASPP features. The paper uses 16 in training
        (rates 6, 12, 18) and 8 for its best results (rates doubled: 12, 24, 36).
    aspp_rates : sequence of int
        Dilation rates of the ASPP 3x3 branches.
    aspp_channels : int
        Width of each ASPP branch and of its projection (paper: 256; default: half).
    decoder_channels : int
        Width of the decoder's 3x3 convolutions (paper: 256; default: half).
    low_level_channels : int
        Width the stride-4 features are narrowed to before fusion (paper: 48).
    norm : {"batch", "instance", "group", "none"}
        Normalisation after every convolution except the ASPP image-pooling branch.
    dropout : float
        ``Dropout2d`` probability after the ASPP projection (0 turns it off).

    Notes
    -----
    Input ``(B, in_channels, H, W)`` of any size; output ``(B, out_channels, H, W)``. Sizes that
    are multiples of ``output_stride`` avoid rounding in the strided layers (256 qualifies).
    Training mode with batch (instance) norm needs more than one value per channel at the ASPP
    input: ``B * ceil(H / output_stride) * ceil(W / output_stride) >= 2`` (without ``B``).
    Weights are He-initialised (deterministic under ``torch.manual_seed``).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 6,
        encoder_channels: Sequence[int] = (32, 64, 128, 256),
        blocks: Sequence[int] = (2, 2, 2, 2),
        output_stride: int = 16,
        aspp_rates: Sequence[int] = (6, 12, 18),
        aspp_channels: int = 128,
        decoder_channels: int = 128,
        low_level_channels: int = 48,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_spatial_dims(name, spatial_dims)
        self.in_channels = check_positive_int(name, "in_channels", in_channels)
        self.out_channels = check_positive_int(name, "out_channels", out_channels)
        widths = check_positive_ints(name, "encoder_channels", encoder_channels)
        n_blocks = check_positive_ints(name, "blocks", blocks)
        if len(widths) != len(n_blocks) or len(widths) < 2:
            raise SeglabError(
                f"{name}: encoder_channels and blocks need the same length >= 2, got "
                f"{list(widths)} and {list(n_blocks)}",
                "give one number of residual blocks per encoder stage, e.g. [2, 2, 2, 2]",
            )
        max_stride = 4 * 2 ** (len(widths) - 1)
        if output_stride not in (8, 16, 32) or output_stride > max_stride:
            raise SeglabError(
                f"{name}: output_stride must be 8, 16 or 32 and at most {max_stride} with "
                f"{len(widths)} encoder stages, got {output_stride!r}",
                "use output_stride=16 (or 8 for finer features at higher cost)",
            )
        rates = check_positive_ints(name, "aspp_rates", aspp_rates)
        aspp_width = check_positive_int(name, "aspp_channels", aspp_channels)
        decoder_width = check_positive_int(name, "decoder_channels", decoder_channels)
        low_width = check_positive_int(name, "low_level_channels", low_level_channels)
        self.norm = norm = check_norm(name, norm)
        dropout = check_dropout(name, dropout)
        self.output_stride = int(output_stride)

        self.stem = nn.Sequential(
            nn.Conv2d(self.in_channels, widths[0], 7, stride=2, padding=3, bias=norm == "none"),
            norm_layer(norm, widths[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        stages = []
        stride, dilation, c_in = 4, 1, widths[0]
        for index, (c_out, n) in enumerate(zip(widths, n_blocks, strict=True)):
            step = 1
            if index > 0:
                if stride < self.output_stride:
                    step, stride = 2, stride * 2
                else:
                    dilation *= 2
            layers = [BasicBlock(c_in, c_out, step, dilation, norm)]
            layers += [BasicBlock(c_out, c_out, 1, dilation, norm) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.aspp = ASPP(widths[-1], aspp_width, rates, norm, dropout)
        self.low_level = conv_norm_relu(widths[0], low_width, norm, kernel_size=1)
        self.decoder = nn.Sequential(
            conv_norm_relu(aspp_width + low_width, decoder_width, norm),
            conv_norm_relu(decoder_width, decoder_width, norm),
        )
        self.classifier = nn.Conv2d(decoder_width, self.out_channels, kernel_size=1)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(B, out_channels, H, W)`` for input ``(B, in_channels, H, W)``."""
        check_input(type(self).__name__, x, self.in_channels)
        size = x.shape[-2:]
        if self.training and self.norm in ("batch", "instance"):
            deep = [-(-s // self.output_stride) for s in size]
            values = deep[0] * deep[1] * (x.shape[0] if self.norm == "batch" else 1)
            if values < 2:
                raise SeglabError(
                    f"DeepLabV3Plus cannot train on a batch of {x.shape[0]} x {size[0]} x "
                    f"{size[1]}: {self.norm} norm needs more than one value per channel at "
                    f"stride {self.output_stride}",
                    f"use inputs larger than {self.output_stride} px"
                    + (" or a batch of 2 or more" if self.norm == "batch" else ""),
                )
        x = self.stem(x)
        low = x = self.stages[0](x)
        for stage in self.stages[1:]:
            x = stage(x)
        x = F.interpolate(self.aspp(x), size=low.shape[-2:], mode="bilinear", align_corners=False)
        x = self.decoder(torch.cat([x, self.low_level(low)], dim=1))
        return F.interpolate(self.classifier(x), size=size, mode="bilinear", align_corners=False)
