"""results.atomic_path: a reader sees the old file or the new one, never half; a failed write leaves
nothing behind; the file gets the permissions a plain open() gives (a lab shares its runs folder)."""

from __future__ import annotations

import os

import pytest

from bobkit.results import atomic_path, atomic_write_json, read_json


def test_replaces_whole_files_with_umask_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        path = tmp_path / "runs" / "metrics.json"
        atomic_write_json(path, {"top1": 0.5})
        assert read_json(path) == {"top1": 0.5}
        assert path.stat().st_mode & 0o777 == 0o640  # not mkstemp's 0600
        atomic_write_json(path, {"top1": 0.75})
        assert read_json(path) == {"top1": 0.75}
        assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]  # no temporary left
    finally:
        os.umask(old)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "report.md"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp, open(tmp, "w") as fh:
            fh.write("half")
            raise RuntimeError("writer died")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_suffix_for_writers_that_append_one(tmp_path):
    np = pytest.importorskip("numpy")
    path = tmp_path / "features" / "query.npy"
    with atomic_path(path, suffix=".npy", fsync=False) as tmp:
        assert tmp.endswith(".npy")
        np.save(tmp, np.arange(3))
    assert np.load(path).tolist() == [0, 1, 2]
