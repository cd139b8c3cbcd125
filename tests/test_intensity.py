"""Tests for seglab.intensity: two-peak detection and the eq. 2.4 remap (study B)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from scipy import ndimage, signal, stats

from seglab.errors import SeglabError
from seglab.intensity import (
    PUBLISHED_REFERENCE_PEAKS,
    PeakDetection,
    ReferencePeaks,
    detect_peaks,
    intensity_histogram,
    reference_peaks,
    remap_intensity,
    remap_to_reference,
    resolve_value_range,
    smooth_histogram,
)

P1, P2 = 162.99, 187.51


# ---------------------------------------------------------------------------------------------
# synthetic images
# ---------------------------------------------------------------------------------------------


def class_map(rng: np.random.Generator, shape: tuple[int, int], fraction: float) -> np.ndarray:
    """Smooth blobs covering ``fraction`` of the image (the 'mitochondria')."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 4)
    return field > np.quantile(field, 1 - fraction)


def two_class_image(
    rng: np.random.Generator,
    dark: float,
    bright: float,
    sd: float,
    shape: tuple[int, int] = (256, 256),
    fraction: float = 0.3,
    texture: float = 0.0,
) -> tuple[np.ndarray, float]:
    """uint8 image: blobs at grey level ``dark``, the rest at ``bright``, Gaussian noise ``sd``.

    ``texture`` adds a zero-mean striped pattern of that amplitude (grey levels).
    """
    mito = class_map(rng, shape, fraction)
    image = np.where(mito, dark, bright) + rng.normal(0.0, sd, shape)
    if texture:
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        image += texture * np.sin(xx / 7.0) * np.cos(yy / 11.0)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), float(mito.mean())


def mixture_modes(dark: float, bright: float, sd: float, fraction: float) -> list[float]:
    """The two local maxima of the noise-free mixture density (independent of the code)."""
    x = np.linspace(0.0, 255.0, 255_001)
    pdf = fraction * stats.norm.pdf(x, dark, sd) + (1 - fraction) * stats.norm.pdf(x, bright, sd)
    maxima = x[signal.argrelmax(pdf)[0]]
    assert maxima.size == 2
    return [float(m) for m in maxima]


# ---------------------------------------------------------------------------------------------
# remap_intensity: eq. 2.4
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p1", "p2", "ref1", "ref2"),
    [
        (150.0, 175.0, P1, P2),
        (170.3, 199.7, P1, P2),
        (101.25, 220.5, 17.0, 254.0),
        (P1, P2, P1, P2),
    ],
)
def test_remap_fixed_points_are_exact(p1: float, p2: float, ref1: float, ref2: float) -> None:
    x = np.array([0.0, p1, p2, 255.0])
    out = remap_intensity(x, p1, p2, ref1, ref2, value_range=(0, 255))
    assert out.dtype == np.float64
    assert out.tolist() == [0.0, ref1, ref2, 255.0]


def test_remap_matches_hand_computed_values() -> None:
    # x' = x * P1 / p1;  P1 + (x - p1) (P2 - P1) / (p2 - p1);  P2 + (x - p2) (255 - P2) / (255 - p2)
    x = np.array([75.0, 160.0, 200.0, 255.0])
    out = remap_intensity(x, 150.0, 175.0, P1, P2, value_range=(0, 255))
    expected = [75 * P1 / 150, P1 + 10 * (P2 - P1) / 25, P2 + 25 * (255 - P2) / 80, 255.0]
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(expected[:3], [81.495, 172.798, 208.600625], atol=1e-9)
    # outside an explicit value range the end segments continue as straight lines
    outside = remap_intensity(np.array([-10.0, 300.0]), 150.0, 175.0, P1, P2, value_range=(0, 255))
    np.testing.assert_allclose(outside, [-10 * P1 / 150, P2 + 125 * (255 - P2) / 80], atol=1e-12)


def test_remap_uint8_rounds_to_nearest_and_keeps_dtype() -> None:
    x = np.array([[75, 160], [200, 255]], dtype=np.uint8)
    out = remap_intensity(x, 150.0, 175.0, P1, P2)
    assert out.dtype == np.uint8 and out.shape == x.shape
    assert out.tolist() == [[81, 173], [209, 255]]  # 81.495, 172.798, 208.600625, 255


