import numpy as np
import pytest
import torch

from seglab.errors import SeglabError
from seglab.networks import SegNet, count_parameters
from seglab.networks.segnet import VGG16_CHANNELS

TINY = {"channels": (4, 8, 8), "convs_per_stage": (1, 1, 2)}  # 3 poolings: multiples of 8


def _tiny(**kwargs):
    torch.manual_seed(0)
    return SegNet(**{"in_channels": 3, "out_channels": 6, **TINY, **kwargs})


@pytest.mark.parametrize("in_channels", [1, 3, 5])
@pytest.mark.parametrize("shape", [(2, 64, 64), (1, 8, 8), (3, 24, 40)])
def test_output_is_one_logit_map_per_class_at_input_size(in_channels, shape):
    net = _tiny(in_channels=in_channels).eval()
    batch, height, width = shape
    with torch.inference_mode():
        out = net(torch.randn(batch, in_channels, height, width))
    assert out.shape == (batch, 6, height, width)
    assert out.dtype == torch.float32


def test_default_network_takes_a_256_window_and_is_a_quarter_of_vgg16():
    net = SegNet()
    assert net.size_multiple == 32
    assert [stage.convs[0][0].out_channels for stage in net.encoder] == [
        c // 4 for c in VGG16_CHANNELS
    ]


@pytest.mark.parametrize("size", [(60, 64), (64, 12), (7, 7)])
def test_sizes_that_are_not_multiples_of_the_pooling_factor_are_refused(size):
    net = _tiny().eval()
    with pytest.raises(SeglabError, match=r"multiples of 8, got \d+ x \d+") as info:
        net(torch.randn(1, 3, *size))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "bad_input", [torch.zeros(1, 1, 16, 16), torch.zeros(3, 16, 16), torch.zeros(0, 3, 16, 16)]
)
def test_wrong_channel_count_missing_batch_axis_and_empty_batch_are_refused(bad_input):
    with pytest.raises(SeglabError, match=r"expects input of shape \(B, 3, H, W\)"):
        _tiny()(bad_input)


def test_decoder_unpools_values_to_the_positions_of_the_encoder_maxima():
    net = _tiny().eval()
    seen = {}
    net.encoder[-1].convs.register_forward_hook(lambda m, i, o: seen.update(before_pool=o))
    net.decoder[0].unpool.register_forward_hook(lambda m, i, o: seen.update(unpooled=o))
    with torch.inference_mode():
        net(torch.randn(2, 3, 32, 48))
    features = seen["before_pool"].numpy()  # (2, 8, 8, 12), deepest encoder maps
    unpooled = seen["unpooled"].numpy()
    b, c, h, w = features.shape
    window_max = features.reshape(b, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    window_max = np.repeat(np.repeat(window_max, 2, axis=2), 2, axis=3)
    expected = np.where(features == window_max, features, 0)
    assert (expected > 0).sum() > 0.1 * expected.size  # a real test: many positive maxima
    np.testing.assert_array_equal(unpooled, expected)


def test_every_parameter_gets_a_gradient_in_training_with_batch_size_one():
    net = _tiny(dropout=0.1).train()
    loss = net(torch.randn(1, 3, 16, 16)).square().mean()
    loss.backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_eval_is_deterministic_and_initialisation_follows_the_seed():
    x = torch.randn(2, 3, 32, 32)
    first, second = _tiny().eval(), _tiny().eval()
    with torch.inference_mode():
        a, b, c = first(x), first(x), second(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)


def test_channels_last_gives_the_same_logits():
    net = _tiny().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        reference = net(x)
    net = net.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        out = net(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)


def test_bfloat16_autocast_agrees_with_float32_on_most_pixels():
    # bf16 rounding creates ties inside pooling windows, which can move an unpooled value by a
    # pixel: compare the predicted class, not the logits pixel by pixel.
    net = _tiny().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        reference = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x)
    assert out.dtype == torch.bfloat16
    agreement = (out.float().argmax(1) == reference.argmax(1)).float().mean().item()
    assert agreement >= 0.9


@pytest.mark.parametrize(
    ("norm", "per_norm_layer"), [("batch", 2), ("instance", 2), ("group", 2), ("none", 0)]
)
def test_parameter_count_matches_the_hand_formula(norm, per_norm_layer):
    # in 1, out 2, widths (2, 3), one conv per stage.
    bias = 1 if norm == "none" else 0
    encoder = (1 * 2 * 9 + bias * 2 + per_norm_layer * 2) + (
        2 * 3 * 9 + bias * 3 + per_norm_layer * 3
    )
    decoder = (3 * 2 * 9 + bias * 2 + per_norm_layer * 2) + (
        2 * 2 * 9 + bias * 2 + per_norm_layer * 2
    )
    classifier = 2 * 2 + 2
    net = SegNet(in_channels=1, out_channels=2, channels=(2, 3), convs_per_stage=(1, 1), norm=norm)
    assert count_parameters(net) == encoder + decoder + classifier
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 2, 8, 8)


def test_vgg16_widths_give_the_standard_segnet_size():
    # 13 encoder + 13 decoder 3x3 convs of VGG-16 with batch norm, 1x1 classifier: 29.4 M.
    net = SegNet(in_channels=3, out_channels=6, channels=VGG16_CHANNELS)
    assert 29.4e6 < count_parameters(net) < 29.5e6


def test_bundle_config_builds_the_network_and_runs_it():
    from monai.bundle import ConfigParser

    parser = ConfigParser(
        {"network_def": {"_target_": "seglab.networks.SegNet", "in_channels": 3, "out_channels": 6}}
    )
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, SegNet)
    with torch.inference_mode():
        assert net.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 6, 64, 64)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spatial_dims": 3}, "2D only: spatial_dims must be 2, got 3"),
        ({"in_channels": 0}, "in_channels must be an integer >= 1, got 0"),
        ({"out_channels": 0}, "out_channels must be an integer >= 1, got 0"),
        ({"out_channels": 2.5}, "out_channels must be an integer >= 1, got 2.5"),
        ({"channels": (4, 8), "convs_per_stage": (1,)}, "channels has 2 stages but"),
        ({"channels": ()}, "channels must be a non-empty sequence"),
        ({"channels": (4, -8), "convs_per_stage": (1, 1)}, "every entry of channels"),
        ({"norm": "layer"}, "unknown norm 'layer'"),
        ({"dropout": 1.0}, r"dropout must be a probability in \[0, 1\), got 1.0"),
    ],
)
def test_bad_arguments_raise_one_line_errors(kwargs, message):
    with pytest.raises(SeglabError, match=message) as info:
        SegNet(**kwargs)
    assert "\n" not in str(info.value)
