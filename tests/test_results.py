"""Rows: schema, stable run ids, atomic writes, broken files named and kept, secrets redacted."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import pytest

from benchbench import results
from benchbench.errors import ResultsError


def test_row_has_every_contract_column_null_by_default():
    row = results.empty_row()
    for k in results.ROW_FIELDS:
        assert k in row and row[k] is None
    assert row["schema_version"] == results.SCHEMA_VERSION


def test_run_id_is_stable_and_ignores_output_keys():
    a = {"model": {"name": "vit_b", "patch_size": 16}, "seed": 0, "results": {"dir": "/a"},
         "study": {"name": "x"}, "train": {"lr": 1e-3, "checkpoint_every_s": 10}}
    b = {"seed": 0, "results": {"dir": "/b"}, "model": {"patch_size": 16, "name": "vit_b"},
         "study": {"name": "y"}, "train": {"lr": 1e-3, "checkpoint_every_s": 99}}
    assert results.run_id_of(a) == results.run_id_of(b)
    c = dict(a, seed=1)
    assert results.run_id_of(a) != results.run_id_of(c)
    assert len(results.run_id_of(a)) == 12


def test_write_then_read_round_trip_and_secrets_redacted(tmp_path):
    row = {"run_id": "abc", "status": "ok", "top1": 0.5,
           "config": {"wandb": {"api_key": "sekrit"}, "token": "t0k", "lr": 1}}
    p = results.write_row(row, tmp_path)
    assert p == tmp_path / "runs" / "abc.json"
    back = results.read_row(p)
    assert back["top1"] == 0.5 and back["status"] == "ok"
    text = p.read_text()
    assert "sekrit" not in text and "t0k" not in text
    assert back["config"]["lr"] == 1


def test_failed_write_keeps_the_old_row(tmp_path, monkeypatch):
    results.write_row({"run_id": "r", "status": "ok", "top1": 0.1}, tmp_path)

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        results.write_row({"run_id": "r", "status": "ok", "top1": 0.9}, tmp_path)
    monkeypatch.undo()
    assert results.read_row(tmp_path / "runs" / "r.json")["top1"] == 0.1
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["r.json"]  # no temp left


def test_unwritable_results_dir_names_the_fix(tmp_path, monkeypatch):
    def denied(*a, **k):  # as root chmod is not enforced, so simulate the OS answer
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(results.tempfile, "mkstemp", denied)
    with pytest.raises(ResultsError, match="Permission denied.*results.dir=<a writable folder>"):
        results.write_row({"run_id": "r", "status": "ok"}, tmp_path / "sub")


@pytest.mark.parametrize("content", [b"", b"{", b"[1,2]", b"\xff\xfe", b'{"run_id": "x"}',
                                     b'{"run_id": "x", "status": "ok", "schema_version": 99}'])
def test_broken_rows_are_named_and_skipped_never_deleted(tmp_path, content):
    results.write_row({"run_id": "good", "status": "ok"}, tmp_path)
    bad = tmp_path / "runs" / "bad.json"
    bad.write_bytes(content)
    rows, broken = results.load_rows(tmp_path)
    assert [r["run_id"] for r in rows] == ["good"]
    assert broken and broken[0][0] == bad and "bad.json" in broken[0][1]
    assert bad.exists()


def test_old_schema_row_reads_with_missing_columns_null(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "old.json").write_text(json.dumps({"run_id": "old", "status": "ok"}))
    rows, broken = results.load_rows(tmp_path)
    assert not broken and rows[0]["mfu"] is None


def _writer(args):
    d, i = args
    for j in range(5):
        results.write_row({"run_id": f"w{i}", "status": "ok", "top1": j / 10}, d)
    return i


def test_many_concurrent_writers_lose_nothing(tmp_path):
    with mp.get_context("spawn").Pool(4) as pool:
        pool.map(_writer, [(str(tmp_path), i) for i in range(16)])
    rows, broken = results.load_rows(tmp_path)
    assert not broken and len(rows) == 16
    assert all(r["top1"] == 0.4 for r in rows)
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]


def test_dataframe_is_typed(tmp_path):
    results.write_row({"run_id": "a", "status": "ok", "top1": 0.5, "params": 10}, tmp_path)
    df, broken = results.load_dataframe(tmp_path)
    assert df["top1"].dtype.kind == "f" and list(df.columns[:3]) == ["run_id", "study", "status"]


def test_missing_results_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ResultsError, match="run a study first"):
        results.load_rows(tmp_path / "nope")


# ---- found by `make mutants` (tests/mutants.py): run_id details, sanitize, row discovery
def test_run_id_value_is_pinned():
    """Committed results are skipped on relaunch by run_id: the hash format must not drift."""
    assert results.run_id_of({"model": {"name": "vit_micro"}, "seed": 0}) == "3476a8ffa9c0"


@pytest.mark.parametrize("how", [{"threads": 4}, {"quiet": True}, {"local_gpus": [0, 1]},
                                 {"train": {"lr": 0.1, "log_every": 7}},
                                 {"train": {"lr": 0.1, "checkpoint_every_s": 9}},
                                 {"max_steps": None}])
def test_how_a_run_is_executed_does_not_change_its_run_id(how):
    base = {"model": {"name": "vit_micro"}, "train": {"lr": 0.1}, "seed": 0}
    assert results.run_id_of({**base, **how}) == results.run_id_of(base)


def test_a_set_max_steps_is_a_different_run():
    base = {"model": {"name": "vit_micro"}, "seed": 0}
    assert results.run_id_of({**base, "max_steps": 2}) != results.run_id_of(base)


def test_sanitize_nulls_only_non_finite_floats():
    assert results.sanitize(0.5) == 0.5 and results.sanitize(0.0) == 0.0
    assert results.sanitize(3) == 3 and results.sanitize("nan") == "nan"
    for bad in (float("nan"), float("inf"), float("-inf")):
        assert results.sanitize(bad) is None


def test_row_files_are_under_runs_or_anywhere_but_the_non_row_folders(tmp_path):
    def put(root, rel):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps({"run_id": Path(rel).stem, "status": "ok"}))

    flat = tmp_path / "flat"
    for rel in ("a.json", "sub/b.json", "status/s.json", "logs/sweep-1/status/t.json",
                "report/r.json", "ckpt/c/c.json", "wandb/w.json", ".hidden.json"):
        put(flat, rel)
    assert [p.relative_to(flat).as_posix() for p in results.iter_row_files(flat)] == [
        "a.json", "sub/b.json"]
    nested = tmp_path / "nested"
    for rel in ("runs/a.json", "notes.json", "other/n.json"):
        put(nested, rel)
    assert [p.relative_to(nested).as_posix() for p in results.iter_row_files(nested)] == [
        "runs/a.json"]


def test_git_sha_is_this_checkouts_head():
    import subprocess

    here = Path(results.__file__).parent
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here,
                          capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert results.git_sha() == head.stdout.strip()
    assert results.provenance()["git_sha"] == head.stdout.strip()


def test_every_column_of_the_committed_rows_is_a_contract_column():
    """The rows under results/ were written by the CLI: each of their keys is a known column
    (a renamed or dropped field would leave old rows with columns no one knows)."""
    known = set(results.ROW_FIELDS) | set(results.EXTRA_FIELDS)
    repo = Path(results.__file__).resolve().parents[1]
    files = sorted(repo.glob("results/*/runs/*.json"))
    assert len(files) >= 30
    keys = set().union(*(json.loads(p.read_text()) for p in files))
    assert keys <= known, sorted(keys - known)
    assert {"lr", "peak_mem_infer_bytes", "pretrain_dataset", "retry_of"} <= keys
