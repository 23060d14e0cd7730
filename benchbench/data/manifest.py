"""Sample tables and their cached manifests: the index of a class-folder tree or a shard set,
built once per dataset, reused by every point, rank and worker, with a path-free fingerprint.

A table holds names and offsets as a few numpy arrays (no per-sample Python objects), so
forked DataLoader workers share it instead of copying a 14M-entry list each. A manifest is
kept in `$BENCHBENCH_CACHE` (default ~/.cache/benchbench)/manifests/, keyed by the folder's
absolute path, and rebuilt when its stamp (folder or shard mtimes and sizes) changes.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchbench.errors import DataError, ResultsError
from benchbench.results import atomic_write

MANIFEST_VERSION = 1


class SampleTable:
    """N samples: a name each (a relative path, or a tar member) and, for shards, where its
    bytes lie. `take` keeps the arrays and narrows `index`; `read(i)` returns the bytes."""

    def __init__(self, root: str, names: np.ndarray, offsets: np.ndarray, index: np.ndarray | None = None,
                 shards: list[str] | None = None, shard_id: np.ndarray | None = None,
                 data_offset: np.ndarray | None = None, data_size: np.ndarray | None = None):
        self.root, self.names, self.offsets = root, names, offsets
        self.index = np.arange(len(offsets) - 1) if index is None else np.asarray(index, dtype=np.int64)
        self.shards, self.shard_id = shards, shard_id
        self.data_offset, self.data_size = data_offset, data_size
        self._fds: dict[int, int] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.index)

    def _name(self, i: int) -> str:
        j = int(self.index[i])
        return bytes(self.names[self.offsets[j] : self.offsets[j + 1]]).decode()

    def __getitem__(self, i: int) -> str:
        """A name for messages: the file's path, or `<shard> key <key>`."""
        if self.shards is None:
            return os.path.join(self.root, self._name(i))
        return f"{self.shards[int(self.shard_id[self.index[i]])]} key {self._name(i).split('.')[0]}"

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    def take(self, idx: Any) -> SampleTable:
        return SampleTable(self.root, self.names, self.offsets, self.index[np.asarray(idx)],
                           self.shards, self.shard_id, self.data_offset, self.data_size)

    def read(self, i: int) -> bytes:
        if self.shards is None:
            with open(os.path.join(self.root, self._name(i)), "rb") as f:
                return f.read()
        if self._pid != os.getpid():  # a forked worker: its own descriptors
            self._fds, self._pid = {}, os.getpid()
        j = int(self.index[i])
        s = int(self.shard_id[j])
        if s not in self._fds:
            if len(self._fds) >= 64:  # bounded: a worker walks the shards in order
                os.close(self._fds.pop(next(iter(self._fds))))
            self._fds[s] = os.open(self.shards[s], os.O_RDONLY)
        size = int(self.data_size[j])
        data = os.pread(self._fds[s], size, int(self.data_offset[j]))  # no shared file offset
        if len(data) != size:
            raise DataError(f"{self[i]}: the shard ended early (truncated?); rewrite the shard.")
        return data

    def shard_order(self) -> tuple[np.ndarray, np.ndarray]:
        """(shard id, byte offset) of each sample: the order a shard reader streams them in."""
        j = self.index
        return self.shard_id[j], self.data_offset[j]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fds": {}}


def pack_names(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    enc = [n.encode() for n in names]
    offsets = np.zeros(len(enc) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in enc])
    return np.frombuffer(b"".join(enc), dtype=np.uint8).copy(), offsets


def cache_dir() -> Path:
    return Path(os.environ.get("BENCHBENCH_CACHE") or Path.home() / ".cache" / "benchbench") / "manifests"


def fingerprint(*parts: Any) -> str:
    """sha256 over arrays and strings (16 hex digits): what a dataset holds, not where."""
    h = hashlib.sha256()
    for p in parts:
        h.update(np.ascontiguousarray(p).tobytes() if isinstance(p, np.ndarray) else repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def cached(kind: str, root: Path, key: str, stamp: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The manifest of `root` (kind + key pick it): read from the cache when its stamp
    matches, else built and written atomically (a concurrent rank builds the same file)."""
    root = Path(os.path.abspath(root))
    name = hashlib.sha256(f"{kind}\0{root}\0{key}".encode()).hexdigest()[:20]
    path = cache_dir() / f"{kind}-{name}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                got = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as e:
            got = {"_broken": str(e)}
        if "_broken" not in got:
            if str(got["root"]) != str(root):
                raise DataError(f"manifest {path} was built for {got['root']}, not {root}: "
                                f"delete it (it is rebuilt) or set BENCHBENCH_CACHE to another folder.")
            if str(got["stamp"]) == stamp and int(got["version"]) == MANIFEST_VERSION:
                return got
    got = build()
    got.update(root=np.array(str(root)), stamp=np.array(stamp), version=np.array(MANIFEST_VERSION))
    try:
        atomic_write(path, lambda f: np.savez(f, **got))
    except (OSError, ResultsError):
        pass  # a read-only cache: the index is rebuilt next time, nothing else is lost
    return got
