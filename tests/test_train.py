"""Training loop: budgets, schedule, divergence, signals + exact resume, few-shot probe."""
from __future__ import annotations

import itertools
import math
import os
import signal

import pytest
import torch
from omegaconf import OmegaConf

from benchbench.errors import BenchbenchError, ConfigError
from benchbench.train import (
    Diverged,
    Interrupted,
    fewshot_probe,
    load_checkpoint,
    lr_lambda,
    resolve_budget,
    save_checkpoint,
    train,
)

TC = OmegaConf.create({
    "optimizer": "adamw", "lr": 1e-2, "weight_decay": 0.05, "betas": [0.9, 0.999],
    "momentum": 0.9, "batch_size": 8, "epochs": 2, "steps": None, "flops": None,
    "warmup_frac": 0.1, "schedule": "cosine", "label_smoothing": 0.1, "grad_clip": 1.0,
    "checkpoint_every_s": 0,
})


def tc(**kw):
    c = TC.copy()
    for k, v in kw.items():
        c[k] = v
    return c


def batches(start):
    """Deterministic synthetic batches: step k always yields the same batch."""
    for step in itertools.count(start):
        g = torch.Generator().manual_seed(step)
        x = torch.randn(8, 6, generator=g)
        yield x, (x[:, 0] > 0).long()


def net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Dropout(0.2), torch.nn.ReLU(),
                               torch.nn.Linear(16, 2))


def test_budget_in_epochs_steps_and_flops():
    assert resolve_budget(tc(epochs=2), flops_per_image=None, steps_per_epoch=10).steps == 20
    assert resolve_budget(tc(steps=7), flops_per_image=None, steps_per_epoch=10).steps == 7
    # 3 x forward FLOPs x images: 1e6 / (3 * 100 * 8) = 416.7 -> 416 steps (never over)
    b = resolve_budget(tc(flops=1e6, steps=5), flops_per_image=100, steps_per_epoch=10)
    assert b.steps == 416 and b.samples == 416 * 8
    exact = resolve_budget(tc(flops=3 * 100 * 8 * 417), flops_per_image=100, steps_per_epoch=10)
    assert exact.steps == 417  # a budget of whole steps is met exactly


@pytest.mark.parametrize("flops", [2.5e3, 1e4, 3.3e4, 1e6, 7.77e7])
def test_a_flops_budget_is_never_exceeded(flops):
    """Issue 23 item 12: steps were rounded up, so a small budget overshot by 15-19%."""
    b = resolve_budget(tc(flops=flops), flops_per_image=100, steps_per_epoch=10)
    assert 3 * 100 * b.samples <= flops < 3 * 100 * (b.samples + 8)


def test_a_run_on_a_small_flops_budget_stays_within_it_and_records_it(run_cli):
    """Through the CLI: 2.9 steps' worth of FLOPs trains 2 steps (was 3, over the budget);
    the row has the budget beside what was spent."""
    import json

    code, rdir = run_cli("train.steps=1", results=None)
    (first,) = [json.loads(p.read_text()) for p in (rdir / "runs").glob("*.json")]
    budget = 3 * first["flops_per_image"] * 64 * 2.9  # TINY: batch 64
    code, other = run_cli(f"train.flops={budget!r}", results=rdir.parent / "budget")
    (row,) = [json.loads(p.read_text()) for p in (other / "runs").glob("*.json")]
    assert code == 0 and row["steps"] == 2 and row["train_flops_budget"] == budget
    assert row["train_flops"] <= row["train_flops_budget"]


def test_a_flops_budget_below_one_step_is_refused():
    with pytest.raises(ConfigError, match="less than one step.*raise train.flops"):
        resolve_budget(tc(flops=1e3), flops_per_image=100, steps_per_epoch=10)


@pytest.mark.parametrize("kw,match", [({"epochs": 0}, "train.epochs must be positive"),
                                      ({"steps": -1}, "train.steps must be positive"),
                                      ({"flops": 0}, "train.flops must be positive"),
                                      ({"batch_size": 0}, "train.batch_size must be positive")])
