import csv
import dataclasses
import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.signal import find_peaks
from skimage.segmentation import find_boundaries

from seglab.errors import SeglabError
from seglab.phantoms.sem import (
    SEM_CELL_APPEARANCE,
    SEM_TRUTH_COLUMNS,
    SemPhantomConfig,
    make_sem_cells,
    make_sem_phantom,
    study_sem_config,
    truth_table_rows,
)

SMALL = {"shape": (12, 64, 64)}


@pytest.fixture(scope="module")
def phantom():
    return make_sem_phantom()


@pytest.fixture(scope="module")
def cells():
    return make_sem_cells()


@pytest.fixture(scope="module")
def extracellular_phantom():
    return make_sem_phantom(extracellular=True, seed=0)


@pytest.fixture(scope="module")
def oblique_phantom():
    # Fibres tilted out of the slice plane, so the spheroids are oblique to every grid axis.
    return make_sem_phantom(shape=(40, 112, 112), myofibril_axis=(1.0, 1.0, 0.5), seed=0)


def voxel_centres_um(shape, voxel_size):
    return [(np.arange(n) + 0.5) * v for n, v in zip(shape, voxel_size, strict=True)]


def inside_spheroid(truth, shape, voxel_size):
    """Independent rasterisation: (box, mask) of voxel centres with t^2/a^2 + r^2/b^2 <= 1.

    The box holds the spheroid's extent along each grid axis, sqrt(a^2 u_i^2 + b^2 (1 - u_i^2)),
    plus a voxel.
    """
    a, b, _ = truth.semi_axes_um
    centre = np.asarray(truth.centre_um)
    axis = np.asarray(truth.axis)
    half = np.sqrt(a**2 * axis**2 + b**2 * (1 - axis**2))
    low = np.maximum(np.floor((centre - half) / voxel_size).astype(int) - 1, 0)
    high = np.minimum(np.ceil((centre + half) / voxel_size).astype(int) + 2, shape)
    grids = np.meshgrid(
        *[(np.arange(lo, hi) + 0.5) * v for lo, hi, v in zip(low, high, voxel_size, strict=True)],
        indexing="ij",
    )
    d = np.stack(grids, axis=-1) - centre
    t = d @ axis
    r2 = np.sum(d * d, axis=-1) - t * t
    box = tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))
    return box, (t / a) ** 2 + r2 / b**2 <= 1.0


def histogram_peaks(values, count, smoothing=3.0):
    hist = np.bincount(np.ravel(values), minlength=256).astype(float)
    smooth = ndimage.gaussian_filter1d(hist, smoothing)
    peaks, props = find_peaks(smooth, prominence=0.05 * smooth.max())
    strongest = peaks[np.argsort(props["prominences"])[::-1][:count]]
    return sorted(strongest.tolist())


def adjacent_label_pairs(instances, offsets):
    """Set of unordered label pairs (a, b), a != b, both > 0, that are neighbours."""
    pairs = set()
    shape = instances.shape
    for offset in offsets:
        src = tuple(slice(max(0, -o), n - max(0, o)) for o, n in zip(offset, shape, strict=True))
        dst = tuple(slice(max(0, o), n - max(0, -o)) for o, n in zip(offset, shape, strict=True))
        a, b = instances[src], instances[dst]
        hit = (a != b) & (a > 0) & (b > 0)
        for x, y in zip(a[hit].tolist(), b[hit].tolist(), strict=True):
            pairs.add((min(x, y), max(x, y)))
    return pairs


FACE_OFFSETS = [(1, 0, 0), (0, 1, 0), (0, 0, 1)]
ALL_OFFSETS = [
    (dz, dy, dx)
    for dz in (-1, 0, 1)
    for dy in (-1, 0, 1)
    for dx in (-1, 0, 1)
    if (dz, dy, dx) > (0, 0, 0)
]


# ---------------------------------------------------------------------------------------------
# Determinism, shapes, dtypes
# ---------------------------------------------------------------------------------------------


