"""--overwrite, --resume and refusal of existing output folders (training and study reports)."""

import json
from pathlib import Path

import pytest

from seglab.errors import OutputExistsError, SeglabError
from seglab.studies.recipes import load_recipe
from seglab.studies.run import STUDY_MARKER, _claim_report_folder
from seglab.workflows.training import _check_output_folder

REPO = Path(__file__).resolve().parents[2]


def filled(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "model.pt").write_bytes(b"x")
    (folder / "checkpoint.pt").write_bytes(b"y")
    return folder


def test_a_training_output_with_files_is_refused_kept_for_resume_or_emptied(tmp_path):
    folder = filled(tmp_path / "ck")
    with pytest.raises(OutputExistsError, match="--resume .* --overwrite"):
        _check_output_folder(folder, resume=False, overwrite=False)
    _check_output_folder(folder, resume=True, overwrite=False)
    assert (folder / "checkpoint.pt").is_file()
    _check_output_folder(folder, resume=False, overwrite=True)
    assert folder.is_dir() and list(folder.iterdir()) == []


@pytest.mark.parametrize("existing", [False, True], ids=["missing", "empty"])
def test_a_new_or_empty_training_output_is_accepted_and_not_created(tmp_path, existing):
    folder = tmp_path / "ck"
    if existing:
        folder.mkdir()
    _check_output_folder(folder, resume=False, overwrite=False)
    assert folder.exists() == existing


def test_a_training_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "ck").write_text("not a folder")
    with pytest.raises(SeglabError, match="is not a folder"):
        _check_output_folder(tmp_path / "ck", resume=False, overwrite=True)


def test_a_report_folder_is_kept_for_its_own_study_and_refused_for_another(tmp_path):
    recipe = load_recipe(REPO / "pipelines" / "search-demo.yaml")
    out = filled(tmp_path / "report")
    with pytest.raises(OutputExistsError, match="not a report of this study"):
        _claim_report_folder(out, recipe, overwrite=False)
    marker = {"study": recipe.name, "digest": recipe.digest}
    (out / STUDY_MARKER).write_text(json.dumps(marker))
    _claim_report_folder(out, recipe, overwrite=False)  # the same recipe again: its own folder
    assert (out / "checkpoint.pt").is_file()
    (out / STUDY_MARKER).write_text(json.dumps(marker | {"digest": "another"}))
    with pytest.raises(OutputExistsError, match="report of study"):
        _claim_report_folder(out, recipe, overwrite=False)
    _claim_report_folder(out, recipe, overwrite=True)
    assert list(out.iterdir()) == []
