import numpy as np
import pytest
import torch

from seglab.bundle.writers import LabelMapWriter
from seglab.errors import SeglabError
from seglab.io.images import read_image


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_writes_the_map_without_swapping_axes(tmp_path, suffix):
    labels = torch.arange(6 * 4, dtype=torch.float32).reshape(1, 6, 4) % 6
    writer = LabelMapWriter()
    writer.set_data_array(labels)
    writer.set_metadata({"affine": np.eye(3)})
    writer.write(tmp_path / f"a{suffix}")
    back = read_image(tmp_path / f"a{suffix}").array
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels[0].numpy().astype(np.uint8))


@pytest.mark.parametrize(
    ("array", "match"),
    [(np.zeros((2, 2, 4, 4)), "one 2D map or stack"), (np.full((4, 4), 300), "0..255")],
)
def test_rejects_scores_and_big_values(array, match):
    with pytest.raises(SeglabError, match=match):
        LabelMapWriter().set_data_array(array)


def test_writer_keeps_the_stack_and_spacing(tmp_path):
    writer = LabelMapWriter()
    writer.set_data_array(torch.tensor([[[[0.0, 2.0]], [[1.0, 255.0]]]]))  # (1, 2, 1, 2)
    writer.set_metadata({"spacing": np.array([0.1, 0.04, 0.04])})
    writer.write(tmp_path / "s.tif")
    image = read_image(tmp_path / "s.tif")
    np.testing.assert_array_equal(image.array, [[[0, 2]], [[1, 255]]])
    assert image.array.dtype == np.uint8
    np.testing.assert_allclose(image.spacing, (0.1, 0.04, 0.04))
    with pytest.raises(SeglabError, match="0..255"):
        writer.set_data_array(np.full((1, 2, 2), 300.0))