def test_zero_or_negative_budgets_are_rejected(kw, match):
    with pytest.raises(ConfigError, match=match):
        resolve_budget(tc(**kw), flops_per_image=10, steps_per_epoch=10)


def test_schedule_warms_up_then_decays_to_zero():
    f = lr_lambda(tc(warmup_frac=0.1, schedule="cosine"), 100)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(99) < 0.01
    lin = lr_lambda(tc(warmup_frac=0.0, schedule="linear"), 100)
    assert lin(50) == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="cosine, linear, constant"):
        lr_lambda(tc(schedule="step"), 10)


def test_training_learns_and_reports_samples():
    from benchbench.train import Budget

    m = net()
    res = train(m, batches, tcfg=tc(), budget=Budget(60, 8), device=torch.device("cpu"),
                progress=False)
    assert res.samples_seen == 480 and res.steps == 60 and not res.resumed
    x, y = next(batches(10_000))
    m.eval()
    assert (m(x).argmax(1) == y).float().mean() >= 0.75
    assert res.train_img_per_s and res.train_img_per_s > 0


def test_nan_loss_ends_as_diverged_with_the_step():
    from benchbench.train import Budget

    class Bad(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(6, 2)

        def forward(self, x):
            out = self.lin(x)
            return out * float("nan") if self.training and self.lin.weight.sum() != 0 else out

    with pytest.raises(Diverged) as e:
        train(Bad(), batches, tcfg=tc(), budget=Budget(20, 8), device=torch.device("cpu"),
              progress=False)
    assert e.value.step == 0 and "lower train.lr" in str(e.value)


def test_sigterm_checkpoints_and_resume_equals_uninterrupted(tmp_path):
    from benchbench.train import Budget

    ident = {"model": "x"}
    ref = net()
    train(ref, batches, tcfg=tc(), budget=Budget(30, 8), device=torch.device("cpu"),
          progress=False, seed=3)

    ckpt = tmp_path / "ckpt" / "last.pt"
    m1 = net()

    def kill_at_12(step, loss):
        if step == 12:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Interrupted) as e:
        train(m1, batches, tcfg=tc(), budget=Budget(30, 8), device=torch.device("cpu"),
              progress=False, seed=3, ckpt_path=ckpt, identity=ident, on_step=kill_at_12)
    assert e.value.step == 13 and ckpt.exists()
    m2 = net()
    res = train(m2, batches, tcfg=tc(), budget=Budget(30, 8), device=torch.device("cpu"),
                progress=False, seed=3, ckpt_path=ckpt, identity=ident)
    assert res.resumed and res.samples_seen == 240
    for a, b in zip(ref.state_dict().values(), m2.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert not ckpt.exists()  # finished runs leave no stale checkpoint


def test_checkpoint_from_another_config_is_refused_with_the_difference(tmp_path):
    p = tmp_path / "c.pt"
    save_checkpoint(p, {"identity": {"train": {"lr": 0.1}}, "step": 1})
    with pytest.raises(BenchbenchError, match=r"train.lr: 0.1 there vs 0.2 here"):
        load_checkpoint(p, {"train": {"lr": 0.2}})
    p.write_bytes(b"not a checkpoint")
    with pytest.raises(BenchbenchError, match="unreadable"):
        load_checkpoint(p, {})


def test_fewshot_probe_solves_a_linearly_separable_problem_exactly():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=g) * 10
    ytr = torch.arange(4).repeat(20)
    yte = torch.arange(4).repeat(50)
    xtr = centers[ytr] + torch.randn(len(ytr), 16, generator=g)
    xte = centers[yte] + torch.randn(len(yte), 16, generator=g)
    out = fewshot_probe(xtr, ytr, xte, yte, num_classes=4, shots=5, seeds=3, l2=1.0)
    assert out["fewshot_top1"] == 1.0 and len(out["fewshot_top1_per_seed"]) == 3
    rnd = fewshot_probe(torch.randn(80, 16, generator=g), ytr, torch.randn(200, 16, generator=g),
                        yte, num_classes=4, shots=5, seeds=3)
    assert rnd["fewshot_top1"] < 0.5  # random features: near chance, not a test that cannot fail
    with pytest.raises(ConfigError, match="fewshot_shots"):
        fewshot_probe(xtr, ytr, xte, yte, num_classes=4, shots=50)


