"""The registry: evaluations on versions, the promotion gate, rollback and the audit trail."""

import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

from seglab.errors import SeglabError
from seglab.models.registry import (
    Evaluation,
    PromotionRefused,
    audit_trail,
    parse_model_uri,
    promote,
    record_evaluation,
    resolve_version,
    rollback,
)

DIGEST = "a" * 64
OTHER = "b" * 64


def evaluate(store, version, value, digest=DIGEST, dataset="lung-test"):
    record_evaluation(
        store,
        "lung-tiny",
        str(version),
        Evaluation("total_dice", value, dataset, digest, f"2026-11-21T00:00:{version:02d}"),
    )


@pytest.fixture
def three_versions(store, register):
    for seed in range(3):
        register(seed=seed)
    return store


@pytest.mark.parametrize(
    ("uri", "parts"),
    [
        ("models:/lung@champion", ("lung", None, "champion")),
        ("models:/lung-unet.v2/7", ("lung-unet.v2", "7", None)),
        ("models:/lung", ("lung", None, None)),
    ],
)
def test_model_uris_are_parsed(uri, parts):
    assert parse_model_uri(uri) == parts


@pytest.mark.parametrize("uri", ["lung@champion", "models:/", "models:/a b", "runs:/x/model", ""])
def test_bad_model_uris_are_one_line_errors(uri):
    with pytest.raises(SeglabError, match="not understood"):
        parse_model_uri(uri)


def test_unknown_model_alias_and_version_are_clear_errors(three_versions):
    store = three_versions
    with pytest.raises(SeglabError, match="no registered model 'nope'"):
        resolve_version(store, "models:/nope@champion")
    with pytest.raises(SeglabError, match="has no alias @champion"):
        resolve_version(store, "models:/lung-tiny@champion")
    with pytest.raises(SeglabError, match="has no version 9"):
        resolve_version(store, "models:/lung-tiny/9")
    assert resolve_version(store, "models:/lung-tiny").version in (3, "3")


def test_a_first_champion_needs_a_recorded_evaluation(three_versions):
    store = three_versions
    with pytest.raises(PromotionRefused, match="no recorded evaluation"):
        promote(store, "lung-tiny", 1)
    evaluate(store, 1, 0.80)
    entry = promote(store, "lung-tiny", 1, user="ana")
    assert (entry.action, entry.from_version, entry.to_version) == ("promote", None, "1")
    assert entry.to_value == pytest.approx(0.80) and entry.user == "ana"
    assert resolve_version(store, "models:/lung-tiny@champion").version in (1, "1")


def test_the_gate_refuses_a_worse_version_and_lets_a_better_one_through(three_versions):
    store = three_versions
    evaluate(store, 1, 0.80)
    promote(store, "lung-tiny", 1)
    evaluate(store, 2, 0.70)
    with pytest.raises(PromotionRefused, match=r"0\.7000.*worse than champion version 1's 0\.8000"):
        promote(store, "lung-tiny", 2)
    assert resolve_version(store, "models:/lung-tiny@champion").version in (1, "1")
    evaluate(store, 3, 0.85)
    entry = promote(store, "lung-tiny", 3)
    assert (entry.from_version, entry.to_version) == ("1", "3")
    assert (entry.from_value, entry.to_value) == (pytest.approx(0.80), pytest.approx(0.85))
    assert entry.dataset_digest == DIGEST


def test_versions_evaluated_on_different_data_are_not_compared(three_versions):
    store = three_versions
    evaluate(store, 1, 0.80)
    promote(store, "lung-tiny", 1)
    evaluate(store, 2, 0.99, digest=OTHER, dataset="other-data")
    with pytest.raises(PromotionRefused, match="never evaluated on the same dataset"):
        promote(store, "lung-tiny", 2)


def test_force_needs_a_reason_and_is_recorded_as_forced(three_versions):
    store = three_versions
    evaluate(store, 1, 0.80)
    promote(store, "lung-tiny", 1)
    evaluate(store, 2, 0.70)
    with pytest.raises(SeglabError, match="--force needs a --reason"):
        promote(store, "lung-tiny", 2, force=True)
    entry = promote(store, "lung-tiny", 2, force=True, reason="new stain protocol")
    assert entry.action == "force-promote" and entry.reason == "new stain protocol"
    assert (entry.from_value, entry.to_value) == (pytest.approx(0.80), pytest.approx(0.70))


