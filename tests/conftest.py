"""Shared fixtures: real entry points on CPU with tiny limits and tmp_path (STYLE habit 11)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from hypothesis import settings

# Property tests are derandomized (the same examples every run) so CI is reproducible;
# HYPOTHESIS_RANDOM=1 explores fresh inputs (how the budget overflow was found).
settings.register_profile("benchbench", derandomize=not os.environ.get("HYPOTHESIS_RANDOM"),
                          database=None)
settings.load_profile("benchbench")

torch.set_num_threads(1)  # pytest -n 2 on 2 cores: one thread per worker
os.environ.setdefault("WANDB_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# Overrides that shrink a run to about a second on a 2-core CPU.
TINY = [
    "quiet=true", "data.train_size=256", "data.test_size=128", "train.batch_size=64",
    "train.epochs=1", "eval.batch_size=128",
]


@pytest.fixture
def run_cli(tmp_path, monkeypatch):
    """Call `benchbench` in-process: run_cli(*overrides) -> (exit code, results dir)."""
    from benchbench import cli

    monkeypatch.chdir(tmp_path)

    def run(*overrides: str, results: Path | None = None, tiny: bool = True):
        rdir = results or (tmp_path / "results")
        args = [*(TINY if tiny else []), f"results.dir={rdir}", *overrides]
        return cli.main(args), rdir

    return run


def signal_at(monkeypatch, signum: int, step: int = 1) -> None:
    """Send `signum` to this process from inside the training loop at loop index `step`."""
    from benchbench import train as train_mod

    real = train_mod.train

    def train(*a, **k):
        def hook(s, loss):
            if s == step:
                os.kill(os.getpid(), signum)

        return real(*a, **k, on_step=hook)

    monkeypatch.setattr(train_mod, "train", train)


def wait_for(what, timeout: float = 90.0, poll: float = 0.02):
    """Poll `what()` until it returns something true (returned), or fail naming its docstring."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = what()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what.__doc__}")