def test_same_seed_gives_the_same_phantom_and_another_seed_another():
    first = make_sem_phantom(**SMALL, seed=4)
    again = make_sem_phantom(SemPhantomConfig(shape=(12, 64, 64), seed=4))
    other = make_sem_phantom(**SMALL, seed=5)
    assert np.array_equal(first.image, again.image)
    assert np.array_equal(first.instances, again.instances)
    assert first.truth == again.truth
    assert not np.array_equal(first.instances, other.instances)


def test_geometry_does_not_depend_on_the_cell_appearance():
    a = make_sem_phantom(**SMALL, seed=2, cell="A")
    b = make_sem_phantom(**SMALL, seed=2, cell="B")
    assert np.array_equal(a.instances, b.instances) and a.truth == b.truth
    assert not np.array_equal(a.image, b.image)


def test_shapes_dtypes_and_fields(phantom):
    shape = (32, 128, 128)
    assert phantom.image.shape == shape and phantom.image.dtype == np.uint8
    assert phantom.instances.shape == shape and phantom.instances.dtype == np.uint16
    assert phantom.contours.shape == shape and phantom.contours.dtype == bool
    assert phantom.cell_mask.shape == shape and phantom.cell_mask.all()
    assert np.array_equal(phantom.mask, phantom.instances > 0)
    assert phantom.voxel_size == (0.1, 0.04, 0.04)
    assert phantom.config == SemPhantomConfig()
    assert phantom.metadata["myofibril_axis"] == (0.0, 0.0, 1.0)
    assert phantom.metadata["sarcomere_length_um"] == 2.0
    assert phantom.metadata["slice_offsets"].shape == (32,)


def test_overrides_are_applied_and_normalised():
    p = make_sem_phantom(
        shape=[8, 40, 48], voxel_size=[0.1, 0.05, 0.05], myofibril_axis=[0, 3, 4], seed=1
    )
    assert p.image.shape == (8, 40, 48)
    assert p.config.shape == (8, 40, 48) and p.voxel_size == (0.1, 0.05, 0.05)
    np.testing.assert_allclose(p.metadata["myofibril_axis"], (0.0, 0.6, 0.8))


# ---------------------------------------------------------------------------------------------
# Exact ground truth
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["phantom", "oblique_phantom", "extracellular_phantom"])
def test_labels_are_exactly_the_voxel_centres_inside_each_spheroid(which, request):
    p = request.getfixturevalue(which)
    covered = 0
    for t in p.truth:
        box, inside = inside_spheroid(t, p.instances.shape, np.asarray(p.voxel_size))
        assert np.array_equal(p.instances[box] == t.label, inside), t.label
        covered += int(inside.sum())
    # Every labelled voxel was accounted for, so no voxel lies inside two spheroids.
    assert covered == np.count_nonzero(p.instances)


def test_truth_table_counts_match_the_label_volume(phantom):
    counts = np.bincount(phantom.instances.ravel())
    n = len(phantom.truth)
    assert n > 20 and counts.size == n + 1
    assert [t.label for t in phantom.truth] == list(range(1, n + 1))
    voxel_volume = float(np.prod(phantom.voxel_size))
    for t in phantom.truth:
        assert t.voxel_count == counts[t.label] > 0
        assert t.voxel_volume_um3 == pytest.approx(counts[t.label] * voxel_volume)
        a, b, b2 = t.semi_axes_um
        assert a >= b == b2 > 0
        assert t.volume_um3 == pytest.approx(4.0 / 3.0 * math.pi * a * b * b)
        assert np.linalg.norm(t.axis) == pytest.approx(1.0)


def test_volume_fraction_is_exactly_the_labelled_share_of_the_cell(phantom, extracellular_phantom):
    for p in (phantom, extracellular_phantom):
        expected = np.count_nonzero(p.instances) / np.count_nonzero(p.cell_mask)
        assert p.volume_fraction == expected


