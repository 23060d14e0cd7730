"""Training curves (metrics/<run_id>.csv), progress lines for logs, periodic evaluation, and
the point's live wandb run (issue 14 items 1 and 2), through the real CLI on tiny runs."""
from __future__ import annotations

import csv
import re
import signal
import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import REPO, signal_at
from omegaconf import OmegaConf

from benchbench import curves, point, results

QUICK = ["train.steps=4", "train.log_every=2"]


def curve_of(rdir: Path, run_id: str | None = None) -> list[dict[str, str]]:
    (path,) = [curves.curve_path(rdir, run_id)] if run_id else (rdir / "metrics").glob("*.csv")
    text = path.read_text()
    assert text.endswith("\n") and text.count("step,") == 1, text  # whole lines, one header
    return list(csv.DictReader(text.splitlines()))


def one_row(rdir: Path) -> dict:
    (row,) = [r for r in results.load_rows(rdir)[0] if r["task"] == "train"]
    return row


def steps(curve: list[dict[str, str]]) -> list[int]:
    return [int(r["step"]) for r in curve]


def test_curve_has_its_columns_a_row_every_log_every_steps_and_the_last(run_cli):
    from benchbench.optim import lr_lambda, warmup_steps_of

    code, rdir = run_cli("train.steps=7", "train.log_every=3")
    row = one_row(rdir)
    curve = curve_of(rdir, row["run_id"])
    assert code == 0 and list(curve[0]) == list(curves.COLUMNS)
    assert steps(curve) == [1, 3, 6, 7]  # the first step too (issue 23 item 12)
    tcfg = OmegaConf.create(row["config"]["train"])
    sched = lr_lambda(tcfg, 7, warmup_steps_of(tcfg, 7))
    for r in curve:
        s = int(r["step"])
        assert int(r["samples_seen"]) == s * 64
        assert float(r["lr"]) == pytest.approx(row["lr"] * sched(s - 1), rel=1e-5)  # this step's lr
        assert float(r["img_per_s"]) > 0 and 0 <= float(r["data_wait_frac"]) <= 1
        assert float(r["grad_norm"]) > 0 and float(r["loss"]) > 0 and float(r["train_s"]) > 0
        assert r["val_top1"] == r["test_top1"] == ""  # nothing evaluated during training
    # the last row's interval is the last step: its mean loss is the row's final loss
    assert float(curve[-1]["loss"]) == pytest.approx(row["final_loss"], rel=1e-5)


def test_grad_norm_is_the_total_norm_before_clipping_with_or_without_clip():
    from test_train import batches, net, tc

    from benchbench.train import Budget, train

    norms = []
    for clip in (1e-3, None):  # SGD, a tiny clip: the weights differ, the first norm may not
        mon = curves.Monitor(every=1, total=3, global_batch=8)
        got = []
        mon.sink = lambda row, step, got=got: got.append(row)
        train(net(), batches, tcfg=tc(grad_clip=clip, optimizer="sgd"), budget=Budget(3, 8),
              device=torch.device("cpu"), progress=False, monitor=mon)
        assert [r["step"] for r in got] == [1, 2, 3]
        norms.append([r["grad_norm"] for r in got])
    assert norms[0][0] == pytest.approx(norms[1][0], rel=1e-5) and norms[0][0] > 1e-3
    assert norms[0][1] != pytest.approx(norms[1][1], rel=1e-3)  # clipping changed the run


def test_an_eight_step_run_draws_a_line_from_its_first_step_to_its_last(run_cli):
    """Issue 23 item 12: with log_every=50 an 8-step run logged only step 8 (a single dot)."""
    code, rdir = run_cli("train.steps=8")
    curve = curve_of(rdir)
    assert code == 0 and steps(curve) == [1, 8]
    assert int(curve[0]["samples_seen"]) == 64 and float(curve[0]["loss"]) > 0


