"""Paths from the config, made absolute where the user launched (a leaf: imports nothing of ours)."""
from __future__ import annotations

import os


def abs_path(p: str) -> str:
    """A path from the config, relative to where the user launched (Hydra changes cwd)."""
    try:
        from hydra.utils import to_absolute_path

        return to_absolute_path(p)
    except ValueError:  # outside a Hydra run
        return os.path.abspath(p)
