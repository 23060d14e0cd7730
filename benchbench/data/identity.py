"""A dataset's identity for the run_id: its name and a content fingerprint, not data.root.

Datasets read from a folder the user names (imagefolder, webdataset) carry a fingerprint
from their cached manifest (class list, relative file names or shard names and keys, labels,
counts); results.identity_config then leaves data.root out, so the same data copied to
$SLURM_TMPDIR is the same point. The other datasets (embedded, Debian, CIFAR, digits) keep
data.root in the hash as before: every committed row keeps its run_id.
"""
from __future__ import annotations

from typing import Any


def with_fingerprint(d: dict[str, Any]) -> dict[str, Any]:
    """Add data.fingerprint to a resolved config (in place) where the dataset has one."""
    from benchbench.data.base import DATASETS

    data = d.get("data")
    if not isinstance(data, dict) or data.get("name") not in DATASETS.names():
        return d
    spec = DATASETS.get(data["name"])
    if spec.fingerprint is not None:
        from benchbench.errors import DataError

        try:
            data["fingerprint"] = spec.fingerprint(data)
        except DataError:
            pass  # no data there (yet): data.root stays in the hash; loading names the problem
    return d
