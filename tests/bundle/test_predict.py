import numpy as np
import pytest
import torch

from seglab.bundle import (
    TilingInferer,
    predict_image,
    predict_stack,
    probability_maps,
    write_label_map,
    write_probability_maps,
)
from seglab.errors import SeglabError
from seglab.io.images import read_image


def _echo(x: torch.Tensor) -> torch.Tensor:
    """A network whose output channels are its input channels."""
    return x


def _slice_numbered_stack(depth: int, size: int = 8) -> np.ndarray:
    """Slice z holds the value z everywhere, so an echoed channel names the slice it came from."""
    return np.broadcast_to(np.arange(depth, dtype=np.float32)[:, None, None], (depth, size, size))


# --------------------------------------------------------------- predict_image
def test_predict_image_equals_the_network_on_one_tile():
    torch.manual_seed(0)
    network = torch.nn.Conv2d(2, 3, 3, padding=1).eval()
    image = np.random.default_rng(0).random((2, 16, 16)).astype(np.float32)
    out = predict_image(network, image, TilingInferer(tile_size=16))
    assert out.shape == (3, 16, 16) and out.dtype == np.float32
    expected = network(torch.from_numpy(image)[None])[0].detach().numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_predict_image_probabilities_sum_to_one():
    torch.manual_seed(0)
    network = torch.nn.Conv2d(1, 4, 1).eval()
    image = np.random.default_rng(0).random((1, 20, 28)).astype(np.float32)
    inferer = TilingInferer(tile_size=8, stride=4, padding=4, activation="softmax", average=True)
    probabilities = predict_image(network, image, inferer)
    np.testing.assert_allclose(probabilities.sum(axis=0), 1, atol=1e-5)


# --------------------------------------------------------------- predict_stack (2.5D)
@pytest.mark.parametrize(
    ("num_slices", "expected"),
    [
        (1, [[0], [1], [2], [3]]),
        (3, [[1, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 2]]),
        (5, [[2, 1, 0, 1, 2], [1, 0, 1, 2, 3], [0, 1, 2, 3, 2], [1, 2, 3, 2, 1]]),
    ],
)
@pytest.mark.parametrize("slices_per_batch", [1, 3, None])
def test_predict_stack_feeds_the_adjacent_slices(num_slices, expected, slices_per_batch):
    calls = []
    out = predict_stack(
        _echo,
        _slice_numbered_stack(4),
        TilingInferer(tile_size=4, stride=2, padding=2, average=True),
        num_slices=num_slices,
        progress=lambda done, total: calls.append((done, total)),
        slices_per_batch=slices_per_batch,
    )
    assert out.shape == (num_slices, 4, 8, 8) and out.dtype == np.float32
    # out[c, z] is channel c of slice z's input: slice expected[z][c], everywhere
    sources = np.asarray(expected, np.float32).T  # (channel, z)
    np.testing.assert_allclose(out, np.broadcast_to(sources[:, :, None, None], out.shape))
    assert calls[-1] == (4, 4)
    assert [done for done, _ in calls] == sorted({done for done, _ in calls})


def test_predict_stack_of_one_slice_repeats_it():
    out = predict_stack(_echo, np.full((1, 6, 6), 7, np.float32), TilingInferer(tile_size=6), 3)
    np.testing.assert_array_equal(out, np.full((3, 1, 6, 6), 7, np.float32))


def test_predict_stack_matches_predict_image_per_slice():
    torch.manual_seed(1)
    network = torch.nn.Conv2d(3, 2, 3, padding=1).eval()
    stack = np.random.default_rng(2).random((5, 12, 12)).astype(np.float32)
    inferer = TilingInferer(tile_size=8, stride=4, padding=4, tta="flips")
    out = predict_stack(network, stack[None], inferer, num_slices=3)
    middle = predict_image(network, stack[1:4], inferer)
    np.testing.assert_allclose(out[:, 2], middle, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("stack", "kwargs", "match"),
    [
        (np.zeros((8, 8), np.float32), {}, r"\(Z, H, W\)"),
        (np.zeros((2, 3, 8, 8), np.float32), {}, r"one-channel stack"),
        (np.zeros((0, 8, 8), np.float32), {}, "empty stack"),
        (np.zeros((3, 8, 8), np.float32), {"num_slices": 2}, "num_slices must be 1, 3 or 5"),
        (np.zeros((3, 8, 8), np.float32), {"slices_per_batch": 0}, "slices_per_batch"),
        (np.zeros((3, 8, 8), np.float32), {"progress": 5}, "progress"),
        ([[[0.0]]], {}, "numeric array"),
        (np.zeros((3, 8, 8), "U1"), {}, "numeric array"),
    ],
)
def test_predict_stack_rejects_bad_input(stack, kwargs, match):
    with pytest.raises(SeglabError, match=match):
        predict_stack(_echo, stack, TilingInferer(tile_size=8), **kwargs)


def test_channel_count_must_match_the_network():
    network = torch.nn.Conv2d(1, 2, 1)
    with pytest.raises(SeglabError, match="takes 1 input channels but num_slices=3"):
        predict_stack(network, np.zeros((3, 8, 8), np.float32), TilingInferer(tile_size=8), 3)
    with pytest.raises(SeglabError, match="takes 1 input channels"):
        predict_image(network, np.zeros((2, 8, 8), np.float32), TilingInferer(tile_size=8))