@pytest.mark.parametrize("seed", range(5))
def test_remap_is_monotone_on_the_full_ramp(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p1, p2 = np.sort(rng.uniform(5, 250, 2))
    ref1, ref2 = np.sort(rng.uniform(5, 250, 2))
    ramp = np.arange(256, dtype=np.uint8)
    as_float = remap_intensity(ramp, p1, p2, ref1, ref2, dtype=np.float64)
    assert np.all(np.diff(as_float) > 0)  # strictly increasing in float
    as_uint8 = remap_intensity(ramp, p1, p2, ref1, ref2)
    assert np.all(np.diff(as_uint8.astype(int)) >= 0)
    assert as_uint8[0] == 0 and as_uint8[-1] == 255


def test_remap_is_piecewise_linear() -> None:
    x = np.linspace(0, 255, 1021)  # step 0.25: 140 and 180 are grid points
    out = remap_intensity(x, 140.0, 180.0, P1, P2, value_range=(0, 255))
    expected_slopes = [P1 / 140, (P2 - P1) / 40, (255 - P2) / 75]
    for (lo, hi), expected in zip([(0, 140), (140, 180), (180, 255)], expected_slopes, strict=True):
        inside = (x >= lo) & (x <= hi)
        np.testing.assert_allclose(np.diff(out[inside]) / np.diff(x[inside]), expected, rtol=1e-9)


@pytest.mark.parametrize(
    ("dtype", "value_range"),
    [
        (np.uint8, (0, 255)),
        (np.int8, (-128, 127)),
        (np.uint16, (0, 65535)),
        (np.int16, (-1000, 3000)),
        (np.int32, (0, 4095)),
        (np.float32, (0, 255)),
    ],
)
def test_remap_matches_numpy_interp(dtype, value_range) -> None:
    # np.interp through (vmin, vmin), (p1, P1), (p2, P2), (vmax, vmax) is eq. 2.4 by definition
    lo, hi = value_range
    rng = np.random.default_rng(3)
    image = rng.uniform(lo, hi, 2000)
    image = image.astype(dtype) if np.dtype(dtype).kind == "f" else np.rint(image).astype(dtype)
    p1, p2 = lo + 0.3 * (hi - lo), lo + 0.55 * (hi - lo)
    ref1, ref2 = lo + 0.62 * (hi - lo), lo + 0.71 * (hi - lo)
    expected = np.interp(image.astype(float), [lo, p1, p2, hi], [lo, ref1, ref2, hi])
    as_float = remap_intensity(image, p1, p2, ref1, ref2, value_range=value_range, dtype=np.float64)
    np.testing.assert_allclose(as_float, expected, rtol=0, atol=1e-9 * (hi - lo))
    native = remap_intensity(image, p1, p2, ref1, ref2, value_range=value_range)
    assert native.dtype == dtype
    if np.dtype(dtype).kind == "f":
        np.testing.assert_allclose(native, expected, rtol=1e-6)
    else:
        assert np.array_equal(native, np.rint(as_float).astype(dtype))


def test_remap_is_identity_when_peaks_equal_reference() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    assert np.array_equal(remap_intensity(image, P1, P2, P1, P2), image)
    ramp = np.linspace(0, 1, 101)
    np.testing.assert_allclose(remap_intensity(ramp, 0.3, 0.7, 0.3, 0.7), ramp, atol=1e-15)


def test_remap_output_dtype_and_empty_input() -> None:
    image = np.array([0, 100, 255], dtype=np.uint8)
    out = remap_intensity(image, 150, 175, P1, P2, dtype=np.float32)
    assert out.dtype == np.float32
    empty = remap_intensity(np.zeros((0, 4), np.uint8), 150, 175, P1, P2)
    assert empty.shape == (0, 4) and empty.dtype == np.uint8


@pytest.mark.parametrize(
    ("p1", "p2", "ref1", "ref2", "match"),
    [
        (175, 150, P1, P2, "image peaks"),
        (150, 150, P1, P2, "image peaks"),
        (0, 150, P1, P2, "image peaks"),
        (150, 255, P1, P2, "image peaks"),
        (150, 175, P2, P1, "reference peaks"),
        (150, 175, P1, 300, "reference peaks"),
        (150, float("nan"), P1, P2, "image peaks"),
    ],
)
def test_remap_rejects_bad_peaks(p1, p2, ref1, ref2, match) -> None:
    with pytest.raises(SeglabError, match=match):
        remap_intensity(np.zeros((4, 4), np.uint8), p1, p2, ref1, ref2)


# ---------------------------------------------------------------------------------------------
# value range and histogram
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (np.zeros(3, np.uint8), (0.0, 255.0)),
        (np.zeros(3, np.uint16), (0.0, 65535.0)),
        (np.zeros(3, np.int16), (-32768.0, 32767.0)),
        (np.array([0.0, 0.5, 1.0]), (0.0, 1.0)),
        (np.zeros(0, np.float32), (0.0, 1.0)),
    ],
)
def test_resolve_value_range_defaults(image: np.ndarray, expected: tuple) -> None:
    assert resolve_value_range(image) == expected