def test_interior_voxel_volume_matches_the_analytic_volume(phantom, oblique_phantom):
    # Interior objects have > 1000 voxels; the lattice-point count of a smooth convex body
    # of that size deviates from its volume by about 1 % at worst (measured max 1.6 % over
    # 20 seeds), so 3 % catches any rasterisation error (a half-voxel shift of the grid
    # changes the count by about 10 %).
    interior = [t for p in (phantom, oblique_phantom) for t in p.truth if not t.touches_border]
    assert len(interior) >= 15
    for t in interior:
        assert t.voxel_volume_um3 == pytest.approx(t.volume_um3, rel=0.03)


def test_interior_centroids_match_the_truth_centres(phantom, oblique_phantom):
    for p in (phantom, oblique_phantom):
        interior = [t for t in p.truth if not t.touches_border]
        labels = [t.label for t in interior]
        centres = ndimage.center_of_mass(p.instances > 0, p.instances, labels)
        voxel = np.asarray(p.voxel_size)
        for t, com in zip(interior, centres, strict=True):
            measured = (np.asarray(com) + 0.5) * voxel
            assert np.all(np.abs(measured - t.centre_um) < voxel), t.label


def test_principal_axis_from_second_moments_matches_the_truth_axis(phantom, oblique_phantom):
    checked = 0
    for p in (phantom, oblique_phantom):
        voxel = np.asarray(p.voxel_size)
        for t in p.truth:
            if t.touches_border or t.semi_axes_um[0] < 1.3 * t.semi_axes_um[1]:
                continue
            coords = np.argwhere(p.instances == t.label) * voxel
            coords -= coords.mean(axis=0)
            _, vectors = np.linalg.eigh(coords.T @ coords)
            assert abs(vectors[:, -1] @ np.asarray(t.axis)) > 0.95, t.label
            checked += 1
    assert checked >= 8


@pytest.mark.parametrize("which", ["phantom", "oblique_phantom"])
def test_touches_border_flags_the_objects_on_a_stack_face(which, request):
    p = request.getfixturevalue(which)
    faces = [
        p.instances[0],
        p.instances[-1],
        p.instances[:, 0],
        p.instances[:, -1],
        p.instances[:, :, 0],
        p.instances[:, :, -1],
    ]
    on_border = set(np.unique(np.concatenate([f.ravel() for f in faces])).tolist()) - {0}
    assert {t.label for t in p.truth if t.touches_border} == on_border
    assert 0 < len(on_border) < len(p.truth)


def test_angle_to_myofibril_matches_the_axes(oblique_phantom):
    fibre = np.asarray(oblique_phantom.metadata["myofibril_axis"])
    for t in oblique_phantom.truth:
        expected = math.degrees(math.acos(min(1.0, abs(float(np.dot(t.axis, fibre))))))
        assert t.angle_to_myofibril_deg == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("fibre_axis", [(0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 1.0)])
def test_mitochondria_mostly_follow_the_myofibril_axis(fibre_axis):
    p = make_sem_phantom(shape=(24, 96, 96), myofibril_axis=fibre_axis, seed=11)
    angles = np.array([t.angle_to_myofibril_deg for t in p.truth])
    # Rayleigh angle with scale 12 degrees: median 14 degrees; 8 % are drawn >= 45 degrees off.
    assert 8.0 < np.median(angles) < 25.0
    assert np.mean(angles >= 45.0) < 0.25


def test_touching_pairs_share_voxel_faces_and_nothing_else_touches(phantom, oblique_phantom):
    for p in (phantom, oblique_phantom):
        partners = {
            (min(t.label, t.touching_partner), max(t.label, t.touching_partner))
            for t in p.truth
            if t.touching_partner
        }
        for t in p.truth:
            if t.touching_partner:
                assert p.truth[t.touching_partner - 1].touching_partner == t.label
        assert partners, "the default phantom should hold touching pairs"
        assert adjacent_label_pairs(p.instances, ALL_OFFSETS) == partners
        assert adjacent_label_pairs(p.instances, FACE_OFFSETS) == partners


def test_no_touching_pairs_when_asked_for_none():
    p = make_sem_phantom(**SMALL, touching_pair_fraction=0.0, seed=1)
    assert all(t.touching_partner == 0 for t in p.truth)
    assert adjacent_label_pairs(p.instances, ALL_OFFSETS) == set()


