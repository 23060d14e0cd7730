"""Nothing lost, clear errors: every bad input and every fault through the real CLI.

Bad input ends as one paragraph on stderr (`benchbench: error:` / `benchbench: failed:`),
a non-zero exit, no traceback (HYDRA_FULL_ERROR=1 shows it) and, for a point, a failure row.
Faults (signals, OOM, NaN, full disk, concurrent writers) are simulated on the CPU.
"""
from __future__ import annotations

import errno
import gzip
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY, signal_at
from PIL import Image

from benchbench import cli, point, results
from benchbench.errors import BenchbenchError

QUICK = ["train.steps=2"]  # two steps are enough wherever the result itself does not matter


def rows_of(rdir: Path) -> list[dict]:
    rows, broken = results.load_rows(rdir)
    assert not broken, broken
    return rows


def one_row(rdir: Path) -> dict:
    (row,) = rows_of(rdir)
    return row


def point_of(rdir: Path, *overrides: str) -> tuple[str, dict]:
    """(run_id, identity) the CLI gives these overrides (composed as run_cli composes them)."""
    from hydra import compose, initialize_config_dir

    cli._register_resolvers()
    with initialize_config_dir(str(cli.CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*TINY, f"results.dir={rdir}", *overrides])
    d = point.resolved_config(cfg)
    return results.run_id_of(d), results.identity_config(d)


def assert_clear(err: str, *needles: str) -> None:
    """One paragraph naming the problem, no traceback."""
    assert "Traceback" not in err, err
    for n in needles:
        assert n in err, f"{n!r} not in {err!r}"
    line = next(x for x in err.splitlines() if needles[0] in x)
    assert line.startswith("benchbench: "), line


# ---------------------------------------------------------------- unknown names
@pytest.mark.parametrize("arg,closest,listed", [
    ("model=vit_bb", "vit_b", "vit_micro"),
    ("data=fashion_mnst", "fashion_mnist", "imagefolder"),
    ("task=trian", "train", "measure"),
    ("train=paper_pretrian", "paper_pretrain", "default"),
    ("study=dmeo", "demo", "paper_fig5"),
])
def test_unknown_group_option_lists_valid_names_closest_first(run_cli, capsys, arg, closest, listed):
    code, rdir = run_cli(arg)
    err = capsys.readouterr().err
    key, bad = arg.split("=")
    assert code == 2 and not rdir.exists()  # refused before Hydra runs: nothing written
    assert_clear(err, f"benchbench: error: unknown {key} '{bad}'. Did you mean '{closest}'?",
                 f"Valid {key} options: {closest}, ", listed)


def test_unknown_model_variant_lists_paper_names(run_cli, capsys):
    code, rdir = run_cli("model.variant=ViT-X/16")
    err = capsys.readouterr().err
    assert code == 2
    assert_clear(err, "unknown model variant 'ViT-X/16'", "Valid model variants: ", "ViT-B/16",
                 "Write it as the paper")
    row = one_row(rdir)
    assert row["status"] == "failed" and "unknown model variant 'ViT-X/16'" in row["error"]


