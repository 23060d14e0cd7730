"""Property tests and bounded fuzzing of what reads user input: the row reader, the idx and
CIFAR readers, and config validation. Every input gives a valid result or the project's own
error (ResultsError, DataError, ConfigError), never another exception.

The fuzzers are `slow` (pytest -m slow); each prints how many inputs it tried.
"""
from __future__ import annotations

import gzip
import json
import math
import os
import pickle
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from benchbench import cli, data, models, results
from benchbench.errors import ConfigError, DataError, ResultsError
from benchbench.train import resolve_budget

# The fast suite is derandomized so CI is reproducible; `pytest -m slow` and the
# HYPOTHESIS_RANDOM=1 environment variable explore fresh inputs each time.
FAST = settings(max_examples=60, deadline=None, database=None,
                derandomize=not os.environ.get("HYPOTHESIS_RANDOM"),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MANY = settings(FAST, max_examples=300)  # the cheap ones: pure functions
FUZZ_SECONDS = 9.0  # per fuzzer: three fuzzers, ~30 s in all
FUZZ = settings(deadline=None, database=None, derandomize=False,  # slow fuzzers: fresh inputs
                suppress_health_check=list(HealthCheck))

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=10), kids, max_size=5),
    max_leaves=20,
)


def valid_row(row: dict) -> None:
    """What read_row promises: every column present (null if the file lacked it)."""
    assert isinstance(row, dict)
    assert set(results.ROW_FIELDS + results.EXTRA_FIELDS) <= set(row)
    assert "run_id" in row and "status" in row


def check_row_file(path: Path, raw: bytes) -> str:
    path.write_bytes(raw)
    try:
        row = results.read_row(path)
    except ResultsError as e:
        assert str(path) in str(e)  # names the file
        return "error"
    valid_row(row)
    return "row"


# ---------------------------------------------------------------- fast properties
@FAST
@given(value=JSON, extra=st.dictionaries(st.text(max_size=8), JSON, max_size=4),
       version=st.none() | st.integers(-3, 3) | st.text(max_size=3))
def test_row_reader_accepts_rows_and_refuses_the_rest(tmp_path, value, extra, version):
    p = tmp_path / "r.json"
    check_row_file(p, json.dumps(value).encode())
    checked = ("schema_version", *results.FRACTION_FIELDS, *results.COUNT_FIELDS)  # typed
    row = {**{k: v for k, v in extra.items() if k not in checked}, "run_id": "x",
           "status": "ok"}
    if version is not None:
        row["schema_version"] = version
    p.write_text(json.dumps(row))
    if isinstance(version, int) and version <= results.SCHEMA_VERSION or version is None:
        got = results.read_row(p)
        valid_row(got)
        same = [json.dumps(got[k]) == json.dumps(v) for k, v in row.items()]  # NaN == NaN
        assert all(same)  # and older rows: missing columns null
        assert all(got[k] is None for k in results.ROW_FIELDS if k not in row)
    else:
        with pytest.raises(ResultsError):
            results.read_row(p)


@FAST
@given(raw=st.binary(max_size=300))
def test_row_reader_on_any_bytes(tmp_path, raw):
    check_row_file(tmp_path / "r.json", raw)


def test_row_reader_pathological_json(tmp_path):
    for raw in (b"[" * 100_000, b"{\"run_id\": " + b"9" * 5000 + b", \"status\": 1}",
                b'{"run_id": "x", "status": "ok", "top1": NaN}', b"\x00" * 10):
        check_row_file(tmp_path / "r.json", raw)


ANY = (st.none() | st.booleans() | st.integers(-10, 10**6) | st.floats(allow_nan=True)
       | st.text(max_size=5))


@MANY
@given(bs=ANY, epochs=ANY, steps=ANY, flops=ANY)
def test_budget_validation_gives_whole_positive_steps_or_a_config_error(bs, epochs, steps, flops):
    tcfg = {"batch_size": bs, "epochs": epochs, "steps": steps, "flops": flops}
    try:
        b = resolve_budget(tcfg, flops_per_image=1000, steps_per_epoch=7)
    except ConfigError as e:
        assert "train." in str(e) and ("must be positive" in str(e) or "too large" in str(e)
                                       or "less than one step" in str(e))
        return
    assert isinstance(b.steps, int) and b.steps >= 1 and b.global_batch == bs >= 1
    used = flops if flops is not None else steps if steps is not None else epochs
    assert not isinstance(used, bool) and used > 0 and math.isfinite(used)


