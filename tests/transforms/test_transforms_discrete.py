"""seglab's AsDiscrete(d) give exactly MONAI's results (only the arg-max is computed otherwise)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import AsDiscrete as MonaiAsDiscrete
from monai.transforms import AsDiscreted as MonaiAsDiscreted

from seglab.transforms import AsDiscrete, AsDiscreted


def _scores(seed: int = 0, shape: tuple[int, ...] = (6, 17, 23)) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=shape).astype(np.float32)
    scores[:, 0, :5] = 1.0  # ties: the first maximum wins
    return torch.from_numpy(scores)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"argmax": True},
        {"argmax": True, "to_onehot": 6},
        {"argmax": True, "keepdim": False},
        {"argmax": True, "dim": 1},
        {"to_onehot": 6},
        {"threshold": 0.5},
        {"argmax": True, "dtype": torch.uint8},
    ],
)
def test_array_transform_equals_monai(kwargs):
    scores = _scores()
    labels = torch.randint(0, 6, (1, 17, 23)).float()
    source = labels if "to_onehot" in kwargs and "argmax" not in kwargs else scores
    expected = MonaiAsDiscrete(**kwargs)(source)
    got = AsDiscrete(**kwargs)(source)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(got, expected)


def test_numpy_input_and_meta_data_are_kept_as_monai_keeps_them():
    array = _scores(1).numpy()
    expected = MonaiAsDiscrete(argmax=True)(array)
    got = AsDiscrete(argmax=True)(array)
    assert type(got) is type(expected) and np.array_equal(got, expected)
    meta = MetaTensor(_scores(2), meta={"filename_or_obj": "a.png"})
    expected = MonaiAsDiscrete(argmax=True, to_onehot=6)(meta)
    got = AsDiscrete(argmax=True, to_onehot=6)(meta)
    assert isinstance(got, MetaTensor) and got.meta["filename_or_obj"] == "a.png"
    assert torch.equal(got.as_tensor(), expected.as_tensor())


def test_dictionary_transform_equals_monai_as_the_bundles_use_it():
    data = {"pred": _scores(3), "label": torch.randint(0, 6, (1, 17, 23)).float()}
    settings = {"keys": ["pred", "label"], "argmax": [True, False], "to_onehot": 6}
    expected = MonaiAsDiscreted(**settings)(dict(data))
    got = AsDiscreted(**settings)(dict(data))
    for key in ("pred", "label"):
        assert torch.equal(got[key], expected[key]), key