# ---------------------------------------------------------------------------------------------
# Contours
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["phantom", "oblique_phantom"])
def test_contours_are_the_per_slice_inner_outline(which, request):
    p = request.getfixturevalue(which)
    expected = np.stack([find_boundaries(s, connectivity=1, mode="inner") for s in p.instances])
    assert np.array_equal(p.contours, expected)
    assert not np.any(p.contours & ~p.mask)
    # Removing the outline separates every touching pair within each slice.
    for k in range(p.instances.shape[0]):
        cores, _ = ndimage.label(p.mask[k] & ~p.contours[k])
        for t in p.truth:
            if t.touching_partner:
                own = np.unique(cores[p.instances[k] == t.label])
                other = np.unique(cores[p.instances[k] == t.touching_partner])
                assert not (set(own.tolist()) & set(other.tolist())) - {0}


# ---------------------------------------------------------------------------------------------
# Appearance
# ---------------------------------------------------------------------------------------------


def test_cell_a_histogram_has_the_two_published_peaks(phantom):
    peaks = histogram_peaks(phantom.image, 2)
    assert peaks[0] == pytest.approx(162.99, abs=4)  # mitochondria
    assert peaks[1] == pytest.approx(187.51, abs=4)  # myofibrils
    inside = phantom.image[phantom.mask].mean()
    outside = phantom.image[~phantom.mask].mean()
    assert inside < outside - 15


def test_cell_b_peaks_move_with_the_slice_drift(cells):
    b = cells["B"]
    offsets, gains = b.metadata["slice_offsets"], b.metadata["slice_gains"]
    mito, fibre = b.metadata["mitochondrion_intensity"], b.metadata["myofibril_intensity"]
    found = []
    for k in range(b.image.shape[0]):
        if b.mask[k].mean() < 0.15:
            continue
        peaks = histogram_peaks(b.image[k], 2)
        expected = [gains[k] * mito + offsets[k], gains[k] * fibre + offsets[k]]
        # Textures (Z-discs, clefts, membranes) are dark, so peaks sit a few levels low.
        np.testing.assert_allclose(peaks, expected, atol=7)
        found.append(peaks[1])
    assert len(found) >= 10
    assert np.ptp(found) > 15  # drift moves the peaks by more than their separation's half


def test_cells_a_and_b_differ_so_a_threshold_tuned_on_a_fails_on_b(cells):
    a, b = cells["A"], cells["B"]
    assert a.metadata["cell"] == "A" and b.metadata["cell"] == "B"
    assert b.config.seed == a.config.seed + 1
    assert abs(a.image.mean() - b.image.mean()) > 5
    assert np.std(b.metadata["slice_offsets"]) > 2 * np.std(a.metadata["slice_offsets"])

    def f_score(image, truth, threshold):
        predicted = image < threshold
        tp = np.count_nonzero(predicted & truth)
        return 2 * tp / (np.count_nonzero(predicted) + np.count_nonzero(truth))

    smooth_a = ndimage.gaussian_filter(a.image.astype(float), (0, 1.5, 1.5))
    smooth_b = ndimage.gaussian_filter(b.image.astype(float), (0, 1.5, 1.5))
    scores_a = [f_score(smooth_a, a.mask, t) for t in range(256)]
    best_a = int(np.argmax(scores_a))
    assert scores_a[best_a] > 0.9
    assert f_score(smooth_b, b.mask, best_a) < scores_a[best_a] - 0.15


def test_extracellular_space_adds_a_dark_and_a_bright_peak(extracellular_phantom):
    p = extracellular_phantom
    outside = ~p.cell_mask
    assert 0.1 < outside.mean() < 0.3
    # No mitochondrion in, or next to, extracellular space.
    grown = ndimage.binary_dilation(outside, structure=np.ones((3, 3, 3), bool))
    assert not np.any(grown & p.mask)
    values = p.image[outside]
    assert np.mean(values < 50) > 0.3 and np.mean(values > 210) > 0.2
    peaks = histogram_peaks(p.image, 4)
    dark, bright = p.metadata["extracellular_intensities"]
    expected = [dark, 162.99, 187.51, bright]
    np.testing.assert_allclose(peaks, expected, atol=6)
    assert 0.25 <= p.volume_fraction <= 0.26


