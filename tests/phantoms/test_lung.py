import numpy as np
import pytest

from seglab.errors import SeglabError
from seglab.io.labels import LUNG_CLASSES
from seglab.phantoms.lung import (
    ARTERY,
    RESIZED_SIZE_PX,
    LungPhantomConfig,
    make_lung_phantom,
)


def test_same_seed_same_phantom_other_seed_other_phantom():
    a, b = make_lung_phantom(seed=4), make_lung_phantom(seed=4)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = make_lung_phantom(seed=5)
    assert not np.array_equal(a.labels, c.labels)


@pytest.mark.parametrize("size", [256, (96, 200), 64])
def test_shapes_and_dtypes(size):
    p = make_lung_phantom(size=size)
    hw = (size, size) if isinstance(size, int) else size
    assert p.image.shape == (*hw, 3) and p.image.dtype == np.uint8
    assert p.labels.shape == hw and p.labels.dtype == np.uint8
    assert p.label_rgb.shape == (*hw, 3) and p.colour_table == LUNG_CLASSES


@pytest.mark.parametrize("seed", range(12))
def test_every_class_appears_at_the_default_size(seed):
    assert set(np.unique(make_lung_phantom(seed=seed).labels)) == set(range(6))


def test_every_class_appears_at_the_study_size():
    p = make_lung_phantom(LungPhantomConfig.study(seed=0))
    assert p.labels.shape == (RESIZED_SIZE_PX, RESIZED_SIZE_PX)
    assert set(np.unique(p.labels)) == set(range(6))
    assert 0.005 < p.class_fractions[ARTERY] < 0.03


def test_the_artery_is_the_rare_class_of_one_to_two_percent():
    fractions = np.array([make_lung_phantom(seed=s).class_fractions for s in range(8)])
    mean = fractions.mean(0)
    assert 0.01 <= mean[ARTERY] <= 0.02
    assert mean[ARTERY] == mean[1:].min()  # the rarest structure class
    assert mean[0] > 0.5  # parenchyma dominates, as in the study's images


def test_class_fractions_and_colour_labels_match_the_label_map():
    p = make_lung_phantom(seed=2)
    counts = np.bincount(p.labels.ravel(), minlength=6)
    np.testing.assert_allclose(p.class_fractions, counts / p.labels.size)
    np.testing.assert_array_equal(LUNG_CLASSES.decode(p.label_rgb), p.labels)


def test_stain_signatures_differ_but_single_pixels_stay_ambiguous():
    p = make_lung_phantom(seed=0, size=512)
    pixels = p.image.reshape(-1, 3).astype(float)
    labels = p.labels.ravel()
    means = np.stack([pixels[labels == c].mean(0) for c in range(6)])
    distances = np.linalg.norm(means[:, None] - means[None], axis=-1)[np.triu_indices(6, 1)]
    assert distances.min() > 8  # every class has its own mean colour
    # a nearest-mean-colour pixel classifier is far from perfect: context is needed
    predicted = ((pixels[:, None, :] - means) ** 2).sum(-1).argmin(1)
    assert (predicted == labels).mean() < 0.9


def test_noise_changes_the_image_but_not_the_labels():
    a = make_lung_phantom(seed=1, noise=0.0)
    b = make_lung_phantom(seed=1, noise=12.0)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, b.image)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"size": 10}, "64"),
        ({"size": 0}, "64"),
        ({"size": (64, 64, 3)}, "size"),
        ({"noise": -1.0}, "noise"),
        ({"colour": "red"}, "unknown lung phantom option"),
    ],
)
def test_bad_options_are_clear_errors(overrides, match):
    with pytest.raises(SeglabError, match=match):
        make_lung_phantom(**overrides)


def test_a_config_of_the_wrong_type_is_a_clear_error():
    with pytest.raises(SeglabError, match="config must be a LungPhantomConfig"):
        make_lung_phantom({"size": 64})
