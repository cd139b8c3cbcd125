import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score
from sklearn.metrics import confusion_matrix as sk_confusion

from seglab.errors import SeglabError
from seglab.metrics import (
    binary_scores,
    choose_threshold,
    confusion_matrix,
    dice_from_confusion,
    dice_scores,
    probability_to_uint8,
    threshold_sweep,
)


def test_dice_by_hand():
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 2]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 2, 2]])
    s = dice_scores(pred, truth, 4)
    # class 0: tp 3, |P|=3, |G|=4 -> 6/7; class 1: tp 2, |P|=3, |G|=3 -> 4/6; class 2: tp 1, 2, 1
    np.testing.assert_allclose(s.per_class[:3], [6 / 7, 4 / 6, 2 / 3])
    assert np.isnan(s.per_class[3]) and s.absent == (3,)
    assert s.mean == pytest.approx(np.mean([6 / 7, 4 / 6, 2 / 3]))
    assert s.total == pytest.approx(6 / 8)


def test_a_class_predicted_but_absent_from_truth_scores_zero():
    s = dice_scores(np.array([1, 1]), np.array([0, 0]), 2)
    assert s.per_class.tolist() == [0.0, 0.0] and s.absent == ()


def test_empty_score_can_count_absent_classes_as_perfect():
    s = dice_scores(np.array([0, 0]), np.array([0, 0]), 3, empty_score=1.0)
    assert s.per_class.tolist() == [1.0, 1.0, 1.0] and s.mean == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_dice_agrees_with_monai_and_sklearn_on_random_maps(seed):
    torch = pytest.importorskip("torch")
    from monai.metrics import DiceMetric

    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 6, (64, 80))
    pred = np.where(rng.random(truth.shape) < 0.7, truth, rng.integers(0, 6, truth.shape))
    ours = dice_scores(pred, truth, 6)

    onehot = lambda a: torch.from_numpy(np.eye(6, dtype=np.float32)[a].transpose(2, 0, 1))[None]  # noqa: E731
    metric = DiceMetric(include_background=True, reduction="none")
    monai_dice = metric(onehot(pred), onehot(truth))[0].numpy()
    np.testing.assert_allclose(ours.per_class, monai_dice, rtol=1e-6)
    np.testing.assert_allclose(ours.per_class, f1_score(truth.ravel(), pred.ravel(), average=None))
    assert ours.total == pytest.approx(accuracy_score(truth.ravel(), pred.ravel()))
    assert ours.total == pytest.approx(f1_score(truth.ravel(), pred.ravel(), average="micro"))
    assert ours.mean == pytest.approx(f1_score(truth.ravel(), pred.ravel(), average="macro"))


def test_confusion_matrix_agrees_with_sklearn_and_pools_by_summing():
    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 4, (2, 30, 30))
    m = confusion_matrix(a, b, 4)
    np.testing.assert_array_equal(m, sk_confusion(b.ravel(), a.ravel(), labels=range(4)))
    halves = confusion_matrix(a[:15], b[:15], 4) + confusion_matrix(a[15:], b[15:], 4)
    assert dice_from_confusion(halves).per_class.tolist() == dice_scores(a, b, 4).per_class.tolist()


@pytest.mark.parametrize("seed", range(3))
def test_binary_scores_agree_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    truth = rng.random((50, 50)) < 0.3
    pred = rng.random((50, 50)) < 0.35
    s = binary_scores(pred, truth)
    assert s.precision == pytest.approx(precision_score(truth.ravel(), pred.ravel()))
    assert s.recall == pytest.approx(recall_score(truth.ravel(), pred.ravel()))
    assert s.f == pytest.approx(f1_score(truth.ravel(), pred.ravel()))
    assert s.tp + s.fp + s.fn + s.tn == truth.size


