import numpy as np
import pytest

from seglab.d4 import D4, d4_element, d4_merge, d4_orbit, d4_subset
from seglab.errors import SeglabError


def test_the_group_has_eight_distinct_elements_on_an_asymmetric_image():
    x = np.arange(12).reshape(3, 4)
    images = {e.apply(x).tobytes() + bytes(e.apply(x).shape) for e in D4}
    assert len(images) == 8
    assert [e.name for e in D4][:2] == ["rot0", "rot90"] and D4[4].name == "rot0+flip"


@pytest.mark.parametrize("element", D4, ids=lambda e: e.name)
def test_each_inverse_undoes_its_transform_with_channels(element):
    x = np.random.default_rng(element.index).random((3, 5, 7))
    y = element.apply(x)
    assert y.shape[0] == 3
    np.testing.assert_array_equal(element.invert(y), x)


def test_elements_match_their_definitions():
    x = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(D4[1].apply(x), np.rot90(x))
    np.testing.assert_array_equal(D4[4].apply(x), x[:, ::-1])
    np.testing.assert_array_equal(D4[6].apply(x), x[::-1, :])  # rot180 + hflip = vertical flip


def test_group_is_closed_under_composition():
    x = np.random.default_rng(0).random((4, 4))
    orbit = {e.apply(x).tobytes() for e in D4}
    for a in D4:
        for b in D4:
            assert a.apply(b.apply(x)).tobytes() in orbit


def test_tta_merge_of_an_equivariant_prediction_is_exact():
    x = np.random.default_rng(1).random((2, 6, 6)).astype(np.float32)
    for name, n in (("off", 1), ("flips", 4), ("all", 8)):
        elements = d4_subset(name)
        assert len(elements) == n
        preds = [e.apply(x) * 2 for e in elements]  # an "equivariant model": doubles its input
        np.testing.assert_allclose(d4_merge(preds, elements), x * 2, rtol=1e-6)


def test_orbit_returns_all_eight():
    assert len(d4_orbit(np.zeros((2, 3)))) == 8


def test_bad_input_is_a_clear_error():
    with pytest.raises(SeglabError, match="0..7"):
        d4_element(8)
    with pytest.raises(SeglabError, match="unknown test-time augmentation"):
        d4_subset("rotations")
    with pytest.raises(SeglabError, match="at least 2 axes"):
        d4_orbit(np.zeros(3))
    with pytest.raises(SeglabError, match="2 predictions for 1 transforms"):
        d4_merge([np.zeros((2, 2))] * 2, d4_subset("off"))
