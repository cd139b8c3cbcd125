import csv
import json
import math
import re

import numpy as np
import pytest

from seglab.errors import SeglabError
from seglab.metrics import choose_threshold
from seglab.workflows.evaluation import FIXED_THRESHOLD, evaluate_binary, evaluate_multiclass

NAMES = ["background", "airway", "bud", "artery"]


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def noisy_labels(rng, shape, n_classes, flip=0.25, classes=None):
    classes = np.arange(n_classes) if classes is None else np.asarray(classes)
    truth = rng.choice(classes, size=shape)
    prediction = truth.copy()
    wrong = rng.random(shape) < flip
    prediction[wrong] = rng.choice(classes, size=int(wrong.sum()))
    return prediction, truth


def multiclass_samples(seed=0, count=3, shape=(24, 20)):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        prediction, truth = noisy_labels(rng, shape, len(NAMES))
        image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        out.append((f"image {i}", image, prediction, truth))
    return out


def binary_samples(seed=0, count=3, shape=(20, 24)):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        truth = rng.random(shape) < 0.3
        probability = np.clip(truth * (90 + 30 * i) + rng.normal(70, 45, shape), 0, 255)
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        out.append((f"slice_{i}", image, probability.astype(np.uint8), truth))
    return out


# --------------------------------------------------------------------------- multiclass
def test_multiclass_dice_matches_a_hand_computation(tmp_path):
    truth = np.array([[0, 0, 1, 1], [0, 2, 2, 1]])
    prediction = np.array([[0, 1, 1, 1], [0, 2, 0, 1]])
    # class 0: TP 2, |P| 3, |G| 3 -> 4/6; class 1: TP 3, |P| 4, |G| 3 -> 6/7; class 2: 2/3
    result = evaluate_multiclass(
        [("a", None, prediction, truth)], ["c0", "c1", "c2"], tmp_path, overlays=0
    )
    expected = [4 / 6, 6 / 7, 2 / 3]
    assert [result.metrics[f"dice_C{i}"] for i in (1, 2, 3)] == pytest.approx(expected)
    assert result.metrics["mean_dice"] == pytest.approx(np.mean(expected))
    assert result.metrics["total_dice"] == pytest.approx(6 / 8)  # 6 of 8 pixels right
    assert result.key_metric == "total_dice" and result.key_value == result.metrics["total_dice"]


def test_multiclass_dice_matches_monai_per_image_and_pooled(tmp_path):
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    samples = multiclass_samples(count=3)
    result = evaluate_multiclass(samples, NAMES, tmp_path, overlays=0)

    def monai_dice(prediction, truth):
        k = len(NAMES)
        one_hot = [torch.nn.functional.one_hot(torch.as_tensor(a), k) for a in (prediction, truth)]
        y_pred, y = (a.permute(2, 0, 1)[None].float() for a in one_hot)
        metric = monai_metrics.DiceMetric(include_background=True, reduction="none")
        return metric(y_pred=y_pred, y=y)[0].numpy()

    rows = read_csv(tmp_path / "per_image.csv")
    assert [r["name"] for r in rows] == [s[0] for s in samples]
    for row, (_, _, prediction, truth) in zip(rows, samples, strict=True):
        expected = monai_dice(prediction, truth)
        got = [float(row[f"C{i + 1}"]) for i in range(len(NAMES))]
        assert got == pytest.approx(expected, abs=1e-6)
        assert float(row["mean"]) == pytest.approx(expected.mean(), abs=1e-6)
    # pooling = one confusion matrix = Dice of all images side by side
    pooled = monai_dice(
        np.concatenate([s[2] for s in samples], axis=1),
        np.concatenate([s[3] for s in samples], axis=1),
    )
    got = [result.metrics[f"dice_C{i + 1}"] for i in range(len(NAMES))]
    assert got == pytest.approx(pooled, abs=1e-6)
    table = {r["class"]: r for r in read_csv(tmp_path / "per_class.csv")}
    assert list(table) == ["C1", "C2", "C3", "C4", "mean", "total"]
    assert float(table["C4"]["dice"]) == pytest.approx(pooled[3], abs=1e-6)
    assert float(table["mean"]["dice"]) == pytest.approx(pooled.mean(), abs=1e-6)


