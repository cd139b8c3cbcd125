import math

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.losses import DiceCELoss, DiceLoss, FocalLoss
from torch.nn import functional

from seglab.errors import SeglabError
from seglab.networks import (
    LOSS_NAMES,
    ClassPixelCounts,
    OneHotMSELoss,
    count_class_pixels,
    inverse_frequency_weights,
    make_loss,
)

WEIGHTS_6 = [1.0, 2.0, 0.5, 1.0, 8.0, 1.5]


def _labels(num_classes, shape=(2, 1, 8, 8), seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, shape, generator=generator)
    labels.view(-1)[:num_classes] = torch.arange(num_classes)  # every class present
    return labels


def _one_hot(labels, num_classes):
    """(B, 1, H, W) -> (B, C, H, W) float, written out by comparison (independent of the module)."""
    classes = torch.arange(num_classes).view(1, -1, 1, 1)
    return (labels == classes).float()


def _perfect_logits(labels, num_classes, margin=50.0):
    return margin * _one_hot(labels, num_classes)


def _normalised(weights):
    weights = torch.tensor(weights, dtype=torch.float32)
    return weights * len(weights) / weights.sum()


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("num_classes", [2, 6])
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_is_zero_for_perfect_logits_and_larger_for_wrong_ones(name, num_classes, weighted):
    weights = (WEIGHTS_6 if num_classes == 6 else [1.0, 3.0]) if weighted else None
    loss = make_loss(name, num_classes, weights)
    labels = _labels(num_classes)
    perfect = loss(_perfect_logits(labels, num_classes), labels)
    wrong = loss(_perfect_logits((labels + 1) % num_classes, num_classes), labels)
    assert perfect.shape == ()
    assert float(perfect) == pytest.approx(0.0, abs=1e-5)
    assert float(wrong) > 0.3  # mse: 2 / C


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_gradients_flow_to_the_logits(name):
    logits = torch.randn(2, 6, 8, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    make_loss(name, 6, WEIGHTS_6)(logits, _labels(6)).backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


# Two pixels, two classes, labels [0, 1].
# Raw scores: channel 0 = [2, 0], channel 1 = [0, 0.5] -> squared errors (1, 0) and (0, 0.25):
#   mean 1.25 / 4; per pixel (0.5, 0.125), weights (1, 3): (0.5 + 0.375) / 4.
# Softmax of channel 0 = [ln 3, 0], channel 1 = [0, 0] -> p0 = (3/4, 1/2), p1 = (1/4, 1/2):
#   squared errors (1/16, 1/4) and (1/16, 1/4): mean 10/16 / 4 = 5/32;
#   per pixel (1/16, 1/4), weights (1, 3): (1/16 + 3/4) / 4 = 13/64.
@pytest.mark.parametrize(
    ("softmax", "channel0", "channel1", "weights", "expected"),
    [
        (False, [2.0, 0.0], [0.0, 0.5], None, 1.25 / 4),
        (False, [2.0, 0.0], [0.0, 0.5], [1.0, 3.0], 0.875 / 4),
        (True, [math.log(3.0), 0.0], [0.0, 0.0], None, 5 / 32),
        (True, [math.log(3.0), 0.0], [0.0, 0.0], [1.0, 3.0], 13 / 64),
        (True, [math.log(3.0), 0.0], [0.0, 0.0], [10.0, 30.0], 13 / 64),  # scale-free
    ],
)
def test_mse_matches_a_hand_computation(softmax, channel0, channel1, weights, expected):
    logits = torch.tensor([[[channel0], [channel1]]])  # (1, 2, 1, 2)
    labels = torch.tensor([[[[0, 1]]]])
    loss = OneHotMSELoss(2, softmax=softmax, class_weights=weights)
    assert float(loss(logits, labels)) == pytest.approx(expected, rel=1e-6)


def _hand_dice_loss(logits, one_hot, weights):
    probabilities = torch.softmax(logits, dim=1)
    intersection = (probabilities * one_hot).sum(dim=(2, 3))
    total = probabilities.sum(dim=(2, 3)) + one_hot.sum(dim=(2, 3))
    per_image_class = 1 - (2 * intersection + 1e-5) / (total + 1e-5)
    return (per_image_class * weights).mean()


def _hand_focal_loss(logits, one_hot, weights, gamma=2.0):
    log_p = torch.log_softmax(logits, dim=1)
    terms = -((1 - log_p.exp()) ** gamma) * log_p * one_hot * weights.view(1, -1, 1, 1)
    return terms.mean()


@pytest.mark.parametrize("weighted", [False, True])
def test_library_losses_equal_independent_references(weighted):
    logits = torch.randn(3, 6, 8, 8, generator=torch.Generator().manual_seed(2))
    labels = _labels(6, (3, 1, 8, 8))
    one_hot = _one_hot(labels, 6)
    weights = _normalised(WEIGHTS_6) if weighted else torch.ones(6)
    monai_weight = weights if weighted else None
    class_weights = WEIGHTS_6 if weighted else None
    cross_entropy = functional.cross_entropy(logits, labels[:, 0], weight=monai_weight)
    dice = _hand_dice_loss(logits, one_hot, weights)
    references = {
        "ce": [cross_entropy],
        "dice": [dice, DiceLoss(softmax=True, weight=monai_weight)(logits, one_hot)],
        # MONAI's DiceCELoss given one-hot targets divides a weighted CE by the pixel count, not
        # by the summed weights as with index targets, so it is a reference only unweighted.
        "dicece": [dice + cross_entropy]
        + ([] if weighted else [DiceCELoss(softmax=True)(logits, one_hot)]),
        "focal": [
            _hand_focal_loss(logits, one_hot, weights),
            FocalLoss(use_softmax=True, weight=monai_weight)(logits, one_hot),
        ],
    }
    for name, expected in references.items():
        value = make_loss(name, 6, class_weights)(logits, labels)
        for reference in expected:
            torch.testing.assert_close(value, reference, rtol=1e-5, atol=1e-6, msg=name)


def _error_only_in_class(target_class, num_classes=6):
    """Perfect logits except at the pixels of ``target_class``, which are called class 0."""
    labels = _labels(num_classes)
    wrong = labels.clone()
    wrong[labels == target_class] = 0
    return _perfect_logits(wrong, num_classes, margin=10.0), labels


@pytest.mark.parametrize("name", ["mse", "ce"])
def test_doubling_the_weight_of_the_only_wrong_class_gives_the_weighted_mean(name):
    # Only the n_c pixels of class c are wrong (loss e each, the others ~0). MSE and CE are
    # weighted means over pixels: unweighted n_c e / N, weight 2 on c: 2 n_c e / (N + n_c).
    target_class = 4
    logits, labels = _error_only_in_class(target_class)
    weights = [1.0] * 6
    weights[target_class] = 2.0
    plain = float(make_loss(name, 6)(logits, labels))
    weighted = float(make_loss(name, 6, weights)(logits, labels))
    pixels, in_class = labels.numel(), int((labels == target_class).sum())
    assert plain > 0.01
    assert weighted / plain == pytest.approx(2 * pixels / (pixels + in_class), rel=1e-4)


def test_doubling_the_weight_of_the_only_wrong_class_scales_focal_by_the_normalised_weight():
    # Focal is a plain mean of w_c-weighted terms, weights averaging 1: w_c = 2 * 6 / 7.
    logits, labels = _error_only_in_class(4)
    plain = float(make_loss("focal", 6)(logits, labels))
    weighted = float(make_loss("focal", 6, [1, 1, 1, 1, 2, 1])(logits, labels))
    assert weighted / plain == pytest.approx(12 / 7, rel=1e-4)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_label_maps_with_and_without_a_channel_axis_and_float_labels_agree(name):
    logits = torch.randn(2, 6, 8, 8, generator=torch.Generator().manual_seed(3))
    labels = _labels(6)
    loss = make_loss(name, 6, WEIGHTS_6)
    expected = loss(logits, labels)
    torch.testing.assert_close(loss(logits, labels[:, 0]), expected)
    torch.testing.assert_close(loss(logits, labels.float()), expected)
    torch.testing.assert_close(loss(logits, labels.to(torch.uint8)), expected)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (torch.full((1, 1, 4, 4), 6), r"labels must lie in 0\.\.5 .*got values from 6 to 6"),
        (torch.full((1, 1, 4, 4), -1), r"got values from -1 to -1"),
        (torch.full((1, 1, 4, 4), 0.5), r"whole-number class indices"),
        (torch.zeros((1, 2, 4, 4), dtype=torch.int64), r"labels must have shape \(1, 1, 4, 4\)"),
        (torch.zeros((1, 1, 4, 5), dtype=torch.int64), r"labels must have shape"),
    ],
)
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_bad_labels_are_refused_in_one_line(name, labels, match):
    with pytest.raises(SeglabError, match=match) as info:
        make_loss(name, 6)(torch.zeros(1, 6, 4, 4), labels)
    assert "\n" not in str(info.value)


