import pytest
import torch
from monai.networks.nets import UNet

from seglab.errors import SeglabError
from seglab.networks import DeepLabV3Plus, SegNet
from seglab.networks.factory import build_network

OPTIONS = {
    "unet": {"channels": [4, 8], "strides": [2]},
    "segnet": {"channels": [4, 8], "convs_per_stage": [1, 1]},
    "deeplabv3plus": {"encoder_channels": [4, 8], "blocks": [1, 1], "output_stride": 8},
}


@pytest.mark.parametrize(
    ("name", "cls"), [("unet", UNet), ("segnet", SegNet), ("deeplabv3plus", DeepLabV3Plus)]
)
def test_builds_the_named_network_with_its_options(name, cls):
    net = build_network(name, in_channels=3, out_channels=6, options=OPTIONS)
    assert type(net) is cls
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 6, 32, 32)


def test_unknown_name_and_repeated_channels():
    with pytest.raises(SeglabError, match="unknown network 'fcn'"):
        build_network("fcn", 3, 6)
    with pytest.raises(SeglabError, match="repeat"):
        build_network("segnet", 3, 6, {"segnet": {"out_channels": 2}})