# ---------------------------------------------------------------------------------------------
# Statistics at default parameters
# ---------------------------------------------------------------------------------------------


def test_default_volume_fraction_and_mean_volume_are_in_the_published_band(phantom):
    # The fraction lands in [target, target + 0.01] by construction.
    assert 0.25 <= phantom.volume_fraction <= 0.26
    assert 0.20 <= phantom.volume_fraction <= 0.30
    assert phantom.mean_volume == pytest.approx(0.9, rel=0.2)


@pytest.mark.parametrize("fraction", [0.1, 0.2])
def test_volume_fraction_follows_its_target(fraction):
    p = make_sem_phantom(**SMALL, volume_fraction=fraction, seed=3)
    assert fraction <= p.volume_fraction <= fraction + 0.01


def test_mean_volume_follows_its_target():
    p = make_sem_phantom(shape=(24, 96, 96), mean_volume=0.3, seed=2)
    assert p.mean_volume == pytest.approx(0.3, rel=0.2)


# ---------------------------------------------------------------------------------------------
# Study sizes, truth rows
# ---------------------------------------------------------------------------------------------


def test_study_configs_have_the_published_sizes():
    b = study_sem_config("B")
    assert b.shape == (690, 1024, 1024) and b.cell == "B"
    extent = np.asarray(b.shape) * np.asarray(b.voxel_size)
    np.testing.assert_allclose(extent, (48.4, 14.3, 14.3))
    assert (b.mean_volume, b.volume_fraction) == (0.9472, 0.2668)
    a = study_sem_config("A", seed=3)
    extent = np.asarray(a.shape) * np.asarray(a.voxel_size)
    np.testing.assert_allclose(extent, (28.0, 14.0, 14.0), rtol=0.005)
    assert (a.mean_volume, a.volume_fraction, a.seed) == (0.9367, 0.2004, 3)


def test_truth_rows_round_trip_through_csv(phantom, tmp_path):
    rows = truth_table_rows(phantom)
    assert len(rows) == len(phantom.truth)
    assert all(tuple(row) == SEM_TRUTH_COLUMNS for row in rows)
    path = tmp_path / "truth.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SEM_TRUTH_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with path.open(newline="") as handle:
        back = list(csv.DictReader(handle))
    first = phantom.truth[0]
    assert int(back[0]["label"]) == first.label
    assert float(back[0]["centre_x_um"]) == first.centre_um[2]
    assert float(back[0]["semi_axis_b_um"]) == first.semi_axes_um[1]