def test_resolve_value_range_errors() -> None:
    with pytest.raises(SeglabError, match="value_range"):
        resolve_value_range(np.array([0.0, 2.0]))
    with pytest.raises(SeglabError, match="NaN"):
        resolve_value_range(np.array([0.0, np.nan]))
    with pytest.raises(SeglabError, match="dtype bool"):
        resolve_value_range(np.zeros(3, bool))
    with pytest.raises(SeglabError, match="low < high"):
        resolve_value_range(np.zeros(3), (1, 1))


def test_histogram_uint8_is_one_bin_per_grey_level() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    counts, centres = intensity_histogram(image)
    assert counts.tolist() == np.bincount(image.ravel(), minlength=256).tolist()
    assert centres.tolist() == list(range(256))
    mask = image > 100
    masked, _ = intensity_histogram(image, mask=mask)
    assert masked.tolist() == np.bincount(image[mask], minlength=256).tolist()


def test_histogram_other_dtypes_match_numpy() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 65536, 5000).astype(np.uint16)
    counts, centres = intensity_histogram(image, bins=64)
    edges = np.linspace(-0.5, 65535.5, 65)
    assert counts.tolist() == np.histogram(image, edges)[0].tolist()
    np.testing.assert_allclose(centres, (edges[:-1] + edges[1:]) / 2)
    floats = rng.uniform(-1, 3, 5000)
    counts, _ = intensity_histogram(floats, value_range=(0, 2), bins=10)
    assert counts.tolist() == np.histogram(floats, 10, range=(0, 2))[0].tolist()
    assert intensity_histogram(np.zeros((0, 3), np.uint8))[0].sum() == 0


# ---------------------------------------------------------------------------------------------
# the study's smoothing rule
# ---------------------------------------------------------------------------------------------


def test_smoothing_rule_removes_ripple_on_a_slope_and_keeps_real_peaks() -> None:
    x = np.arange(256.0)
    histogram = 600 * np.exp(-0.5 * ((x - 150) / 8) ** 2) + 1000 * np.exp(
        -0.5 * ((x - 185) / 9) ** 2
    )
    histogram[170:173] += [0.0, 80.0, 0.0]  # a bump on the rising slope of the second peak
    histogram[205:208] += [0.0, 30.0, 0.0]  # and one on its falling slope
    raw_peaks = signal.find_peaks(histogram)[0]
    assert raw_peaks.tolist() == [150, 171, 185, 206]
    smoothed = smooth_histogram(histogram, interval=5)
    assert signal.find_peaks(smoothed)[0].tolist() == [150, 185]
    assert np.isclose(smoothed.sum(), histogram.sum())
    # the real peaks' tops are untouched
    assert smoothed[148:153].tolist() == histogram[148:153].tolist()
    assert smoothed[183:188].tolist() == histogram[183:188].tolist()


