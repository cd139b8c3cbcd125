import numpy as np
import pytest
from skimage.transform import downscale_local_mean
from skimage.transform import resize as sk_resize

from seglab.errors import SeglabError
from seglab.resize import area_matrix, resize_image, resize_labels


def test_area_matrix_rows_sum_to_one_and_cover_the_input_once():
    m = area_matrix(2475, 1024).toarray()
    np.testing.assert_allclose(m.sum(1), 1.0)
    # every input pixel contributes a total area equal to one input pixel (in output units)
    np.testing.assert_allclose(m.sum(0), 1024 / 2475)


def test_area_resize_matches_block_means_for_integer_factors():
    img = np.random.default_rng(0).random((64, 48, 3))
    out = resize_image(img, (16, 12), channel_axis=-1)
    np.testing.assert_allclose(out, downscale_local_mean(img, (4, 4, 1)))


def test_area_resize_of_the_study_size_preserves_the_mean_and_constants():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (2475, 2475), dtype=np.uint8)
    out = resize_image(img.astype(np.float64), 1024)
    assert out.shape == (1024, 1024)
    assert out.mean() == pytest.approx(img.mean(), rel=1e-9)
    const = resize_image(np.full((2475, 2475, 3), 77, np.uint8), 1024, channel_axis=-1)
    assert const.dtype == np.uint8 and (const == 77).all()


def test_channel_first_and_channel_last_agree():
    img = np.random.default_rng(2).random((3, 50, 40)).astype(np.float32)
    a = resize_image(img, (20, 17), channel_axis=0)
    b = resize_image(np.moveaxis(img, 0, -1), (20, 17), channel_axis=-1)
    np.testing.assert_allclose(a, np.moveaxis(b, -1, 0), rtol=1e-6)


def test_linear_resize_uses_scikit_image():
    img = np.random.default_rng(3).random((40, 40))
    out = resize_image(img, (25, 25), method="linear")
    ref = sk_resize(img, (25, 25), order=1, preserve_range=True, anti_aliasing=True)
    np.testing.assert_allclose(out, ref)


def test_nearest_label_resize_matches_scikit_image_order_0():
    labels = np.random.default_rng(4).integers(0, 6, (2475, 2475)).astype(np.uint8)
    out = resize_labels(labels, 1024)
    ref = sk_resize(labels, (1024, 1024), order=0, preserve_range=True, anti_aliasing=False)
    np.testing.assert_array_equal(out, ref.astype(np.uint8))
    assert set(np.unique(out)) <= set(np.unique(labels))


def test_label_resize_carries_leading_axes():
    stack = np.random.default_rng(5).integers(0, 3, (4, 30, 30))
    out = resize_labels(stack, (10, 10))
    assert out.shape == (4, 10, 10)
    np.testing.assert_array_equal(out[2], resize_labels(stack[2], (10, 10)))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: resize_image(np.zeros((4, 4)), 0), "two positive sizes"),
        (lambda: resize_image(np.zeros((4, 4, 3)), 2), "pass channel_axis"),
        (lambda: resize_image(np.zeros((0, 4)), 2), "empty image"),
        (lambda: resize_image(np.full((4, 4), np.nan), 2), "NaN"),
        (lambda: resize_image(np.zeros((4, 4)), 2, method="cubic"), "unknown resize method"),
        (lambda: resize_labels(np.zeros((4, 4)), 2), "must hold integers"),
        (lambda: resize_labels(np.zeros((4,), int), 2), r"\(\.\.\., H, W\)"),
    ],
)
def test_bad_input_is_a_clear_error(call, match):
    with pytest.raises(SeglabError, match=match):
        call()