def test_hydra_full_error_shows_the_traceback(run_cli, capsys, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    assert run_cli("model=vit_bb")[0] == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "benchbench: error: unknown model 'vit_bb'" in err
    assert run_cli("model.patch_size=5")[0] == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "ConfigError: patch size 5 does not divide" in err


# ---------------------------------------------------------------- impossible combinations
DIGITS = ["data=digits", "data.train_size=null", "data.test_size=null"]


@pytest.mark.parametrize("overrides,message", [
    (["model.patch_size=5"], "patch size 5 does not divide image size 32: valid model.patch_size"),
    (["model=hybrid_micro", "model.patch_size=32", *DIGITS, "data.image_size=16"],
     "downsampling 32 is larger than the 16 px image: set data.image_size to at least 32"),
    (["model.patch_size=32", "model.pad_to_patch=true", "data.image_size=16"],
     "patch size 32 is larger than the 16 px image"),
    ([*DIGITS, "data.num_classes=11"], "data.num_classes=11 but digits has 10 classes; use 1..10."),
    (["data.num_classes=12"], "data.num_classes=12 but synthetic has 10 classes"),
    ([*DIGITS, "data.train_size=5000"], "data.train_size=5000 but digits has only "),
    (["data.train_size=-5"], "data.train_size must be a positive integer or null, got -5."),
    (["train.epochs=0"], "train.epochs must be positive"),
    (["train.epochs=-1"], "train.epochs must be positive"),
    (["train.epochs=inf"], "train.epochs must be positive (finite), got inf"),
    (["train.steps=0"], "train.steps must be positive"),
    (["train.steps=-3"], "train.steps must be positive"),
    (["train.flops=0"], "train.flops must be positive"),
    (["train.flops=-1e9"], "train.flops must be positive"),
    (["train.batch_size=0"], "train.batch_size must be positive"),
    (["train.batch_size=-8"], "train.batch_size must be positive"),
    (["train.batch_size=512"], "train.batch_size=512 is larger than the 256 training images"),
    (["train.retry_diverged_lr_factor=2"], "train.retry_diverged_lr_factor must be in (0, 1)"),
    (["train.retry_diverged_lr_factor=abc"], "train.retry_diverged_lr_factor must be in (0, 1)"),
])
def test_impossible_combination_is_a_failure_row_and_one_message(run_cli, capsys, overrides,
                                                                  message):
    code, rdir = run_cli(*overrides)
    err = capsys.readouterr().err
    assert code == 2
    assert_clear(err, f"benchbench: failed: {message}")
    row = one_row(rdir)
    assert row["status"] == "failed" and message in row["error"]
    assert row["samples_seen"] is None and row["top1"] is None  # nothing made up


# ---------------------------------------------------------------- missing or malformed data
def write_idx(path: Path, arr: np.ndarray, magic: int) -> None:
    head = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(head + arr.astype(np.uint8).tobytes())


def fashion_tree(root: Path, n: int = 20) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        write_idx(root / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), 2051)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, 2049)
    return root


SMALL = ["data.train_size=null", "data.test_size=null", "train.batch_size=4", *QUICK]


def test_missing_fashion_mnist_names_the_package_and_the_path(run_cli, capsys, tmp_path):
    code, rdir = run_cli("data=fashion_mnist", f"data.root={tmp_path / 'nope'}", *SMALL)
    assert code == 2
    assert_clear(capsys.readouterr().err, "benchbench: failed: Fashion-MNIST folder",
                 str(tmp_path / "nope"), "apt-get install dataset-fashion-mnist", "data.root=DIR")
    (tmp_path / "empty").mkdir()
    code, _ = run_cli("data=fashion_mnist", f"data.root={tmp_path / 'empty'}", *SMALL)
    assert code == 2
    assert_clear(capsys.readouterr().err, "benchbench: failed: Fashion-MNIST: no "
                 "train-images-idx3-ubyte[.gz] in", "dataset-fashion-mnist")


