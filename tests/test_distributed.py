"""One run across several processes (torch.distributed, gloo on CPU), launched by torchrun:
the same weights and row as one process with the same global batch, eval over the test set
exactly once, gradient accumulation, and a signal on one rank checkpointing without deadlock."""
from __future__ import annotations

import contextlib
import csv
import json
import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import REPO

# fp32 on the CPU, no dropout (vit_micro), no augmentation: weights must match closely
ONE_POINT = [
    "model=vit_micro", "data.train_size=256", "data.test_size=127", "train.batch_size=64",
    "train.epochs=1", "quiet=true", "device=cpu", "train.save_final=true", "data.augment=false",
    "eval.batch_size=32", "eval.fewshot=true", "train.log_every=2",
]


def torchrun(args: list[str], cwd: Path, nproc: int = 2, timeout: int = 120):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled",
           "PYTHONPATH": str(REPO)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def only_row(rdir: Path) -> dict:
    rows = list((rdir / "runs").glob("*.json"))
    assert len(rows) == 1, rows
    return json.loads(rows[0].read_text())


def final_weights(rdir: Path, run_id: str) -> dict:
    return torch.load(rdir / "ckpt" / run_id / "final.pt", weights_only=True)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-4, msg=k)


@pytest.fixture
def one_process(run_cli, tmp_path):
    """The reference: the point in one process (no process group, no DDP)."""
    code, rdir = run_cli(*ONE_POINT, results=tmp_path / "one", tiny=False)
    assert code == 0
    row = only_row(rdir)
    return row, final_weights(rdir, row["run_id"])