def test_multiclass_total_dice_is_pixel_accuracy_and_confusion_csv_counts_pixels(tmp_path):
    from sklearn.metrics import accuracy_score
    from sklearn.metrics import confusion_matrix as sk_confusion

    samples = multiclass_samples(seed=3, count=2)
    result = evaluate_multiclass(iter(samples), NAMES, tmp_path, overlays=0)
    prediction = np.concatenate([s[2].ravel() for s in samples])
    truth = np.concatenate([s[3].ravel() for s in samples])
    assert result.metrics["total_dice"] == pytest.approx(accuracy_score(truth, prediction))
    rows = read_csv(tmp_path / "confusion.csv")
    counts = np.array([[int(r[n]) for n in NAMES] for r in rows])
    np.testing.assert_array_equal(counts, sk_confusion(truth, prediction, labels=range(4)))


def test_multiclass_absent_classes_are_nan_and_left_out_of_the_mean(tmp_path):
    rng = np.random.default_rng(1)
    # class 3 never occurs; class 2 only in the second image
    p0, t0 = noisy_labels(rng, (10, 10), 4, classes=[0, 1])
    p1, t1 = noisy_labels(rng, (10, 10), 4, classes=[0, 1, 2])
    result = evaluate_multiclass(
        [("first", None, p0, t0), ("second", None, p1, t1)], NAMES, tmp_path, overlays=0
    )
    assert math.isnan(result.metrics["dice_C4"])
    defined = [result.metrics[f"dice_C{i}"] for i in (1, 2, 3)]
    assert result.metrics["mean_dice"] == pytest.approx(np.mean(defined))
    rows = read_csv(tmp_path / "per_image.csv")
    assert rows[0]["C3"] == "nan" and rows[0]["absent"] == "C3 C4"
    assert float(rows[0]["mean"]) == pytest.approx(
        (float(rows[0]["C1"]) + float(rows[0]["C2"])) / 2
    )
    assert rows[1]["absent"] == "C4"
    table = {r["class"]: r for r in read_csv(tmp_path / "per_class.csv")}
    assert table["C3"]["images"] == "1" and table["C4"]["dice"] == "nan"
    report = (tmp_path / "report.md").read_text()
    assert "Absent from every image" in report and "C4 artery" in report
    assert "C3 (1 of 2)" in report and "n/a" in report


def test_multiclass_writes_files_and_the_report_links_the_figures(tmp_path):
    samples = multiclass_samples(count=4)
    samples[1] = ("sub/dir:name", *samples[1][1:])
    out = tmp_path / "eval"
    result = evaluate_multiclass(
        samples, NAMES, out, title="Lung test", overlays=2, colours=np.eye(4, 3, dtype=int) * 200
    )
    expected = {
        "per_image.csv",
        "per_class.csv",
        "confusion.csv",
        "confusion.png",
        "metrics.json",
        "report.md",
        "overlays/image_0.png",
        "overlays/sub_dir_name.png",
    }
    assert {p.relative_to(out).as_posix() for p in result.files} == expected
    assert all(p.stat().st_size > 0 for p in result.files)
    assert sorted(p.name for p in (out / "overlays").iterdir()) == [
        "image_0.png",
        "sub_dir_name.png",
    ]
    report = result.report_path.read_text()
    assert report.startswith("# Lung test")
    assert "](confusion.png)" in report and "](overlays/sub_dir_name.png)" in report
    assert "4 images" in report and "| C1 | C2 | C3 | C4 | Avg. | Dice |" in report
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(result.metrics)
    assert "total Dice" in result.summary().report()
    assert len(result.per_image) == 4 and result.rows[-1]["class"] == "total"


