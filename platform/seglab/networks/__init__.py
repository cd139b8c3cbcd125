"""Networks written here: SegNet and DeepLabV3+ (U-Net comes from MONAI), and the losses."""

from seglab.networks.deeplab import DeepLabV3Plus
from seglab.networks.losses import (
    BALANCING_METHODS,
    LOSS_NAMES,
    ClassPixelCounts,
    LabelCrossEntropyLoss,
    LabelDiceCELoss,
    LabelDiceLoss,
    LabelFocalLoss,
    LabelMapLoss,
    OneHotMSELoss,
    count_class_pixels,
    inverse_frequency_weights,
    make_loss,
)
from seglab.networks.profile import count_parameters, forward_flops
from seglab.networks.segnet import SegNet

__all__ = [
    "BALANCING_METHODS",
    "LOSS_NAMES",
    "ClassPixelCounts",
    "DeepLabV3Plus",
    "LabelCrossEntropyLoss",
    "LabelDiceCELoss",
    "LabelDiceLoss",
    "LabelFocalLoss",
    "LabelMapLoss",
    "OneHotMSELoss",
    "SegNet",
    "count_class_pixels",
    "count_parameters",
    "forward_flops",
    "inverse_frequency_weights",
    "make_loss",
]
