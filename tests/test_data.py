"""Datasets and loaders on real on-disk formats written to tmp_path (idx, CIFAR pickles,
ImageFolder PNGs); nested subsets; the synthetic set; resumable, shardable device batches."""
from __future__ import annotations

import gzip
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchbench import data
from benchbench.data import (
    DATASETS,
    DataError,
    DeviceLoader,
    Split,
    StreamLoader,
    load_dataset,
    nested_subset,
)
from benchbench.errors import ConfigError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def cfg(name: str, **kw) -> dict:
    """A data config with every key present, as conf/data/*.yaml gives it."""
    base = dict(name=name, root=None, train_size=None, test_size=None, image_size=32, channels=None,
                num_classes=None, seed=0, augment=False, skip_bad_images=True,
                max_resident_bytes=2 << 30)
    return base | kw


# ---------- on-disk formats
def write_idx(path: Path, arr: np.ndarray, magic: int, *, gz: bool, cut: int = 0) -> Path:
    raw = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    raw += arr.astype(np.uint8).tobytes()
    raw = raw[: len(raw) - cut]
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def fashion_tree(root: Path, *, gz: bool, n_train: int = 40, n_test: int = 20) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), 2051, gz=gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, 2049, gz=gz)
    return root


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_idx_raw_and_gzip(tmp_path, gz):
    root = fashion_tree(tmp_path / "fm", gz=gz)
    ds = load_dataset(cfg("fashion_mnist", root=str(root)))
    assert ds.train.x.shape == (40, 1, 28, 28) and ds.train.x.dtype == torch.uint8
    assert ds.test.x.shape == (20, 1, 28, 28) and ds.test.y.dtype == torch.int64
    assert ds.num_classes == 10 and ds.channels == 1 and len(ds.mean) == 1
    raw = data.read_idx(next(root.glob("train-images*")), 2051)
    assert torch.equal(ds.train.x[:, 0], torch.from_numpy(raw.copy()))
    assert abs(ds.mean[0] - raw.mean() / 255) < 1e-4 and abs(ds.std[0] - raw.std() / 255) < 1e-4


def test_fashion_idx_corrupt_magic(tmp_path):
    root = fashion_tree(tmp_path, gz=False)
    write_idx(root / "train-labels-idx1-ubyte", np.zeros(40), 2051, gz=False)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: idx magic number 2051, expected 2049"):
        load_dataset(cfg("fashion_mnist", root=str(root)))


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_idx_truncated(tmp_path, gz):
    root = fashion_tree(tmp_path, gz=gz)
    write_idx(root / "t10k-images-idx3-ubyte", np.zeros((20, 28, 28)), 2051, gz=gz, cut=100)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.*truncated.*re-install"):
        load_dataset(cfg("fashion_mnist", root=str(root)))


def test_fashion_idx_truncated_gzip_stream(tmp_path):
    root = fashion_tree(tmp_path, gz=True)
    p = root / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-30])  # the gzip stream itself ends early
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: cannot read.*truncated"):
        load_dataset(cfg("fashion_mnist", root=str(root)))


def test_fashion_missing(tmp_path):
    with pytest.raises(DataError, match=r"does not exist: install the Debian package .*dataset-fashion-mnist"):
        load_dataset(cfg("fashion_mnist", root=str(tmp_path / "nope")))
    root = fashion_tree(tmp_path / "fm", gz=False)
    (root / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"no t10k-labels-idx1-ubyte\[.gz\] in .*data.root=DIR"):
        load_dataset(cfg("fashion_mnist", root=str(root)))