def test_smoothing_rule_leaves_clean_histograms_alone() -> None:
    x = np.arange(100.0)
    histogram = np.exp(-0.5 * ((x - 30) / 5) ** 2) + np.exp(-0.5 * ((x - 70) / 5) ** 2)
    assert np.array_equal(smooth_histogram(histogram), histogram)
    assert smooth_histogram([]).size == 0
    with pytest.raises(SeglabError, match="odd"):
        smooth_histogram(histogram, interval=4)
    with pytest.raises(SeglabError, match="non-negative"):
        smooth_histogram([1.0, -1.0, 2.0])


# ---------------------------------------------------------------------------------------------
# peak detection
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dark", "bright", "sd", "seed"),
    [
        (150, 175, 5, 0),
        (150, 175, 6, 1),
        (170, 200, 5, 2),
        (170, 200, 7, 3),
        (140, 170, 4, 4),
        (160, 195, 6, 5),
        (125, 160, 6, 6),
    ],
)
def test_bimodal_peaks_are_found_and_remapped_onto_the_reference(dark, bright, sd, seed) -> None:
    rng = np.random.default_rng(seed)
    image, fraction = two_class_image(rng, dark, bright, sd)
    true1, true2 = mixture_modes(dark, bright, sd, fraction)
    detection = detect_peaks(image)
    assert detection.case == "two-peak" and detection.reason is None
    assert abs(detection.p1 - true1) < 1.0 and abs(detection.p2 - true2) < 1.0

    remapped, report = remap_to_reference(image, PUBLISHED_REFERENCE_PEAKS)
    assert remapped.dtype == np.uint8 and report.failed == () and report.unchanged == ()
    assert report.peaks_used == ((detection.p1, detection.p2),)
    again = detect_peaks(remapped)
    assert abs(again.p1 - P1) < 1.5 and abs(again.p2 - P2) < 1.5


@pytest.mark.parametrize("seed", range(4))
def test_random_peak_positions_with_texture(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    dark = rng.uniform(135, 170)
    bright = dark + rng.uniform(32, 45)
    image, _ = two_class_image(rng, dark, bright, 4.0, texture=3.0)
    detection = detect_peaks(image)
    assert detection.case == "two-peak"
    assert abs(detection.p1 - dark) < 1.0 and abs(detection.p2 - bright) < 1.0
    remapped, _ = remap_to_reference(image, (P1, P2))
    again = detect_peaks(remapped)
    assert abs(again.p1 - P1) < 1.5 and abs(again.p2 - P2) < 1.5


def extracellular_image(rng: np.random.Generator) -> np.ndarray:
    """Tissue (150 / 180) with a black (~20) and a white (~235) extracellular region."""
    image, _ = two_class_image(rng, 150, 180, 5)
    image = image.astype(float)
    image[:, :50] = rng.normal(20, 5, (256, 50))
    image[:, -40:] = rng.normal(235, 4, (256, 40))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def test_extracellular_four_peaks_use_the_middle_two() -> None:
    image = extracellular_image(np.random.default_rng(7))
    detection = detect_peaks(image)
    assert detection.case == "extracellular"
    assert len(detection.peaks) == 4
    assert detection.peaks[1] == detection.p1 and detection.peaks[2] == detection.p2
    assert abs(detection.p1 - 150) < 1.0 and abs(detection.p2 - 180) < 1.0
    assert abs(detection.peaks[0] - 20) < 1.5 and abs(detection.peaks[3] - 235) < 1.5


def test_three_peaks_fail_and_a_mask_fixes_them() -> None:
    image = extracellular_image(np.random.default_rng(8))
    image[:, -40:] = image[:, 100:140]  # white region gone: black + two tissue peaks
    detection = detect_peaks(image)
    assert detection.case == "failed" and detection.p1 is None
    assert "3 peaks" in detection.reason and "mask" in detection.reason
    mask = np.ones(image.shape, bool)
    mask[:, :50] = False
    masked = detect_peaks(image, mask=mask)
    assert masked.case == "two-peak" and abs(masked.p1 - 150) < 1.0
    # in remap_to_reference the mask only steers detection; every pixel is remapped
    remapped, report = remap_to_reference(image, (P1, P2), mask=mask)
    assert report.peaks_used == ((masked.p1, masked.p2),)
    assert np.array_equal(remapped, remap_intensity(image, masked.p1, masked.p2, P1, P2))
    reference = reference_peaks([image, image], masks=[mask, None])
    assert reference.failed == (1,) and reference.P1 == masked.p1


def test_alignment_padding_in_the_first_bin_is_ignored() -> None:
    rng = np.random.default_rng(9)
    image, fraction = two_class_image(rng, 150, 180, 5)
    image[:30] = 0  # zero padding left by stack registration
    detection = detect_peaks(image)
    assert detection.case == "two-peak"
    assert detection.peaks[0] == 0.0 and len(detection.peaks) == 3
    assert abs(detection.p1 - 150) < 1.0 and abs(detection.p2 - 180) < 1.0


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("unimodal", "only one peak"), ("flat", "no peak|peaks at"), ("constant", "fill only")],
)
def test_failures_are_reported_and_left_unchanged(kind: str, reason: str) -> None:
    rng = np.random.default_rng(11)
    if kind == "unimodal":
        image = np.clip(np.rint(rng.normal(170, 8, (128, 128))), 0, 255).astype(np.uint8)
    elif kind == "flat":
        image = rng.integers(20, 236, (128, 128)).astype(np.uint8)
    else:
        image = np.full((64, 64), 128, np.uint8)
    detection = detect_peaks(image)
    assert detection.case == "failed" and not detection.ok
    assert detection.p1 is None and detection.p2 is None
    assert detection.reason and "\n" not in detection.reason
    assert re.search(reason, detection.reason)
    remapped, report = remap_to_reference(image, PUBLISHED_REFERENCE_PEAKS)
    assert np.array_equal(remapped, image)
    assert report.failed == (0,) and report.unchanged == (0,) and report.peaks_used == (None,)
    assert "detection failed on slice(s) 0" in report.summary()