@pytest.mark.parametrize(
    ("image", "match"),
    [(np.zeros((8, 8), np.float32), r"\(C, H, W\)"), (np.zeros((1, 0, 8), np.float32), "empty")],
)
def test_predict_image_rejects_bad_input(image, match):
    with pytest.raises(SeglabError, match=match):
        predict_image(_echo, image, TilingInferer(tile_size=8))


def test_an_inferer_that_changes_the_size_is_reported():
    with pytest.raises(SeglabError, match="spatial shape"):
        predict_image(_echo, np.zeros((1, 8, 8), np.float32), lambda x, net: x[..., :4, :4])


# --------------------------------------------------------------- probability maps
def test_probability_maps_uint8_and_float32():
    p = np.array([[0.0, 0.2, 0.5], [0.998, 1.0, 1.00001]], np.float32)
    np.testing.assert_array_equal(
        probability_maps(p), np.array([[0, 51, 128], [254, 255, 255]], np.uint8)
    )
    maps = probability_maps(p, dtype="float32")
    assert maps.dtype == np.float32 and maps.max() == 1.0
    np.testing.assert_allclose(maps[0], p[0])
    np.testing.assert_allclose(
        probability_maps(np.array([0, 51, 255], np.uint8), "float32"), [0, 0.2, 1]
    )


def test_probability_maps_of_an_empty_array_are_empty():
    assert probability_maps(np.zeros((0, 4), np.float32)).shape == (0, 4)


@pytest.mark.parametrize(
    ("probabilities", "dtype", "match"),
    [
        (np.array([0.5, 1.1]), "uint8", r"\[0, 1\]"),
        (np.array([-0.2, 0.5]), "float32", r"\[0, 1\]"),
        (np.array([np.nan]), "uint8", "NaN"),
        (np.array([0.5]), "float16", "dtype"),
        (np.array([300]), "uint8", "uint8 0..255"),
    ],
)
def test_probability_maps_reject_bad_values(probabilities, dtype, match):
    with pytest.raises(SeglabError, match=match):
        probability_maps(probabilities, dtype=dtype)


# --------------------------------------------------------------- writing
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_probability_stack_round_trips_through_tiff(tmp_path, dtype):
    p = np.random.default_rng(0).random((3, 10, 12)).astype(np.float32)
    maps = probability_maps(p, dtype=dtype)
    path = write_probability_maps(tmp_path / "mito.tif", maps, spacing=(0.07, 0.02, 0.02))
    back = read_image(path)
    assert back.axes == "ZYX" and back.array.dtype == maps.dtype
    np.testing.assert_array_equal(back.array, maps)
    np.testing.assert_allclose(back.spacing, (0.07, 0.02, 0.02))
    assert list(tmp_path.iterdir()) == [path]  # nothing left behind by the atomic write


def test_probability_map_of_one_image_is_a_2d_tiff(tmp_path):
    maps = np.array([[0, 255], [128, 3]], np.uint8)
    back = read_image(write_probability_maps(tmp_path / "p.tiff", maps))
    assert back.axes == "YX" and back.spacing is None
    np.testing.assert_array_equal(back.array, maps)


@pytest.mark.parametrize(
    ("name", "maps", "match"),
    [
        ("p.png", np.zeros((4, 4), np.uint8), "TIFF"),
        ("p.tif", np.zeros((2, 3, 4, 4), np.uint8), "one class at a time"),
        ("p.tif", np.zeros((4, 4), np.float64), "uint8 or float32"),
        ("p.tif", np.full((4, 4), 2, np.float32), r"\[0, 1\]"),
    ],
)
def test_write_probability_maps_rejects(tmp_path, name, maps, match):
    with pytest.raises(SeglabError, match=match):
        write_probability_maps(tmp_path / name, maps)


@pytest.mark.parametrize(
    ("name", "labels", "dtype"),
    [
        ("labels.png", np.array([[0, 5], [2, 255]], np.int64), np.uint8),
        ("labels.png", np.array([[0, 300], [2, 1]], np.int32), np.uint16),
        ("labels.tif", np.arange(2 * 3 * 4).reshape(2, 3, 4) * 100, np.uint16),
        ("labels.tif", np.array([[True, False]]), np.uint8),
    ],
)
def test_label_map_round_trip(tmp_path, name, labels, dtype):
    back = read_image(write_label_map(tmp_path / name, labels)).array
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, labels)


@pytest.mark.parametrize(
    ("name", "labels", "match"),
    [
        ("l.png", np.zeros((2, 4, 4), np.uint8), r"\.tif"),
        ("l.png", np.zeros((4, 4), np.float32), "argmax"),
        ("l.png", np.zeros((2, 2, 4, 4), np.uint8), r"\(H, W\) or \(Z, H, W\)"),
        ("l.png", np.array([[-1, 0]]), "0..65535"),
        ("l.tif", np.array([[70000, 0]]), "0..65535"),
        ("l.png", np.zeros((0, 4), np.uint8), "empty"),
    ],
)
def test_write_label_map_rejects(tmp_path, name, labels, match):
    with pytest.raises(SeglabError, match=match):
        write_label_map(tmp_path / name, labels)