def test_logits_with_the_wrong_number_of_channels_are_refused():
    with pytest.raises(SeglabError, match=r"logits must have shape \(B, 6, H, W\), got \(1, 5"):
        make_loss("ce", 6)(torch.zeros(1, 5, 4, 4), torch.zeros(1, 1, 4, 4, dtype=torch.int64))


def test_unknown_loss_name_lists_the_known_ones():
    with pytest.raises(SeglabError, match=r"unknown loss 'l1'; use one of 'mse', 'ce', 'dice'"):
        make_loss("l1", 6)


def test_names_are_case_insensitive():
    assert isinstance(make_loss("MSE", 6), OneHotMSELoss)


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("ce", {"gamma": 2.0}, r"loss 'ce' has no option\(s\) gamma"),
        ("focal", {"gamma": -1.0}, r"gamma must be a number >= 0"),
        ("dicece", {"lambda_ce": -1}, r"lambda_ce must be a number >= 0"),
    ],
)
def test_bad_options_are_refused(name, options, match):
    with pytest.raises(SeglabError, match=match):
        make_loss(name, 6, **options)


def test_options_reach_the_loss():
    assert make_loss("mse", 6, softmax=False).softmax is False
    assert make_loss("focal", 6, gamma=0.0).focal.gamma == 0.0