def test_fashion_label_checks(tmp_path):
    root = fashion_tree(tmp_path, gz=False)
    write_idx(root / "train-labels-idx1-ubyte", np.full(40, 12), 2049, gz=False)
    with pytest.raises(DataError, match=r"label 12 outside 0..9"):
        load_dataset(cfg("fashion_mnist", root=str(root)))
    write_idx(root / "train-labels-idx1-ubyte", np.zeros(39), 2049, gz=False)
    with pytest.raises(DataError, match=r"40 images but .* 39 labels"):
        load_dataset(cfg("fashion_mnist", root=str(root)))


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    ds = load_dataset(cfg("fashion_mnist", root=str(FASHION_DIR), train_size=1000, test_size=500))
    assert ds.train.x.shape == (1000, 1, 28, 28) and ds.test.x.shape == (500, 1, 28, 28)
    assert torch.bincount(ds.train.y).tolist() == [100] * 10
    assert 0.2 < ds.mean[0] < 0.4 and 0.25 < ds.std[0] < 0.45  # Fashion-MNIST: 0.286, 0.353


def write_cifar(root: Path, *, hundred: bool = False, n: int = 12) -> Path:
    rng = np.random.default_rng(1)

    def batch(path: Path, k: int) -> None:
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"batch_label": b"x"}
        d[b"fine_labels" if hundred else b"labels"] = [int(v) for v in (np.arange(n) + k) % (100 if hundred else 10)]
        if hundred:
            d[b"coarse_labels"] = [0] * n
        path.write_bytes(pickle.dumps(d, protocol=2))

    if hundred:
        d = root / "cifar-100-python"
        d.mkdir(parents=True)
        batch(d / "train", 0)
        batch(d / "test", 5)
    else:
        d = root / "cifar-10-batches-py"
        d.mkdir(parents=True)
        for i in range(1, 6):
            batch(d / f"data_batch_{i}", i)
        batch(d / "test_batch", 0)
    return d


def test_cifar10_pickles(tmp_path):
    d = write_cifar(tmp_path)
    ds = load_dataset(cfg("cifar10", root=str(tmp_path)))
    assert ds.train.x.shape == (60, 3, 32, 32) and ds.test.x.shape == (12, 3, 32, 32)
    assert ds.num_classes == 10 and ds.channels == 3
    with (d / "data_batch_2").open("rb") as f:
        b2 = pickle.load(f, encoding="bytes")
    assert torch.equal(ds.train.x[12:24], torch.from_numpy(b2[b"data"].reshape(-1, 3, 32, 32)))
    assert ds.train.y[12:24].tolist() == b2[b"labels"]
    # the folder itself also works as data.root; channels=1 is BT.601 luma
    gray = load_dataset(cfg("cifar10", root=str(d), channels=1))
    assert gray.train.x.shape == (60, 1, 32, 32) and gray.channels == 1 and len(gray.std) == 1


def test_cifar100_fine_labels(tmp_path):
    write_cifar(tmp_path, hundred=True)
    ds = load_dataset(cfg("cifar100", root=str(tmp_path), num_classes=8))
    assert ds.num_classes == 8 and ds.train.y.tolist() == list(range(8))
    assert ds.test.y.tolist() == [5, 6, 7]


def test_cifar_missing_and_malformed(tmp_path):
    with pytest.raises(DataError, match=r"put torchvision's cifar-10-batches-py under data.root=PATH \(nothing is downloaded\)"):
        load_dataset(cfg("cifar10"))
    with pytest.raises(DataError, match=r"put torchvision's cifar-100-python under data.root=PATH"):
        load_dataset(cfg("cifar100", root=str(tmp_path)))
    d = write_cifar(tmp_path)
    (d / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"missing .*data_batch_3: put torchvision's"):
        load_dataset(cfg("cifar10", root=str(tmp_path)))
    (d / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=r"data_batch_3: not a CIFAR batch.*replace the file"):
        load_dataset(cfg("cifar10", root=str(tmp_path)))
    (d / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}))
    with pytest.raises(DataError, match=r"data_batch_3: 'data' is uint8 \(4, 100\), expected uint8 \(N, 3072\)"):
        load_dataset(cfg("cifar10", root=str(tmp_path)))
    (d / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3}))
    with pytest.raises(DataError, match=r"data_batch_3: 'labels' must be 4 integers"):
        load_dataset(cfg("cifar10", root=str(tmp_path)))


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar_pickle_refuses_code(tmp_path, capsys):
    d = write_cifar(tmp_path)
    (d / "test_batch").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(DataError, match=r"test_batch: not a CIFAR batch.*builtins.print"):
        load_dataset(cfg("cifar10", root=str(tmp_path)))
    assert "pwned" not in capsys.readouterr().out