def test_multiclass_accepts_volumes_and_channel_first_images(tmp_path):
    rng = np.random.default_rng(2)
    prediction, truth = noisy_labels(rng, (3, 8, 9), 4)
    image = rng.integers(0, 4000, (3, 8, 9)).astype(np.uint16)  # grey volume, scaled for display
    p2, t2 = noisy_labels(rng, (8, 9), 4)
    image2 = rng.integers(0, 256, (3, 8, 9), dtype=np.uint8)  # (3, H, W) colour
    result = evaluate_multiclass(
        [("vol", image, prediction, truth), ("rgb", image2, p2, t2)], NAMES, tmp_path
    )
    assert result.n_samples == 2 and (tmp_path / "overlays" / "rgb.png").exists()


@pytest.mark.parametrize(
    ("prediction_shape", "truth_shape"), [((8, 8), (8, 9)), ((2, 8, 8), (8, 8))]
)
def test_multiclass_shape_mismatch_names_the_sample_and_both_shapes(
    tmp_path, prediction_shape, truth_shape
):
    good = multiclass_samples(count=1)[0]
    bad = ("odd one", None, np.zeros(prediction_shape, int), np.zeros(truth_shape, int))
    message = re.escape(
        f"'odd one': prediction shape {prediction_shape} differs from "
        f"truth shape {truth_shape}; give"
    )
    with pytest.raises(SeglabError, match=message):
        evaluate_multiclass([good, bad], NAMES, tmp_path)
    assert not (tmp_path / "report.md").exists()  # nothing written before all samples pass


@pytest.mark.parametrize(
    ("sample", "match"),
    [
        (("x", None, np.full((4, 4), 7), np.zeros((4, 4), int)), r"'x': prediction has labels"),
        (("x", None, np.zeros((4, 4)), np.zeros((4, 4), int)), r"'x': prediction must hold int"),
        (("x", np.zeros((5, 4), np.uint8), np.zeros((4, 4), int), np.zeros((4, 4), int)), "image"),
        (("x", None, np.zeros((4, 4), int)), "not a \\(name, image, prediction, truth\\)"),
        (("x", None, np.zeros((1, 2, 4, 4), int), np.zeros((1, 2, 4, 4), int)), r"\(Z, H, W\)"),
    ],
)
def test_multiclass_bad_samples_raise_one_line_errors(tmp_path, sample, match):
    with pytest.raises(SeglabError, match=match) as err:
        evaluate_multiclass([sample], NAMES, tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("names", "colours", "match"),
    [
        ([], None, "no class names"),
        (["a", "a"], None, "repeat"),
        (["a", "b"], [(0, 0, 0)], "2 RGB triples"),
        (["a", "b"], [(0, 0, 0), (0, 0, 300)], "2 RGB triples"),
    ],
)
def test_multiclass_bad_classes_or_colours_raise(tmp_path, names, colours, match):
    with pytest.raises(SeglabError, match=match):
        evaluate_multiclass(multiclass_samples(count=1), names, tmp_path, colours=colours)


def test_empty_input_raises_and_writes_nothing(tmp_path):
    with pytest.raises(SeglabError, match="no samples to evaluate"):
        evaluate_multiclass([], NAMES, tmp_path / "a")
    with pytest.raises(SeglabError, match="no samples to evaluate"):
        evaluate_binary(iter([]), tmp_path / "b")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- binary
def test_binary_scores_match_sklearn_and_the_study_threshold_rule(tmp_path):
    from sklearn.metrics import precision_recall_fscore_support

    samples = binary_samples(count=3)
    result = evaluate_binary((s for s in samples), tmp_path, overlays=0)
    reference = choose_threshold([s[2] for s in samples], [s[3] for s in samples])
    assert result.metrics["threshold"] == reference.threshold
    assert result.metrics["applied_threshold"] == reference.applied_threshold
    np.testing.assert_array_equal(
        [int(r["best_threshold"]) for r in read_csv(tmp_path / "per_image.csv")],
        reference.per_image_best,
    )
    truth = np.concatenate([s[3].ravel() for s in samples])
    probability = np.concatenate([s[2].ravel() for s in samples])
    for t, suffix in [(reference.applied_threshold, ""), (FIXED_THRESHOLD, "_at_128")]:
        p, r, f, _ = precision_recall_fscore_support(
            truth, probability >= t, average="binary", zero_division=0
        )
        assert result.metrics[f"precision{suffix}"] == pytest.approx(p)
        assert result.metrics[f"recall{suffix}"] == pytest.approx(r)
        assert result.metrics[f"f_score{suffix}"] == pytest.approx(f)
    for row, (_, _, prob, mask) in zip(result.per_image, samples, strict=True):
        p, r, f, _ = precision_recall_fscore_support(
            mask.ravel(), prob.ravel() >= reference.applied_threshold, average="binary"
        )
        assert (row["precision"], row["recall"], row["f"]) == pytest.approx((p, r, f))
    assert result.key_metric == "f_score" and result.key_value == result.metrics["f_score"]