@pytest.mark.parametrize(
    "weights",
    [[1.0] * 5, [1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, -2], [1, 1, 1, 1, 1, math.nan], "inverse"],
)
def test_bad_class_weights_are_refused(weights):
    with pytest.raises(SeglabError, match=r"class_weights must be"):
        make_loss("mse", 6, weights)


@pytest.mark.parametrize("num_classes", [1, 0, 2.0, True])
def test_fewer_than_two_classes_are_refused(num_classes):
    with pytest.raises(SeglabError, match=r"num_classes must be an integer >= 2"):
        make_loss("dice", num_classes)


def test_class_weights_are_normalised_to_average_one_and_follow_the_module():
    loss = make_loss("mse", 3, [1.0, 2.0, 3.0]).to(torch.float64)
    torch.testing.assert_close(
        loss.class_weights, torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64)
    )
    assert "class_weights" in dict(loss.named_buffers())


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_loss_builds_from_a_bundle_config(name):
    config = {
        "loss": {
            "_target_": "seglab.networks.make_loss",
            "name": name,
            "num_classes": 6,
            "class_weights": None,
        }
    }
    loss = ConfigParser(config).get_parsed_content("loss")
    assert type(loss) is type(make_loss(name, 6))
    logits = torch.randn(2, 6, 8, 8, generator=torch.Generator().manual_seed(4))
    labels = _labels(6)
    torch.testing.assert_close(loss(logits, labels), make_loss(name, 6)(logits, labels))


# Label maps [0, 0, 0, 1] and [0, 0, 2, 2]: n = (5, 1, 2), N = 8; class 0 occurs in both maps
# (M = 8), classes 1 and 2 in one each (M = 4).
# inverse, s=0: 1/f = (8/5, 8, 4) -> x 3 / 13.6;
# inverse, s=1: 1/f = 11 (1/6, 1/2, 1/3) -> (0.5, 1.5, 1);
# median, s=0: f = (5/8, 1/4, 1/2), 1/f = (1.6, 4, 2) -> x 3 / 7.6.
HAND_MAPS = [np.array([[0, 0], [0, 1]]), np.array([[0, 0, 2, 2]], dtype=np.int32)]


@pytest.mark.parametrize(
    ("balancing", "smoothing", "expected"),
    [
        ("inverse-frequency", 0.0, [1.6 * 3 / 13.6, 8 * 3 / 13.6, 4 * 3 / 13.6]),
        ("inverse-frequency", 1.0, [0.5, 1.5, 1.0]),
        ("median-frequency", 0.0, [1.6 * 3 / 7.6, 4 * 3 / 7.6, 2 * 3 / 7.6]),
    ],
)
def test_inverse_frequency_weights_match_a_hand_computation(balancing, smoothing, expected):
    weights = inverse_frequency_weights(HAND_MAPS, 3, balancing=balancing, smoothing=smoothing)
    assert isinstance(weights, list)
    assert weights == pytest.approx(expected, rel=1e-9)
    assert np.mean(weights) == pytest.approx(1.0)