def test_digits_split_is_fixed_and_stratified():
    ds = load_dataset(cfg("digits", image_size=8))
    assert ds.train.x.shape[1:] == (1, 8, 8) and len(ds.train) + len(ds.test) == 1797
    assert int(ds.train.x.max()) == 255 and ds.num_classes == 10
    frac = torch.bincount(ds.test.y, minlength=10) / torch.bincount(torch.cat([ds.train.y, ds.test.y]))
    assert ((frac - 0.2).abs() < 0.01).all()
    again = load_dataset(cfg("digits", image_size=8, seed=7))  # the split ignores the subset seed
    assert torch.equal(ds.test.x, again.test.x)
    rgb = load_dataset(cfg("digits", channels=3))
    assert rgb.channels == 3 and torch.equal(rgb.train.x[:, 0], rgb.train.x[:, 2])


def write_folder(root: Path, counts: dict[str, dict[str, int]], size: int = 12) -> Path:
    rng = np.random.default_rng(2)
    for part, per_class in counts.items():
        for c, n in per_class.items():
            (root / part / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / part / c / f"{i}.png")
    return root


def test_imagefolder_decodes_small_sets(tmp_path):
    root = write_folder(tmp_path, {"train": {"cat": 3, "dog": 2, "emu": 3}, "val": {"cat": 1, "emu": 2}})
    (root / "train" / "dog" / "notes.txt").write_text("ignored: not an image")
    ds = load_dataset(cfg("imagefolder", root=str(root), image_size=8))
    assert ds.train.x.shape == (8, 3, 8, 8) and not ds.train.streamed
    assert ds.train.y.tolist() == [0, 0, 0, 1, 1, 2, 2, 2] and ds.test.y.tolist() == [0, 2, 2]
    assert ds.num_classes == 3 and ds.channels == 3
    sub = load_dataset(cfg("imagefolder", root=str(root), image_size=8, train_size=3, channels=1))
    assert sorted(sub.train.y.tolist()) == [0, 1, 2] and sub.train.x.shape == (3, 1, 8, 8)


