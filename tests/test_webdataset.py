"""data=webdataset: tar shards indexed once, read by offset in a seeded shard order; bad
shards get errors naming shard and key; folders and shards train through the real CLI."""
from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchbench import data
from benchbench.data import load_dataset
from benchbench.errors import DataError

wds = pytest.importorskip("webdataset")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHBENCH_CACHE", str(tmp_path / "cache"))


def jpeg(rng, size=(20, 16), label=0) -> bytes:
    arr = (rng.integers(0, 40, (size[1], size[0], 3)) + 60 * label).clip(0, 255).astype(np.uint8)
    b = io.BytesIO()
    Image.fromarray(arr).save(b, "JPEG", quality=90)
    return b.getvalue()


def write_shards(root: Path, part: str, n_shards: int, per_shard: int, classes: int = 3,
                 ext: str = "jpg") -> list[tuple[str, int]]:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(part) + n_shards)
    out = []
    for s in range(n_shards):
        with wds.TarWriter(str(root / f"{part}-{s:04d}.tar")) as w:
            for i in range(per_shard):
                key, label = f"{part}{s:02d}_{i:03d}", (s * per_shard + i) % classes
                w.write({"__key__": key, ext: jpeg(rng, label=label), "cls": str(label)})
                out.append((key, label))
    return out


def write_tree(root: Path, train: int = 6, val: int = 2, classes: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for part, n in (("train", train), ("val", val)):
        for c in range(classes):
            (root / part / f"c{c}").mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (root / part / f"c{c}" / f"{i}.jpg").write_bytes(jpeg(rng, label=c))
    return root


def cfg(**kw):
    return {"name": "webdataset", "image_size": 8, **kw}


@pytest.fixture
def shards(tmp_path):
    root = tmp_path / "shards"
    write_shards(root, "train", 4, 6)
    write_shards(root, "val", 1, 6)
    return root


def test_shards_load_with_labels_and_subsets(shards):
    ds = load_dataset(cfg(root=str(shards), max_resident_bytes=1))
    assert ds.train.streamed and len(ds.train) == 24 and len(ds.test) == 6 and ds.num_classes == 3
    assert ds.train.y.tolist() == [i % 3 for i in range(24)]
    assert ds.train.paths[7] == f"{shards / 'train-0001.tar'} key train01_001"
    sub = load_dataset(cfg(root=str(shards), train_size=9, max_resident_bytes=1))
    assert torch.bincount(sub.train.y).tolist() == [3, 3, 3]
    resident = load_dataset(cfg(root=str(shards)))  # small: decoded once, same labels
    assert resident.train.x.shape == (24, 3, 8, 8) and torch.equal(resident.train.y, ds.train.y)


def test_brace_patterns_pick_shards(shards):
    ds = load_dataset(cfg(root=str(shards), train_shards="train-{0000..0001}.tar", max_resident_bytes=1))
    assert len(ds.train) == 12


def _epoch_indices(split, *, world_size=1, rank=0, steps=None, start=0, num_workers=0, bs=4):
    loader = data.make_loader(split, batch_size=bs, image_size=8, mean=(0.5,) * 3, std=(0.5,) * 3,
                              seed=3, rank=rank, world_size=world_size, num_workers=num_workers,
                              shuffle_buffer=5)
    steps = steps or loader.steps_per_epoch
    return loader, [idx[sl].tolist() for (_, idx, sl), _ in
                    zip(loader._steps(start, torch.device("cpu")), range(steps))]


def test_shard_order_is_an_epoch_permutation_split_across_ranks_and_resumable(shards):
    train = load_dataset(cfg(root=str(shards), max_resident_bytes=1)).train
    loader, one = _epoch_indices(train)
    flat = [i for b in one for i in b]
    assert sorted(flat) == list(range(24))  # every sample once in the epoch
    shard_of = np.repeat(np.arange(4), 6)
    first = [shard_of[i] for i in flat[:6]]
    assert len(set(first)) <= 2  # read shard by shard: a buffer of 5 mixes neighbours only
    e0, e1 = loader._perm(0).tolist(), loader._perm(1).tolist()
    assert e0 != e1 and loader._perm(1).tolist() == e1  # a new order per epoch, fixed by seed
    ranks = [_epoch_indices(train, world_size=2, rank=r)[1] for r in (0, 1)]
    assert sorted(i for r in ranks for b in r for i in b) == list(range(24))  # no sample twice
    assert [a + b for a, b in zip(*ranks)] == one  # the ranks split each single-process batch
    _, resumed = _epoch_indices(train, start=3, steps=3)
    assert resumed == one[3:6]  # a resume at step 3 skips exactly the consumed samples


def test_shard_batches_equal_with_any_worker_count(shards):
    train = load_dataset(cfg(root=str(shards), max_resident_bytes=1)).train
    kw = dict(batch_size=4, image_size=8, mean=(0.5,) * 3, std=(0.5,) * 3, seed=1, augment=True)
    a = [b for b, _ in zip(data.make_loader(train, num_workers=0, **kw).iter_from(2), range(3))]
    b = [b for b, _ in zip(data.make_loader(train, num_workers=2, **kw).iter_from(2), range(3))]
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)


