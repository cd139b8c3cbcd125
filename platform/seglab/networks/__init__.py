"""Networks written here: SegNet and DeepLabV3+ (U-Net comes from MONAI)."""

from seglab.networks.deeplab import DeepLabV3Plus
from seglab.networks.profile import count_parameters, forward_flops
from seglab.networks.segnet import SegNet

__all__ = ["DeepLabV3Plus", "SegNet", "count_parameters", "forward_flops"]