def test_periodic_eval_and_selection_fill_the_accuracy_columns(run_cli):
    # 256 images, batch 64: 4 steps per epoch -> the Selection validates at 4 and 5 (the end)
    code, rdir = run_cli("data.val_split=64", "train.steps=5", "train.log_every=5",
                         "eval.every_steps=3", "train.eval_every_epochs=1")
    row = one_row(rdir)
    curve = {int(r["step"]): r for r in curve_of(rdir)}
    assert code == 0 and sorted(curve) == [1, 3, 4, 5]
    # eval.every_steps: test and validation
    assert 0 <= float(curve[3]["test_top1"]) <= 1 and 0 <= float(curve[3]["val_top1"]) <= 1
    for s in (4, 5):  # train.eval_every_epochs: the Selection's validation, no test
        assert curve[s]["test_top1"] == "" and 0 <= float(curve[s]["val_top1"]) <= 1
    assert row["val_top1"] == pytest.approx(max(float(curve[s]["val_top1"]) for s in (4, 5)),
                                            abs=1e-6)


def test_eval_every_steps_changes_nothing_the_run_computes(run_cli, tmp_path):
    args = [*QUICK, "train.save_final=true", "data.val_split=64"]
    code, plain = run_cli(*args, results=tmp_path / "plain")
    code2, probed = run_cli(*args, "eval.every_steps=1", results=tmp_path / "probed")
    a, b = one_row(plain), one_row(probed)
    assert code == code2 == 0 and a["run_id"] == b["run_id"]
    assert steps(curve_of(probed)) == [1, 2, 3, 4] and curve_of(probed)[0]["test_top1"] != ""
    assert (a["top1"], a["val_top1"], a["final_loss"]) == (b["top1"], b["val_top1"], b["final_loss"])
    wa, wb = (torch.load(next(r.glob("ckpt/*/final.pt")))["model"] for r in (plain, probed))
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_a_resumed_run_appends_after_its_checkpoint_and_repairs_a_cut_line(run_cli, monkeypatch,
                                                                           tmp_path):
    args = ["train.steps=8", "train.log_every=2"]
    code, ref = run_cli(*args, results=tmp_path / "ref")
    want = {int(r["step"]): r for r in curve_of(ref)}
    with monkeypatch.context() as m:
        signal_at(m, signal.SIGINT, step=4)  # the checkpoint is at step 5
        code, rdir = run_cli(*args)
    assert code == 130 and steps(curve_of(rdir)) == [1, 2, 4]
    (path,) = (rdir / "metrics").glob("*.csv")
    with open(path, "a") as f:  # a row logged after the checkpoint, then a crash mid-line
        f.write("6,384,9.9,0.001,1,0,1,,,1\n1")  # (cut after the "1" of a later "10,...")
    code, _ = run_cli(*args)
    assert code == 0 and steps(curve_of(rdir)) == [1, 2, 4, 6, 8]  # no step twice, no cut line
    got = {int(r["step"]): r for r in curve_of(rdir)}
    assert got[6]["loss"] != "9.9"
    for s in (1, 2, 4, 6, 8):
        assert got[s]["lr"] == want[s]["lr"]
    for s in (1, 2, 4, 8):  # whole intervals on both sides of the resume: the same mean loss
        assert float(got[s]["loss"]) == pytest.approx(float(want[s]["loss"]), rel=1e-4)
    assert float(got[8]["train_s"]) > float(got[6]["train_s"])


def test_curve_writer_keeps_rows_up_to_the_checkpoint_and_drops_a_cut_line(tmp_path):
    path = tmp_path / "metrics" / "r.csv"
    path.parent.mkdir()
    path.write_text(",".join(curves.COLUMNS) + "\n" + "".join(
        f"{s},{s * 8},1.0,0.1,5,0,1,,,{s}\n" for s in range(1, 7)) + "1")  # cut: "1" of "10,..."
    w = curves.CurveWriter(path)
    w.open(4)
    w.write({"step": 5, "samples_seen": 40, "loss": 0.5, "val_top1": None})
    w.close()
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(curves.COLUMNS) and [ln.split(",")[0] for ln in lines[1:]] == [
        "1", "2", "3", "4", "5"]
    assert lines[-1] == "5,40,0.5,,,,,,,"
    curves.CurveWriter(path).open(0)  # a run that starts from step 0 starts a new curve
    assert path.read_text() == ",".join(curves.COLUMNS) + "\n"


