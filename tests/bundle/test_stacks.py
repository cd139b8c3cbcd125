"""AdjacentSliceInferer and SliceEnsemble (the mito bundle's stack pieces)."""

import pytest
import torch
from monai.data import MetaTensor

from seglab.bundle.stacks import AdjacentSliceInferer, SliceEnsemble
from seglab.errors import SeglabError
from seglab.transforms import AdjacentSlices


class ChannelSum(torch.nn.Module):
    """Logits (sum of channels, weighted channel sum): easy to compute by hand."""

    def forward(self, x):
        weights = torch.arange(1, x.shape[1] + 1, dtype=x.dtype).reshape(1, -1, 1, 1)
        return torch.cat([x.sum(1, keepdim=True), (x * weights).sum(1, keepdim=True)], dim=1)


@pytest.mark.parametrize("num_slices", [1, 3, 5])
@pytest.mark.parametrize("roi_size", [None, (4, 4)])
def test_inferer_matches_slice_by_slice(num_slices, roi_size):
    stack = torch.rand(2, 1, 5, 6, 7)
    inferer = AdjacentSliceInferer(num_slices, roi_size=roi_size, slice_batch_size=2)
    out = inferer(MetaTensor(stack), ChannelSum())
    assert isinstance(out, MetaTensor) and out.shape == (2, 2, 5, 6, 7)
    for b in range(2):
        inputs = AdjacentSlices(num_slices)(stack[b, 0])  # (Z, k, H, W), mirrored ends
        expected = ChannelSum()(inputs).transpose(0, 1)
        torch.testing.assert_close(out[b].as_tensor(), expected, atol=1e-5, rtol=1e-5)


def test_inferer_rejects_sliced_input():
    with pytest.raises(SeglabError, match=r"\(B, 1, Z, H, W\)"):
        AdjacentSliceInferer(3)(torch.zeros(1, 3, 8, 8), ChannelSum())
    with pytest.raises(SeglabError, match="1, 3 or 5"):
        AdjacentSliceInferer(2)


def test_ensemble_averages_member_probabilities():
    members = [torch.nn.Conv2d(k, 3, 1) for k in (1, 3, 5)]
    ensemble = SliceEnsemble(members, [1, 3, 5])
    x = torch.rand(2, 5, 4, 4)
    expected = (
        torch.softmax(members[0](x[:, 2:3]), 1)
        + torch.softmax(members[1](x[:, 1:4]), 1)
        + torch.softmax(members[2](x), 1)
    ) / 3
    with torch.no_grad():
        torch.testing.assert_close(torch.softmax(ensemble(x), 1), expected)
    with pytest.raises(SeglabError, match="one slice count per network"):
        SliceEnsemble(members, [1, 3])
