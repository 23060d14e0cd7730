"""What a new user hits (issue 16): every mistake one clear message, every output reads right."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FASHION_DIR, REPO, TINY

QUICK = ["train.steps=2"]


def rows_of(rdir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((rdir / "runs").glob("*.json"))]


def test_help_describes_benchbench(run_cli, capsys):
    code, _ = run_cli("--help")
    out = capsys.readouterr().out
    assert code == 0 and "powered by Hydra" not in out
    for want in ("scaling studies of image classifiers", "model=", "vit_micro", "study=",
                 "demo", "results.dir=PATH", "README"):
        assert want in out, want


@pytest.mark.parametrize("arg, want", [
    ("train.epoch=3", "unknown key train.epoch; did you mean train.epochs?"),
    ("data.trainsize=100", "unknown key data.trainsize; did you mean data.train_size?"),
    ("model.patch_sise=4", "unknown key model.patch_sise; did you mean model.patch_size?"),
])
def test_a_key_typo_names_the_closest_key_and_never_advises_plus(run_cli, capsys, arg, want):
    code, rdir = run_cli(arg)
    err = capsys.readouterr().err
    assert code == 2 and want in err, err
    assert "+" not in err and "Traceback" not in err and not rdir.exists()


@pytest.mark.parametrize("arg, want", [
    ("train.lr=abc", "train.lr takes a number, got train.lr=abc"),
    ("model.patch_size=abc", "model.patch_size takes a whole number, got model.patch_size=abc"),
    ("eval.fewshot=maybe", "eval.fewshot takes true or false, got eval.fewshot=maybe"),
])
def test_a_value_of_the_wrong_type_names_the_key_and_the_type(run_cli, capsys, arg, want):
    code, rdir = run_cli(arg)
    err = capsys.readouterr().err
    assert code == 2 and want in err, err
    assert "ValueError" not in err and not rdir.exists()


def test_good_keys_and_values_still_run(run_cli):
    code, rdir = run_cli(*QUICK, "train.lr=0.002", "model.patch_size=8", "data.train_size=256",
                         "train.epochs=2.5")
    (row,) = rows_of(rdir)
    assert code == 0 and row["status"] == "ok" and row["lr"] == 0.002
    assert row["threads"] == torch.get_num_threads()  # issue 16 item 19


def test_unwritable_results_dir_is_one_message(run_cli, capsys):
    code, _ = run_cli(*QUICK, results=Path("/proc/benchbench-x"))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert "cannot write the rows to results.dir=/proc/benchbench-x" in err
    assert "results.dir=<a writable folder>" in err


def test_checkpoint_path_that_does_not_exist_says_so(run_cli, capsys):
    code, _ = run_cli(*QUICK, "init.checkpoint=/nope.pt")
    err = capsys.readouterr().err
    assert code == 2 and "the file /nope.pt does not exist" in err, err
    assert "ckpt//nope.pt" not in err


def test_timm_weights_not_cached_answer_at_once_without_network(run_cli, capsys, monkeypatch,
                                                                tmp_path):
    from huggingface_hub import constants

    calls = []

    def no_network(*a, **k):
        calls.append(a)
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torchhub"))
    code, _ = run_cli(*QUICK, "init.checkpoint=timm:vit_tiny_patch16_224")
    err = capsys.readouterr().err
    assert code == 2 and "is not in the local cache" in err, err
    assert calls == []  # no lookup went to the network


def test_sigterm_during_measure_writes_an_interrupted_row(tmp_path):
    """task=measure stopped by SIGTERM: a message and an `interrupted` row (was: exit 143)."""
    script = (
        "import os, signal, time, sys\n"
        "import benchbench.measure as m\n"
        "real = m.measure_model\n"
        "def slow(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(5)\n"
        "    return real(*a, **k)\n"
        "m.measure_model = slow\n"
        "from benchbench.cli import main\n"
        f"sys.exit(main(['task=measure', 'results.dir={tmp_path / 'r'}']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=300)
    assert p.returncode == 130, (p.returncode, p.stderr)
    assert "SIGTERM outside training" in p.stderr and "Traceback" not in p.stderr
    (row,) = rows_of(tmp_path / "r")
    assert row["status"] == "interrupted" and "SIGTERM" in row["error"]


def test_a_failure_fixed_outside_benchbench_is_retried_by_itself(run_cli, capsys, tmp_path):
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists() and not list(
            FASHION_DIR.glob("train-images*")):
        pytest.skip("Fashion-MNIST is not installed")
    root = tmp_path / "fm"
    root.mkdir()
    args = [*QUICK, "data=fashion_mnist", f"data.root={root}", "data.image_size=28",
            "model.patch_size=7"]
    code, rdir = run_cli(*args)
    assert code == 2 and rows_of(rdir)[0]["status"] == "failed"
    assert "runs again by itself" in capsys.readouterr().err
    for f in FASHION_DIR.iterdir():  # "install" the dataset
        (root / f.name).symlink_to(f)
    code, _ = run_cli(*args)
    out = capsys.readouterr().out
    assert code == 0 and "retry" in out and "DataError" in out, out
    assert rows_of(rdir)[0]["status"] == "ok"


def test_relaunching_a_failed_point_exits_non_zero_and_says_how(run_cli, capsys):
    args = [*QUICK, "train.batch_size=512"]  # larger than the 256 training images
    code, rdir = run_cli(*args)
    assert code == 2 and rows_of(rdir)[0]["error_type"] == "ConfigError"
    capsys.readouterr()
    code, _ = run_cli(*args)
    out = capsys.readouterr().out
    assert code == 1, out
    assert "already failed" in out and "study.retry_failed=true runs it again" in out


def test_measure_line_times_at_the_cpu_batch_and_says_what_it_measures(run_cli, capsys):
    code, rdir = run_cli("task=measure", "measure.throughput=true", "measure.repeats=1",
                         "measure.cpu_throughput_batch=2")
    out = capsys.readouterr().out
    (row,) = rows_of(rdir)
    assert code == 0 and row["batch_size"] == 2 and row["infer_img_per_s"] > 0
    assert "measure.cpu_throughput_batch" in out and "roughly" in out
    assert "timing inference (batch 2)" in out and "timing training (batch 2)" in out
    line = next(x for x in out.splitlines() if x.startswith("[ok]"))
    assert "data=-:-" not in line and "top1" not in line
    assert "params=" in line and "FLOPs/img" in line and "img/s" in line


def test_measure_without_throughput_says_why_speed_is_null(run_cli, capsys):
    code, rdir = run_cli("task=measure")
    out = capsys.readouterr().out
    (row,) = rows_of(rdir)
    assert code == 0 and row["infer_img_per_s"] is None
    assert "measure.throughput=true" in out and "data=-:-" not in out


def test_probe_line_shows_its_few_shot_scores(run_cli, capsys, tmp_path):
    code, rdir = run_cli(*QUICK, "train.save_final=true")
    ckpt = next(rdir.glob("ckpt/*/final.pt"))
    code, rdir2 = run_cli("task=probe", f"init.checkpoint={ckpt}", "eval.fewshot_shots=[1,5]",
                          results=tmp_path / "probe")
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("[ok]") and " probe " in x)
    (row,) = rows_of(rdir2)
    assert code == 0 and f"5-shot={100 * row['fewshot_top1']:.1f}%" in line, line
    assert "1-shot=" in line and "top1" not in line


def test_transfer_line_shows_fine_tuned_top1_and_few_shot():
    from benchbench.results import empty_row
    from benchbench.summary_line import one_line

    row = {**empty_row(), "status": "ok", "task": "transfer", "model": "ViT-micro/8",
           "top1": 0.5, "fewshot_top1": 0.25, "fewshot_shots": 5, "fewshot": {"5": 0.25}}
    line = one_line(row, "x.json")
    assert "top1=50.0% (fine-tuned)" in line and "5-shot=25.0%" in line


def test_cnn_points_at_two_patch_sizes_are_one_run_and_the_summary_says_so(run_cli, capsys):
    code, _ = run_cli("-m", *QUICK, "model=bit_micro", "model.patch_size=8,16")
    out = capsys.readouterr().out
    assert code == 0
    assert ("2 points: 1 ok, 1 skipped (1 same run as another point: CNNs have no patch size)"
            in out), out


def test_relaunch_after_ctrl_c_says_resumed_from_step(run_cli, capsys, monkeypatch):
    from benchbench import train as train_mod

    real = train_mod.train

    def train(*a, **k):
        def hook(s, loss):
            if s == 2:
                os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k, on_step=hook)

    with monkeypatch.context() as m:
        m.setattr(train_mod, "train", train)
        code, _ = run_cli("train.steps=6")
    assert code == 130
    capsys.readouterr()
    code, _ = run_cli("train.steps=6")
    out = capsys.readouterr().out
    assert code == 0 and "resumed from step 3 of 6" in out, out


def test_tiny_overrides_are_known_keys():
    from benchbench.cli import CONF_DIR
    from benchbench.overrides import check_keys

    check_keys([*TINY, "results.dir=x", "+wandb.api_key=k", "hydra.job.chdir=false",
                "task.finetune.data.train_size=10", "model.timm_name=resnet18"], CONF_DIR)