def test_an_unwritable_curve_is_one_message_and_the_run_goes_on(run_cli, capsys, tmp_path):
    rdir = tmp_path / "results"
    rdir.mkdir()
    (rdir / "metrics").write_text("not a folder")
    code, _ = run_cli(*QUICK, results=rdir)
    err = capsys.readouterr().err
    assert code == 0 and one_row(rdir)["status"] == "ok"
    assert err.count("cannot write the training curve") == 1


LINE = re.compile(r"^benchbench: \[(\w{12})\] step (\d+)/4 loss [\d.]+ lr \d\.\de[-+]\d\d "
                  r"\d+ img/s( ETA \d\d:\d\d)?$")


def test_progress_lines_go_to_stdout_in_a_log_even_when_quiet(run_cli, capsys):
    code, rdir = run_cli(*QUICK)  # conftest's TINY sets quiet=true, as studies do
    out = capsys.readouterr().out
    lines = [m for m in map(LINE.match, out.splitlines()) if m]
    assert code == 0 and [m.group(2) for m in lines] == ["1", "2", "4"], out
    assert lines[0].group(1) == one_row(rdir)["run_id"] and lines[0].group(3)  # an ETA
    assert lines[-1].group(3) is None  # the last step: nothing left
    code, _ = run_cli(*QUICK, "progress=false", results=rdir.parent / "silent")
    assert code == 0 and "] step " not in capsys.readouterr().out


