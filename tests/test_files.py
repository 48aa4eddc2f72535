"""Atomic writes: a missing folder is created, a failed write leaves the old file and no
temporary file behind."""

import json
import os

import pytest

from jaxact import files


def test_write_json_creates_its_folder_and_replaces_the_file(tmp_path):
    path = str(tmp_path / "results" / "deep" / "table.json")
    assert files.write_json(path, {"a": 1}) == path
    files.write_json(path, {"a": 2})
    with open(path) as f:
        assert json.load(f) == {"a": 2}
    assert os.listdir(os.path.dirname(path)) == ["table.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary_one(tmp_path):
    path = str(tmp_path / "table.json")
    files.write_json(path, {"kept": True})
    with pytest.raises(TypeError):
        files.write_json(path, {"bad": object()})  # not JSON: fails mid-write
    with open(path) as f:
        assert json.load(f) == {"kept": True}
    assert os.listdir(tmp_path) == ["table.json"]
