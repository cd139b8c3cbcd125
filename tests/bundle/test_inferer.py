import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from seglab.bundle.inferer import TilingInferer, apply_d4, invert_d4
from seglab.d4 import D4, d4_subset
from seglab.errors import SeglabError
from seglab.tiling import extract_tiles, plan_preset, stitch


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


# --------------------------------------------------------------- test-time augmentation (D4)
def _pointwise_network(in_channels: int, classes: int, seed: int = 0) -> torch.nn.Module:
    """1x1 convolutions with a nonlinearity: equivariant under every rotation and flip."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(in_channels, 4, 1), torch.nn.Tanh(), torch.nn.Conv2d(4, classes, 1)
    ).eval()


@pytest.mark.parametrize("element", D4, ids=lambda e: e.name)
def test_torch_d4_matches_numpy_d4(element):
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # non-square on purpose
    moved = apply_d4(torch.from_numpy(x), element)
    np.testing.assert_array_equal(moved.numpy(), element.apply(x))
    np.testing.assert_array_equal(invert_d4(moved, element).numpy(), x)


@pytest.mark.parametrize("tta", ["flips", "all"])
@pytest.mark.parametrize("activation", ["none", "softmax"])
def test_tta_with_an_equivariant_network_changes_nothing(tta, activation):
    network = _pointwise_network(2, 3)
    image = torch.rand(2, 2, 40, 40)
    grid = {"tile_size": 16, "stride": 8, "padding": 8, "batch_size": 7, "activation": activation}
    plain = TilingInferer(**grid)(image, network)
    augmented = TilingInferer(tta=tta, **grid)(image, network)
    assert augmented.shape == (2, 3, 40, 40)
    torch.testing.assert_close(augmented, plain, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tta", ["off", "flips", "all"])
def test_tta_averages_the_back_transformed_outputs(tta):
    # The network weights each tile pixel by its position, which no rotation or flip keeps:
    # back-transformed, element e gives tile * e.invert(ramp); TTA gives their mean per tile.
    ramp = np.arange(8 * 8, dtype=np.float32).reshape(8, 8) / 64 + np.eye(8, dtype=np.float32)
    elements = d4_subset(tta)
    image = np.random.default_rng(1).random((1, 2, 20, 20)).astype(np.float32)
    inferer = TilingInferer(tile_size=8, stride=4, padding=4, batch_size=3, tta=tta)
    out = inferer(torch.from_numpy(image), lambda x: x * torch.from_numpy(ramp))
    plan = inferer.grid.plan((20, 20))
    weight = np.mean([e.invert(ramp) for e in elements], axis=0)
    expected = stitch(extract_tiles(image, plan) * weight, plan)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)
    if tta != "off":  # the augmentation really changed the answer
        assert not np.allclose(weight, ramp)


def test_flips_work_on_non_square_tiles_and_quarter_turns_are_refused():
    image = torch.rand(1, 1, 24, 36)
    ramp = torch.linspace(0, 1, 12 * 8).reshape(8, 12)
    out = TilingInferer(tile_size=(8, 12), tta="flips")(image, lambda x: x * ramp)
    # flips average the ramp with its mirror images: the mean of ramp and its flips
    weight = (ramp + ramp.flip(-1) + ramp.flip(-2) + ramp.flip(-1, -2)) / 4
    torch.testing.assert_close(out[0, 0], image[0, 0] * weight.repeat(3, 3))
    with pytest.raises(SeglabError, match="square"):
        TilingInferer(tile_size=(8, 12), tta="all")


# --------------------------------------------------------------- softmax probabilities
@pytest.mark.parametrize("weighting", ["sum", "gaussian"])
def test_softmax_average_gives_probabilities(weighting):
    network = _pointwise_network(2, 4, seed=3)
    image = torch.rand(1, 2, 48, 48) * 4
    inferer = TilingInferer(
        tile_size=16, stride=8, padding=8, activation="softmax", average=True, weighting=weighting
    )
    probabilities = inferer(image, network)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(1, 48, 48))
    # one tile over the whole image, no overlap: the plain softmax of the network's output
    single = TilingInferer(tile_size=48, activation="softmax")(image, network)
    torch.testing.assert_close(single, torch.softmax(network(image), dim=1).detach())
    torch.testing.assert_close(probabilities, single, atol=1e-5, rtol=1e-5)


def test_default_softmax_sums_over_tiles():
    network = _pointwise_network(1, 2)
    image = torch.rand(1, 1, 32, 32)
    summed = TilingInferer(tile_size=16, stride=8, padding=8, activation="softmax")(image, network)
    torch.testing.assert_close(summed.sum(dim=1), torch.full((1, 32, 32), 4.0))


def test_network_runs_in_inference_mode():
    seen = []

    def network(x):
        seen.append(torch.is_inference_mode_enabled())
        return x

    TilingInferer(tile_size=8, tta="flips")(torch.zeros(1, 1, 16, 16), network)
    assert seen and all(seen)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"preset": "no-overlap", "tta": "rot"}, "test-time augmentation"),
        ({"preset": "no-overlap", "average": "yes"}, "average"),
    ],
)
def test_bad_tta_settings(kwargs, match):
    with pytest.raises(SeglabError, match=match):
        TilingInferer(**kwargs)


def test_rejects_an_empty_batch_and_a_network_of_the_wrong_shape():
    inferer = TilingInferer(tile_size=8)
    with pytest.raises(SeglabError, match="empty batch"):
        inferer(torch.zeros(0, 1, 8, 8), lambda x: x)
    with pytest.raises(SeglabError, match="network returned"):
        inferer(torch.zeros(1, 1, 8, 8), lambda x: x[..., :4, :4])