def test_a_terminal_gets_the_tqdm_bar_instead_of_lines(run_cli, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, _ = run_cli(*QUICK, "quiet=false")
    cap = capsys.readouterr()
    assert code == 0 and "] step " not in cap.out and "train:" in cap.err


def test_transfer_fine_tune_has_its_own_curve_under_the_transfer_run_id(run_cli, monkeypatch,
                                                                         tmp_path):
    from test_transfer import FT

    fake = FakeWandb(tmp_path / "results")
    monkeypatch.setitem(sys.modules, "wandb", fake.module())
    code, rdir = run_cli(*FT, "train.steps=3", "task.finetune.train.log_every=2",
                         "eval.fewshot=false", "wandb.enabled=true")
    rows = {r["task"]: r for r in results.load_rows(rdir)[0]}
    assert code == 0 and set(rows) == {"train", "transfer"}
    assert steps(curve_of(rdir, rows["train"]["run_id"])) == [1, 3]  # pre-training: log_every 50
    ft = curve_of(rdir, rows["transfer"]["run_id"])
    assert steps(ft) == [1, 2, 4] and int(ft[-1]["samples_seen"]) == rows["transfer"]["samples_seen"]
    # one wandb run per stage, one after the other, each with its own curve
    assert [k["id"] for k in fake.inits] == [rows["train"]["run_id"], rows["transfer"]["run_id"]]
    assert [k["job_type"] for k in fake.inits] == ["train", "transfer"]
    assert [s for s, _, _ in fake.logs] == [1, 3, 1, 2, 4]
    assert [r.finished for r in fake.runs] == [[0], [0]]


@pytest.mark.parametrize("how", [{"train": {"lr": 0.1, "log_every": 7}},
                                 {"eval": {"batch_size": 8, "every_steps": 100}},
                                 {"progress": False},
                                 {"task": {"finetune": {"train": {"lr": 0.1, "log_every": 7}}}}])
def test_the_new_keys_do_not_change_a_run_id(how):
    base = {"model": {"name": "vit_micro"}, "train": {"lr": 0.1}, "eval": {"batch_size": 8},
            "task": {"finetune": {"train": {"lr": 0.1}}}, "seed": 0}
    merged = {**base, **how}
    assert results.run_id_of(merged) == results.run_id_of(base)


def test_transfer_demo_still_composes_to_its_committed_run_ids():
    """The fine-tune's train config gained log_every: both stages' run_ids must stay."""
    from omegaconf import open_dict
    from test_configs import _compose, _grid

    base = _compose(["study=transfer_demo"])
    ids = {"train": set(), "transfer": set()}
    for over in _grid(base):
        cfg = _compose(["study=transfer_demo", *over])
        ids["transfer"].add(results.run_id_of(point.resolved_config(cfg)))
        pre = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        with open_dict(pre):  # as tasks/transfer.py builds the pre-training point
            pre.task = OmegaConf.create({"name": "train"})
            pre.train.save_final, pre.eval.fewshot, pre.init.checkpoint = True, False, None
        ids["train"].add(results.run_id_of(point.resolved_config(pre)))
    rows, _ = results.load_rows(REPO / "results" / "transfer_demo")
    for task in ids:
        assert ids[task] == {r["run_id"] for r in rows if r["task"] == task}, task


class FakeWandb:
    """A wandb module that records the calls benchbench makes."""

    def __init__(self, rdir: Path, fail_log: bool = False):
        self.rdir, self.fail_log = rdir, fail_log
        self.inits, self.logs, self.runs = [], [], []

    def module(self) -> types.ModuleType:
        mod = types.ModuleType("wandb")
        mod.init = self.init
        return mod

    def init(self, **kw):
        fake = self

        class Run:
            def __init__(self):
                self.summary, self.finished, self.preempting = {}, [], False

            def log(self, data, step=None):
                fake.logs.append((step, data, (fake.rdir / "runs").exists()))
                if fake.fail_log:
                    raise ConnectionError("wandb.log: network down")

            def mark_preempting(self):
                self.preempting = True

            def finish(self, exit_code=None):
                self.finished.append(exit_code)

        self.inits.append(kw)
        self.runs.append(Run())
        return self.runs[-1]


def test_wandb_run_starts_with_training_logs_the_curve_live_and_ends_with_the_row(
        run_cli, monkeypatch, tmp_path, capsys):
    fake = FakeWandb(tmp_path / "results")
    monkeypatch.setitem(sys.modules, "wandb", fake.module())
    code, rdir = run_cli(*QUICK, "wandb.enabled=true", "+wandb.api_key=SECRET-k")
    row = one_row(rdir)
    (kw,) = fake.inits
    assert code == 0 and kw["id"] == row["run_id"] and kw["resume"] == "allow"
    assert kw["group"] == "default" and kw["name"] == "ViT-micro/8 n=256 seed=0"
    assert kw["mode"] == "offline" and kw["config"]["wandb"]["api_key"] == "***"
    assert [s for s, _, _ in fake.logs] == [1, 2, 4]
    assert not any(saved for _, _, saved in fake.logs)  # logged while training, before the row
    curve = {int(r["step"]): r for r in curve_of(rdir)}
    for s, data, _ in fake.logs:
        assert data["train/loss"] == pytest.approx(float(curve[s]["loss"]), rel=1e-5)
        assert {"train/lr", "train/samples_seen", "train/grad_norm"} <= set(data)
    (run,) = fake.runs
    assert run.summary["top1"] == row["top1"] and run.summary["status"] == "ok"
    assert "config" not in run.summary and run.finished == [0]
    assert "wandb logging failed" not in capsys.readouterr().err


def test_a_wandb_log_failure_mid_training_is_one_warning_and_costs_nothing(
        run_cli, monkeypatch, tmp_path, capsys):
    fake = FakeWandb(tmp_path / "results", fail_log=True)
    monkeypatch.setitem(sys.modules, "wandb", fake.module())
    code, rdir = run_cli(*QUICK, "train.log_every=1", "wandb.enabled=true")
    err = capsys.readouterr().err
    assert code == 0 and one_row(rdir)["status"] == "ok" and steps(curve_of(rdir)) == [1, 2, 3, 4]
    assert len(fake.logs) == 1  # wandb is left alone after its first failure
    assert err.count("wandb logging failed") == 1 and "network down" in err
    assert fake.runs[0].finished == [0]  # the started run still ends, with the row


def test_an_interrupted_point_leaves_its_wandb_run_resumable(run_cli, monkeypatch, tmp_path):
    fake = FakeWandb(tmp_path / "results")
    monkeypatch.setitem(sys.modules, "wandb", fake.module())
    args = ["train.steps=6", "train.log_every=1", "wandb.enabled=true"]
    with monkeypatch.context() as m:
        signal_at(m, signal.SIGINT, step=2)  # checkpoint at step 3
        code, rdir = run_cli(*args)
    assert code == 130 and not (rdir / "runs").exists()
    first = fake.runs[0]
    assert first.summary["status"] == "interrupted" and first.preempting and first.finished == [1]
    code, _ = run_cli(*args)
    row = one_row(rdir)
    assert code == 0 and [k["id"] for k in fake.inits] == [row["run_id"]] * 2
    assert all(k["resume"] == "allow" for k in fake.inits)
    assert [s for s, _, _ in fake.logs] == [1, 2, 3, 4, 5, 6]  # the relaunch goes on from 4
    assert fake.runs[1].summary["status"] == "ok" and fake.runs[1].finished == [0]


def test_a_point_that_fails_before_training_still_gets_its_wandb_run(run_cli, monkeypatch,
                                                                       tmp_path):
    fake = FakeWandb(tmp_path / "results")
    monkeypatch.setitem(sys.modules, "wandb", fake.module())
    code, rdir = run_cli(*QUICK, "train.batch_size=512", "wandb.enabled=true")
    assert code == 2 and len(fake.inits) == 1 and not fake.logs
    assert fake.runs[0].summary["status"] == "failed" and fake.runs[0].finished == [1]



@pytest.mark.parametrize("claims", [True, False])
def test_status_sees_a_running_point_at_its_curves_last_step(tmp_path, capsys, claims):
    """Running: a live claim (here another host's, fresh); with study.claims=false, a fresh
    curve. A fresh curve without the claim is not running (issue 23 item 5)."""
    import json
    import time

    from conftest import TINY

    from benchbench import claims as claims_mod
    from benchbench import status

    launch = [*TINY, f"results.dir={tmp_path}", "train.steps=400", f"study.claims={claims}"]
    ((_, cfg),) = status.points(launch)
    run_id = status.state_of(cfg)["run_id"]
    path = curves.curve_path(tmp_path, run_id)
    path.parent.mkdir()
    path.write_text(",".join(curves.COLUMNS) + "\n50,3200,2.3,0.001,900,0.1,1.2,,,5\n100,64")
    if claims:
        assert status.state_of(cfg)["state"] == "missing"  # no claim: nobody runs it
        claim = claims_mod.claim_path(tmp_path, run_id)
        claim.parent.mkdir()
        claim.write_text(json.dumps({"run_id": run_id, "host": "node-7", "pid": 42,
                                     "token": "t" * 32, "heartbeat": time.time()}))
    assert status.main(launch) == 0  # no checkpoint yet (the first comes after 300 s)
    (line, total) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"running     {run_id}") and line.endswith("  at step 50")
    assert ("host node-7" in line) == claims
    assert total == "1 points: 1 running"


