import os
import stat

import pytest

from seglab.errors import OutputExistsError, SeglabError
from seglab.io.atomic import atomic_directory, atomic_file


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------------------------- atomic_file
def test_file_appears_only_when_the_block_succeeds(tmp_path):
    final = tmp_path / "out.nii.gz"
    with atomic_file(final) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.endswith(".nii.gz")
        assert tmp != final
        tmp.write_text("data")
        assert not final.exists()
    assert final.read_text() == "data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]


def test_failure_leaves_old_file_and_no_temporary(tmp_path):
    final = tmp_path / "out.txt"
    final.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_file(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert final.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_overwrite_false_refuses_existing_file(tmp_path):
    final = tmp_path / "out.txt"
    final.write_text("old")
    with (
        pytest.raises(OutputExistsError, match="already exists"),
        atomic_file(final, overwrite=False),
    ):
        pass
    assert final.read_text() == "old"
    with atomic_file(final) as tmp:
        tmp.write_text("new")
    assert final.read_text() == "new"


def test_missing_parent_folders_are_created(tmp_path):
    final = tmp_path / "a" / "b" / "out.txt"
    with atomic_file(final) as tmp:
        tmp.write_text("x")
    assert final.read_text() == "x"


def test_folder_in_the_way_is_an_error(tmp_path):
    (tmp_path / "out.txt").mkdir()
    with pytest.raises(OutputExistsError, match="is a folder"), atomic_file(tmp_path / "out.txt"):
        pass


def test_new_file_gets_the_usual_permissions(tmp_path, umask_022):
    with atomic_file(tmp_path / "out.txt") as tmp:
        tmp.write_text("x")
    assert _mode(tmp_path / "out.txt") == 0o644


def test_replaced_file_keeps_its_permissions(tmp_path, umask_022):
    final = tmp_path / "out.txt"
    final.write_text("old")
    final.chmod(0o640)
    with atomic_file(final) as tmp:
        tmp.write_text("new")
    assert _mode(final) == 0o640


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_folder_is_a_clear_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(SeglabError, match="not writable"), atomic_file(locked / "out.txt"):
            pass
    finally:
        locked.chmod(0o700)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
@pytest.mark.parametrize("make", [atomic_file, atomic_directory])
def test_a_folder_nobody_can_write_in_is_a_clear_error_even_for_root(make):
    # os.access says yes to root everywhere; /proc refuses new entries even so
    with pytest.raises(SeglabError, match=r"output folder /proc"), make("/proc/seglab-out"):
        pass
    assert not os.path.exists("/proc/seglab-out")


# ------------------------------------------------------------------------------ atomic_directory
def test_directory_appears_complete(tmp_path):
    final = tmp_path / "run"
    with atomic_directory(final) as tmp:
        assert tmp.parent == tmp_path
        (tmp / "a.txt").write_text("a")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_directory_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "run") as tmp:
        (tmp / "a.txt").write_text("a")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_non_empty_directory_needs_overwrite(tmp_path):
    final = tmp_path / "run"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(OutputExistsError, match="not empty"), atomic_directory(final):
        pass
    assert (final / "old.txt").exists()
    with atomic_directory(final, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_failed_overwrite_keeps_old_directory(tmp_path):
    final = tmp_path / "run"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(final, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("boom")
    assert sorted(p.name for p in final.iterdir()) == ["old.txt"]


def test_empty_existing_directory_is_accepted(tmp_path):
    (tmp_path / "run").mkdir()
    with atomic_directory(tmp_path / "run") as tmp:
        (tmp / "a.txt").write_text("a")
    assert (tmp_path / "run" / "a.txt").exists()


def test_file_in_place_of_directory_is_an_error(tmp_path):
    (tmp_path / "run").write_text("x")
    with (
        pytest.raises(OutputExistsError, match="not a folder"),
        atomic_directory(tmp_path / "run", overwrite=True),
    ):
        pass


def test_new_directory_gets_the_usual_permissions(tmp_path, umask_022):
    with atomic_directory(tmp_path / "run") as tmp:
        (tmp / "a.txt").write_text("a")
    assert _mode(tmp_path / "run") == 0o755


def test_empty_folder_removes_the_contents_and_keeps_the_folder(tmp_path):
    from seglab.io.atomic import empty_folder

    folder = tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.txt").write_text("a")
    (folder / "b.txt").write_text("b")
    outside = tmp_path / "keep"
    outside.mkdir()
    (outside / "c.txt").write_text("c")
    (folder / "link").symlink_to(outside)
    empty_folder(folder)
    assert folder.is_dir() and list(folder.iterdir()) == []
    assert (outside / "c.txt").read_text() == "c"  # a link is removed, not followed
    empty_folder(folder)  # an empty folder stays empty
