"""Networks written here: SegNet and DeepLabV3+ (U-Net comes from MONAI)."""
