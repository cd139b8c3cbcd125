"""MitoTargets / MitoMaps: study B's 3-class targets and the object / contour maps."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from seglab.errors import SeglabError
from seglab.phantoms.sem import make_sem_phantom
from seglab.transforms import MitoMaps, MitoMapsd, MitoTargets, MitoTargetsd

INSTANCES = np.array([[0, 3, 3, 0], [0, 3, 3, 5], [0, 0, 0, 5]], np.uint16)
CONTOURS = np.array([[0, 255, 0, 0], [0, 0, 0, 255], [255, 0, 0, 0]], np.uint8)
# contour wins wherever it is drawn, also outside the instances (bottom left)
CLASSES = np.array([[0, 2, 1, 0], [0, 1, 1, 2], [2, 0, 0, 1]], np.uint8)


@pytest.mark.parametrize("kind", [np.asarray, torch.as_tensor, MetaTensor])
def test_targets_by_hand(kind):
    out = MitoTargets()(kind(INSTANCES[None].astype(np.int32)), kind(CONTOURS[None]))
    assert type(out) is type(kind(INSTANCES[None].astype(np.int32)))
    np.testing.assert_array_equal(np.asarray(out)[0], CLASSES)
    assert np.asarray(out).dtype == np.uint8


def test_without_contours_only_objects():
    out = MitoTargets()(INSTANCES)
    np.testing.assert_array_equal(out, (INSTANCES > 0).astype(np.uint8))


def test_empty_input_gives_an_empty_map():
    out = MitoTargets()(np.zeros((0, 4), np.uint16), np.zeros((0, 4), np.uint8))
    assert out.shape == (0, 4) and out.dtype == np.uint8


def test_phantom_contours_lie_inside_the_instances():
    phantom = make_sem_phantom(shape=(4, 48, 48), seed=0)
    assert phantom.contours.any()
    assert not (phantom.contours & (phantom.instances == 0)).any()
    classes = MitoTargets()(phantom.instances, phantom.contours)
    np.testing.assert_array_equal(classes > 0, phantom.instances > 0)


def test_shape_mismatch_is_one_line():
    with pytest.raises(SeglabError, match="do not match"):
        MitoTargets()(INSTANCES, CONTOURS[:2])


def test_dictionary_version_drops_the_contour():
    data = {"label": INSTANCES[None], "contour": CONTOURS[None], "contour_meta_dict": {}}
    out = MitoTargetsd("label")(data)
    assert set(out) == {"label"}
    np.testing.assert_array_equal(out["label"][0], CLASSES)
    kept = MitoTargetsd("label", drop_contour=False)(data)
    assert "contour" in kept
    np.testing.assert_array_equal(
        MitoTargetsd("label")({"label": INSTANCES})["label"], INSTANCES > 0
    )


def test_maps_from_probabilities_and_classes():
    probabilities = torch.tensor([[0.7, 0.2], [0.2, 0.3], [0.1, 0.5]]).reshape(3, 1, 2)
    maps = MitoMaps("probabilities")(probabilities)
    torch.testing.assert_close(maps, torch.tensor([[[0.3, 0.8]], [[0.1, 0.5]]]))
    maps = MitoMaps("classes")(CLASSES[None])
    np.testing.assert_array_equal(maps[0], CLASSES > 0)
    np.testing.assert_array_equal(maps[1], CLASSES == 2)
    out = MitoMapsd("label", source="classes")({"label": MetaTensor(CLASSES[None])})
    assert isinstance(out["label"], MetaTensor) and out["label"].shape == (2, 3, 4)


@pytest.mark.parametrize(
    ("source", "shape", "match"),
    [("probabilities", (2, 4, 4), "3 channel"), ("classes", (3, 4, 4), "1 channel")],
)
def test_maps_reject_wrong_channels(source, shape, match):
    with pytest.raises(SeglabError, match=match):
        MitoMaps(source)(np.zeros(shape, np.float32))


def test_maps_reject_unknown_source():
    with pytest.raises(SeglabError, match="unknown source"):
        MitoMaps("logits")
