import pytest
import torch
from torch import nn

from seglab.errors import SeglabError
from seglab.networks import DeepLabV3Plus, count_parameters
from seglab.networks.deeplab import RESNET18_WIDTHS

TINY = {
    "encoder_channels": (4, 8, 8, 8),
    "blocks": (1, 1, 1, 1),
    "aspp_channels": 8,
    "decoder_channels": 8,
    "low_level_channels": 4,
}


def _tiny(**kwargs):
    torch.manual_seed(0)
    return DeepLabV3Plus(**{"in_channels": 3, "out_channels": 6, **TINY, **kwargs})


def _aspp_input_size(net, size):
    seen = {}
    net.aspp.register_forward_hook(lambda m, i, o: seen.update(size=tuple(i[0].shape[-2:])))
    with torch.inference_mode():
        net.eval()(torch.randn(1, net.in_channels, *size))
    return seen["size"]


@pytest.mark.parametrize("in_channels", [1, 3, 5])
@pytest.mark.parametrize("shape", [(2, 64, 64), (1, 250, 250), (1, 63, 65), (1, 17, 9), (1, 1, 1)])
def test_output_is_one_logit_map_per_class_at_any_input_size(in_channels, shape):
    net = _tiny(in_channels=in_channels).eval()
    batch, height, width = shape
    with torch.inference_mode():
        out = net(torch.randn(batch, in_channels, height, width))
    assert out.shape == (batch, 6, height, width)
    assert out.dtype == torch.float32


@pytest.mark.parametrize(("output_stride", "expected"), [(8, (8, 8)), (16, (4, 4)), (32, (2, 2))])
def test_aspp_runs_at_the_output_stride(output_stride, expected):
    assert _aspp_input_size(_tiny(output_stride=output_stride), (64, 64)) == expected


def test_stages_past_the_output_stride_dilate_instead_of_striding():
    def first_conv(net, stage):
        return net.stages[stage][0].conv1

    os16, os8 = _tiny(output_stride=16), _tiny(output_stride=8)
    assert [first_conv(os16, s).stride[0] for s in range(4)] == [1, 2, 2, 1]
    assert [first_conv(os16, s).dilation[0] for s in range(4)] == [1, 1, 1, 2]
    assert [first_conv(os8, s).stride[0] for s in range(4)] == [1, 2, 1, 1]
    assert [first_conv(os8, s).dilation[0] for s in range(4)] == [1, 1, 2, 4]


def test_low_level_features_come_from_stride_four_and_are_fused_with_aspp():
    net = _tiny().eval()
    seen = {}
    net.decoder.register_forward_hook(lambda m, i, o: seen.update(fused=i[0].shape))
    with torch.inference_mode():
        net(torch.randn(1, 3, 64, 64))
    assert seen["fused"] == (1, 8 + 4, 16, 16)


def test_aspp_image_pooling_branch_has_no_batch_norm():
    net = DeepLabV3Plus()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.aspp.image_pooling.modules())


@pytest.mark.parametrize("norm", ["batch", "instance", "group", "none"])
def test_every_parameter_gets_a_gradient_in_training_with_batch_size_one(norm):
    net = _tiny(norm=norm, dropout=0.1).train()
    loss = net(torch.randn(1, 3, 64, 64)).square().mean()
    loss.backward()
    for name, parameter in net.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_training_on_a_single_deep_pixel_is_refused_clearly_but_inference_works():
    net = _tiny().train()
    with pytest.raises(SeglabError, match="batch norm needs more than one value per channel"):
        net(torch.randn(1, 3, 16, 16))
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 6, 16, 16)
    with torch.inference_mode():
        assert net.eval()(torch.randn(1, 3, 16, 16)).shape == (1, 6, 16, 16)


@pytest.mark.parametrize(
    "bad_input", [torch.zeros(1, 1, 16, 16), torch.zeros(3, 16, 16), torch.zeros(0, 3, 16, 16)]
)
def test_wrong_channel_count_missing_batch_axis_and_empty_batch_are_refused(bad_input):
    with pytest.raises(SeglabError, match=r"expects input of shape \(B, 3, H, W\)"):
        _tiny()(bad_input)


