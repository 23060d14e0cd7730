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


# -- item 13: the messages -------------------------------------------------------------

QUICK = ["train.steps=2"]


def image_tree(root: Path, *, broken: bool = False) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for part in ("train", "val"):
        for c in ("a", "b"):
            (root / part / c).mkdir(parents=True, exist_ok=True)
            for i in range(4):
                arr = rng.integers(0, 255, (12, 12, 3)).astype(np.uint8)
                Image.fromarray(arr).save(root / part / c / f"{i}.png")
    if broken:
        (root / "train" / "b" / "broken.jpg").write_bytes(b"not an image at all")
    return root


FOLDER = ["data=imagefolder", "data.image_size=8", "model.patch_size=4", "train.batch_size=4",
          "train.steps=2", "eval.batch_size=8", "quiet=true", "data.num_workers=0"]


def test_skipped_image_warning_is_one_clean_line_and_errors_name_the_file(tmp_path):
    root = image_tree(tmp_path / "imgs", broken=True)
    p = run("benchbench.cli", *FOLDER, f"data.root={root}", f"results.dir={tmp_path / 'r'}",
            cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    (line,) = [ln for ln in p.stderr.splitlines() if "unreadable" in ln]
    assert line.startswith("benchbench: warning: imagefolder: skipped 1 unreadable images "
                           f"(first: {root / 'train' / 'b' / 'broken.jpg'})"), p.stderr
    assert "warnings.warn" not in p.stderr and "UserWarning" not in p.stderr
    p = run("benchbench.cli", *FOLDER, f"data.root={root}", "data.skip_bad_images=false",
            f"results.dir={tmp_path / 'r2'}", cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert f"unreadable image {root / 'train' / 'b' / 'broken.jpg'} (not an image" in p.stderr
    assert "BytesIO" not in p.stderr


@pytest.mark.parametrize("fmt", ["webdataset", "imagefolder"])
def test_an_unset_data_root_says_it_must_be_set(run_cli, capsys, fmt):
    code, _ = run_cli(*QUICK, f"data={fmt}")
    err = capsys.readouterr().err
    assert code == 2 and f"{fmt}: data.root must be set" in err and "=None" not in err, err


def test_missing_checkpoint_names_each_folder_once_and_init_results_dirs(run_cli, capsys):
    code, rdir = run_cli(*QUICK, "task=probe", "init.checkpoint=0123456789ab")
    err = capsys.readouterr().err
    assert code == 2 and "no checkpoint '0123456789ab'" in err, err
    assert err.count(str(rdir / "ckpt")) == 1 and "init.results_dirs=[DIR]" in err


def test_hybrid_micro_patch_error_suggests_its_own_patch_sizes(run_cli, capsys):
    code, _ = run_cli(*QUICK, "model=hybrid_micro", "model.patch_size=5")
    err = capsys.readouterr().err
    assert code == 2 and "R50" not in err, err
    assert "Set model.patch_size=8 (R-micro+ViT-micro/8)" in err
    assert "for 32 px images R-micro+ViT-micro takes 4, 8, 16, 32" in err


def test_wandb_gets_no_deprecation_warning(run_cli, capfd, monkeypatch, tmp_path):
    wandb = pytest.importorskip("wandb")
    from benchbench.wandb_log import _reinit

    for k in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_SILENT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    (tmp_path / "wb").mkdir()
    wandb.teardown()  # wandb reads WANDB_DIR once per process: forget an earlier test's
    code, _ = run_cli(*QUICK, "wandb.enabled=true", "wandb.mode=offline")
    wandb.teardown()
    err = capfd.readouterr().err
    assert code == 0 and list((tmp_path / "wb").rglob("offline-run-*")), err
    assert "'reinit'" not in err and "deprecated" not in err, err  # wandb's warning quotes it
    assert _reinit(wandb) == "finish_previous"  # this wandb knows it (0.19.10+)


def test_a_finished_run_leaves_no_empty_checkpoint_folder(run_cli, tmp_path):
    code, rdir = run_cli(*QUICK)
    assert code == 0 and not (rdir / "ckpt").exists()
    code, rdir = run_cli(*QUICK, "train.save_final=true", results=tmp_path / "kept")
    (run,) = (rdir / "ckpt").iterdir()
    assert code == 0 and [p.name for p in run.iterdir()] == ["final.pt"]
    code, rdir = run_cli(*QUICK, "data=imagefolder", f"data.root={tmp_path}",
                         results=tmp_path / "failed")  # fails after the checkpoint probe
    assert code == 2 and not (rdir / "ckpt").exists()


def _shard(path: Path, samples: list[tuple[str, int]]) -> None:
    import io
    import tarfile

    import numpy as np
    from PIL import Image

    with tarfile.open(path, "w") as t:
        for key, label in samples:
            b = io.BytesIO()
            Image.fromarray(np.full((8, 8, 3), 40 * label, np.uint8)).save(b, "PNG")
            for name, data in ((f"{key}.png", b.getvalue()), (f"{key}.cls", str(label).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))


def test_a_class_in_val_but_not_in_train_is_a_warning_naming_it(run_cli, capsys, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setenv("BENCHBENCH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "shards"
    root.mkdir()
    _shard(root / "train-0000.tar", [(f"t{i}", (0, 2)[i % 2]) for i in range(8)])
    _shard(root / "val-0000.tar", [(f"v{i}", i % 3) for i in range(6)])
    with pytest.warns(UserWarning, match=r"webdataset: the test split has class 1, the "
                                         r"training split none: the model never learns class 1"):
        code, _ = run_cli(*QUICK, "data=webdataset", f"data.root={root}", "data.image_size=8",
                          "model.patch_size=4", "train.batch_size=4", "eval.batch_size=8",
                          "data.num_workers=0", tiny=False)
    assert code == 0, capsys.readouterr().err


def test_a_long_synthetic_generation_says_what_it_does(run_cli, capsys, monkeypatch):
    from benchbench.data.readers import synthetic

    monkeypatch.setattr(synthetic, "SAY_AFTER_S", 0.0)  # as 999,999 images would take minutes
    code, _ = run_cli(*QUICK, "data.train_size=2048")
    err = capsys.readouterr().err
    assert code == 0 and "benchbench: synthetic: generating 2,048 train images, about " in err, err
    assert "a smaller data.train_size takes less" in err
    monkeypatch.setattr(synthetic, "SAY_AFTER_S", 1e9)
    run_cli(*QUICK, "data.train_size=2048")
    assert "generating" not in capsys.readouterr().err  # short ones stay quiet
