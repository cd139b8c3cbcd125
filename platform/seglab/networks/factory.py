"""Build one of the 2D segmentation networks by name, for configs that choose it by an id.

A MONAI config cannot pick a dictionary entry by another id (``"@networks#@network_name"`` is
left as a string), so bundles pass the name and every network's options to
:func:`build_network`; overriding ``network_options#unet#channels`` then changes only U-Net.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monai.networks.nets import UNet
from torch import nn

from seglab.errors import SeglabError
from seglab.networks.deeplab import DeepLabV3Plus
from seglab.networks.segnet import SegNet

__all__ = ["NETWORKS", "build_network"]

#: Network names and their classes; all take ``spatial_dims``, ``in_channels``, ``out_channels``.
NETWORKS: dict[str, type[nn.Module]] = {
    "unet": UNet,
    "segnet": SegNet,
    "deeplabv3plus": DeepLabV3Plus,
}


def build_network(
    name: str,
    in_channels: int,
    out_channels: int,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    spatial_dims: int = 2,
) -> nn.Module:
    """Instantiate the network ``name`` with its entry of ``options``.

    Parameters
    ----------
    name : {"unet", "segnet", "deeplabv3plus"}
        Which network (MONAI's ``UNet``, :class:`SegNet`, :class:`DeepLabV3Plus`).
    in_channels : int
        Input channels (3 for RGB).
    out_channels : int
        Number of classes (logits out).
    options : mapping of str to mapping, optional
        Keyword arguments per network name; only ``options[name]`` is used (may be missing:
        the class's defaults; MONAI's UNet has none for ``channels`` and ``strides``).
    spatial_dims : int
        2 for images.

    Returns
    -------
    torch.nn.Module
        The untrained network.
    """
    if name not in NETWORKS:
        raise SeglabError(f"unknown network {name!r}", f"use one of {', '.join(NETWORKS)}")
    kwargs = dict((options or {}).get(name, {}))
    clashes = {"spatial_dims", "in_channels", "out_channels"} & set(kwargs)
    if clashes:
        raise SeglabError(
            f"network options for {name!r} repeat {sorted(clashes)}, which are set once for "
            "all networks",
            "drop them from the options; set in_channels / num_classes instead",
        )
    return NETWORKS[name](
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kwargs
    )