def test_two_ranks_match_one_process_and_count_each_test_image_once(one_process, tmp_path):
    ref, ref_w = one_process
    rdir = tmp_path / "two"
    # micro-batches of 16 on each rank's slice of 32: DDP + no_sync accumulation
    p = torchrun(["-m", "benchbench.cli", *ONE_POINT, f"results.dir={rdir}",
                  "train.micro_batch_size=16"], cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    row = only_row(rdir)  # one row, written by rank 0 only
    assert row["status"] == "ok" and row["run_id"] == ref["run_id"]
    assert row["world_size"] == 2 and ref["world_size"] == 1
    # totals over ranks: the global batch, as one process
    for k in ("samples_seen", "train_flops", "steps", "batch_size"):
        assert row[k] == ref[k], k
    assert row["samples_seen"] == 4 * 64
    # 127 test images (odd): shards 64 + 63, summed once
    assert row["eval_samples"] == ref["eval_samples"] == 127
    assert row["top1"] == pytest.approx(ref["top1"], abs=1 / 127 + 1e-9)
    assert row["fewshot_top1"] == pytest.approx(ref["fewshot_top1"], abs=0.02)
    assert row["final_loss"] == pytest.approx(ref["final_loss"], rel=1e-4)
    assert_same_weights(final_weights(rdir, row["run_id"]), ref_w)
    # rank 0 owns every file: one Hydra run dir, no checkpoint left behind
    assert len(list((rdir / "logs").iterdir())) == 1
    assert sorted(p.name for p in (rdir / "ckpt" / row["run_id"]).iterdir()) == ["final.pt"]
    # the training curve: rank 0's file and progress lines, the global batch's mean loss
    assert p.stdout.count(f"[{row['run_id']}] step 2/4 ") == 1, p.stdout
    curve, ref_curve = (list(csv.DictReader((d / "metrics" / f"{row['run_id']}.csv").open()))
                        for d in (rdir, tmp_path / "one"))
    assert [r["step"] for r in curve] == [r["step"] for r in ref_curve] == ["1", "2", "4"]
    for a, b in zip(curve, ref_curve):
        for k in ("loss", "grad_norm", "lr"):
            assert float(a[k]) == pytest.approx(float(b[k]), rel=1e-4), k


@pytest.mark.parametrize("how", [["train.micro_batch_size=32"], ["train.grad_checkpointing=true"]])
def test_accumulation_and_checkpointing_give_the_same_weights(one_process, run_cli, tmp_path, how):
    ref, ref_w = one_process
    code, rdir = run_cli(*ONE_POINT, *how, results=tmp_path / "acc", tiny=False)
    assert code == 0
    row = only_row(rdir)
    assert row["run_id"] == ref["run_id"]  # how a step is computed is not part of the point
    assert row["samples_seen"] == ref["samples_seen"]
    assert_same_weights(final_weights(rdir, row["run_id"]), ref_w)


WORKER = textwrap.dedent("""
    import itertools, json, os, signal, sys
    from pathlib import Path
    import torch
    from omegaconf import OmegaConf
    from benchbench import distributed
    from benchbench.train import Budget, Interrupted, train

    out, kill_at = Path(sys.argv[1]), int(sys.argv[2])
    env = distributed.init_from_env("auto", device_type="cpu")
    tc = OmegaConf.create({"optimizer": "adamw", "lr": 1e-2, "weight_decay": 0.05,
                           "batch_size": 8, "warmup_frac": 0.1, "schedule": "cosine",
                           "label_smoothing": 0.1, "grad_clip": 1.0, "checkpoint_every_s": 0})

    def batches(start):  # global batch of 8 per step; this rank's contiguous slice
        w, r = env.world_size, env.rank
        for step in itertools.count(start):
            g = torch.Generator().manual_seed(step)
            x = torch.randn(8, 6, generator=g)
            y = (x[:, 0] > 0).long()
            yield x[r * 8 // w:(r + 1) * 8 // w], y[r * 8 // w:(r + 1) * 8 // w]

    def on_step(step, loss):  # only the last rank is signalled
        if step == kill_at and env.rank == env.world_size - 1:
            os.kill(os.getpid(), signal.SIGTERM)

    # run 1 is stopped by the signal (if kill_at >= 0); run 2, as a requeued job would, builds
    # the model afresh and resumes from the checkpoint
    for run in (1, 2):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        net = distributed.wrap_ddp(model, torch.device("cpu")) if env.enabled else model
        ckpt = out / "last.pt"
        state = {"had_checkpoint": ckpt.exists()}
        try:
            train(net, batches, tcfg=tc, budget=Budget(30, 8), device=torch.device("cpu"),
                  progress=False, seed=3, ckpt_path=ckpt, identity={"m": 1},
                  on_step=on_step if run == 1 else None, rank=env.rank,
                  world_size=env.world_size)
            state["done"] = True
        except Interrupted as e:
            state["interrupted_at"] = e.step
            state["checkpoint_written"] = ckpt.exists()
        (out / f"run{run}-rank{env.rank}.json").write_text(json.dumps(state))
        if state.get("done"):
            break
    if env.is_main:
        torch.save(model.state_dict(), out / "final.pt")
""")


def test_signal_on_one_rank_checkpoints_and_resume_matches_one_process(tmp_path, monkeypatch):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "out"
    out.mkdir()
    p = torchrun([str(script), str(out), "12"], cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    # both ranks stopped at the same step (the flag is all-reduced) after rank 0 saved
    run1 = [json.loads((out / f"run1-rank{r}.json").read_text()) for r in (0, 1)]
    assert run1 == [{"had_checkpoint": False, "interrupted_at": 14,
                     "checkpoint_written": True}] * 2
    run2 = [json.loads((out / f"run2-rank{r}.json").read_text()) for r in (0, 1)]
    assert run2 == [{"had_checkpoint": True, "done": True}] * 2
    assert not (out / "last.pt").exists()  # finished: rank 0 removed it
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    for k in ("WORLD_SIZE", "RANK", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(sys, "argv", [str(script), str(ref_dir), "-1"])
    runpy.run_path(str(script), run_name="__main__")  # one process, uninterrupted
    assert_same_weights(torch.load(out / "final.pt"), torch.load(ref_dir / "final.pt"))


def test_one_process_is_a_no_op_and_off_refuses_many(monkeypatch):
    from benchbench import distributed
    from benchbench.errors import ConfigError

    for k in ("WORLD_SIZE", "RANK", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(k, raising=False)
    env = distributed.init_from_env("auto")
    assert env == distributed.DistEnv() and not env.enabled and env.is_main
    assert not distributed.initialized()  # no process group in one process
    t = torch.ones(2)
    assert distributed.all_reduce_sum(t) is t and distributed.is_main()
    assert distributed.gather_shards(t) == (t,)
    m = torch.nn.Linear(2, 2)
    assert isinstance(distributed.no_sync(m), contextlib.nullcontext)  # a bare model: nothing to skip
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="distributed=off"):
        distributed.init_from_env("off")
    with pytest.raises(ConfigError, match="Valid: auto, off"):
        distributed.init_from_env("fsdp")


@pytest.mark.slow  # ~25 s on 2 cores: pytest -m slow tests/test_distributed.py
def test_submitit_tasks_form_one_ddp_run(one_process, tmp_path):
    """The SLURM path without SLURM: submitit's local executor with tasks_per_node=2 starts
    two tasks of one point; they join one process group from submitit's environment."""
    ref, ref_w = one_process
    rdir = tmp_path / "sub"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    p = subprocess.run(
        [sys.executable, "-m", "benchbench.cli", "-m", "hydra/launcher=submitit_local",
         "hydra.launcher.tasks_per_node=2", "hydra.launcher.timeout_min=5", *ONE_POINT,
         f"results.dir={rdir}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "1 points: 1 ok" in p.stdout  # one status file, not one per task
    row = only_row(rdir)
    assert row["world_size"] == 2 and row["eval_samples"] == 127
    assert row["samples_seen"] == ref["samples_seen"]
    assert_same_weights(final_weights(rdir, row["run_id"]), ref_w)


@pytest.fixture
def gloo_group(tmp_path):
    """A real one-rank gloo process group in this process (torch.distributed), torn down after."""
    import torch.distributed as dist

    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        yield dist
    finally:
        dist.destroy_process_group()


def test_no_sync_really_skips_the_gradient_all_reduce(gloo_group):
    """distributed.no_sync(DDP model): the backward inside it reduces nothing; the next one
    outside reduces once. Counted by a DDP communication hook (torch's own API)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from benchbench import distributed

    torch.manual_seed(0)
    ddp = DDP(torch.nn.Linear(4, 2))
    reduced = []

    def hook(state, bucket):
        reduced.append(bucket.index())
        fut = torch.futures.Future()
        fut.set_result(bucket.buffer())
        return fut

    ddp.register_comm_hook(None, hook)
    x = torch.randn(3, 4)
    with distributed.no_sync(ddp):
        ddp(x).sum().backward()
    assert reduced == []  # accumulated locally, no all-reduce
    ddp(x).sum().backward()
    assert reduced == [0]
    torch.testing.assert_close(ddp.module.weight.grad, 2 * x.sum(0).expand(2, 4))  # both kept


def test_batchnorm_stays_on_cpu_and_becomes_syncbatchnorm_on_cuda(gloo_group, monkeypatch):
    """README: BatchNorm becomes SyncBatchNorm on CUDA (gloo on a CPU has no SyncBatchNorm).
    The CPU path runs for real; the CUDA decision is checked with DDP itself stubbed."""
    import torch.nn.parallel as par
    from timm.layers import BatchNormAct2d

    from benchbench import distributed

    def bn_model():
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                   BatchNormAct2d(4), torch.nn.Flatten())

    def kinds(m):
        return sorted({type(x).__name__ for x in m.modules() if "Norm" in type(x).__name__})

    cpu = distributed.wrap_ddp(bn_model(), torch.device("cpu"))
    assert isinstance(cpu, par.DistributedDataParallel)
    assert kinds(cpu.module) == ["BatchNorm2d", "BatchNormAct2d"]

    got = {}

    class FakeDDP(torch.nn.Module):
        def __init__(self, module, device_ids=None, **kw):
            super().__init__()
            self.module, got["device_ids"] = module, device_ids

    monkeypatch.setattr(par, "DistributedDataParallel", FakeDDP)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    cuda = distributed.wrap_ddp(bn_model(), torch.device("cuda"))
    assert kinds(cuda.module) == ["SyncBatchNorm", "SyncBatchNormAct"]  # timm keeps the act
    assert got["device_ids"] == [3]