def test_overlapping_classes_fail_like_in_the_study() -> None:
    # the study's failure: mitochondria 158-163, myofibrils 157-170
    rng = np.random.default_rng(12)
    image, _ = two_class_image(rng, 160.5, 163.5, 4)
    assert detect_peaks(image).case == "failed"


def test_implausible_pair_is_not_used() -> None:
    # a dark non-tissue region and the myofibrils, no mitochondria: p1 would be ~40
    rng = np.random.default_rng(13)
    image, _ = two_class_image(rng, 40, 185, 5)
    detection = detect_peaks(image)
    assert detection.case == "two-peak" and abs(detection.p1 - 40) < 1
    remapped, report = remap_to_reference(image, PUBLISHED_REFERENCE_PEAKS)
    assert np.array_equal(remapped, image)
    assert report.failed == (0,) and "implausible" in report.detections[0].reason
    # [p1, p2] ~ [40, 185] onto [162.99, 187.51] scales by 0.17: allowed only with max_stretch 6+
    remapped, report = remap_to_reference(image, PUBLISHED_REFERENCE_PEAKS, max_stretch=6)
    assert report.failed == () and not np.array_equal(remapped, image)


# ---------------------------------------------------------------------------------------------
# reference peaks
# ---------------------------------------------------------------------------------------------


def test_reference_peaks_average_successful_images_and_list_failures() -> None:
    rng = np.random.default_rng(20)
    images = [two_class_image(rng, 160 + k, 186 + k, 5, shape=(128, 128))[0] for k in range(-2, 3)]
    images[2] = np.full((128, 128), 170, np.uint8)
    reference = reference_peaks(images)
    detections = [detect_peaks(image) for image in images]
    good = [d for i, d in enumerate(detections) if i != 2]
    assert reference.failed == (2,) and reference.n_used == 4
    assert reference.P1 == pytest.approx(np.mean([d.p1 for d in good]), abs=1e-12)
    assert reference.P2 == pytest.approx(np.mean([d.p2 for d in good]), abs=1e-12)
    assert abs(reference.P1 - 160.5) < 1.0 and abs(reference.P2 - 186.5) < 1.0
    assert reference.value_range == (0.0, 255.0)
    assert reference.detections == tuple(detections)
    # a (Z, Y, X) stack iterates over its slices
    stacked = reference_peaks(np.stack(images))
    assert (stacked.P1, stacked.P2) == (reference.P1, reference.P2)


