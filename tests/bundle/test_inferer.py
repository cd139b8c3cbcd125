import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from seglab.bundle.inferer import TilingInferer
from seglab.errors import SeglabError
from seglab.tiling import plan_preset


def test_identity_network_returns_image_times_coverage():
    # With an identity network, summed stitching gives each pixel times its tile coverage.
    image = torch.rand(2, 3, 64, 64)
    inferer = TilingInferer(tile_size=32, stride=16, padding=16, batch_size=5)
    out = inferer(image, lambda x: x)
    assert out.shape == (2, 3, 64, 64)
    assert torch.allclose(out, image * 4, atol=1e-5)


@pytest.mark.parametrize("preset", ["no-overlap", "paper-64", "uniform-81"])
def test_presets_cover_every_pixel_as_planned(preset):
    image = torch.ones(1, 1, 512, 512)
    out = TilingInferer(preset=preset)(image, lambda x: x)
    coverage = plan_preset(preset, (512, 512)).coverage()
    np.testing.assert_allclose(out[0, 0].numpy(), coverage)


def test_softmax_activation_and_meta_kept():
    image = MetaTensor(torch.zeros(1, 2, 32, 32), meta={"filename_or_obj": "a.png"})
    out = TilingInferer(tile_size=16, activation="softmax")(image, lambda x: x)
    assert isinstance(out, MetaTensor)
    assert out.meta["filename_or_obj"] == "a.png"
    assert torch.allclose(out.as_tensor(), torch.full((1, 2, 32, 32), 0.5))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"preset": "no-overlap", "batch_size": 0}, "batch_size"),
        ({"preset": "no-overlap", "weighting": "max"}, "weighting"),
        ({"preset": "no-overlap", "activation": "sigmoid"}, "activation"),
        ({}, "preset"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(SeglabError, match=match):
        TilingInferer(**kwargs)


def test_rejects_a_3d_input():
    with pytest.raises(SeglabError, match=r"\(B, C, H, W\)"):
        TilingInferer(tile_size=8)(torch.zeros(1, 1, 8, 8, 8), lambda x: x)
