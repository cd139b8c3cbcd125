import pytest

from seglab.errors import SeglabError
from seglab.flags import as_bool


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), (1, True), (0, False), ("true", True), (" False ", False),
     ("yes", True), ("off", False)],
)  # fmt: skip
def test_words_and_bools_are_read(value, expected):
    assert as_bool(value) is expected


@pytest.mark.parametrize("value", ["maybe", "", 2, None, 0.5])
def test_anything_else_is_a_one_line_error(value):
    with pytest.raises(SeglabError, match="resume must be true or false"):
        as_bool(value, "resume")