def test_reference_peaks_errors() -> None:
    with pytest.raises(SeglabError, match="no training images"):
        reference_peaks([])
    with pytest.raises(SeglabError, match="failed on all 2"):
        reference_peaks([np.full((32, 32), 9, np.uint8)] * 2)
    rng = np.random.default_rng(21)
    image8 = two_class_image(rng, 150, 180, 5, shape=(64, 64))[0]
    with pytest.raises(SeglabError, match="value range"):
        reference_peaks([image8, image8.astype(np.uint16)])
    with pytest.raises(SeglabError, match="masks"):
        reference_peaks([image8], masks=[None, None])
    with pytest.raises(SeglabError, match="empty"):
        reference_peaks([np.zeros((0, 5), np.uint8)])


def test_published_reference() -> None:
    assert (PUBLISHED_REFERENCE_PEAKS.P1, PUBLISHED_REFERENCE_PEAKS.P2) == (P1, P2)
    assert PUBLISHED_REFERENCE_PEAKS.value_range == (0.0, 255.0)
    with pytest.raises(SeglabError, match="P1, P2"):
        ReferencePeaks(P1=190.0, P2=180.0)
    with pytest.raises(SeglabError, match="value range"):
        remap_to_reference(np.zeros((8, 8), np.uint16), PUBLISHED_REFERENCE_PEAKS)


# ---------------------------------------------------------------------------------------------
# stacks and fallbacks
# ---------------------------------------------------------------------------------------------


def drifting_stack(n_slices: int = 7, bad: tuple[int, ...] = (3,)) -> tuple[np.ndarray, list]:
    """Slices whose peaks drift by 3 grey levels per slice; ``bad`` slices are unimodal."""
    rng = np.random.default_rng(30)
    slices, truth = [], []
    for z in range(n_slices):
        shift = 3.0 * z - 9.0
        if z in bad:
            image = np.clip(np.rint(rng.normal(180 + shift, 6, (128, 128))), 0, 255)
            slices.append(image.astype(np.uint8))
        else:
            slices.append(two_class_image(rng, 150 + shift, 180 + shift, 5, shape=(128, 128))[0])
        truth.append((150 + shift, 180 + shift))
    return np.stack(slices), truth


def test_stack_identity_fallback_leaves_failed_slice_unchanged() -> None:
    stack, _ = drifting_stack()
    remapped, report = remap_to_reference(stack, PUBLISHED_REFERENCE_PEAKS)
    assert report.n_slices == 7 and report.slice_axis == 0
    assert report.failed == (3,) and report.unchanged == (3,) and report.interpolated == ()
    assert np.array_equal(remapped[3], stack[3])
    for z in (0, 1, 2, 4, 5, 6):
        again = detect_peaks(remapped[z])
        assert abs(again.p1 - P1) < 1.5 and abs(again.p2 - P2) < 1.5


def test_stack_neighbours_fallback_interpolates_peaks() -> None:
    stack, truth = drifting_stack(bad=(0, 3))
    remapped, report = remap_to_reference(stack, PUBLISHED_REFERENCE_PEAKS, fallback="neighbours")
    assert report.failed == (0, 3) and report.interpolated == (0, 3) and report.unchanged == ()
    used = report.peaks_used
    # slice 3 lies halfway between slices 2 and 4; slice 0 copies its nearest good slice, 1
    assert used[3] == pytest.approx(((used[2][0] + used[4][0]) / 2, (used[2][1] + used[4][1]) / 2))
    assert used[0] == used[1]
    assert used[3] == pytest.approx(truth[3], abs=1.0)
    expected = remap_intensity(stack[3], *used[3], P1, P2)
    assert np.array_equal(remapped[3], expected)
    assert "interpolated: 0, 3" in report.summary()
    json.dumps(report.as_dict())


def test_stack_axis_is_respected() -> None:
    stack, _ = drifting_stack(n_slices=4, bad=(1,))
    ref, ref_report = remap_to_reference(stack, (P1, P2), fallback="neighbours")
    moved = np.moveaxis(stack, 0, 2)
    out, report = remap_to_reference(moved, (P1, P2), fallback="neighbours", slice_axis=-1)
    assert report.slice_axis == 2 and report.failed == (1,)
    assert np.array_equal(np.moveaxis(out, 2, 0), ref)
    assert report.peaks_used == ref_report.peaks_used


