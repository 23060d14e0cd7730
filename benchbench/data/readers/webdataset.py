"""WebDataset tar shards (`data=webdataset`): `train-*.tar` / `val-*.tar` under data.root, each
sample `<key>.jpg|jpeg|png|webp` + `<key>.cls` (the class index as text).

The shards are indexed once (member offsets and labels, cached like a folder manifest), so
subsets, the epoch length and the fingerprint need no decoding, and the loader reads each
sample by offset: shards in a seeded order per epoch with a shuffle buffer, the same batches
for the same (seed, step) whatever the workers and ranks (data.loaders.StreamLoader).
"""
from __future__ import annotations

import glob
import os
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchbench.data.base import DATASETS, DatasetSpec, Split
from benchbench.data.manifest import SampleTable, cached, fingerprint, pack_names
from benchbench.errors import ConfigError, DataError
from benchbench.registry import cfg_get as _get

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")  # what webdataset's default decoders call images


SHOW_MISSING = 3  # missing shards named in the error; the rest are counted


def shard_paths(root: Path, pattern: str, key: str = "data.train_shards") -> list[str]:
    """Shards matching `pattern` under root: brace patterns (`train-{0000..0099}.tar`,
    webdataset's notation) and globs, sorted, each listed once. A brace pattern names every
    shard it expands to: any that is not there is an error (a partial copy would silently
    train on fewer shards, a smaller and different point)."""
    try:
        from webdataset.shardlists import expand_urls
    except ImportError:
        # a DataError: installing it is a fix outside benchbench, so a relaunch retries the point
        raise DataError("data=webdataset needs the webdataset package: "
                        "pip install 'benchbench[webdataset]'") from None

    names = expand_urls(pattern)
    found: list[str] = []
    missing: list[str] = []
    for p in names:
        hits = sorted(glob.glob(str(root / p))) if any(ch in p for ch in "*?[") else (
            [str(root / p)] if (root / p).is_file() else [])
        found += hits
        if not hits:
            missing.append(p)
    if found and missing:  # none found: the caller's "no shards match" says it
        more = len(missing) - SHOW_MISSING
        shown = ", ".join(missing[:SHOW_MISSING]) + (f" and {more} more" if more > 0 else "")
        raise DataError(f"webdataset: {key}={pattern} names {len(names)} shards, "
                        f"{len(missing)} of them missing in {root}: {shown}; copy them there, "
                        f"or narrow {key} to the shards you have.")
    return sorted(dict.fromkeys(found))


def _split_name(member: str) -> tuple[str, str]:
    """webdataset's key/extension split: the key is the name up to the first dot of its base."""
    d, base = os.path.split(member)
    key, _, ext = base.partition(".")
    return (f"{d}/{key}" if d else key), ext.lower()


def index_shard(path: str) -> tuple[list[str], list[int], list[int], list[int]]:
    """(image member names, labels, data offsets, sizes) of one shard, read from its headers
    and .cls members only."""
    size = os.path.getsize(path)
    samples: dict[str, dict[str, Any]] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                if m.offset_data + m.size > size:
                    raise tarfile.ReadError("unexpected end of data")
                key, ext = _split_name(m.name)
                s = samples.setdefault(key, {})
                if ext == "cls":
                    f = tar.extractfile(m)
                    s["cls"] = f.read() if f is not None else b""
                elif ext in IMAGE_EXTS:
                    s["img"] = (m.name, m.offset_data, m.size)
    except tarfile.ReadError as e:
        raise DataError(f"{path} is truncated or not a tar file ({e}): rewrite the shard or "
                        f"remove it from data.root.") from None
    names, labels, offsets, sizes = [], [], [], []
    for key, s in samples.items():
        if "img" not in s:
            raise DataError(f"{path}: sample {key} has no image ({', '.join('.' + e for e in IMAGE_EXTS)}); "
                            f"each sample needs one image and one .cls.")
        if "cls" not in s:
            raise DataError(f"{path}: sample {key} has no .cls member (its class index as text); "
                            f"rewrite the shard with one.")
        text = s["cls"].decode(errors="replace").strip()
        if not text.lstrip("-").isdigit() or int(text) < 0:
            raise DataError(f"{path}: {key}.cls holds {text[:20]!r}, not a class index (0, 1, ...).")
        name, off, n = s["img"]
        names.append(name)
        labels.append(int(text))
        offsets.append(off)
        sizes.append(n)
    return names, labels, offsets, sizes


