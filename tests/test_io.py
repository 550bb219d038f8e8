"""Atomic output: success replaces the target whole; failure leaves it and no temporaries."""

import json

import pytest

from embaug_jax.util import atomic_path, write_json_atomic, write_text_atomic


def test_file_written_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_directory_replaced_whole(tmp_path):
    target = tmp_path / "ds"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("1")
        (tmp / "stale").write_text("x")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    assert (target / "a").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_json_and_parent_creation(tmp_path):
    target = tmp_path / "deep" / "er" / "r.json"
    write_json_atomic(target, {"a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2]}
