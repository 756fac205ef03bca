import os
import subprocess
import sys

import polars as pl

from dataflow.memory import ALLOCATOR, READ_AHEAD, bounded_read_ahead, release_freed_pages


def test_dataflow_configures_the_allocator_before_polars_loads():
    env = {k: v for k, v in os.environ.items() if k != ALLOCATOR}
    code = f"import dataflow, os; print(os.environ['{ALLOCATOR}'])"
    conf = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    # polars prepends its defaults when it loads, so ours came first and comes last (it wins)
    assert conf.strip().startswith("dirty_decay_ms") and conf.strip().endswith("muzzy_decay_ms:0")


def test_a_users_allocator_setting_is_kept(monkeypatch):
    monkeypatch.setenv(ALLOCATOR, "narenas:2")
    release_freed_pages()
    assert os.environ[ALLOCATOR] == "narenas:2"


def test_read_ahead_is_bounded_during_a_build_and_restored_after(monkeypatch):
    monkeypatch.delenv(READ_AHEAD, raising=False)
    with bounded_read_ahead():
        assert os.environ[READ_AHEAD] == str(max(1, pl.thread_pool_size() // 2))
    assert READ_AHEAD not in os.environ


def test_a_users_read_ahead_is_kept(monkeypatch):
    monkeypatch.setenv(READ_AHEAD, "7")
    with bounded_read_ahead():
        assert os.environ[READ_AHEAD] == "7"
    assert os.environ[READ_AHEAD] == "7"


def test_an_empty_read_ahead_is_replaced_during_the_build_and_put_back(monkeypatch):
    monkeypatch.setenv(READ_AHEAD, "")
    with bounded_read_ahead():
        assert int(os.environ[READ_AHEAD]) >= 1
    assert os.environ[READ_AHEAD] == ""