def test_imagefolder_bad_images(tmp_path):
    root = write_folder(tmp_path, {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
    (root / "train" / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable images \(first: .*broken.png\)"):
        ds = load_dataset(cfg("imagefolder", root=str(root), image_size=8))
    assert len(ds.train) == 4 and len(ds.test) == 2
    with pytest.raises(DataError, match=r"unreadable image .*broken.png.*skip_bad_images=true"):
        load_dataset(cfg("imagefolder", root=str(root), image_size=8, skip_bad_images=False))


def test_imagefolder_layout_errors(tmp_path):
    with pytest.raises(DataError, match=r"imagefolder: data.root must be set: set data.root=DIR holding train/"):
        load_dataset(cfg("imagefolder"))  # issue 23: was "data.root=None is not a folder"
    with pytest.raises(DataError, match=r"data.root=/nope is not a folder: set data.root=DIR"):
        load_dataset(cfg("imagefolder", root="/nope"))
    root = write_folder(tmp_path, {"train": {"a": 2, "b": 1}})
    with pytest.raises(DataError, match=r"lacks train/ or val/"):
        load_dataset(cfg("imagefolder", root=str(root)))
    write_folder(tmp_path, {"val": {"a": 1}})
    (root / "train" / "empty").mkdir()
    with pytest.raises(DataError, match=r"class folder .*train/empty holds no images.*remove the folder"):
        load_dataset(cfg("imagefolder", root=str(root)))
    (root / "train" / "empty").rmdir()
    write_folder(tmp_path, {"val": {"zebra": 1}})
    with pytest.raises(DataError, match=r"classes missing from train/: zebra"):
        load_dataset(cfg("imagefolder", root=str(root)))


def test_imagefolder_streams_when_too_large(tmp_path):
    root = write_folder(tmp_path, {"train": {"a": 5, "b": 5}, "val": {"a": 2, "b": 2}})
    kw = dict(root=str(root), image_size=8, seed=3)
    big = load_dataset(cfg("imagefolder", max_resident_bytes=100, **kw))
    small = load_dataset(cfg("imagefolder", **kw))
    assert big.train.streamed and len(big.train) == 10 and big.mean == data.IMAGENET_MEAN
    lk = dict(batch_size=4, image_size=8, mean=(0.5,) * 3, std=(0.25,) * 3, augment=True, seed=5)
    stream = data.make_loader(big, **lk, num_workers=0)
    dev = data.make_loader(small.train, **lk)
    assert isinstance(stream, StreamLoader) and isinstance(dev, DeviceLoader)
    assert stream.steps_per_epoch == dev.steps_per_epoch == 2
    # the same decode and the same (seed, step) randomness: identical batches
    for (xs, ys), (xd, yd), _ in zip(stream.iter_from(1), dev.iter_from(1), range(4)):
        assert torch.equal(ys, yd) and torch.allclose(xs, xd)
    ev = list(data.make_loader(big, part="test", **lk, num_workers=1).eval_batches(3))
    assert [len(y) for _, y in ev] == [3, 1] and torch.cat([y for _, y in ev]).tolist() == [0, 0, 1, 1]
    with pytest.raises(ConfigError, match=r"streamed: build its loader with data.make_loader"):
        DeviceLoader(big.train, **lk)


# ---------- nested subsets
def test_nested_subset_properties():
    y = torch.arange(1000) % 10
    for seed in (0, 1):
        prev = set()
        for n in (10, 55, 100, 333, 1000):
            idx = nested_subset(y, n, seed)
            assert len(idx) == n == len(set(idx.tolist()))
            assert prev <= set(idx.tolist())  # every smaller subset inside the larger one
            counts = torch.bincount(y[idx], minlength=10)
            assert counts.max() - counts.min() <= 1  # class-balanced
            prev = set(idx.tolist())
    assert torch.equal(nested_subset(y, 100, 4), nested_subset(y, 100, 4))
    assert not torch.equal(nested_subset(y, 100, 4), nested_subset(y, 100, 5))


def test_nested_subset_imbalanced_classes():
    y = torch.tensor([0] * 50 + [1] * 3 + [2] * 20)
    idx = nested_subset(y, 30, 0)
    c0, c1, c2 = torch.bincount(y[idx]).tolist()
    assert c1 == 3 and abs(c0 - c2) <= 1 and c0 + c2 == 27  # class 1 runs out; the rest stay even
    assert set(nested_subset(y, 12, 0).tolist()) <= set(idx.tolist())
    with pytest.raises(ConfigError, match=r"cannot be drawn from 73"):
        nested_subset(y, 74, 0)


def test_load_dataset_sizes_nest_and_validate():
    a = load_dataset(cfg("digits", train_size=100, seed=1))
    b = load_dataset(cfg("digits", train_size=300, seed=1))
    rows = {bytes(r) for r in b.train.x.flatten(1).numpy()}
    assert all(bytes(r) in rows for r in a.train.x.flatten(1).numpy())
    assert torch.bincount(a.train.y).tolist() == [10] * 10
    four = load_dataset(cfg("digits", num_classes=4, train_size=40, test_size=20))
    assert four.num_classes == 4 and torch.bincount(four.train.y).tolist() == [10] * 4
    assert int(four.test.y.max()) == 3 and len(four.test) == 20
    with pytest.raises(ConfigError, match=r"data.train_size=5000 but digits has only 1442 train images"):
        load_dataset(cfg("digits", train_size=5000))
    with pytest.raises(ConfigError, match=r"data.num_classes=11 but digits has 10 classes"):
        load_dataset(cfg("digits", num_classes=11))
    for key in ("train_size", "test_size", "num_classes", "image_size"):
        with pytest.raises(ConfigError, match=rf"data.{key} must be a positive integer"):
            load_dataset(cfg("digits", **{key: 0}))
    with pytest.raises(ConfigError, match=r"data.channels must be null, 1 or 3"):
        load_dataset(cfg("digits", channels=2))
    with pytest.raises(ConfigError, match=r"unknown dataset 'cifar'.*Valid datasets: cifar10"):
        load_dataset(cfg("cifar"))


def test_registry_names():
    assert set(DATASETS.names()) == {"synthetic", "fashion_mnist", "digits", "cifar10", "cifar100", "imagefolder",
                                     "webdataset"}


def test_registry_matches_conf_data():
    """Every conf/data/<name>.yaml has a reader registered under <name> and `name: <name>`, and
    every registered reader has its config file."""
    import yaml

    conf = Path(data.__file__).parent.parent / "conf" / "data"
    files = {p.stem: yaml.safe_load(p.read_text()) for p in conf.glob("*.yaml")}
    assert set(DATASETS.names()) == set(files)
    assert all(c["name"] == stem for stem, c in files.items())


# ---------- synthetic
def test_synthetic_deterministic_nested_balanced():
    a = data.synthetic_split(1500, split="train")
    b = data.synthetic_split(700, split="train")
    assert torch.equal(a.x[:700], b.x) and torch.equal(a.y[:700], b.y)  # first N same for every N
    assert torch.equal(a.x, data.synthetic_split(1500, split="train").x)
    assert a.x.shape == (1500, 3, 32, 32) and a.x.dtype == torch.uint8
    assert torch.bincount(a.y).tolist() == [150] * 10
    test = data.synthetic_split(1500, split="test")
    train_rows = {bytes(r) for r in a.x.flatten(1).numpy()}
    assert not any(bytes(r) in train_rows for r in test.x.flatten(1).numpy())  # disjoint streams
    assert not torch.equal(a.x, data.synthetic_split(1500, split="train", seed=1).x)
    assert a.x.float().std() > 40  # not blank


def test_synthetic_load_dataset():
    ds = load_dataset(cfg("synthetic", train_size=300, test_size=200, num_classes=4, seed=2))
    assert len(ds.train) == 300 and len(ds.test) == 200 and ds.num_classes == 4
    assert torch.bincount(ds.train.y).tolist() == [75] * 4 and int(ds.test.y.max()) == 3
    other = load_dataset(cfg("synthetic", train_size=300, test_size=200, num_classes=4, seed=3))
    assert torch.equal(ds.test.x, other.test.x) and not torch.equal(ds.train.x, other.train.x)
    assert all(0.2 < m < 0.8 for m in ds.mean) and all(0.1 < s < 0.45 for s in ds.std)
    gray = load_dataset(cfg("synthetic", train_size=20, test_size=10, channels=1))
    assert gray.channels == 1 and gray.train.x.shape == (20, 1, 32, 32)
    assert data.DATASETS.get("synthetic").default_train_size == 10_000
    assert data.DATASETS.get("synthetic").default_test_size == 2_000


def _spectrum(x: torch.Tensor) -> torch.Tensor:
    g = x.float().mean(1) / 255
    f = torch.fft.rfft2(g - g.mean((1, 2), keepdim=True)).abs()
    return torch.log1p(f).flatten(1)  # translation-invariant: sees stripes, blurs shapes


def _linear_probe(xtr, ytr, xte, yte, steps: int = 300) -> float:
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    torch.manual_seed(0)
    lin = torch.nn.Linear(xtr.shape[1], 10)
    opt = torch.optim.Adam(lin.parameters(), lr=0.01, weight_decay=1e-3)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(lin(xtr), ytr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (lin(xte).argmax(1) == yte).float().mean().item()


def test_synthetic_is_learnable_but_not_linear():
    tr, te = data.synthetic_split(2000, split="train"), data.synthetic_split(1000, split="test")
    acc = _linear_probe(_spectrum(tr.x), tr.y, _spectrum(te.x), te.y)
    assert 0.25 <= acc < 0.9, acc  # chance is 0.1
    pooled = [torch.nn.functional.avg_pool2d(x.float(), 4).flatten(1) for x in (tr.x, te.x)]
    assert _linear_probe(pooled[0], tr.y, pooled[1], te.y) < 0.9  # random positions defeat raw pixels


# ---------- loaders
def _split(n: int = 40, c: int = 3, size: int = 8) -> Split:
    g = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8), torch.arange(n))


def _take(it, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [next(it) for _ in range(k)]


def test_device_loader_shapes_and_normalization():
    s = _split()
    dl = DeviceLoader(s, batch_size=8, image_size=8, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 1.0))
    assert dl.steps_per_epoch == 5
    x, y = next(dl.iter_from(0))
    assert x.shape == (8, 3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    mean, std = torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1), torch.tensor([0.5, 0.25, 1.0]).view(3, 1, 1)
    assert torch.allclose(x, (s.x[y].float() / 255 - mean) / std, atol=1e-5)
    seen = torch.cat([b[1] for b in _take(dl.iter_from(0), 5)])
    assert sorted(seen.tolist()) == list(range(40))  # one epoch = a permutation
    assert DeviceLoader(s, batch_size=16, image_size=8, mean=(0,) * 3, std=(1,) * 3, drop_last=False).steps_per_epoch == 3
    with pytest.raises(ConfigError, match=r"batch_size=6 must divide by world_size=4"):
        DeviceLoader(s, batch_size=6, image_size=8, mean=(0,) * 3, std=(1,) * 3, world_size=4)
    with pytest.raises(ConfigError, match=r"batch_size=64 is larger than the 40 images"):
        next(DeviceLoader(s, batch_size=64, image_size=8, mean=(0,) * 3, std=(1,) * 3).iter_from(0))


@pytest.mark.parametrize("augment", [False, True])
def test_device_loader_resumes_exactly(augment):
    dl = DeviceLoader(_split(), batch_size=8, image_size=8, mean=(0.5,) * 3, std=(0.2,) * 3,
                      augment=augment, seed=3)
    ref = _take(dl.iter_from(0), 13)  # crosses two epoch boundaries
    for k in (1, 4, 5, 11):
        for (x, y), (xr, yr) in zip(_take(dl.iter_from(k), 2), ref[k : k + 2]):
            assert torch.equal(x, xr) and torch.equal(y, yr)
    again = DeviceLoader(_split(), batch_size=8, image_size=8, mean=(0.5,) * 3, std=(0.2,) * 3,
                         augment=augment, seed=3)
    assert torch.equal(next(again.iter_from(7))[0], ref[7][0])
    other = DeviceLoader(_split(), batch_size=8, image_size=8, mean=(0.5,) * 3, std=(0.2,) * 3,
                         augment=augment, seed=4)
    assert not torch.equal(next(other.iter_from(0))[1], ref[0][1])


def test_augmentation_is_pad_crop_flip():
    s = _split(n=64, size=16)
    kw = dict(batch_size=64, image_size=16, mean=(0,) * 3, std=(1,) * 3)
    plain, aug = DeviceLoader(s, **kw), DeviceLoader(s, **kw, augment=True)
    (xp, yp), (xa, ya) = next(plain.iter_from(2)), next(aug.iter_from(2))
    assert torch.equal(yp, ya) and not torch.equal(xp, xa)
    assert torch.equal(xa, next(aug.iter_from(2))[0])  # deterministic per step
    # the full batch at another step (another epoch), in label order: other crops and flips
    x3, y3 = next(aug.iter_from(3))
    assert not torch.equal(xa[torch.argsort(ya)], x3[torch.argsort(y3)])
    # each augmented image is a window (shift <= 2 px) of the reflect-padded original, maybe mirrored
    pad = torch.nn.functional.pad(xp, (2, 2, 2, 2), mode="reflect")
    flipped = 0
    for i in range(len(xa)):
        wins = [pad[i, :, dy : dy + 16, dx : dx + 16] for dy in range(5) for dx in range(5)]
        plain_hit = any(torch.equal(xa[i], w) for w in wins)
        flip_hit = any(torch.equal(xa[i], w.flip(2)) for w in wins)
        assert plain_hit or flip_hit
        flipped += flip_hit and not plain_hit
    assert 10 < flipped < 54  # about half of 64


def test_ddp_slices_concatenate_to_the_global_batch():
    kw = dict(batch_size=8, image_size=8, mean=(0.5,) * 3, std=(0.2,) * 3, augment=True, seed=1)
    one = _take(DeviceLoader(_split(), **kw).iter_from(3), 3)
    r0 = _take(DeviceLoader(_split(), rank=0, world_size=2, **kw).iter_from(3), 3)
    r1 = _take(DeviceLoader(_split(), rank=1, world_size=2, **kw).iter_from(3), 3)
    for (x, y), (x0, y0), (x1, y1) in zip(one, r0, r1):
        assert x0.shape[0] == 4 and torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


def test_eval_batches_cover_every_index_once():
    s = _split(n=23)
    seen = []
    for rank in range(3):
        dl = DeviceLoader(s, batch_size=3, image_size=8, mean=(0,) * 3, std=(1,) * 3, augment=True,
                          rank=rank, world_size=3, drop_last=False)
        batches = list(dl.eval_batches(4))
        assert all(len(y) <= 4 for _, y in batches)
        for x, y in batches:
            assert torch.allclose(x, s.x[y].float() / 255)  # in order, never augmented
        seen += torch.cat([y for _, y in batches]).tolist()
    assert sorted(seen) == list(range(23))


@pytest.mark.parametrize("size", [4, 12])
def test_resize_once_or_per_batch(size):
    s = _split(size=8)
    kw = dict(batch_size=8, image_size=size, mean=(0,) * 3, std=(1,) * 3)
    once = DeviceLoader(s, **kw)
    per_batch = DeviceLoader(s, **kw, max_resident_bytes=100)
    assert once.pre_resized and once.x.shape[-1] == size
    assert not per_batch.pre_resized and per_batch.x.shape[-1] == 8
    (xo, yo), (xp, yp) = next(once.iter_from(0)), next(per_batch.iter_from(0))
    assert xo.shape == xp.shape == (8, 3, size, size) and torch.equal(yo, yp)
    assert (xo - xp).abs().max() <= 0.5 / 255 + 1e-6  # only the uint8 rounding differs
    ev = torch.cat([x for x, _ in per_batch.eval_batches(16)])
    assert ev.shape == (40, 3, size, size)


def test_grayscale_images_and_no_pad_for_tiny_sizes():
    s = _split(c=1, size=7)
    dl = DeviceLoader(s, batch_size=5, image_size=7, mean=(0.5,), std=(0.5,), augment=True)
    x, _ = next(dl.iter_from(0))
    assert x.shape == (5, 1, 7, 7) and x.min() >= -1 and x.max() <= 1
    with pytest.raises(ConfigError, match=r"mean/std have 3/3 entries for 1-channel images"):
        DeviceLoader(s, batch_size=5, image_size=7, mean=(0.5,) * 3, std=(0.5,) * 3)


def test_warnings_free_synthetic_defaults():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_dataset(cfg("synthetic", train_size=None, test_size=None))
    assert len(ds.train) == 10_000 and len(ds.test) == 2_000 and ds.channels == 3


@pytest.mark.gpu
def test_device_loader_on_cuda_matches_cpu():
    s = _split(n=64, size=8)
    kw = dict(batch_size=16, image_size=12, mean=(0.5,) * 3, std=(0.2,) * 3, seed=2)
    cpu, gpu = DeviceLoader(s, **kw), DeviceLoader(s, **kw, device="cuda")
    assert gpu.x.is_cuda and gpu.x.dtype == torch.uint8
    for (xc, yc), (xg, yg) in zip(_take(cpu.iter_from(5), 3), _take(gpu.iter_from(5), 3)):
        assert xg.is_cuda and torch.equal(yc, yg.cpu()) and torch.allclose(xc, xg.cpu(), atol=1e-4)
    aug = DeviceLoader(s, **kw, device="cuda", augment=True)
    ref = _take(aug.iter_from(0), 6)
    assert torch.equal(next(aug.iter_from(4))[0], ref[4][0])  # resumable on the device too