def test_sgd_optimizer_and_bad_name():
    from benchbench.train import make_optimizer

    opt = make_optimizer(net(), tc(optimizer="sgd"), torch.device("cpu"))
    assert isinstance(opt, torch.optim.SGD) and math.isclose(opt.param_groups[0]["momentum"], 0.9)
    with pytest.raises(ConfigError, match="adamw, sgd"):
        make_optimizer(net(), tc(optimizer="lamb"), torch.device("cpu"))


@pytest.fixture
def recorded_handlers():
    """A Python handler (what submitit installs) on each signal SignalCatcher claims, recording
    each call and whether the checkpoint existed then; restored afterwards. A signal the loop
    fails to catch reaches this handler at once instead of killing the test process."""
    calls: list[tuple[int, bool]] = []
    ckpt: dict[str, object] = {}
    old = {}

    def handler(signum, frame):
        path = ckpt.get("path")
        calls.append((signum, bool(path) and path.exists()))

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
        old[sig] = signal.signal(sig, handler)
    try:
        yield calls, ckpt
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR2],
                         ids=["SIGTERM", "SIGINT", "SIGUSR2"])
def test_each_signal_stops_at_the_next_step_after_a_checkpoint_then_calls_the_old_handler(
        tmp_path, recorded_handlers, signum):
    """README: SIGTERM / SIGINT / SIGUSR2 while training -> checkpoint, exit; the handler
    installed before ours (submitit requeues on SIGUSR2) runs once, after the checkpoint."""
    from benchbench.train import Budget

    calls, ckpt = recorded_handlers
    ckpt["path"] = tmp_path / "last.pt"

    def send_at_4(step, loss):
        if step == 4:
            os.kill(os.getpid(), signum)

    with pytest.raises(Interrupted) as e:
        train(net(), batches, tcfg=tc(), budget=Budget(30, 8), device=torch.device("cpu"),
              progress=False, ckpt_path=ckpt["path"], identity={}, on_step=send_at_4)
    assert e.value.signum == signum and e.value.step == 5
    assert load_checkpoint(ckpt["path"], {})["step"] == 5
    assert calls == [(signum, True)]  # chained once, with the checkpoint already on disk


def test_signal_catcher_restores_the_previous_handlers(recorded_handlers):
    from benchbench.train import SignalCatcher

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)}
    with SignalCatcher() as sig:
        for s in before:
            assert signal.getsignal(s) != before[s]  # ours while training
        os.kill(os.getpid(), signal.SIGUSR2)
        assert sig.signum == signal.SIGUSR2
    assert {s: signal.getsignal(s) for s in before} == before
    assert recorded_handlers[0] == []  # caught, not passed on (no chain() was asked for)


def test_train_img_per_s_is_images_over_the_timed_window(monkeypatch):
    """With a clock that ticks once per batch drawn, img/s must equal the batch size exactly
    (whatever the number of warm-up steps left out), and the wall time the step count."""
    import time as time_mod

    from benchbench.train import Budget

    drawn = [0]

    def counted(start):
        for b in batches(start):
            drawn[0] += 1
            yield b

    monkeypatch.setattr(time_mod, "perf_counter", lambda: float(drawn[0]))
    res = train(net(), counted, tcfg=tc(), budget=Budget(40, 8), device=torch.device("cpu"),
                progress=False)
    assert res.train_img_per_s == 8.0 and res.train_wall_s == 40.0
    assert res.samples_seen == 320


class _SubmittedJob:
    """What hydra-submitit-launcher submits: a callable with a `checkpoint` that resubmits it."""

    def __call__(self) -> None:
        return None

    def checkpoint(self):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)