def test_corrupt_jpeg_in_a_shard_is_counted_or_named(tmp_path):
    root = tmp_path / "s"
    write_shards(root, "val", 1, 3, classes=2)
    rng = np.random.default_rng(1)
    with wds.TarWriter(str(root / "train-0000.tar")) as w:
        for i in range(4):
            w.write({"__key__": f"k{i}", "jpg": jpeg(rng, label=i % 2), "cls": str(i % 2)})
        w.write({"__key__": "broken", "jpg": b"\xff\xd8\xff not a jpeg", "cls": "1"})
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable images \(first: .*train-0000.tar key broken\)"):
        ds = load_dataset(cfg(root=str(root)))
    assert len(ds.train) == 4
    with pytest.raises(DataError, match=r"unreadable image .*train-0000.tar key broken"):
        load_dataset(cfg(root=str(root), skip_bad_images=False))
    big = load_dataset(cfg(root=str(root), max_resident_bytes=1, skip_bad_images=False))
    loader = data.make_loader(big, part="train", batch_size=5, image_size=8, num_workers=0,
                              skip_bad_images=False)
    with pytest.raises(DataError, match=r"train-0000.tar key broken"):
        next(loader.iter_from(0))


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as t:
        for name, b in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(b)
            t.addfile(info, io.BytesIO(b))


def test_bad_shards_get_errors_naming_the_fix(tmp_path):
    root = tmp_path / "s"
    write_shards(root, "val", 1, 3)
    with pytest.raises(DataError, match=r"no shards match data.train_shards=train-\*.tar in .*set data.train_shards"):
        load_dataset(cfg(root=str(root)))
    rng = np.random.default_rng(0)
    _tar(root / "train-0000.tar", {"a.jpg": jpeg(rng)})
    with pytest.raises(DataError, match=r"train-0000.tar: sample a has no .cls member"):
        load_dataset(cfg(root=str(root)))
    _tar(root / "train-0000.tar", {"a.jpg": jpeg(rng), "a.cls": b"cat"})
    with pytest.raises(DataError, match=r"train-0000.tar: a.cls holds 'cat', not a class index"):
        load_dataset(cfg(root=str(root)))
    _tar(root / "train-0000.tar", {f"k{i}.jpg": jpeg(rng) for i in range(4)} | {"k0.cls": b"0"})
    whole = (root / "train-0000.tar").read_bytes()
    (root / "train-0000.tar").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"train-0000.tar is truncated or not a tar file.*rewrite the shard"):
        load_dataset(cfg(root=str(root)))
    with pytest.raises(DataError, match=r"webdataset: data.root must be set: data.root=DIR"):
        load_dataset(cfg())  # issue 23: was "data.root=None is not a folder"
    with pytest.raises(DataError, match=r"data.root=/nope is not a folder"):
        load_dataset(cfg(root="/nope"))


def test_folder_manifest_is_reused_and_rebuilt_when_the_folder_changes(tmp_path, monkeypatch):
    from benchbench.data.readers import folders

    root = write_tree(tmp_path / "tree")
    a = folders.folder_manifest(root)
    calls = []
    monkeypatch.setattr(folders, "_scan", lambda *a: calls.append(1) or ([], []))
    assert str(folders.folder_manifest(root)["fingerprint"]) == str(a["fingerprint"]) and not calls
    monkeypatch.undo()
    monkeypatch.setenv("BENCHBENCH_CACHE", str(tmp_path / "cache"))
    (root / "train" / "c1" / "0.jpg").rename(root / "train" / "c1" / "9.jpg")
    b = folders.folder_manifest(root)
    assert str(b["fingerprint"]) != str(a["fingerprint"])  # a renamed file: a new index
    copy = shutil.copytree(root, tmp_path / "copy")
    assert str(folders.folder_manifest(copy)["fingerprint"]) == str(b["fingerprint"])
    cache = tmp_path / "cache" / "manifests"
    mine = {p.name for p in cache.iterdir()}
    folders.folder_manifest(tmp_path / "tree")
    other = [p for p in cache.iterdir() if p.name in mine]
    assert len(other) == 2
    def root_of(p):
        with np.load(p, allow_pickle=False) as z:
            return str(z["root"])

    ours = next(p for p in other if root_of(p).endswith("tree"))
    theirs = next(p for p in other if p != ours)
    shutil.copy(theirs, ours)  # a manifest from another folder
    with pytest.raises(DataError, match=r"manifest .* was built for .*copy, not .*tree: delete it"):
        folders.folder_manifest(root)