def test_neighbours_without_any_success_leaves_everything_unchanged() -> None:
    stack = np.full((3, 32, 32), 100, np.uint8)
    out, report = remap_to_reference(stack, (P1, P2), fallback="neighbours")
    assert np.array_equal(out, stack) and report.unchanged == (0, 1, 2)


# ---------------------------------------------------------------------------------------------
# other dtypes
# ---------------------------------------------------------------------------------------------


def test_uint16_full_range() -> None:
    rng = np.random.default_rng(40)
    mito = class_map(rng, (256, 256), 0.3)
    image = np.where(mito, 150 * 257, 178 * 257) + rng.normal(0, 5 * 257, mito.shape)
    image = np.clip(np.rint(image), 0, 65535).astype(np.uint16)
    detection = detect_peaks(image)
    assert detection.value_range == (0.0, 65535.0)
    assert abs(detection.p1 - 150 * 257) < 257 and abs(detection.p2 - 178 * 257) < 257
    reference = (P1 * 257, P2 * 257)
    remapped, report = remap_to_reference(image, reference)
    assert remapped.dtype == np.uint16 and report.failed == ()
    again = detect_peaks(remapped)
    assert abs(again.p1 - P1 * 257) < 1.5 * 257 and abs(again.p2 - P2 * 257) < 1.5 * 257


def test_twelve_bit_data_in_uint16_needs_a_value_range() -> None:
    rng = np.random.default_rng(41)
    image8, _ = two_class_image(rng, 150, 180, 5)
    image = (image8.astype(np.uint16) * 16) + rng.integers(0, 16, image8.shape).astype(np.uint16)
    failed = detect_peaks(image)
    assert failed.case == "failed" and "value_range" in failed.reason
    detection = detect_peaks(image, value_range=(0, 4095))
    assert detection.case == "two-peak"
    assert abs(detection.p1 - (150 * 16 + 7.5)) < 16 and abs(detection.p2 - (180 * 16 + 7.5)) < 16


def test_float_images() -> None:
    rng = np.random.default_rng(42)
    image8, fraction = two_class_image(rng, 150, 178, 5)
    true1, true2 = mixture_modes(150, 178, 5, fraction)
    unit = image8 / 255.0
    detection = detect_peaks(unit)
    assert detection.value_range == (0.0, 1.0)
    assert (
        abs(detection.p1 - true1 / 255) < 1.5 / 255 and abs(detection.p2 - true2 / 255) < 1.5 / 255
    )
    remapped, _ = remap_to_reference(unit, (P1 / 255, P2 / 255))
    assert remapped.dtype == np.float64
    again = detect_peaks(remapped)
    assert abs(again.p1 - P1 / 255) < 1.5 / 255 and abs(again.p2 - P2 / 255) < 1.5 / 255
    grey = image8.astype(np.float32)
    with pytest.raises(SeglabError, match="value_range"):
        detect_peaks(grey)
    out, report = remap_to_reference(grey, PUBLISHED_REFERENCE_PEAKS, value_range=(0, 255))
    assert out.dtype == np.float32 and report.value_range == (0.0, 255.0)
    # float bins over [0, 255] are 255/256 wide, so the peaks differ slightly from uint8's
    (p1, p2), (q1, q2) = report.peaks_used[0], remap_to_reference(image8, (P1, P2))[1].peaks_used[0]
    assert abs(p1 - q1) < 0.5 and abs(p2 - q2) < 0.5
    np.testing.assert_allclose(out, remap_intensity(grey, p1, p2, P1, P2, value_range=(0, 255)))


# ---------------------------------------------------------------------------------------------
# input validation
# ---------------------------------------------------------------------------------------------


