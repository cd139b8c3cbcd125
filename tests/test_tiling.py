import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seglab.errors import SeglabError
from seglab.tiling import (
    PRESETS,
    extract_tiles,
    gaussian_weights,
    pad_image,
    plan_grid,
    plan_preset,
    stitch,
    stitch_labels,
    tile_view,
)


@pytest.mark.parametrize(
    ("name", "n_tiles", "grid", "padded"),
    [
        ("no-overlap", 16, (4, 4), (1024, 1024)),
        ("paper-64", 64, (8, 8), (1152, 1152)),
        ("uniform-81", 81, (9, 9), (1280, 1280)),
    ],
)
def test_preset_tile_counts_on_the_study_image(name, n_tiles, grid, padded):
    plan = plan_preset(name, (1024, 1024))
    assert plan.n_tiles == n_tiles
    assert plan.grid_shape == grid
    assert plan.padded_shape == padded
    assert plan.extra_padding == (0, 0)
    assert len(plan.origins) == n_tiles


def test_no_overlap_covers_every_pixel_once():
    cov = plan_preset("no-overlap").coverage()
    assert cov.shape == (1024, 1024)
    assert (cov == 1).all()


def test_uniform_81_covers_every_pixel_two_by_two_times():
    cov = plan_preset("uniform-81").coverage()
    assert (cov == 4).all()


def test_paper_64_leaves_the_outer_band_covered_once_per_axis():
    # Hand count: pad 64, tiles at 0, 128, ..., 896 in a 1152 frame. Image rows 0..63 lie in
    # the first tile only, rows 64..959 in two tiles, rows 960..1023 in the last tile only.
    cov = plan_preset("paper-64").coverage()
    assert cov[0, 0] == 1 and cov[0, 500] == 2 and cov[500, 500] == 4
    assert (cov[64:960, 64:960] == 4).all()
    assert (cov[:64, :64] == 1).all() and (cov[960:, 960:] == 1).all()
    assert (cov[:64, 64:960] == 2).all()
    assert set(np.unique(cov).tolist()) == {1, 2, 4}


@pytest.mark.parametrize("shape", [(1000, 1000), (517, 333), (100, 70), (256, 257), (1, 1)])
def test_uniform_coverage_survives_sizes_not_divisible_by_the_stride(shape):
    plan = plan_grid(shape, 256, 128, 128)
    assert (plan.coverage() == 4).all()
    assert (np.array(plan.padded_shape) - 256) % 128 == pytest.approx(0)


def test_grid_extends_padding_at_the_far_side_only():
    plan = plan_grid((1000, 1000), 256, 128, 128)
    # padded 1256 -> 9 tiles need 1280: 24 px extra at bottom/right
    assert plan.extra_padding == (24, 24)
    assert plan.pad_width == ((128, 152), (128, 152))
    assert plan.n_tiles == 81


@pytest.mark.parametrize("shape", [(37, 53), (129, 255), (300, 301)])
@pytest.mark.parametrize("preset", list(PRESETS))
def test_stitch_of_extracted_identity_scores_gives_the_image_back(shape, preset):
    rng = np.random.default_rng(0)
    image = rng.random((3, *shape)).astype(np.float32)
    plan = plan_preset(preset, shape)
    tiles = extract_tiles(image, plan)
    assert tiles.shape == (plan.n_tiles, 3, 256, 256)
    summed = stitch(tiles, plan)
    np.testing.assert_allclose(summed, image * plan.coverage(), rtol=1e-6)
    np.testing.assert_allclose(stitch(tiles, plan, average=True), image, rtol=1e-6)
    gauss = stitch(tiles, plan, weighting="gaussian", average=True)
    np.testing.assert_allclose(gauss, image, rtol=1e-5)


def test_stitch_labels_takes_argmax_of_the_sum():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, (200, 150))
    onehot = np.eye(6, dtype=np.float32)[labels].transpose(2, 0, 1)
    plan = plan_preset("uniform-81", labels.shape)
    out = stitch_labels(extract_tiles(onehot, plan), plan)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, labels)


def test_stitch_sums_scores_of_overlapping_tiles():
    # Two classes; every tile votes for class 1 weakly except one tile voting class 0 strongly.
    plan = plan_grid((8, 8), 4, 2, 0)
    scores = np.zeros((plan.n_tiles, 2, 4, 4), np.float32)
    scores[:, 1] = 1.0
    scores[0, 0] = 10.0  # tile at origin (0, 0)
    labels = stitch_labels(scores, plan)
    # pixel (0, 0) is covered only by tile 0: class 0; pixel (3, 3) by 4 tiles: 10 vs 4 -> class 0
    assert labels[0, 0] == 0 and labels[3, 3] == 0
    # pixel (4, 4) is not covered by tile 0
    assert labels[4, 4] == 1


def test_tile_view_is_a_view_into_the_padded_image():
    image = np.arange(64 * 48, dtype=np.float32).reshape(64, 48)
    plan = plan_grid(image.shape, 16, 8, 0)
    view = tile_view(image, plan)
    assert view.shape == (*plan.grid_shape, 16, 16)
    assert np.shares_memory(view, image)
    np.testing.assert_array_equal(view[1, 2], image[8:24, 16:32])


def test_tiles_of_a_stack_are_cut_slice_by_slice():
    stack = np.random.default_rng(2).random((5, 70, 90))
    plan = plan_grid(stack.shape, 32, 16, 16)
    tiles = extract_tiles(stack, plan)
    assert tiles.shape == (plan.n_tiles, 5, 32, 32)
    for z in range(5):
        np.testing.assert_array_equal(tiles[:, z], extract_tiles(stack[z], plan))
    np.testing.assert_allclose(stitch(tiles, plan, average=True), stack)


