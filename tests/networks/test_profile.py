import pytest
from torch import nn

from seglab.errors import SeglabError
from seglab.networks import count_parameters, forward_flops


@pytest.mark.parametrize(
    ("conv", "shape", "out_hw"),
    [
        (nn.Conv2d(3, 5, 3, padding=1), (1, 3, 7, 9), (7, 9)),
        (nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False), (2, 4, 16, 10), (8, 5)),
        (nn.Conv2d(2, 8, 1), (1, 2, 5, 5), (5, 5)),
    ],
)
def test_a_conv2d_costs_two_flops_per_multiply_add(conv, shape, out_hw):
    batch = shape[0]
    c_in, c_out, (k, _) = conv.in_channels, conv.out_channels, conv.kernel_size
    expected = batch * 2 * c_in * c_out * k * k * out_hw[0] * out_hw[1]
    assert forward_flops(conv, shape) == expected


def test_linear_and_transposed_conv_are_counted():
    assert forward_flops(nn.Linear(10, 4), (3, 10)) == 3 * 2 * 10 * 4
    # Transposed conv: every input pixel spreads C_in x C_out x k x k multiply-adds.
    up = nn.ConvTranspose2d(4, 2, kernel_size=2, stride=2)
    assert forward_flops(up, (1, 4, 5, 5)) == 2 * 4 * 2 * 2 * 2 * 5 * 5


def test_modules_without_arithmetic_cost_nothing_and_have_no_parameters():
    assert forward_flops(nn.ReLU(), (1, 3, 4, 4)) == 0
    assert count_parameters(nn.Sequential()) == 0


def test_parameters_are_counted_once_and_trainable_only_on_request():
    shared = nn.Linear(3, 2)  # 8 parameters
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(2, 1))  # + 3
    assert count_parameters(model) == 11
    model[3].weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 9


def test_counting_restores_the_training_mode():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).train()
    forward_flops(model, (1, 1, 8, 8))
    assert model.training and model[1].training
    assert model[1].num_batches_tracked.item() == 0  # ran in eval: statistics untouched


def test_monai_unet_costs_what_the_ecosystem_notes_measured():
    from monai.networks.nets import UNet

    unet = UNet(
        spatial_dims=2,
        in_channels=3,
        out_channels=6,
        channels=(16, 32, 64, 128, 256),
        strides=(2, 2, 2, 2),
        num_res_units=2,
    )
    assert count_parameters(unet) == 1_627_185
    assert forward_flops(unet, (1, 3, 256, 256)) / 1e9 == pytest.approx(1.62, abs=0.005)


@pytest.mark.parametrize("shape", [(), (1, 0, 4, 4), (1, 3, -2), (1.0, 3), (True, 1)])
def test_bad_shapes_raise_one_line_errors(shape):
    with pytest.raises(SeglabError, match="input_shape must be a sequence of positive integers"):
        forward_flops(nn.ReLU(), shape)