def test_candidate_alias_is_not_gated(three_versions):
    store = three_versions
    entry = promote(store, "lung-tiny", 2, alias="candidate")
    assert entry.alias == "candidate" and entry.to_value is None
    with pytest.raises(SeglabError, match="already @candidate"):
        promote(store, "lung-tiny", 2, alias="candidate")
    with pytest.raises(SeglabError, match="unknown alias"):
        promote(store, "lung-tiny", 2, alias="production")


def test_rollback_walks_back_through_the_promotions(three_versions):
    store = three_versions
    evaluate(store, 1, 0.80)
    promote(store, "lung-tiny", 1)
    evaluate(store, 2, 0.82)
    promote(store, "lung-tiny", 2)
    evaluate(store, 3, 0.90)
    promote(store, "lung-tiny", 3)
    first = rollback(store, "lung-tiny", reason="seam artefacts on new scanner")
    assert (first.from_version, first.to_version) == ("3", "2")
    second = rollback(store, "lung-tiny")
    assert (second.from_version, second.to_version) == ("2", "1")
    with pytest.raises(SeglabError, match="no version before @champion = 1"):
        rollback(store, "lung-tiny")
    trail = audit_trail(store, "lung-tiny")
    assert [(e.action, e.from_version, e.to_version) for e in trail] == [
        ("promote", None, "1"),
        ("promote", "1", "2"),
        ("promote", "2", "3"),
        ("rollback", "3", "2"),
        ("rollback", "2", "1"),
    ]
    assert trail[3].reason == "seam artefacts on new scanner"


def test_the_audit_trail_is_on_the_registered_model_for_the_ui(three_versions):
    store = three_versions
    evaluate(store, 1, 0.80)
    promote(store, "lung-tiny", 1, reason="first routine model")
    tags = store.client().get_registered_model("lung-tiny").tags
    audit = [k for k in tags if k.startswith("seglab.audit.")]
    assert len(audit) == 1 and "first routine model" in tags[audit[0]]
    assert "promote @champion: - -> 1" in tags["seglab.last_alias_move"]


def test_a_version_whose_files_are_gone_can_never_become_champion(three_versions):
    store = three_versions
    evaluate(store, 1, 0.80)
    promote(store, "lung-tiny", 1)
    evaluate(store, 2, 0.90)
    source = resolve_version(store, "models:/lung-tiny/2").source
    shutil.rmtree(Path(urlparse(source).path) / "artifacts" / "bundle" / "models")
    with pytest.raises(SeglabError, match="missing files"):
        promote(store, "lung-tiny", 2)
    assert resolve_version(store, "models:/lung-tiny@champion").version in (1, "1")
    evaluate(store, 3, 0.95)
    promote(store, "lung-tiny", 3)
    shutil.rmtree(Path(urlparse(resolve_version(store, "models:/lung-tiny/1").source).path))
    with pytest.raises(SeglabError, match="files are missing"):
        rollback(store, "lung-tiny")


def test_a_champion_whose_files_vanished_is_a_one_line_error_that_suggests_rollback(
    three_versions, tmp_path
):
    from seglab.models.registry import fetch_model, load_model

    store = three_versions
    evaluate(store, 1, 0.80)
    promote(store, "lung-tiny", 1)
    source = Path(urlparse(resolve_version(store, "models:/lung-tiny/1").source).path)
    shutil.rmtree(source)  # e.g. the artifact store was cleaned up after the promotion
    cases = [
        ("models:/lung-tiny@champion", r"1 \(@champion\) is missing files.*rollback lung-tiny`"),
        ("models:/lung-tiny/1", r"version 1 is missing files.*use another version"),
    ]
    for uri, expected in cases:
        with pytest.raises(SeglabError, match=expected) as caught:
            fetch_model(store, uri, tmp_path / "m")
        assert "\n" not in str(caught.value)
        with pytest.raises(SeglabError, match=expected):
            load_model(store, uri)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "is not valid"),
        ("lung unet", "is not valid"),
        ("lung/unet", "is not valid"),
        ("seglab.lock.lung", "keeps for its registry locks"),
    ],
)
def test_model_names_are_checked(name, message):
    from seglab.models.publish import check_model_name

    with pytest.raises(SeglabError, match=message):
        check_model_name(name)
    assert check_model_name("lung-unet_2.b") == "lung-unet_2.b"