def test_mirror_padding_reflects_without_repeating_the_edge():
    image = np.array([[1, 2, 3]], dtype=np.int32).repeat(3, 0)
    plan = plan_grid(image.shape, 3, 1, 2)
    padded = pad_image(image, plan)
    np.testing.assert_array_equal(padded[2], [3, 2, 1, 2, 3, 2, 1])


def test_gaussian_weights_peak_in_the_middle():
    w = gaussian_weights((5, 5), 0.25)
    assert w[2, 2] == 1 and w.min() > 0 and w[0, 0] < w[1, 1] < w[2, 2]


@pytest.mark.parametrize("preset", ["no-overlap", "uniform-81", "paper-64"])
@pytest.mark.parametrize("shape", [(512, 512), (300, 430)])
def test_summing_stitcher_agrees_with_monai_sliding_window_inference(preset, shape):
    torch = pytest.importorskip("torch")
    from monai.inferers import sliding_window_inference

    rng = np.random.default_rng(3)
    image = rng.random((3, *shape)).astype(np.float32)
    weight = torch.from_numpy(rng.normal(size=(6, 3, 1, 1)).astype(np.float32))

    def net(x):  # a per-pixel linear "network" plus a position-dependent term per tile
        ramp = torch.linspace(0, 1, x.shape[-1]).view(1, 1, 1, -1)
        return torch.nn.functional.conv2d(x, weight) + ramp

    plan = plan_preset(preset, shape)
    tiles = extract_tiles(image, plan)
    with torch.inference_mode():
        tile_scores = net(torch.from_numpy(tiles)).numpy()
        padded = torch.from_numpy(pad_image(image, plan))[None]
        overlap = 1 - plan.stride[0] / plan.tile_size[0]
        monai_out = sliding_window_inference(
            padded, plan.tile_size, 16, net, overlap=overlap, mode="constant"
        )[0].numpy()
    (top, _), (left, _) = plan.pad_width
    monai_out = monai_out[:, top : top + shape[0], left : left + shape[1]]
    ours = stitch(tile_scores, plan)
    # MONAI averages (sum / count); ours sums: same once divided by the coverage, same argmax
    np.testing.assert_allclose(ours / plan.coverage(), monai_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(stitch_labels(tile_scores, plan), monai_out.argmax(0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_shape": (10,)}, "at least 2 spatial axes"),
        ({"image_shape": (0, 10)}, "empty image"),
        ({"image_shape": (10, 10), "tile_size": 0}, "tile_size must be positive"),
        ({"image_shape": (10, 10), "tile_size": (4, 4, 4)}, "must have 2 values"),
        ({"image_shape": (10, 10), "tile_size": "big"}, "integer or a pair"),
        ({"image_shape": (10, 10), "tile_size": 4, "stride": 5}, "leaves pixels uncovered"),
        ({"image_shape": (10, 10), "tile_size": 4, "stride": 0}, "stride must be positive"),
        ({"image_shape": (10, 10), "padding": -1}, "padding must be >= 0"),
        ({"image_shape": (10, 10), "pad_mode": "wrap"}, "unknown pad_mode"),
    ],
)
def test_bad_plans_are_clear_errors(kwargs, match):
    with pytest.raises(SeglabError, match=match):
        plan_grid(**kwargs)


def test_bad_preset_and_mismatched_arrays_are_clear_errors():
    with pytest.raises(SeglabError, match="unknown tiling preset 'overlap'.*uniform-81"):
        plan_preset("overlap")
    plan = plan_grid((32, 32), 16)
    with pytest.raises(SeglabError, match="does not match the plan"):
        extract_tiles(np.zeros((31, 32)), plan)
    with pytest.raises(SeglabError, match=r"expected \(4, \.\.\., 16, 16\)"):
        stitch(np.zeros((3, 2, 16, 16)), plan)
    with pytest.raises(SeglabError, match="class_axis"):
        stitch_labels(np.zeros((4, 16, 16)), plan)
    with pytest.raises(SeglabError, match="unknown weighting"):
        stitch(np.zeros((4, 1, 16, 16)), plan, weighting="max")


def test_describe_reports_count_and_coverage():
    text = plan_preset("paper-64").describe()
    assert "64 tiles (8 x 8)" in text and "coverage 1..4" in text


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 90),
    w=st.integers(1, 90),
    tile=st.integers(1, 40),
    stride_fraction=st.floats(0.05, 1.0),
    padding=st.integers(0, 30),
    mode=st.sampled_from(["mirror", "symmetric", "edge", "constant"]),
)
def test_any_plan_covers_every_pixel_and_round_trips(h, w, tile, stride_fraction, padding, mode):
    stride = max(1, int(tile * stride_fraction))
    plan = plan_grid((h, w), tile, stride, padding, mode)
    cov = plan.coverage()
    assert cov.min() >= 1
    assert cov.sum() <= plan.n_tiles * tile * tile
    # the grid ends exactly at the padded edge
    assert all((p - tile) % s == 0 for p, s in zip(plan.padded_shape, plan.stride, strict=True))
    image = np.random.default_rng(h * 1000 + w).random((2, h, w)).astype(np.float32)
    tiles = extract_tiles(image, plan)
    np.testing.assert_allclose(stitch(tiles, plan, average=True), image, rtol=1e-5, atol=1e-6)