@pytest.mark.parametrize("damage,message", [
    ("magic", "idx magic number 2049, expected 2051 (images); wrong or corrupt file."),
    ("truncate", "the file is truncated or corrupt; re-install it."),
    ("gzip", "truncated or corrupt"),
    ("labels", "label 10 outside 0..9"),
])
def test_malformed_fashion_files_name_the_file(run_cli, capsys, tmp_path, damage, message):
    root = fashion_tree(tmp_path / "fm")
    img = root / "train-images-idx3-ubyte"
    if damage == "magic":
        img.write_bytes((2049).to_bytes(4, "big") + img.read_bytes()[4:])
    elif damage == "truncate":
        img.write_bytes(img.read_bytes()[:-100])
    elif damage == "gzip":
        packed = gzip.compress(img.read_bytes())
        img.unlink()
        (root / "train-images-idx3-ubyte.gz").write_bytes(packed[: len(packed) // 2])
    else:
        write_idx(root / "train-labels-idx1-ubyte", np.arange(20) % 11, 2049)
    code, rdir = run_cli("data=fashion_mnist", f"data.root={root}", *SMALL)
    err = capsys.readouterr().err
    assert code == 2
    assert_clear(err, "benchbench: failed: ", message, str(root))
    assert one_row(rdir)["status"] == "failed"


def test_fashion_tree_that_is_fine_trains(run_cli, tmp_path):
    code, rdir = run_cli("data=fashion_mnist", f"data.root={fashion_tree(tmp_path / 'fm')}", *SMALL)
    assert code == 0 and one_row(rdir)["dataset"] == "fashion_mnist"


def test_missing_cifar_names_the_folder_to_set(run_cli, capsys, tmp_path):
    code, _ = run_cli("data=cifar10", *SMALL)
    assert code == 2
    assert_clear(capsys.readouterr().err, "benchbench: failed: cifar10 needs data.root: put "
                 "torchvision's cifar-10-batches-py under data.root=PATH (nothing is downloaded)")
    d = tmp_path / "c" / "cifar-100-python"
    d.mkdir(parents=True)
    x = np.zeros((8, 3072), np.uint8)
    (d / "train").write_bytes(pickle.dumps({b"data": x, b"fine_labels": list(range(8))}))
    code, _ = run_cli("data=cifar100", f"data.root={tmp_path / 'c'}", *SMALL)
    assert code == 2
    assert_clear(capsys.readouterr().err, f"benchbench: failed: missing {d / 'test'}: put "
                 "torchvision's cifar-100-python under data.root=PATH")
    (d / "test").write_bytes(b"\x80\x04garbage")
    code, _ = run_cli("data=cifar100", f"data.root={tmp_path / 'c'}", *SMALL,
                      results=tmp_path / "r3")  # a new dir: a failed point is not rerun
    assert code == 2
    assert_clear(capsys.readouterr().err, f"{d / 'test'}: not a CIFAR batch", "replace the file")


def image_tree(root: Path, per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for part, n in (("train", per_class), ("val", 2)):
        for c in ("a", "b"):
            (root / part / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / part / c / f"{i}.png")
    return root


IMG = ["data=imagefolder", "data.image_size=8", *SMALL]


def test_imagefolder_with_an_empty_class_names_the_folder(run_cli, capsys, tmp_path):
    root = image_tree(tmp_path / "imgs")
    (root / "train" / "c").mkdir()
    code, rdir = run_cli(*IMG, f"data.root={root}")
    assert code == 2
    assert_clear(capsys.readouterr().err, f"benchbench: failed: class folder {root / 'train' / 'c'}"
                 " holds no images", "add images or remove the folder")


def test_unreadable_images_are_skipped_and_counted_or_fail_by_config(run_cli, capsys, tmp_path):
    root = image_tree(tmp_path / "imgs")
    bad = root / "train" / "b" / "zz_broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.warns(UserWarning, match=r"imagefolder: skipped 1 unreadable images \(first: "
                      r".*zz_broken.png\); set data.skip_bad_images=false"):
        code, rdir = run_cli(*IMG, f"data.root={root}")
    assert code == 0
    row = one_row(rdir)
    assert row["status"] == "ok" and row["train_size"] == 8  # the 8 readable ones
    code, rdir = run_cli(*IMG, f"data.root={root}", "data.skip_bad_images=false",
                         results=tmp_path / "strict")
    assert code == 2
    assert_clear(capsys.readouterr().err, f"benchbench: failed: unreadable image {bad}",
                 "set data.skip_bad_images=true")
    assert one_row(rdir)["status"] == "failed"


# ---------------------------------------------------------------- result files
def test_broken_row_is_moved_aside_never_deleted_and_the_point_runs_again(run_cli, capsys):
    code, rdir = run_cli("task=measure")
    assert code == 0
    path = rdir / "runs" / f"{one_row(rdir)['run_id']}.json"
    good = path.read_text()
    contents = [good[: len(good) // 2], "this is not JSON", ""]  # truncated, garbage, empty
    for text in contents:
        path.write_text(text)
        code, _ = run_cli("task=measure")
        err = capsys.readouterr().err
        assert code == 0
        assert_clear(err, f"benchbench: {path}: not a readable JSON row", "Moved to",
                     "running the point again")
        assert one_row(rdir)["status"] == "ok"
    kept = sorted((rdir / "runs").glob(f"{path.name}.broken-*"))
    assert sorted(p.read_text() for p in kept) == sorted(contents)  # all three, even in 1 s


def test_old_schema_row_reads_with_nulls_and_counts_as_done(run_cli, capsys):
    rid, _ = point_of(Path("unused"), "task=measure")
    rdir = Path("results").resolve()
    (rdir / "runs").mkdir(parents=True)
    path = rdir / "runs" / f"{rid}.json"
    path.write_text(json.dumps({"run_id": rid, "status": "ok", "top1": 0.5, "schema_version": 0}))
    before = path.read_bytes()
    code, _ = run_cli("task=measure", results=rdir)
    assert code == 0 and f"skip {rid}: already ok" in capsys.readouterr().out
    assert path.read_bytes() == before
    row = one_row(rdir)
    assert row["top1"] == 0.5 and row["mfu"] is None and row["params"] is None


def test_newer_schema_row_is_a_clear_error_and_never_overwritten(run_cli, capsys):
    rid, _ = point_of(Path("unused"), "task=measure")
    rdir = Path("results").resolve()
    (rdir / "runs").mkdir(parents=True)
    path = rdir / "runs" / f"{rid}.json"
    path.write_text(json.dumps({"run_id": rid, "status": "failed", "schema_version": 99}))
    before = path.read_bytes()
    for extra in ([], ["study.retry_failed=true"]):
        code, _ = run_cli("task=measure", *extra, results=rdir)
        assert code == 2
        assert_clear(capsys.readouterr().err, "benchbench: error: ", "row schema version 99 is "
                     "newer than this benchbench (1); upgrade benchbench to read it.")
    assert path.read_bytes() == before and list((rdir / "runs").iterdir()) == [path]
    with pytest.raises(BenchbenchError, match="upgrade benchbench"):
        results.read_row(path)


def test_unwritable_results_dir_is_one_message_and_the_row_is_printed(run_cli, capsys,
                                                                      monkeypatch):
    def denied(*a, **k):  # as root chmod is not enforced: simulate what the OS answers
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(results.tempfile, "mkstemp", denied)
    code, rdir = run_cli("task=measure")
    err = capsys.readouterr().err
    assert code == 2
    assert_clear(err, "benchbench: error: cannot write the row", "Permission denied",
                 "the row is printed above", "results.dir=<a writable folder>")
    printed = json.loads(next(x for x in err.splitlines() if x.startswith("{")))
    assert printed["status"] == "ok" and printed["model"] == "ViT-micro/8"
    assert not list(rdir.glob("runs/*"))


class _FullDisk:
    """A file whose write lands half its bytes, then fails as a full disk does."""

    def __init__(self, fd: int, *mode):
        self.fd = fd

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self.fd)

    def write(self, data: str | bytes) -> int:
        raw = data.encode() if isinstance(data, str) else data
        os.write(self.fd, raw[: len(raw) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")


def _enospc(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_full_disk_while_writing_keeps_the_old_row(tmp_path, monkeypatch, where):
    results.write_row({"run_id": "r", "status": "ok", "top1": 0.25}, tmp_path)
    target = {"write": "fdopen", "fsync": "fsync", "replace": "replace"}[where]
    monkeypatch.setattr(results.os, target, _FullDisk if where == "write" else _enospc)
    with pytest.raises(OSError, match="No space left"):
        results.write_row({"run_id": "r", "status": "ok", "top1": 0.75}, tmp_path)
    monkeypatch.undo()
    assert results.read_row(tmp_path / "runs" / "r.json")["top1"] == 0.25
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["r.json"]  # no temp file left


def test_full_disk_through_the_cli_keeps_the_old_row_and_says_so(run_cli, capsys, monkeypatch):
    code, rdir = run_cli("model.patch_size=5")  # a failed row, retried below
    assert code == 2
    (path,) = (rdir / "runs").glob("*.json")
    before = path.read_bytes()
    capsys.readouterr()
    monkeypatch.setattr(results.os, "fsync", _enospc)
    code, _ = run_cli("model.patch_size=5", "study.retry_failed=true")
    err = capsys.readouterr().err
    assert code == 2
    assert_clear(err, f"benchbench: error: cannot write the row {path} (No space left on device)",
                 "any earlier row at that path is kept")
    assert path.read_bytes() == before and list((rdir / "runs").iterdir()) == [path]


# ---------------------------------------------------------------- checkpoints
class _Payload:
    """Unpickling this would create a marker file: it must never run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_with_pickled_code_is_refused_not_executed(run_cli, capsys, tmp_path):
    from benchbench.train import load_checkpoint
    from benchbench.transfer import load_state

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "identity": {}, "step": 0, "x": _Payload(marker)}, evil)
    for load in (lambda: load_checkpoint(evil, {}), lambda: load_state(evil)):
        with pytest.raises(BenchbenchError, match=r"checkpoint .*evil.pt is unreadable"):
            load()
    # through the CLI: as the resume checkpoint of the point and as init.checkpoint
    rid, _ = point_of(Path("unused"), *QUICK)
    ckpt = tmp_path / "results" / "ckpt" / rid / "last.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(evil.read_bytes())
    code, rdir = run_cli(*QUICK)
    assert code == 2
    assert_clear(capsys.readouterr().err, f"benchbench: failed: checkpoint {ckpt} is unreadable "
                 "(UnpicklingError); delete it to start over.")
    code, _ = run_cli(*QUICK, f"init.checkpoint={evil}", results=tmp_path / "r2")
    assert code == 2
    assert_clear(capsys.readouterr().err, f"checkpoint {evil} is unreadable (UnpicklingError)")
    assert not marker.exists()


def test_checkpoint_of_another_config_is_refused_naming_the_difference(run_cli, capsys, tmp_path):
    from benchbench.train import save_checkpoint

    rid, ident = point_of(Path("unused"), *QUICK)
    ident["train"]["lr"] = 0.5
    ckpt = tmp_path / "results" / "ckpt" / rid / "last.pt"
    save_checkpoint(ckpt, {"model": {}, "identity": ident, "step": 1})
    code, rdir = run_cli(*QUICK)
    assert code == 2
    assert_clear(capsys.readouterr().err, f"benchbench: failed: checkpoint {ckpt} was written for a "
                 "different config (train.lr: 0.5 there vs 0.001 here); delete it or restore")
    assert ckpt.exists()  # refused, not deleted


# ---------------------------------------------------------------- signals
def test_sigint_checkpoints_exits_130_and_relaunch_resumes_the_same_result(run_cli, capsys,
                                                                           monkeypatch, tmp_path):
    steps = ["train.steps=6"]
    code, ref = run_cli(*steps, results=tmp_path / "ref")
    assert code == 0
    want = one_row(ref)
    with monkeypatch.context() as m:
        signal_at(m, signal.SIGINT, step=2)
        code, rdir = run_cli(*steps)
    assert code == 130
    assert_clear(capsys.readouterr().err, "benchbench: SIGINT at step 3; checkpoint",
                 "last.pt (relaunch resumes)")
    assert not (rdir / "runs").exists() and list(rdir.glob("ckpt/*/last.pt"))  # resumable: no row
    code, _ = run_cli(*steps)
    got = one_row(rdir)
    assert code == 0 and got["resumed"] is True and got["status"] == "ok"
    assert got["samples_seen"] == want["samples_seen"] == 6 * 64
    assert got["top1"] == want["top1"] and got["final_loss"] == pytest.approx(want["final_loss"])
    assert not list(rdir.glob("ckpt/*/last.pt"))


def test_signal_without_a_writable_checkpoint_writes_an_interrupted_row(run_cli, capsys,
                                                                        monkeypatch):
    from benchbench import train as train_mod

    def read_only(*a, **k):
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as m:
        signal_at(m, signal.SIGTERM)
        m.setattr(train_mod, "save_checkpoint", read_only)
        with pytest.warns(UserWarning, match="cannot write checkpoint .*last.pt"):
            code, rdir = run_cli(*QUICK, "train.steps=4")
    assert code == 130
    assert_clear(capsys.readouterr().err, "benchbench: SIGTERM at step 2; no checkpoint could be "
                 "written (a relaunch starts the point again)")
    row = one_row(rdir)
    assert row["status"] == "interrupted" and "SIGTERM at step 2" in row["error"]
    code, _ = run_cli(*QUICK, "train.steps=4")  # an interrupted point runs again, from scratch
    row = one_row(rdir)
    assert code == 0 and row["status"] == "ok" and row["resumed"] is False


def test_ctrl_c_outside_training_writes_an_interrupted_row(run_cli, capsys, monkeypatch):
    from benchbench import train as train_mod

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "evaluate", ctrl_c)
    code, rdir = run_cli(*QUICK)
    assert code == 130 and "Traceback" not in capsys.readouterr().err
    assert one_row(rdir)["status"] == "interrupted"


def test_sigusr2_checkpoints_then_hands_off_to_submitits_handler(run_cli, capsys, monkeypatch):
    """README: submitit requeues a preempted job. Its handler (installed before the run, on
    SIGUSR2) must run once, after our checkpoint is on disk; the point exits 130, no row."""
    seen: list[tuple[int, list[str]]] = []
    results_dir: list[Path] = []

    def submitit_like(signum, frame):
        seen.append((signum, sorted(p.name for p in results_dir[0].glob("ckpt/*/last.pt"))))

    old = signal.signal(signal.SIGUSR2, submitit_like)
    try:
        with monkeypatch.context() as m:
            signal_at(m, signal.SIGUSR2, step=2)
            results_dir.append(Path.cwd() / "results")
            code, rdir = run_cli("train.steps=6", results=results_dir[0])
    finally:
        assert signal.getsignal(signal.SIGUSR2) is submitit_like  # ours is gone again
        signal.signal(signal.SIGUSR2, old)
    assert code == 130
    assert seen == [(signal.SIGUSR2, ["last.pt"])]
    assert_clear(capsys.readouterr().err, "benchbench: SIGUSR2 at step 3; checkpoint")
    assert not (rdir / "runs").exists()


# ---------------------------------------------------------------- OOM, divergence
def _oom_from(monkeypatch, batch: int, *, training: bool) -> None:
    """Models whose forward raises CUDA's OOM error from `batch` images up."""
    from benchbench import models

    real = models.build_model

    def build(*a, **k):
        model = real(*a, **k)
        fwd = model.forward

        def forward(x, *args, **kw):
            if len(x) >= batch and (model.training or not training):
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            return fwd(x, *args, **kw)

        model.forward = forward
        return model

    monkeypatch.setattr(models, "build_model", build)


def test_oom_in_training_is_a_row_with_the_batch_size_and_the_sweep_goes_on(run_cli, capsys,
                                                                            monkeypatch):
    _oom_from(monkeypatch, 64, training=True)
    code, rdir = run_cli("-m", "train.batch_size=32,64", *QUICK)
    out, err = capsys.readouterr()
    rows = {r["batch_size"]: r for r in rows_of(rdir)}
    assert code == 1 and rows[32]["status"] == "ok" and rows[64]["status"] == "oom"
    assert rows[64]["error"] == "out of memory at batch size 64; lower train.batch_size (or " \
                                "measure.batch_size)"
    assert "sweep done: 2 points: 1 ok, 1 oom" in out and "Traceback" not in err


def test_oom_while_measuring_is_a_row_and_the_sweep_goes_on(run_cli, capsys, monkeypatch):
    _oom_from(monkeypatch, 8, training=False)
    code, rdir = run_cli("-m", "task=measure", "measure.throughput=true", "measure.repeats=1",
                         "measure.cpu_throughput_batch=2,8")  # the CPU times at its own batch
    out, err = capsys.readouterr()
    rows = {r["batch_size"]: r for r in rows_of(rdir)}
    assert code == 1 and rows[2]["status"] == "ok" and rows[8]["status"] == "oom"
    assert rows[8]["error"].startswith("out of memory at batch size 8 (infer)")
    assert rows[8]["params"] == rows[2]["params"] > 0  # what was measured is kept
    assert "sweep done: 2 points: 1 ok, 1 oom" in out and "Traceback" not in err


def _nan_from(monkeypatch, lr_at_least: float) -> None:
    """Training whose loss turns NaN at step 3 when train.lr >= lr_at_least."""
    from benchbench import train as train_mod

    real = train_mod.train

    def train(*a, tcfg, **k):
        if float(tcfg.lr) >= lr_at_least:
            raise train_mod.Diverged(3, float("nan"))
        return real(*a, tcfg=tcfg, **k)

    monkeypatch.setattr(train_mod, "train", train)


def test_nan_loss_is_a_diverged_row_with_the_step(run_cli, capsys, monkeypatch):
    from benchbench import models

    real = models.build_model

    def build(*a, **k):  # a real NaN: the logits of every training forward
        model = real(*a, **k)
        fwd = model.forward
        model.forward = lambda x: fwd(x) * float("nan") if model.training else fwd(x)
        return model

    monkeypatch.setattr(models, "build_model", build)
    code, rdir = run_cli(*QUICK)
    row = one_row(rdir)
    assert code == 1 and row["status"] == "diverged" and row["diverged_step"] == 0
    assert row["error"] == "loss became nan at step 0; lower train.lr or raise warm-up"
    assert_clear(capsys.readouterr().err, "benchbench: diverged: loss became nan at step 0")


def test_diverged_point_is_retried_at_a_lower_lr_as_a_new_row(run_cli, capsys, monkeypatch):
    _nan_from(monkeypatch, lr_at_least=0.01)
    args = [*QUICK, "train.lr=0.1", "train.retry_diverged_lr_factor=0.05"]
    code, rdir = run_cli(*args)
    rows = {r["status"]: r for r in rows_of(rdir)}
    assert code == 0 and set(rows) == {"diverged", "ok"}
    first, retry = rows["diverged"], rows["ok"]
    assert first["diverged_step"] == 3 and first["config"]["train"]["lr"] == 0.1
    assert retry["retry_of"] == first["run_id"] != retry["run_id"]
    assert retry["config"]["train"]["lr"] == pytest.approx(0.005)
    assert f"retry {first['run_id']} at train.lr=0.005" in capsys.readouterr().out
    mtimes = {p: p.stat().st_mtime_ns for p in (rdir / "runs").iterdir()}
    assert run_cli(*args)[0] == 0  # relaunch: both rows stay as they are
    assert {p: p.stat().st_mtime_ns for p in (rdir / "runs").iterdir()} == mtimes
    # the retry is the same point as asking for the lower lr directly
    assert point_of(rdir, *QUICK, "train.lr=0.005")[0] == retry["run_id"]


def test_a_diverged_retry_is_not_retried_again(run_cli, capsys, monkeypatch):
    """README: one retry at lr x 0.5. When the retry diverges too, that is the end: two
    diverged rows (the second `retry_of` the first), never a third attempt."""
    from benchbench import train as train_mod

    lrs: list[float] = []

    def train(*a, tcfg, **k):
        lrs.append(float(tcfg.lr))
        if len(lrs) > 2:  # a bounded failure instead of retrying until lr reaches zero
            raise RuntimeError("a third attempt")
        raise train_mod.Diverged(1, float("nan"))

    monkeypatch.setattr(train_mod, "train", train)
    code, rdir = run_cli(*QUICK, "train.lr=0.1", "train.retry_diverged_lr_factor=0.5")
    assert lrs == [0.1, 0.05]
    rows = sorted(rows_of(rdir), key=lambda r: -r["config"]["train"]["lr"])
    assert [r["status"] for r in rows] == ["diverged", "diverged"]
    assert rows[0]["retry_of"] is None and rows[1]["retry_of"] == rows[0]["run_id"]
    assert rows[1]["config"]["train"]["lr"] == 0.05 and code == 1
    out = capsys.readouterr().out
    assert out.count("retry ") == 1 and f"retry {rows[0]['run_id']} at train.lr=0.05" in out


# ---------------------------------------------------------------- concurrency
WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from benchbench import results
    d, i, n, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    while time.time() < start:
        time.sleep(0.001)
    blob = [i] * 5000  # a large row: a torn write would show
    for j in range(n):
        for rid in (f"p{{i}}", "shared"):
            results.write_row({{"run_id": rid, "status": "ok", "top1": j / n, "seed": i,
                               "config": {{"blob": blob, "j": j}}}}, d)
""")


def _check_complete(row: dict) -> None:
    blob = row["config"]["blob"]
    assert len(blob) == 5000 and set(blob) == {row["seed"]}


def test_32_writers_and_a_reader_lose_nothing_and_never_see_a_partial_row(tmp_path):
    n_proc, n_writes = 32, 6
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(repo=str(REPO)))
    start = time.time() + 1.0  # every writer waits for the same moment
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), str(i), str(n_writes),
                               str(start)], env=env) for i in range(n_proc)]
    reads = 0
    while any(p.poll() is None for p in procs) or reads == 0:
        if (tmp_path / "runs").exists():
            rows, broken = results.load_rows(tmp_path)
            assert not broken, broken
            for row in rows:
                _check_complete(row)
            reads += 1
    assert all(p.wait() == 0 for p in procs)
    rows = {r["run_id"]: r for r in rows_of(tmp_path)}
    assert set(rows) == {f"p{i}" for i in range(n_proc)} | {"shared"}
    for i in range(n_proc):
        assert rows[f"p{i}"]["config"]["j"] == n_writes - 1  # the last write of each wins
    _check_complete(rows["shared"])
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".")]
    assert reads > 0


# ---------------------------------------------------------------- secrets, wandb
SECRETS = ("SECRET-wandb-9f8e7d", "SECRET-token-1a2b3c", "SECRET-env-4d5e6f")


def _grep_secrets(root: Path) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            hits += [f"{p}: {s}" for s in SECRETS if s.encode() in data]
    return hits


def test_secrets_never_reach_rows_logs_or_stored_configs(run_cli, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_API_KEY", SECRETS[2])
    code, rdir = run_cli(*QUICK, "train.save_final=true", f"+wandb.api_key={SECRETS[0]}",
                         f"+data.hf_token={SECRETS[1]}")  # row, final.pt
    assert code == 0 and list(rdir.glob("ckpt/*/final.pt"))
    code, _ = run_cli("-m", "task=measure", "seed=0,1", f"+wandb.api_key={SECRETS[0]}",
                      f"+hf_token={SECRETS[1]}")  # multirun.yaml, status files
    assert code == 0
    out, err = capsys.readouterr()
    assert not [s for s in SECRETS if s in out + err]
    assert not _grep_secrets(tmp_path)
    row = next(r for r in rows_of(rdir) if r["task"] == "train")
    assert row["config"]["wandb"]["api_key"] == "***" and row["config"]["data"]["hf_token"] == "***"


@pytest.mark.parametrize("mode", ["offline", "disabled"])
def test_wandb_offline_or_disabled_needs_no_account_and_stores_no_secret(run_cli, capsys,
                                                                         monkeypatch, tmp_path,
                                                                         mode):
    wandb = pytest.importorskip("wandb")
    for k in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wb").mkdir()
    wandb.teardown()  # wandb reads WANDB_DIR once per process: forget an earlier test's
    code, rdir = run_cli(*QUICK, "wandb.enabled=true", f"wandb.mode={mode}",
                         f"+wandb.api_key={SECRETS[0]}")
    wandb.teardown()
    err = capsys.readouterr().err
    assert code == 0 and "wandb logging failed" not in err, err
    assert one_row(rdir)["status"] == "ok"
    offline_runs = list((tmp_path / "wb").rglob("offline-run-*"))
    assert bool(offline_runs) == (mode == "offline")
    assert not _grep_secrets(tmp_path)


@pytest.mark.parametrize("where", ["init", "log", "finish"])
def test_a_wandb_failure_is_one_warning_and_the_row_is_kept(run_cli, capsys, monkeypatch, where):
    """README: a wandb failure is one warning, the row is kept, the point is ok (exit 0).
    The failure is injected at wandb's own API (init, run.log or run.finish raising)."""
    wandb = pytest.importorskip("wandb")
    finished = []

    class Run:
        summary: dict = {}

        def log(self, data, step=None):
            if where == "log":
                raise ConnectionError("wandb.log: network down")

        def finish(self, exit_code=None):
            finished.append(True)
            if where == "finish":
                raise ConnectionError("wandb.finish: network down")

    def init(**kw):
        if where == "init":
            raise wandb.errors.CommError("wandb.init: network down")
        return Run()

    monkeypatch.setattr(wandb, "init", init)
    code, rdir = run_cli(*QUICK, "wandb.enabled=true")
    err = capsys.readouterr().err
    assert code == 0 and one_row(rdir)["status"] == "ok", err
    assert err.count("wandb logging failed") == 1 and "network down" in err
    assert "the row is saved" in err and "Traceback" not in err
    assert finished == ([] if where == "init" else [True])  # a started run is finished