# ---------------------------------------------------------------------------------------------
# Empty and bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 1, 3), (3, 1, 1)])
def test_a_stack_too_small_for_any_object_is_empty(shape):
    # The target fraction of 1 to 3 voxels rounds down to 0 voxels, so nothing may be added.
    p = make_sem_phantom(shape=shape)
    assert p.truth == () and truth_table_rows(p) == []
    assert p.instances.shape == shape and not p.instances.any() and not p.contours.any()
    assert p.image.shape == shape and p.image.dtype == np.uint8
    assert p.volume_fraction == 0.0 and math.isnan(p.mean_volume)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"voxel_size": (0.1, 0.0, 0.04)}, "voxel_size must be three positive"),
        ({"voxel_size": (-0.1, 0.04, 0.04)}, "voxel_size must be three positive"),
        ({"voxel_size": (float("nan"), 0.04, 0.04)}, "voxel_size must be three positive"),
        ({"voxel_size": (0.1, 0.04)}, "voxel_size must be three positive"),
        ({"myofibril_axis": (0, 0, 0)}, "myofibril_axis must be a non-zero"),
        ({"shape": (32, 0, 128)}, "shape must be three integers >= 1"),
        ({"shape": (32.5, 128, 128)}, "shape must be three integers >= 1"),
        ({"shape": (128, 128)}, "shape must be three integers >= 1"),
        ({"volume_fraction": 0.0}, r"volume_fraction must be a number in \(0, 1\)"),
        ({"volume_fraction": 1.0}, r"volume_fraction must be a number in \(0, 1\)"),
        ({"volume_fraction": -0.2}, r"volume_fraction must be a number in \(0, 1\)"),
        ({"mean_volume": 0}, "mean_volume must be a number"),
        ({"sarcomere_length": -2.0}, "sarcomere_length must be a number"),
        ({"aspect_ratio": 0.5}, r"aspect_ratio must be a number in \[1, inf\]"),
        ({"angular_spread_deg": 120}, "angular_spread_deg"),
        ({"touching_pair_fraction": 1.5}, "touching_pair_fraction"),
        ({"cell": "C"}, "cell must be 'A' or 'B'"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"seed": 1.5}, "seed must be an integer"),
        ({"extracellular": "yes"}, "extracellular must be True or False"),
        ({"colour": "red"}, "unknown SEM phantom option"),
        ({"appearance": "bright"}, "appearance must be a SemAppearance"),
        (
            {"appearance": dataclasses.replace(SEM_CELL_APPEARANCE["A"], noise_sd=-1.0)},
            "appearance.noise_sd",
        ),
    ],
)
def test_bad_options_raise_a_one_line_seglab_error(options, match):
    with pytest.raises(SeglabError, match=match) as info:
        make_sem_phantom(**options)
    assert "\n" not in str(info.value)


def test_a_config_of_the_wrong_type_is_refused():
    with pytest.raises(SeglabError, match="config must be a SemPhantomConfig"):
        make_sem_phantom({"shape": (8, 8, 8)})


def test_study_config_refuses_an_unknown_cell():
    with pytest.raises(SeglabError, match="cell must be 'A' or 'B'"):
        study_sem_config("C")


def test_a_custom_appearance_replaces_the_preset():
    quiet = dataclasses.replace(
        SEM_CELL_APPEARANCE["A"], noise_sd=0.0, grain_sd=0.0, drift_sd=0.0, cristae_amplitude=0.0
    )
    noisy = make_sem_phantom(**SMALL, seed=1)
    calm = make_sem_phantom(**SMALL, seed=1, appearance=quiet)
    interior = calm.mask & ~ndimage.binary_dilation(calm.contours, iterations=2)
    assert calm.image[interior].std() < noisy.image[interior].std()


def test_progress_callback_reports_each_phase_up_to_completion():
    seen: dict[str, list[float]] = {}
    phantom = make_sem_phantom(
        shape=(8, 64, 64), progress=lambda phase, f: seen.setdefault(phase, []).append(f)
    )
    assert set(seen) == {"placing mitochondria", "drawing slices"}
    assert len(seen["drawing slices"]) == phantom.image.shape[0]
    for fractions in seen.values():
        assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] <= 1


def test_probability_maps_of_a_phantom_are_exact_then_degraded():
    from seglab.phantoms.sem import ideal_probability_maps, noisy_probability_maps

    phantom = make_sem_phantom(shape=(8, 48, 48), seed=0)
    obj, con = ideal_probability_maps(phantom)
    np.testing.assert_array_equal(obj == 255, phantom.instances > 0)
    np.testing.assert_array_equal(con == 255, phantom.contours)
    assert obj.dtype == con.dtype == np.uint8 and set(np.unique(obj)) <= {0, 255}
    noisy_obj, noisy_con = noisy_probability_maps(phantom, seed=1, missing_contour=0.5)
    assert noisy_obj.dtype == np.uint8 and not np.array_equal(noisy_obj, obj)
    assert (noisy_con[con == 255] >= 128).mean() < (con[con == 255] >= 128).mean()
    with pytest.raises(SeglabError, match="missing_contour"):
        noisy_probability_maps(phantom, missing_contour=1.0)