@pytest.fixture
def submitit_handlers(tmp_path, monkeypatch):
    """This process as a submitit_local job: submitit's own JobEnvironment._handle_signals
    installs its handlers (SIGTERM/SIGCONT bypassed, SIGUSR2 checkpoint-and-requeue);
    restored afterwards."""
    from submitit.core.utils import DelayedSubmission, JobPaths
    from submitit.local.local import LocalJobEnvironment

    for k, v in {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": "4321",
                 "SUBMITIT_LOCAL_GLOBALID": "0", "SUBMITIT_FOLDER": str(tmp_path / "sub")}.items():
        monkeypatch.setenv(k, v)
    sigs = (signal.SIGTERM, signal.SIGCONT, signal.SIGUSR2)
    old = {s: signal.getsignal(s) for s in sigs}
    paths = JobPaths(tmp_path / "sub", job_id="4321", task_id=0)
    paths.folder.mkdir(parents=True)
    delayed = DelayedSubmission(_SubmittedJob())
    delayed.set_timeout(60, 3)
    LocalJobEnvironment()._handle_signals(paths, delayed)
    try:
        yield paths
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def test_under_submitit_sigterm_checkpoints_and_goes_on_then_usr2_requeues(
        tmp_path, submitit_handlers, capfd, caplog):
    """Submitit bypasses SIGTERM and requeues on SIGUSR2. SIGTERM at step 4 writes a
    checkpoint and training goes on; SIGUSR2 at step 9 checkpoints and hands over to
    submitit, which requeues (local executor: exit code 144); the resumed run equals one
    that never stopped."""
    from benchbench.train import Budget

    ckpt, ident = tmp_path / "last.pt", {"model": "x"}
    ref = net()
    train(ref, batches, tcfg=tc(), budget=Budget(30, 8), device=torch.device("cpu"),
          progress=False, seed=3)
    seen: dict[int, int] = {}

    def signals(step, loss):
        if step == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        if step == 6:
            seen[6] = load_checkpoint(ckpt, ident)["step"]  # written at SIGTERM, still going
        if step == 9:
            os.kill(os.getpid(), signal.SIGUSR2)

    with pytest.raises(SystemExit) as e:
        train(net(), batches, tcfg=tc(), budget=Budget(30, 8), device=torch.device("cpu"),
              progress=False, seed=3, ckpt_path=ckpt, identity=ident, on_step=signals)
    assert e.value.code == 144  # submitit.local's LOCAL_REQUEUE_RETURN_CODE: requeue me
    assert seen == {6: 5} and load_checkpoint(ckpt, ident)["step"] == 10
    assert submitit_handlers.submitted_pickle.exists()  # submitit re-dumped the job to rerun
    err = capfd.readouterr().err
    assert ("benchbench: SIGTERM at step 5 under submitit: checkpoint " in err
            and "training goes on (submitit requeues on SIGUSR2)" in err)
    assert "Bypassing signal SIGTERM" in caplog.text and "Requeued job 4321" in caplog.text

    again = net()
    res = train(again, batches, tcfg=tc(), budget=Budget(30, 8), device=torch.device("cpu"),
                progress=False, seed=3, ckpt_path=ckpt, identity=ident)
    assert res.resumed and res.samples_seen == 240
    for a, b in zip(ref.state_dict().values(), again.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_sigterm_outside_submitit_still_stops(tmp_path, submitit_handlers, monkeypatch):
    """Only submitit's own bypass makes SIGTERM save-only: with SUBMITIT_EXECUTOR unset (a
    plain process, e.g. a child of the job) SIGTERM checkpoints and stops, as before."""
    from benchbench.train import Budget

    monkeypatch.delenv("SUBMITIT_EXECUTOR")

    def term_at_4(step, loss):
        if step == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Interrupted) as e:
        train(net(), batches, tcfg=tc(), budget=Budget(30, 8), device=torch.device("cpu"),
              progress=False, ckpt_path=tmp_path / "last.pt", identity={}, on_step=term_at_4)
    assert e.value.signum == signal.SIGTERM and e.value.step == 5
