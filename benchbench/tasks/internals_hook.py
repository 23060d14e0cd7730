"""After a run: what the model learned (paper Figure 7) on the first test images, into the row
and `<results.dir>/internals/<run_id>.npz`.

`eval.internals` (default true) switches it; `eval.internals_images` images (the first ones of
the test split, so every run of a study sees the same batch) go through one extra eval forward.
Neither key changes what a run computes, so neither is in the run_id (results.identity_config).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from benchbench.errors import ConfigError

DEFAULT_IMAGES = 256  # "a few hundred": enough that a head's mean distance is stable


def settings(cfg: Any) -> tuple[bool, int]:
    """(on, number of images), checked; called before training so a typo costs nothing."""
    ev = cfg.get("eval") or {}
    on = ev.get("internals", True)
    n = ev.get("internals_images", DEFAULT_IMAGES)
    if not isinstance(on, bool):
        raise ConfigError(f"eval.internals must be true or false, got {on!r}.")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"eval.internals_images must be a positive whole number "
                          f"(e.g. {DEFAULT_IMAGES}), got {n!r}.")
    return on, n


def npz_path(rdir: Path, run_id: str) -> Path:
    return Path(rdir) / "internals" / f"{run_id}.npz"


def first_test_images(ds: Any, n: int, image_size: int, device: Any):
    """The first `n` test images, normalised as evaluation sees them (whole split, no shard)."""
    import torch

    from benchbench import data

    k = min(n, len(ds.test))
    split = ds.test.take(torch.arange(k))
    loader = data.make_loader(split, batch_size=k, image_size=image_size, mean=ds.mean,
                              std=ds.std, device=device, drop_last=False, num_workers=0)
    return next(iter(loader.eval_batches(k)))[0]


def measure(cfg: Any, row: dict[str, Any], model: Any, ds: Any, *, image_size: int,
            device: Any, rdir: Path, run_id: str, is_main: bool) -> None:
    """Fill the row's internals columns and write the npz (rank 0). A failure here leaves the
    trained row ok: the columns stay null and `error` says why."""
    from benchbench import internals

    on, n = settings(cfg)
    if not on or not is_main:
        return
    try:
        images = first_test_images(ds, n, image_size, device)
        summary, arrays = internals.measure_internals(model, images, family=row["family"],
                                                      image_size=image_size)
        if arrays:
            internals.save_npz(npz_path(rdir, run_id), arrays)
    except Exception as e:  # a diagnostic must not cost the trained row
        note = f"internals: {type(e).__name__}: {e}"
        row["error"] = f"{row['error']}; {note}" if row.get("error") else note
        return
    row.update(summary)
