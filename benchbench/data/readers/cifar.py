"""CIFAR-10/100 (`data=cifar10`, `data=cifar100`) from torchvision's pickles, through an
unpickler that builds nothing but numpy arrays."""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchbench.data.base import DATASETS, DatasetSpec, Split
from benchbench.errors import DataError
from benchbench.registry import cfg_get as _get


# CIFAR in torchvision's on-disk python format (Krizhevsky 2009): pickled dicts of uint8 rows.
class _NumpyOnly(pickle.Unpickler):
    """Only numpy arrays and plain containers: a CIFAR batch needs nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path, fix: str) -> dict:
    if not path.is_file():
        raise DataError(f"missing {path}: {fix}.")
    try:
        # from memory: a corrupt length field then reads what is there, never allocates it
        d = _NumpyOnly(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - a malformed pickle raises almost any type
        raise DataError(f"{path}: not a CIFAR batch ({type(e).__name__}: {e}); replace the file.") from None
    if not isinstance(d, dict):
        raise DataError(f"{path}: not a CIFAR batch (a {type(d).__name__}, not a dict); replace the file.")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _cifar_batch(path: Path, label_key: str, classes: int, fix: str) -> Split:
    d = _unpickle(path, fix)
    if "data" not in d or label_key not in d:
        raise DataError(f"{path}: a CIFAR batch needs keys 'data' and '{label_key}', found "
                        f"{sorted(map(str, d))}; replace the file.")
    try:
        x, y = np.asarray(d["data"]), np.asarray(d[label_key])
    except (ValueError, TypeError) as e:  # ragged lists and the like
        raise DataError(f"{path}: 'data' or '{label_key}' is not an array ({e}); replace the file.") from None
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' is {x.dtype} {x.shape}, expected uint8 (N, 3072); replace the file.")
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer) or (y.size and (y.min() < 0 or y.max() >= classes)):
        raise DataError(f"{path}: '{label_key}' must be {len(x)} integers in 0..{classes - 1}; replace the file.")
    return Split(torch.from_numpy(x.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(y.astype(np.int64)))


def _cifar_dir(cfg: Any, sub: str) -> tuple[Path, str]:
    root = _get(cfg, "root")
    fix = f"put torchvision's {sub} under data.root=PATH (nothing is downloaded)"
    if root is None:
        raise DataError(f"{_get(cfg, 'name')} needs data.root: {fix}.")
    root = Path(root)
    d = root if root.name == sub else root / sub
    if not d.is_dir():
        raise DataError(f"no {sub} folder under {root}: {fix}.")
    return d, fix


def _load_cifar10(cfg: Any) -> tuple[Split, Split, int]:
    d, fix = _cifar_dir(cfg, "cifar-10-batches-py")
    parts = [_cifar_batch(d / f"data_batch_{i}", "labels", 10, fix) for i in range(1, 6)]
    train = Split(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]))
    return train, _cifar_batch(d / "test_batch", "labels", 10, fix), 10


def _load_cifar100(cfg: Any) -> tuple[Split, Split, int]:
    d, fix = _cifar_dir(cfg, "cifar-100-python")
    return (_cifar_batch(d / "train", "fine_labels", 100, fix),
            _cifar_batch(d / "test", "fine_labels", 100, fix), 100)


DATASETS.register("cifar10", DatasetSpec(_load_cifar10))
DATASETS.register("cifar100", DatasetSpec(_load_cifar100))