def shard_manifest(cfg: Any) -> dict[str, Any]:
    """The cached index of the train and val shards, and their path-free fingerprint."""
    root = _get(cfg, "root")
    if root is None:
        raise DataError("webdataset: data.root must be set: data.root=DIR, the folder holding "
                        "the train-*.tar and val-*.tar shards.")
    if not Path(root).is_dir():
        raise DataError(f"webdataset: data.root={root} is not a folder: set data.root=DIR holding "
                        f"train-*.tar and val-*.tar shards.")
    root = Path(root)
    patterns = {"train": str(_get(cfg, "train_shards", "train-*.tar")),
                "test": str(_get(cfg, "val_shards", "val-*.tar"))}
    shards = {part: shard_paths(root, pat, f"data.{'train' if part == 'train' else 'val'}_shards")
              for part, pat in patterns.items()}
    for part, found in shards.items():
        if not found:
            key = "train_shards" if part == "train" else "val_shards"
            raise DataError(f"webdataset: no shards match data.{key}={patterns[part]} in {root}: "
                            f"write them there or set data.{key}=<pattern>.")
    stamp = fingerprint(*[(os.path.basename(p), os.path.getsize(p), os.stat(p).st_mtime_ns)
                          for part in ("train", "test") for p in shards[part]])

    def build() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for part, paths in shards.items():
            per = [index_shard(p) for p in paths]
            names = [n for s in per for n in s[0]]
            out[f"{part}_shards"] = np.array([os.path.basename(p) for p in paths])
            out[f"{part}_names"], out[f"{part}_offsets"] = pack_names(names)
            out[f"{part}_labels"] = np.array([v for s in per for v in s[1]], dtype=np.int64)
            out[f"{part}_data_offset"] = np.array([v for s in per for v in s[2]], dtype=np.int64)
            out[f"{part}_data_size"] = np.array([v for s in per for v in s[3]], dtype=np.int64)
            out[f"{part}_shard_id"] = np.repeat(np.arange(len(per)), [len(s[0]) for s in per]).astype(np.int32)
            if not names:
                raise DataError(f"webdataset: the {part} shards ({paths[0]}, ...) hold no samples.")
        out["fingerprint"] = np.array(fingerprint(
            "webdataset", *(out[f"{p}_{k}"] for p in ("train", "test")
                            for k in ("shards", "names", "offsets", "labels"))))
        return out

    return cached("webdataset", root, f"{patterns['train']}\0{patterns['test']}", stamp, build)


def _load_webdataset(cfg: Any) -> tuple[Split, Split, int]:
    m = shard_manifest(cfg)
    root = Path(_get(cfg, "root"))
    size = int(_get(cfg, "image_size", 224))
    c = 1 if _get(cfg, "channels") == 1 else 3
    k = int(m["train_labels"].max()) + 1
    if int(m["test_labels"].max()) >= k:
        raise DataError(f"webdataset: the val shards hold class {int(m['test_labels'].max())}, but the "
                        f"train shards only 0..{k - 1}.")
    if int(_get(cfg, "shuffle_buffer", 10_000) or 0) < 1:
        raise ConfigError("data.shuffle_buffer must be a positive number of samples.")
    splits = []
    for part in ("train", "test"):
        table = SampleTable(str(root), m[f"{part}_names"], m[f"{part}_offsets"],
                            shards=[str(root / s) for s in m[f"{part}_shards"].tolist()],
                            shard_id=m[f"{part}_shard_id"], data_offset=m[f"{part}_data_offset"],
                            data_size=m[f"{part}_data_size"])
        splits.append(Split(torch.empty(0, c, size, size, dtype=torch.uint8),
                            torch.from_numpy(m[f"{part}_labels"]), table))
    return splits[0], splits[1], k


DATASETS.register("webdataset", DatasetSpec(
    _load_webdataset, fingerprint=lambda cfg: str(shard_manifest(cfg)["fingerprint"])))