@MANY
@given(v=ANY)
def test_data_sizes_are_positive_integers_or_a_config_error(v):
    try:
        n = data._positive("train_size", v)
    except ConfigError as e:
        assert "data.train_size must be a positive integer or null" in str(e)
        return
    assert n is None if v is None else (n == v and n >= 1 and isinstance(n, int))


PATCHED = [k for k in models.MODELS.names() if models.MODELS.get(k).family in ("vit", "hybrid")]


@MANY
@given(name=st.sampled_from(PATCHED), image=st.integers(1, 600), patch=st.integers(-2, 80),
       pad=st.booleans())
def test_patch_validation_property(name, image, patch, pad):
    cfg = {"name": name, "patch_size": patch, "pad_to_patch": pad}
    hybrid = models.MODELS.get(name).family == "hybrid"
    try:
        models.validate(cfg, image)
    except ConfigError as e:
        assert "model.patch_size" in str(e) or "data.image_size" in str(e)  # names the fix
        return
    assert 1 <= patch <= image and (image % patch == 0 or pad)
    assert not hybrid or patch in models.HYBRID_PATCHES


@MANY
@given(group=st.sampled_from(cli.GROUPS), name=st.text(st.characters(
    whitelist_categories=("Ll", "Lu", "Nd"), whitelist_characters="_-"), min_size=1, max_size=12))
def test_unknown_group_option_property(group, name):
    valid = cli.group_options(group)
    assert valid, f"no options found for group {group} (is conf/study a link to sweeps/?)"
    try:
        cli.check_overrides([f"{group}={name}"])
    except ConfigError as e:
        msg = str(e)
        assert name not in valid and f"unknown {group} '{name}'" in msg
        listed = msg.split(f"Valid {group} options: ")[1].split(" (files in")[0].split(", ")
        assert sorted(listed) == valid  # every valid name, closest first
        assert listed[0] == msg.split("Did you mean '")[1].split("'")[0]
        return
    assert name in valid or name == "null"


