import json

import numpy as np
import pytest

from seglab.errors import DataFileError, SeglabError
from seglab.io.labels import LUNG_CLASSES, ClassColour, ColourTable

RNG = np.random.default_rng(11)

RGB = ColourTable(
    [
        ClassColour(2, "blue", (0, 0, 255)),
        ClassColour(0, "black", (0, 0, 0)),
        ClassColour(1, "red", (255, 0, 0)),
    ]
)


def _one_line(err):
    text = str(err.value)
    assert "\n" not in text
    return text


# ---------------------------------------------------------------------------------- table
def test_classes_are_sorted_by_index():
    assert RGB.indices == [0, 1, 2]
    assert RGB.names == ["black", "red", "blue"]
    np.testing.assert_array_equal(RGB.colours, [[0, 0, 0], [255, 0, 0], [0, 0, 255]])
    assert RGB.colours.dtype == np.uint8
    assert len(RGB) == 3


def test_equality_ignores_input_order():
    same = ColourTable(list(reversed(RGB.classes)))
    assert same == RGB
    assert RGB != LUNG_CLASSES
    assert RGB != "not a table"


def test_lung_classes_follow_study_a():
    assert len(LUNG_CLASSES) == 6
    assert LUNG_CLASSES.indices == [0, 1, 2, 3, 4, 5]
    assert LUNG_CLASSES.names[0] == "Background"
    assert "Pulmonary Artery" in LUNG_CLASSES.names
    assert len({tuple(c) for c in LUNG_CLASSES.colours.tolist()}) == 6


@pytest.mark.parametrize(
    ("classes", "match"),
    [
        ([], "at least one class"),
        ([ClassColour(256, "x", (0, 0, 0))], "outside 0..255|not an integer in 0..255"),
        ([ClassColour(-1, "x", (0, 0, 0))], "0..255"),
        ([ClassColour(1.5, "x", (0, 0, 0))], "not an integer"),
        ([ClassColour(0, "x", (0, 0))], "not an RGB triple"),
        ([ClassColour(0, "x", (0, 0, 256))], "not an RGB triple"),
        ([ClassColour(0, "x", 7)], "not an RGB triple"),
        ([ClassColour(0, "x", ("a", "b", "c"))], "not an RGB triple"),
        ([ClassColour(0, "a", (0, 0, 0)), ClassColour(0, "b", (1, 1, 1))], "indices repeat"),
        ([ClassColour(0, "a", (0, 0, 0)), ClassColour(1, "b", (0, 0, 0))], "colours repeat"),
        ([(0, "a", (0, 0, 0))], "ClassColour entries"),
    ],
)
def test_invalid_tables_are_refused(classes, match):
    with pytest.raises(SeglabError, match=match) as err:
        ColourTable(classes)
    _one_line(err)


# ---------------------------------------------------------------------------------- encode/decode
@pytest.mark.parametrize("shape", [(7, 9), (3, 7, 9), (0, 0), (0, 4)])
def test_encode_decode_round_trip(shape):
    labels = RNG.integers(0, 6, shape, dtype=np.uint8)
    rgb = LUNG_CLASSES.encode(labels)
    assert rgb.shape == (*shape, 3)
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, LUNG_CLASSES.colours[labels])  # independent lookup
    back = LUNG_CLASSES.decode(rgb)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels)


def test_encode_accepts_any_integer_type():
    labels = np.array([[0, 2], [1, 0]], dtype=np.int64)
    np.testing.assert_array_equal(RGB.encode(labels)[0, 1], (0, 0, 255))


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.array([[0, 3]]), r"label values \[3\]"),
        (np.array([[0, -1]]), r"label values \[-1\]"),
        (np.array([[0, 300]]), r"label values \[300\]"),
        (np.array([[0.0, 1.0]]), "must hold integers"),
        (np.array([[True, False]]), "must hold integers"),
    ],
)
def test_encode_refuses_unknown_or_non_integer_labels(labels, match):
    with pytest.raises(SeglabError, match=match) as err:
        RGB.encode(labels)
    _one_line(err)


def test_decode_ignores_alpha():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0, :3] = (255, 0, 0)
    rgba[..., 3] = RNG.integers(0, 256, (2, 2))
    np.testing.assert_array_equal(RGB.decode(rgba), [[1, 0], [0, 0]])