def test_eval_is_deterministic_and_initialisation_follows_the_seed():
    x = torch.randn(2, 3, 48, 48)
    first, second = _tiny().eval(), _tiny().eval()
    with torch.inference_mode():
        a, b, c = first(x), first(x), second(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)


def test_channels_last_gives_the_same_logits():
    net = _tiny().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        reference = net(x)
    net = net.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        out = net(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)


def test_bfloat16_autocast_stays_close_to_float32():
    net = _tiny().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        reference = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x)
    assert out.dtype == torch.bfloat16
    assert (out.float().argmax(1) == reference.argmax(1)).float().mean().item() >= 0.9
    assert (out.float() - reference).abs().mean() < 0.05 * reference.std()


def test_parameter_count_matches_the_hand_formula():
    # in 1, out 2, widths (4, 8), one block per stage, output stride 8, three ASPP rates,
    # ASPP 4, decoder 4, low-level 2, batch norm (2 parameters per channel).
    stem = 1 * 4 * 49 + 2 * 4
    stage0 = 2 * (4 * 4 * 9 + 2 * 4)  # identity shortcut
    stage1 = (4 * 8 * 9 + 2 * 8) + (8 * 8 * 9 + 2 * 8) + (4 * 8 + 2 * 8)  # 1x1 projection
    aspp = (
        (8 * 4 + 2 * 4)  # 1x1 branch
        + 3 * (8 * 4 * 9 + 2 * 4)  # atrous branches
        + (8 * 4 + 4)  # image pooling: conv with bias, no norm
        + (5 * 4 * 4 + 2 * 4)  # projection
    )
    decoder = (4 * 2 + 2 * 2) + ((4 + 2) * 4 * 9 + 2 * 4) + (4 * 4 * 9 + 2 * 4) + (4 * 2 + 2)
    net = DeepLabV3Plus(
        in_channels=1,
        out_channels=2,
        encoder_channels=(4, 8),
        blocks=(1, 1),
        output_stride=8,
        aspp_rates=(1, 2, 3),
        aspp_channels=4,
        decoder_channels=4,
        low_level_channels=2,
    )
    assert count_parameters(net) == stem + stage0 + stage1 + aspp + decoder == 2902


def test_resnet18_widths_hold_a_resnet18_encoder():
    # torchvision's ResNet-18 without its 1000-class head has 11,176,512 parameters.
    net = DeepLabV3Plus(in_channels=3, out_channels=6, **RESNET18_WIDTHS)
    encoder = count_parameters(net.stem) + count_parameters(net.stages)
    assert encoder == 11_176_512


def test_bundle_config_builds_the_network_and_runs_it():
    from monai.bundle import ConfigParser

    parser = ConfigParser(
        {
            "network_def": {
                "_target_": "seglab.networks.DeepLabV3Plus",
                "in_channels": 5,
                "out_channels": 2,
                "output_stride": 8,
                "aspp_rates": [12, 24, 36],
            }
        }
    )
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, DeepLabV3Plus)
    with torch.inference_mode():
        assert net.eval()(torch.randn(1, 5, 64, 64)).shape == (1, 2, 64, 64)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spatial_dims": 3}, "2D only: spatial_dims must be 2, got 3"),
        ({"in_channels": 0}, "in_channels must be an integer >= 1, got 0"),
        ({"out_channels": 0}, "out_channels must be an integer >= 1, got 0"),
        ({"blocks": (1, 1)}, "encoder_channels and blocks need the same length >= 2"),
        ({"encoder_channels": (8,), "blocks": (1,)}, "same length >= 2"),
        ({"output_stride": 12}, "output_stride must be 8, 16 or 32 and at most 32"),
        ({"encoder_channels": (4, 8), "blocks": (1, 1)}, "at most 8 with 2 encoder stages"),
        ({"aspp_rates": []}, "aspp_rates must be a non-empty sequence"),
        ({"norm": "layer"}, "unknown norm 'layer'"),
        ({"dropout": -0.1}, "dropout must be a probability"),
    ],
)
def test_bad_arguments_raise_one_line_errors(kwargs, message):
    with pytest.raises(SeglabError, match=message) as info:
        _tiny(**kwargs)
    assert "\n" not in str(info.value)