# ---------------------------------------------------------------- slow, bounded fuzzers
@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A seed file with a few byte-level mutations: flips, cuts, inserts, splices."""
    raw = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete", "dup"]))
        i = draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and raw:
            raw[i] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, ord("{"), ord('"')]))
        elif op == "cut":
            del raw[i:]
        elif op == "insert":
            raw[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del raw[i : i + draw(st.integers(1, 16))]
        elif op == "dup":
            raw[i:i] = raw[i : i + draw(st.integers(1, 64))]
    return bytes(raw)


class Budget:
    """Counts what a fuzzer tried; stops testing (not generating) after FUZZ_SECONDS."""

    def __init__(self, name: str):
        self.name, self.t0, self.counts = name, time.monotonic(), Counter()

    def open(self) -> bool:
        return time.monotonic() - self.t0 < FUZZ_SECONDS

    def report(self, capsys) -> None:
        n = sum(self.counts.values())
        with capsys.disabled():
            print(f"\nfuzz {self.name}: {n} inputs in {time.monotonic() - self.t0:.1f} s "
                  f"({dict(self.counts)})")
        assert n >= 200  # the fuzzer really ran


def _row_seeds(tmp: Path) -> list[bytes]:
    full = results.empty_row()
    full.update(run_id="abc123", status="ok", top1=0.5, config={"model": {"name": "vit_b"}},
                fewshot={"5": 0.3})
    p = results.write_row(full, tmp)
    return [p.read_bytes(), b'{"run_id": "x", "status": "ok"}', b"{}", b"[]"]


@pytest.mark.slow
def test_fuzz_row_reader(tmp_path, capsys):
    budget = Budget("row reader")
    seeds = _row_seeds(tmp_path / "seed")
    path = tmp_path / "r.json"

    rowlike = st.tuples(
        st.dictionaries(st.sampled_from([*results.ROW_FIELDS, "schema_version", "x"]), JSON,
                        max_size=8), JSON, JSON,
    ).map(lambda t: json.dumps({**t[0], "run_id": t[1], "status": t[2]}).encode())

    @settings(FUZZ, max_examples=900)
    @given(raw=mutated(seeds) | st.binary(max_size=200) | rowlike
           | JSON.map(lambda v: json.dumps(v).encode()))
    def run(raw):
        if budget.open():
            budget.counts[check_row_file(path, raw)] += 1

    run()
    path.unlink(missing_ok=True)
    rows, broken = results.load_rows(tmp_path)  # the reader of a whole study, on the seed
    assert len(rows) == 1 and not broken
    budget.report(capsys)


def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    head = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


@pytest.mark.slow
def test_fuzz_idx_reader(tmp_path, capsys):
    budget = Budget("idx reader")
    rng = np.random.default_rng(0)
    images = _idx_bytes(rng.integers(0, 256, (6, 28, 28)), data.IDX_IMAGES)
    labels = _idx_bytes(np.arange(6) % 10, data.IDX_LABELS)
    seeds = [images, labels, gzip.compress(images), gzip.compress(labels), b"\x1f\x8b"]
    root = tmp_path / "fm"
    root.mkdir()

    @settings(FUZZ, max_examples=4000)
    @given(raw=mutated(seeds) | st.binary(max_size=100), which=st.sampled_from(["images", "labels"]))
    def run(raw, which):
        if not budget.open():
            return
        for p in root.iterdir():
            p.unlink()
        (root / "train-images-idx3-ubyte").write_bytes(raw if which == "images" else images)
        (root / "train-labels-idx1-ubyte").write_bytes(raw if which == "labels" else labels)
        magic = data.IDX_IMAGES if which == "images" else data.IDX_LABELS
        try:
            arr = data.read_idx(root / f"train-{which}-idx{3 if which == 'images' else 1}-ubyte",
                                magic)
            assert arr.dtype == np.uint8 and arr.ndim == (3 if which == "images" else 1)
            split = data._idx_split(root, "train", 10)
            assert len(split.x) == len(split.y) and split.x.shape[1] == 1
            budget.counts["read"] += 1
        except DataError:
            budget.counts["DataError"] += 1

    run()
    budget.report(capsys)


def _cifar_seeds() -> list[bytes]:
    rng = np.random.default_rng(1)
    d = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 9],
         b"batch_label": b"x"}
    return [pickle.dumps(d, protocol=p) for p in (2, 4, 5)]


ARRAYS = hnp.arrays(st.sampled_from([np.uint8, np.int64, np.float32, np.bool_, np.int8]),
                    hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))
VALUES = st.recursive(ARRAYS | st.integers() | st.text(max_size=4) | st.binary(max_size=4)
                      | st.none(), lambda k: st.lists(k, max_size=4), max_leaves=8)
CIFAR_DICTS = st.dictionaries(st.sampled_from([b"data", b"labels", "data", "labels", b"x", 7]),
                              VALUES, max_size=4)


@pytest.mark.slow
def test_fuzz_cifar_reader(tmp_path, capsys):
    budget = Budget("CIFAR reader")
    seeds = _cifar_seeds()
    path = tmp_path / "data_batch_1"

    @settings(FUZZ, max_examples=1400)
    @given(raw=mutated(seeds) | st.binary(max_size=100)
           | st.tuples(CIFAR_DICTS, st.integers(0, 5)).map(lambda t: pickle.dumps(t[0], t[1])))
    def run(raw):
        if not budget.open():
            return
        path.write_bytes(raw)
        try:
            split = data._cifar_batch(path, "labels", 10, "fix")
            assert split.x.dtype == data.torch.uint8 and split.x.shape[1:] == (3, 32, 32)
            assert len(split.y) == len(split.x) and (split.y.numel() == 0 or split.y.max() < 10)
            budget.counts["read"] += 1
        except DataError:
            budget.counts["DataError"] += 1

    run()
    budget.report(capsys)
