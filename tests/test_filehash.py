"""Input file hashes are remembered by the files' stat, and recomputed whenever content may differ."""

from __future__ import annotations

import builtins
import os

import pytest

from dataflow import filehash
from dataflow.filehash import file_digest


@pytest.fixture
def reads(tmp_path, monkeypatch) -> list[str]:
    """The files whose content file_digest read, with a fresh digest memory."""
    monkeypatch.setenv("DATAFLOW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(filehash, "RECENT_SECONDS", 0)
    opened: list[str] = []

    def spy(file, *args, **kwargs):
        opened.append(str(file))
        return builtins.open(file, *args, **kwargs)

    monkeypatch.setattr(filehash, "open", spy, raising=False)
    return opened


def test_an_unchanged_file_is_read_once(tmp_path, reads):
    data = tmp_path / "data.jsonl"
    data.write_text('{"a": 1}\n')
    assert file_digest(data) == file_digest(data)
    assert len(reads) == 1


def test_new_content_with_the_old_size_and_mtime_is_hashed_again(tmp_path, reads):
    data = tmp_path / "data.jsonl"
    data.write_text('{"a": 1}\n')
    before, stat = file_digest(data), data.stat()
    data.write_text('{"a": 2}\n')
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the change time still moves
    assert file_digest(data) != before
    assert len(reads) == 2


def test_a_touched_file_keeps_its_digest(tmp_path, reads):
    data = tmp_path / "data.jsonl"
    data.write_text('{"a": 1}\n')
    before = file_digest(data)
    os.utime(data, (1_000_000, 1_000_000))
    assert file_digest(data) == before


def test_a_directory_changes_when_a_file_is_added(tmp_path, reads):
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "a.arrow").write_bytes(b"1")
    before = file_digest(folder)
    assert file_digest(folder) == before
    (folder / "b.arrow").write_bytes(b"2")
    assert file_digest(folder) != before


def test_recently_changed_files_are_not_remembered(tmp_path, reads, monkeypatch):
    monkeypatch.setattr(filehash, "RECENT_SECONDS", 3600)
    data = tmp_path / "data.jsonl"
    data.write_text('{"a": 1}\n')
    file_digest(data), file_digest(data)
    assert len(reads) == 2


def test_an_unusable_cache_directory_only_costs_rehashing(tmp_path, reads, monkeypatch):
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("")
    monkeypatch.setenv("DATAFLOW_CACHE_DIR", str(blocker))
    data = tmp_path / "data.jsonl"
    data.write_text('{"a": 1}\n')
    assert file_digest(data) == file_digest(data)
    assert len(reads) == 2