def test_pixel_counts_can_be_passed_instead_of_label_maps():
    counts = count_class_pixels(iter(HAND_MAPS), 3)
    np.testing.assert_array_equal(counts.pixels, [5, 1, 2])
    np.testing.assert_array_equal(counts.pixels_where_present, [8, 4, 4])
    assert inverse_frequency_weights(counts, 3) == inverse_frequency_weights(HAND_MAPS, 3)


def test_a_single_array_is_one_label_map():
    label_map = np.array([[0, 0, 0, 1], [0, 0, 2, 2]], dtype=np.float32)
    counts = count_class_pixels(label_map, 3)
    np.testing.assert_array_equal(counts.pixels_where_present, [8, 8, 8])
    assert inverse_frequency_weights(label_map, 3) == pytest.approx(
        inverse_frequency_weights(HAND_MAPS, 3)
    )


def test_an_absent_class_gets_the_largest_finite_weight_with_smoothing():
    weights = inverse_frequency_weights(np.array([0, 0, 0, 1]), 3)  # 1/f = 7 (1/4, 1/2, 1)
    assert weights == pytest.approx([0.75 / 1.75, 1.5 / 1.75, 3 / 1.75])
    with pytest.raises(SeglabError, match=r"classes \[2\] have no pixels.*smoothing > 0"):
        inverse_frequency_weights(np.array([0, 0, 0, 1]), 3, smoothing=0.0)


@pytest.mark.parametrize("maps", [[], [np.zeros((0, 4), dtype=np.int64)]])
def test_no_pixels_gives_equal_weights(maps):
    assert inverse_frequency_weights(maps, 4) == [1.0, 1.0, 1.0, 1.0]
    counts = count_class_pixels(maps, 4)
    assert isinstance(counts, ClassPixelCounts)
    np.testing.assert_array_equal(counts.pixels, np.zeros(4, np.int64))
    np.testing.assert_array_equal(counts.pixels_where_present, np.zeros(4, np.int64))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"labels": [np.array([0, 3])]}, r"label map 0 has values from 0 to 3, expected 0\.\.2"),
        ({"labels": [np.array([0.0, 0.5])]}, r"label map 0 holds non-integer values"),
        ({"labels": [np.array(["a"])]}, r"label map 0 has dtype <U1, expected integers"),
        ({"labels": HAND_MAPS, "balancing": "median"}, r"unknown balancing 'median'"),
        ({"labels": HAND_MAPS, "smoothing": -1.0}, r"smoothing must be a finite number >= 0"),
    ],
)
def test_inverse_frequency_weights_refuse_bad_input(kwargs, match):
    with pytest.raises(SeglabError, match=match):
        inverse_frequency_weights(num_classes=3, **kwargs)


def _rare_class_problem(seed):
    """Two features per pixel, three classes; class 2 covers 2 % of the pixels."""
    generator = torch.Generator().manual_seed(seed)
    draw = torch.rand(4, 1, 32, 32, generator=generator)
    labels = (draw < 0.5).long()
    labels[draw < 0.02] = 2
    means = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 1.0]])
    features = means[labels[:, 0]].permute(0, 3, 1, 2)
    return features + 0.35 * torch.randn(4, 2, 32, 32, generator=generator), labels


def _rare_class_dice_after_training(class_weights, seed):
    features, labels = _rare_class_problem(seed)
    torch.manual_seed(seed)
    net = torch.nn.Conv2d(2, 3, kernel_size=1)
    loss = make_loss("mse", 3, class_weights)
    optimiser = torch.optim.SGD(net.parameters(), lr=2.0, momentum=0.9)
    for _ in range(30):
        optimiser.zero_grad()
        loss(net(features), labels).backward()
        optimiser.step()
    features, labels = _rare_class_problem(seed + 1000)
    with torch.no_grad():
        predicted = net(features).argmax(dim=1) == 2
    truth = labels[:, 0] == 2
    return float(2 * (predicted & truth).sum() / (predicted.sum() + truth.sum()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_class_weighted_mse_finds_a_rare_class_that_plain_mse_misses(seed):
    weights = inverse_frequency_weights(_rare_class_problem(seed)[1].numpy(), 3)
    plain = _rare_class_dice_after_training(None, seed)
    weighted = _rare_class_dice_after_training(weights, seed)
    assert plain < 0.1
    assert weighted > 0.25