def test_binary_sweep_csv_is_the_pooled_sweep_and_best_pooled_f_is_its_maximum(tmp_path):
    from sklearn.metrics import f1_score

    samples = binary_samples(seed=4, count=2)
    result = evaluate_binary(samples, tmp_path, overlays=0)
    rows = read_csv(tmp_path / "sweep.csv")
    assert [int(r["threshold"]) for r in rows] == list(range(256))
    truth = np.concatenate([s[3].ravel() for s in samples])
    probability = np.concatenate([s[2].ravel() for s in samples])
    for t in (0, 77, 200, 255):
        assert float(rows[t]["f"]) == pytest.approx(
            f1_score(truth, probability >= t, zero_division=0)
        )
    f = np.array([float(r["f"]) for r in rows])
    assert result.metrics["best_pooled_threshold"] == int(np.argmax(f))
    assert result.metrics["best_pooled_f_score"] == pytest.approx(f.max())
    table = read_csv(tmp_path / "thresholds.csv")
    assert [r["rule"] for r in table] == [
        "chosen (mean of per-sample best)",
        "fixed 0.5",
        "best pooled F",
    ]


def test_binary_writes_files_and_the_report_states_the_rule(tmp_path):
    rng = np.random.default_rng(5)
    truth = rng.random((4, 16, 16)) < 0.4
    probability = (truth * 150 + rng.integers(0, 100, truth.shape)).astype(np.uint8)
    volume = ("cell B", rng.integers(0, 256, truth.shape, dtype=np.uint8), probability, truth)
    out = tmp_path / "eval"
    result = evaluate_binary([volume, *binary_samples(shape=(16, 16))], out, title="Mito")
    names = {p.relative_to(out).as_posix() for p in result.files}
    assert names == {
        "sweep.csv",
        "thresholds.csv",
        "per_image.csv",
        "sweep.png",
        "metrics.json",
        "report.md",
        "overlays/cell_B.png",
        "overlays/slice_0.png",
        "overlays/slice_1.png",
    }
    report = result.report_path.read_text()
    assert report.startswith("# Mito") and "4 samples" in report
    assert "](sweep.png)" in report and "](overlays/cell_B.png)" in report
    assert "mean of these" in report and "| rule | threshold | precision | recall | F |" in report
    assert f"{result.metrics['f_score']:.3f}" in report
    assert "F " in result.summary().report()


def test_binary_accepts_float_probabilities(tmp_path):
    samples = binary_samples(count=2)
    as_float = [(n, i, p / 255.0, t) for n, i, p, t in samples]
    a = evaluate_binary(samples, tmp_path / "a", overlays=0)
    b = evaluate_binary(as_float, tmp_path / "b", overlays=0)
    assert a.metrics == b.metrics


@pytest.mark.parametrize(
    ("sample", "match"),
    [
        (
            ("s", None, np.zeros((5, 6), np.uint8), np.zeros((6, 5), bool)),
            r"'s': probability shape \(5, 6\) differs from truth shape \(6, 5\)",
        ),
        (("s", None, np.full((4, 4), 2.0), np.zeros((4, 4), bool)), r"'s': float prob"),
        (("s", None, np.zeros((4, 4), np.uint8), np.full((4, 4), 0.5)), r"'s': truth must be"),
    ],
)
def test_binary_bad_samples_raise(tmp_path, sample, match):
    with pytest.raises(SeglabError, match=match):
        evaluate_binary([*binary_samples(count=1), sample], tmp_path)
    assert list(tmp_path.iterdir()) == []