def test_the_report_draws_the_training_curves_it_finds(run_cli, monkeypatch):
    """benchbench-report draws every run's curve (loss, and the accuracy where it evaluated)
    and says how many runs have one; without curves the figure is skipped with the reason."""
    from matplotlib.figure import Figure

    from benchbench.report.cli import main

    code, rdir = run_cli("-m", "seed=0,1", "data.val_split=64", "train.steps=6",
                         "train.log_every=2", "eval.every_steps=3")
    assert code == 0
    drawn = {}
    savefig = Figure.savefig

    def spy(fig, path, *a, **k):
        if "training_curves" in str(path):
            drawn["lines"] = [ln for ax in fig.axes for ln in ax.lines]
            drawn["labels"] = [ax.get_ylabel() for ax in fig.axes]
        return savefig(fig, path, *a, **k)

    monkeypatch.setattr(Figure, "savefig", spy)
    assert main([str(rdir), "--n-boot", "0", "--formats", "png"]) == 0
    md = (rdir / "report" / "report.md").read_text()
    assert "### Training curves" in md and "(2 of 2 runs have a curve)" in md
    loss = [ln for ln in drawn["lines"] if ln.axes is drawn["lines"][0].axes]
    # rows at steps 1 (the first), 2, 4, 6 (train.log_every) and 3 (eval.every_steps), x 64 images
    assert len(loss) == 2 and list(loss[0].get_xdata()) == [64, 128, 192, 256, 384]
    assert drawn["labels"][1].startswith("accuracy [%] (circles: val, crosses: test)")
    for p in (rdir / "metrics").glob("*.csv"):
        p.unlink()
    assert main([str(rdir), "--n-boot", "0", "--formats", "png"]) == 0
    md = (rdir / "report" / "report.md").read_text()
    assert "*Not drawn: no training curves (`metrics/<run_id>.csv`) for these rows" in md