def test_empty_and_non_finite_inputs_are_errors() -> None:
    with pytest.raises(SeglabError, match="empty"):
        detect_peaks(np.zeros((0, 0), np.uint8))
    with pytest.raises(SeglabError, match="empty"):
        remap_to_reference(np.zeros((0, 8, 8), np.uint8), (P1, P2))
    image = np.full((8, 8), 0.5)
    image[2, 3] = np.nan
    with pytest.raises(SeglabError, match="1 NaN or infinite"):
        detect_peaks(image)
    image[2, 3] = np.inf
    with pytest.raises(SeglabError, match="NaN or infinite"):
        remap_intensity(image, 0.3, 0.6, 0.4, 0.7)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mask": np.ones((3, 3), bool)}, "mask shape"),
        ({"mask": np.ones((8, 8), float)}, "mask must be boolean"),
        ({"interval": 4}, "odd"),
        ({"interval": 1}, "interval"),
        ({"min_prominence": 1.5}, "min_prominence"),
        ({"min_separation": 0}, "min_separation"),
        ({"bins": 3}, "bins"),
        ({"value_range": (5, 1)}, "value_range"),
        ({"value_range": "0-255"}, "value_range"),
    ],
)
def test_detect_peaks_rejects_bad_options(kwargs: dict, match: str) -> None:
    with pytest.raises(SeglabError, match=match):
        detect_peaks(np.zeros((8, 8), np.uint8), **kwargs)


@pytest.mark.parametrize(
    ("image", "kwargs", "match"),
    [
        (np.zeros((2, 2, 2, 2), np.uint8), {}, "2-D"),
        (np.zeros((8, 8), np.uint8), {"fallback": "nearest"}, "fallback"),
        (np.zeros((8, 8), np.uint8), {"max_stretch": 1.0}, "max_stretch"),
        (np.zeros((2, 8, 8), np.uint8), {"slice_axis": 3}, "slice_axis"),
        (np.zeros((8, 8), np.uint8), {"dtype": bool}, "dtype"),
        (np.zeros((8, 8), np.uint8), {"reference": (190.0, 180.0)}, "P1, P2"),
        (np.zeros((8, 8), np.uint8), {"reference": "published"}, "reference"),
    ],
)
def test_remap_to_reference_rejects_bad_input(image, kwargs, match) -> None:
    kwargs = {"reference": (P1, P2), **kwargs}
    with pytest.raises(SeglabError, match=match):
        remap_to_reference(image, **kwargs)


def test_records_are_json_serialisable() -> None:
    rng = np.random.default_rng(50)
    image, _ = two_class_image(rng, 150, 180, 5, shape=(64, 64))
    detection = detect_peaks(image)
    assert isinstance(detection, PeakDetection)
    assert json.loads(json.dumps(detection.as_dict()))["case"] == detection.case
    assert json.loads(json.dumps(reference_peaks([image]).as_dict()))["n_used"] == 1


# ---------------------------------------------------------------------------------------------
# the SEM phantom (optional: only when seglab.phantoms.sem is present)
# ---------------------------------------------------------------------------------------------


def test_sem_phantom_slices_are_brought_to_the_reference() -> None:
    sem = pytest.importorskip("seglab.phantoms.sem")
    for cell, tolerance in [("A", 1.5), ("B", 3.5)]:
        # cell B's peaks are ~40 levels apart, so the remap compresses [p1, p2] by ~0.6 and
        # re-detection on the remapped slices is biased by up to ~3 levels (see detect_peaks)
        phantom = sem.make_sem_phantom(shape=(6, 128, 128), seed=3, cell=cell, extracellular=True)
        stack = phantom.image
        remapped, report = remap_to_reference(
            stack, PUBLISHED_REFERENCE_PEAKS, fallback="neighbours"
        )
        own = [detect_peaks(s) for s in stack]
        assert report.failed == tuple(i for i, d in enumerate(own) if not d.ok)
        good = [z for z in range(stack.shape[0]) if z not in report.failed]
        assert len(good) >= 3
        before = np.array([(own[z].p1, own[z].p2) for z in good])
        after = np.array([(d.p1, d.p2) for d in (detect_peaks(remapped[z]) for z in good)])
        assert np.all(np.abs(after - [P1, P2]) < tolerance)
        assert np.all(after.std(axis=0) < before.std(axis=0))
