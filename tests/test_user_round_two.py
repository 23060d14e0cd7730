"""What a new user hits, round two (issue 23): each mistake one line through the real
commands, no traceback, and the checks `benchbench` and `benchbench-status` share."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO


def run(module: str, *args: str, cwd: Path, env: dict[str, str] | None = None,
        pre: str = "") -> subprocess.CompletedProcess:
    """`python -m <module> args` as the console script runs it (`pre`: Python run first)."""
    code = f"{pre}\nimport sys, runpy\nsys.argv = ['x', *sys.argv[1:]]\nrunpy.run_module('{module}', run_name='__main__')"
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", **(env or {})}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def one_line_error(p: subprocess.CompletedProcess, prog: str = "benchbench") -> str:
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr
    (line,) = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert line.startswith(f"{prog}: error: "), line
    return line


def test_an_unquoted_brace_pattern_gets_the_quoting_hint(tmp_path):
    p = run("benchbench.cli", "data=webdataset", "data.root=.",
            "data.train_shards=train-{0000..0001}.tar", cwd=tmp_path)
    line = one_line_error(p)
    assert "Hydra cannot read the override data.train_shards=train-{0000..0001}.tar" in line
    assert """'data.train_shards="train-{0000..0001}.tar"'""" in line  # what to type instead


def test_readme_brace_pattern_is_typed_with_inner_quotes():
    readme = (REPO / "README.md").read_text()
    assert """'data.train_shards="train-{0000..2047}.tar"'""" in readme


def test_cfg_with_multirun_is_one_line(tmp_path):
    line = one_line_error(run("benchbench.cli", "--cfg", "job", "-m", "seed=0,1", cwd=tmp_path))
    assert "--cfg prints the config of one run and cannot go with -m: drop -m" in line


def test_slurm_launcher_off_a_cluster_is_one_line(tmp_path):
    bare = tmp_path / "bin"  # a PATH without srun
    bare.mkdir()
    p = run("benchbench.cli", "-m", "hydra/launcher=slurm_gpu", "task=measure",
            f"results.dir={tmp_path / 'r'}", cwd=tmp_path, env={"PATH": str(bare)})
    line = one_line_error(p)
    assert "no SLURM here" in line and "use hydra/launcher=local_gpus" in line
    assert "run on the cluster" in line and not (tmp_path / "r" / "runs").exists()


@pytest.mark.parametrize("args, want", [
    (["train.epoch=3"], "unknown key train.epoch; did you mean train.epochs?"),
    (["study=demo", "train.lr=abc"], "train.lr takes a number, got train.lr=abc"),
    (["data.train_shards=train-{0000..0001}.tar"], "Hydra cannot read the override"),
])
def test_status_checks_the_overrides_as_the_launcher_does(tmp_path, args, want):
    line = one_line_error(run("benchbench.status", *args, cwd=tmp_path), "benchbench-status")
    assert want in line and "+train" not in line
    launcher = one_line_error(run("benchbench.cli", *args, cwd=tmp_path))
    assert line.removeprefix("benchbench-status: ") == launcher.removeprefix("benchbench: ")


def test_without_the_webdataset_package_shards_get_the_install_line(tmp_path):
    """A plain `pip install .` brings webdataset; where it is missing anyway, one line."""
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("webdataset") for d in deps)
    root = tmp_path / "shards"
    root.mkdir()
    p = run("benchbench.cli", "data=webdataset", f"data.root={root}", "quiet=true",
            f"results.dir={tmp_path / 'r'}", cwd=tmp_path,
            pre="import sys; sys.modules['webdataset'] = None")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "pip install 'benchbench[webdataset]'" in p.stderr
    assert "ModuleNotFoundError" not in p.stderr
