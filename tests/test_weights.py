"""Weights that are kept: results.checkpoint_dir, final.pt by default in the paper studies,
train.keep_checkpoints, and every reader (resume, status, init.checkpoint, transfer) finding them."""
from __future__ import annotations

import itertools
import os
import signal

import pytest
import torch
from conftest import REPO, TINY, signal_at
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchbench import cli, point, results, transfer
from benchbench.errors import ConfigError

STEPS = ["train.steps=6", "train.save_final=true"]


def _rows(rdir):
    rows, broken = results.load_rows(rdir)
    assert not broken
    return rows


def test_checkpoint_dir_holds_last_and_final_and_every_reader_finds_them(run_cli, capsys,
                                                                         monkeypatch, tmp_path):
    from benchbench import status

    code, ref = run_cli(*STEPS, results=tmp_path / "ref")
    assert code == 0
    (want,) = _rows(ref)
    assert want["weights_path"] == str(ref / "ckpt" / want["run_id"] / "final.pt")  # default

    scratch = tmp_path / "scratch" / "bb"
    over = [*STEPS, f"results.checkpoint_dir={scratch}"]
    with monkeypatch.context() as m:
        signal_at(m, signal.SIGINT, step=2)
        code, rdir = run_cli(*over)
    assert code == 130
    rid = want["run_id"]  # results.checkpoint_dir is not in the run_id
    assert (scratch / rid / "last.pt").is_file() and not (rdir / "ckpt").exists()
    assert "last.pt (relaunch resumes)" in capsys.readouterr().err
    # the run exited, so its claim is gone: interrupted (a relaunch resumes), not running
    assert status.main([*TINY, f"results.dir={rdir}", *over]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 points: 1 interrupted"
    # without claims, a fresh last.pt in the checkpoint_dir (not results.dir) means running
    assert status.main([*TINY, f"results.dir={rdir}", *over, "study.claims=false"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 points: 1 running"

    code, _ = run_cli(*over)  # resumes from the checkpoint_dir's last.pt
    (row,) = _rows(rdir)
    assert code == 0 and row["resumed"] is True and row["run_id"] == rid
    assert row["top1"] == want["top1"] and row["samples_seen"] == want["samples_seen"]
    final = scratch / rid / "final.pt"
    assert row["weights_path"] == str(final) and sorted(os.listdir(scratch / rid)) == ["final.pt"]
    assert not (rdir / "ckpt").exists()
    state = torch.load(final, weights_only=True)
    assert set(state) == {"model", "identity", "step"}  # weights only: no optimizer state
    got, ref_w = state["model"], torch.load(ref / "ckpt" / rid / "final.pt")["model"]
    assert all(torch.equal(got[k], ref_w[k]) for k in ref_w)

    # init.checkpoint=<run_id> from another study: found in the configured checkpoint_dir
    code, other = run_cli("task=probe", f"init.checkpoint='{rid}'", "eval.fewshot_shots=[2]",
                          f"results.checkpoint_dir={scratch}", "eval.fewshot_seeds=1",
                          results=tmp_path / "other")
    (probe,) = _rows(other)
    assert code == 0 and probe["pretrain_run_id"] == rid and probe["status"] == "ok"
    assert transfer.resolve_checkpoint(rid, [], [scratch]) == final
    assert transfer.resolve_checkpoint(rid, [other, rdir]) == final  # the row's weights_path
    moved = final.rename(tmp_path / "moved.pt")
    with pytest.raises(ConfigError, match=f"says its weights are at {final}, and that file does "
                                          f"not exist"):
        transfer.resolve_checkpoint(rid, [rdir], [scratch])
    assert transfer.resolve_checkpoint(str(moved), [rdir]) == moved


def test_unwritable_checkpoint_dir_is_one_message_before_training(run_cli, capsys, tmp_path):
    (tmp_path / "afile").write_text("")
    bad = tmp_path / "afile" / "bb"
    code, rdir = run_cli("train.steps=2", f"results.checkpoint_dir={bad}")
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    line = next(x for x in err.splitlines() if "cannot write checkpoints" in x)
    assert line.startswith("benchbench: ") and f"results.checkpoint_dir={bad}" in line
    (row,) = _rows(rdir)
    assert row["status"] == "failed" and row["error_type"] == "ResultsError"
    assert row["dataset"] is None and row["steps"] is None  # refused before data and training


def test_a_final_weights_write_that_fails_keeps_the_row(run_cli, monkeypatch):
    from benchbench import checkpoint

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_checkpoint", full)
    with pytest.warns(UserWarning, match="final weights: cannot write .*final.pt"):
        code, rdir = run_cli("train.steps=2", "train.save_final=true")
    (row,) = _rows(rdir)
    assert code == 0 and row["status"] == "ok" and row["top1"] is not None
    assert row["weights_path"] is None and "No space left" in row["error"]


def _tc(**kw):
    return OmegaConf.create({
        "optimizer": "adamw", "lr": 1e-2, "weight_decay": 0.0, "betas": [0.9, 0.999],
        "batch_size": 8, "steps": 8, "epochs": None, "flops": None, "warmup_frac": 0.1,
        "schedule": "cosine", "grad_clip": 1.0, "checkpoint_every_s": 1e-9, **kw})


def _batches(start):
    for step in itertools.count(start):
        x = torch.randn(8, 6, generator=torch.Generator().manual_seed(step))
        yield x, (x[:, 0] > 0).long()


def _train(tmp_path, **kw):
    from benchbench.train import Budget, train

    seen = {}

    def look(step, loss):  # checkpoints through `step` are on disk here
        if step == 4:
            seen.update(files=sorted(os.listdir(tmp_path)),
                        linked=os.path.samefile(tmp_path / "last.pt", tmp_path / "step-4.pt")
                        if (tmp_path / "step-4.pt").exists() else None)

    train(torch.nn.Linear(6, 2), _batches, tcfg=_tc(**kw), budget=Budget(8, 8),
          device=torch.device("cpu"), progress=False, ckpt_path=tmp_path / "last.pt",
          identity={"m": 1}, on_step=look)
    return seen


def test_keep_checkpoints_keeps_the_n_latest_step_files(tmp_path):
    from benchbench.train import load_checkpoint

    seen = _train(tmp_path / "three", keep_checkpoints=3)  # a checkpoint after every step
    assert seen == {"files": ["last.pt", "step-2.pt", "step-3.pt", "step-4.pt"], "linked": True}
    assert sorted(os.listdir(tmp_path / "three")) == ["step-6.pt", "step-7.pt", "step-8.pt"]
    for k in (6, 7, 8):  # each a whole checkpoint of its step, resumable or loadable as weights
        assert load_checkpoint(tmp_path / "three" / f"step-{k}.pt", {"m": 1})["step"] == k
    assert set(transfer.load_state(tmp_path / "three" / "step-8.pt")) == {"weight", "bias"}
    seen = _train(tmp_path / "one")  # default: one rolling last.pt, gone at the end
    assert seen == {"files": ["last.pt"], "linked": None}
    assert not (tmp_path / "one").exists()  # issue 23: no empty folder left behind
    for bad in (0, 1.5, True):
        with pytest.raises(ConfigError, match="train.keep_checkpoints must be a whole number"):
            _train(tmp_path / "bad", keep_checkpoints=bad)


def _compose(overrides):
    cli._register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def _grid(cfg):
    params = cfg.hydra.sweeper.params or {}
    values = [str(v).split(",") for v in params.values()]
    return [[f"{k}={v}" for k, v in zip(params, combo)] for combo in itertools.product(*values)]


@pytest.mark.parametrize("study", ["paper_fig5", "paper_fig3_4"])
def test_paper_studies_keep_final_weights_without_changing_run_ids(study):
    first = _grid(_compose([f"study={study}"]))[0]
    cfg = _compose([f"study={study}", *first])
    assert cfg.train.save_final is True and cfg.train.keep_checkpoints == 1
    assert cfg.results.checkpoint_dir is None
    ids = {results.run_id_of(point.resolved_config(_compose([f"study={study}", *first, *o])))
           for o in ([], ["train.save_final=false"], ["train.keep_checkpoints=5"],
                     ["results.checkpoint_dir=/scratch/x"])}
    assert len(ids) == 1
    assert _compose([f"study={study}", *first, "debug=smoke"]).train.save_final is False


def test_transfer_demo_still_composes_to_its_committed_rows():
    """The new train keys are not in any run_id, the fine-tune's included: transfer_demo's 9
    fine-tunes and their 9 pre-trainings are exactly its committed rows."""
    from benchbench.tasks.transfer import pretrain_config

    ids = set()
    for over in _grid(_compose(["study=transfer_demo"])):
        cfg = _compose(["study=transfer_demo", *over, "task.finetune.train.keep_checkpoints=4"])
        assert cfg.train.keep_checkpoints == 1
        ids.add(results.run_id_of(point.resolved_config(cfg)))
        ids.add(results.run_id_of(point.resolved_config(pretrain_config(cfg))))
    assert ids == {p.stem for p in (REPO / "results" / "transfer_demo" / "runs").glob("*.json")}


def test_transfer_pretraining_weights_go_to_the_checkpoint_dir(run_cli, tmp_path):
    ft = ["task=transfer", "task.finetune.data.name=synthetic", "task.finetune.data.root=null",
          "task.finetune.data.image_size=32", "task.finetune.data.train_size=128",
          "task.finetune.data.test_size=64", "task.finetune.data.channels=null",
          "task.finetune.train.steps=2", "task.finetune.train.batch_size=64", "train.steps=2"]
    scratch = tmp_path / "scratch"
    code, rdir = run_cli(*ft, f"results.checkpoint_dir={scratch}")
    rows = {r["task"]: r for r in _rows(rdir)}
    pre, tr = rows["train"], rows["transfer"]
    assert code == 0 and tr["status"] == "ok" and tr["pretrain_run_id"] == pre["run_id"]
    assert pre["weights_path"] == str(scratch / pre["run_id"] / "final.pt")
    assert not (rdir / "ckpt").exists()
    os.remove(pre["weights_path"])  # a fine-tune of the same pre-training: weights gone
    code, _ = run_cli(*ft, f"results.checkpoint_dir={scratch}", "task.finetune.train.lr=0.001")
    assert code == 2
    failed = next(r for r in _rows(rdir) if r["status"] == "failed")
    assert f"its weights ({pre['weights_path']}) do not" in failed["error"]


def test_train_leaves_the_folder_it_was_handed(tmp_path):
    # a finished run deletes its last.pt but not a folder it did not make (the caller writes there)
    from benchbench.train import Budget, train

    tc = OmegaConf.create({"optimizer": "adamw", "lr": 1e-2, "weight_decay": 0.0, "batch_size": 4,
                           "warmup_frac": 0.0, "schedule": "cosine", "label_smoothing": 0.0,
                           "grad_clip": 1.0, "checkpoint_every_s": 0})

    def batches(start):
        for step in itertools.count(start):
            g = torch.Generator().manual_seed(step)
            x = torch.randn(4, 3, generator=g)
            yield x, (x[:, 0] > 0).long()

    folder = tmp_path / "mine"
    folder.mkdir()
    train(torch.nn.Linear(3, 2), batches, tcfg=tc, budget=Budget(3, 4), device=torch.device("cpu"),
          progress=False, seed=0, ckpt_path=folder / "last.pt", identity={"m": 1})
    assert folder.is_dir() and not (folder / "last.pt").exists()