def test_binary_scores_with_nothing_predicted_use_zero_division():
    s = binary_scores(np.zeros(4, bool), np.array([1, 0, 0, 0], bool))
    assert (s.precision, s.recall, s.f) == (0.0, 0.0, 0.0)
    assert binary_scores(np.zeros(3, bool), np.zeros(3, bool), zero_division=1.0).f == 1.0


def test_threshold_sweep_agrees_with_binarising_at_every_threshold():
    rng = np.random.default_rng(5)
    truth = rng.random((40, 40)) < 0.4
    prob = np.clip(truth * 140 + rng.normal(60, 50, truth.shape), 0, 255).astype(np.uint8)
    sweep = threshold_sweep(prob, truth)
    for t in (0, 1, 57, 128, 200, 255):
        ref = binary_scores(prob >= t, truth)
        assert (sweep.tp[t], sweep.fp[t], sweep.fn[t]) == (ref.tp, ref.fp, ref.fn)
        assert sweep.f[t] == pytest.approx(ref.f)
        assert sweep.precision[t] == pytest.approx(ref.precision)
    assert sweep.f[sweep.best_threshold] == sweep.f.max()
    assert sweep.recall[0] == 1.0


def test_threshold_sweep_accepts_float_probabilities():
    truth = np.array([True, False])
    assert probability_to_uint8(np.array([1.0, 0.5])).tolist() == [255, 128]
    assert (
        threshold_sweep(np.array([0.9, 0.1]), truth).best_threshold == 27
    )  # 0.1 -> 26, so t = 27 excludes it


def test_choose_threshold_uses_the_mean_of_per_image_best_thresholds():
    # image 1: foreground at 100, background at 10 -> best t = 11 (lowest t giving F = 1)
    # image 2: foreground at 200, background at 50 -> best t = 51
    t1 = np.array([1, 1, 0, 0], bool)
    p1 = np.array([100, 100, 10, 10], np.uint8)
    t2 = np.array([1, 0, 0], bool)
    p2 = np.array([200, 50, 50], np.uint8)
    choice = choose_threshold([p1, p2], [t1, t2])
    assert choice.per_image_best.tolist() == [11, 51]
    assert choice.threshold == 31.0 and choice.applied_threshold == 31
    # at 31: image 1 perfect; image 2 predicts its two 50s as foreground: tp 1, fp 2
    assert (choice.pooled.tp, choice.pooled.fp, choice.pooled.fn) == (3, 2, 0)
    assert choice.pooled.f == pytest.approx(6 / 8)
    assert choice.per_image[0].f == 1.0 and choice.per_image[1].precision == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: dice_scores(np.zeros(3, int), np.zeros(4, int), 2), "differs from truth shape"),
        (lambda: dice_scores(np.zeros(3), np.zeros(3, int), 2), "integer class labels"),
        (lambda: dice_scores(np.array([5]), np.array([0]), 2), "outside 0..1"),
        (lambda: dice_scores(np.array([0]), np.array([0]), 0), "n_classes must be >= 1"),
        (lambda: binary_scores(np.zeros(3), np.zeros(3, bool)), "must be a mask"),
        (lambda: threshold_sweep(np.array([1.5]), np.array([True])), r"\[0, 1\]"),
        (lambda: threshold_sweep(np.array([np.nan]), np.array([True])), "NaN"),
        (lambda: threshold_sweep(np.array([-3]), np.array([True])), "uint8 0..255"),
        (lambda: choose_threshold([], []), "no evaluation images"),
        (lambda: choose_threshold([np.zeros(2, np.uint8)], []), "one probability map per"),
    ],
)
def test_bad_input_is_a_clear_error(call, match):
    with pytest.raises(SeglabError, match=match):
        call()


def test_empty_input_has_defined_results():
    s = dice_scores(np.zeros((0,), int), np.zeros((0,), int), 3)
    assert np.isnan(s.total) and np.isnan(s.mean) and s.absent == (0, 1, 2)
    b = binary_scores(np.zeros(0, bool), np.zeros(0, bool))
    assert (b.tp, b.f) == (0, 0.0)