def test_decode_lists_unknown_colours_with_counts():
    rgb = RGB.encode(np.zeros((4, 5), np.uint8))
    rgb[0, :3] = (10, 20, 30)
    rgb[1, 0] = (1, 2, 3)
    with pytest.raises(DataFileError, match="4 pixels") as err:
        RGB.decode(rgb)
    text = _one_line(err)
    assert "(10, 20, 30) x3" in text
    assert "(1, 2, 3) x1" in text
    assert text.index("(10, 20, 30)") < text.index("(1, 2, 3)")  # most frequent first


def test_decode_shortens_a_long_list_of_colours():
    rgb = np.zeros((1, 12, 3), np.uint8)
    rgb[0, :, 1] = np.arange(1, 13)
    with pytest.raises(DataFileError, match="and 4 more"):
        RGB.decode(rgb)


def test_decode_tolerance_snaps_near_colours():
    labels = RNG.integers(0, 3, (6, 6), dtype=np.uint8)
    rgb = RGB.encode(labels).astype(np.int16)
    noisy = np.clip(rgb + RNG.integers(-2, 3, rgb.shape), 0, 255).astype(np.uint8)
    with pytest.raises(DataFileError):
        RGB.decode(noisy)
    np.testing.assert_array_equal(RGB.decode(noisy, tolerance=4), labels)
    far = noisy.copy()
    far[0, 0] = (128, 128, 128)
    with pytest.raises(DataFileError, match=r"\(128, 128, 128\)"):
        RGB.decode(far, tolerance=4)


@pytest.mark.parametrize(
    ("rgb", "match"),
    [
        (np.zeros((4, 5), np.uint8), "shape"),
        (np.zeros((4, 5, 2), np.uint8), "shape"),
        (np.zeros((4, 5, 3), np.float64) + 0.5, "integers 0..255"),
        (np.full((4, 5, 3), 256, np.uint16), "integers 0..255"),
        (np.full((4, 5, 3), -1, np.int16), "integers 0..255"),
        (np.full((2, 2, 3), "a"), "must hold numbers"),
    ],
)
def test_decode_refuses_non_colour_input(rgb, match):
    with pytest.raises(SeglabError, match=match) as err:
        RGB.decode(rgb)
    _one_line(err)


def test_decode_of_wide_integers_does_not_alias_colours():
    # (0, 256, 0) shifted into one key would equal (1, 0, 0); it must be refused, not matched
    table = ColourTable([ClassColour(0, "bg", (0, 0, 0)), ClassColour(1, "x", (1, 0, 0))])
    with pytest.raises(SeglabError):
        table.decode(np.array([[[0, 256, 0]]], np.int32))


def test_decode_accepts_integral_floats():
    rgb = RGB.encode(np.array([[0, 1, 2]])).astype(np.float32)
    np.testing.assert_array_equal(RGB.decode(rgb), [[0, 1, 2]])


# ---------------------------------------------------------------------------------- files
def test_dict_round_trip():
    data = RGB.to_dict()
    assert data["classes"][1] == {"index": 1, "name": "red", "colour": [255, 0, 0]}
    assert ColourTable.from_dict(json.loads(json.dumps(data))) == RGB


@pytest.mark.parametrize(
    "data",
    [
        {},
        [],
        {"classes": "abc"},
        {"classes": [{"index": 0, "name": "x"}]},
        {"classes": [{"index": "zero", "name": "x", "colour": [0, 0, 0]}]},
        {"classes": [{"index": 0, "name": "x", "colour": 5}]},
    ],
)
def test_from_dict_refuses_malformed_data(data):
    with pytest.raises(SeglabError) as err:
        ColourTable.from_dict(data)
    _one_line(err)


def test_save_load_round_trip(tmp_path):
    path = LUNG_CLASSES.save(tmp_path / "sub" / "classes.json")
    assert path == tmp_path / "sub" / "classes.json"
    assert ColourTable.load(path) == LUNG_CLASSES
    assert json.loads(path.read_text()) == LUNG_CLASSES.to_dict()


def test_load_missing_or_invalid_file(tmp_path):
    with pytest.raises(DataFileError, match="not found"):
        ColourTable.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(DataFileError, match="not valid JSON") as err:
        ColourTable.load(bad)
    _one_line(err)
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DataFileError, match="not valid JSON"):
        ColourTable.load(bad)