def rows_of(rdir):
    return [json.loads(p.read_text()) for p in sorted((rdir / "runs").glob("*.json"))]


TRAIN = ["quiet=true", "data.image_size=16", "train.batch_size=6", "train.steps=3",
         "eval.batch_size=8", "data.max_resident_bytes=1",
         "data.num_workers=1"]


@pytest.mark.parametrize("fmt", ["imagefolder", "webdataset"])
def test_folders_and_shards_train_through_the_cli_and_a_copy_is_skipped(run_cli, tmp_path, capsys, fmt):
    root = tmp_path / "data"
    if fmt == "webdataset":
        write_shards(root, "train", 3, 6)
        write_shards(root, "val", 1, 6)
    else:
        write_tree(root)
    code, rdir = run_cli(f"data={fmt}", f"data.root={root}", *TRAIN, tiny=False)
    assert code == 0, capsys.readouterr().err
    (row,) = rows_of(rdir)
    assert row["status"] == "ok" and row["steps"] == 3 and row["samples_seen"] == 18
    assert row["train_size"] == 18 and row["eval_samples"] == 6 and row["config"]["data"]["fingerprint"]
    copy = shutil.copytree(root, tmp_path / "slurm_tmpdir" / "data")  # node-local copy
    capsys.readouterr()
    code, _ = run_cli(f"data={fmt}", f"data.root={copy}", *TRAIN, "data.num_workers=0", tiny=False)
    assert code == 0 and f"skip {row['run_id']}: already ok" in capsys.readouterr().out


def test_a_brace_pattern_with_missing_shards_is_an_error_naming_them(run_cli, tmp_path, capsys):
    """Issue 23: train-{0000..0009}.tar with only 0000-0002 on disk trained on 3 shards, [ok]."""
    root = tmp_path / "data"
    write_shards(root, "train", 3, 6)
    write_shards(root, "val", 1, 6)
    code, rdir = run_cli("data=webdataset", f"data.root={root}", *TRAIN,
                         'data.train_shards="train-{0000..0009}.tar"', tiny=False)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert ("data.train_shards=train-{0000..0009}.tar names 10 shards, 7 of them missing in "
            f"{root}: train-0003.tar, train-0004.tar, train-0005.tar and 4 more") in err
    (row,) = rows_of(rdir)
    assert row["status"] == "failed" and "7 of them missing" in row["error"]
    with pytest.raises(DataError, match=r"data.val_shards=val-\{0000..0001\}.tar names 2 shards, "
                                        r"1 of them missing in .*: val-0001.tar; copy them"):
        load_dataset(cfg(root=str(root), val_shards="val-{0000..0001}.tar"))
    ok = load_dataset(cfg(root=str(root), train_shards="train-{0000..0002}.tar", max_resident_bytes=1))
    assert len(ok.train) == 18  # every named shard there: no error


def test_overlapping_patterns_read_each_sample_once_per_epoch(shards):
    """A shard matched by two patterns (a brace list and a glob) is one shard: each of its
    samples is in the split, and in an epoch's batches, exactly once."""
    split = load_dataset(cfg(root=str(shards), train_shards="train-{0000..0002}.tar::train-*.tar",
                             max_resident_bytes=1)).train
    assert len(split) == 24
    _, batches = _epoch_indices(split)
    seen = [split.paths[i] for b in batches for i in b]
    assert len(seen) == 24 and len(set(seen)) == 24  # 4 shards x 6 samples, none twice
    assert {s.split(" key ")[0].rsplit("/", 1)[1] for s in seen} == {
        f"train-{i:04d}.tar" for i in range(4)}
