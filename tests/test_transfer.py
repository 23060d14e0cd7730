"""Pre-train, then transfer: checkpoints round-trip, fine-tuning at a new resolution for every
family, linked rows, the few-shot probe of a checkpoint, and the report's compute axis."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from benchbench import models, results, transfer
from benchbench.errors import ConfigError
from benchbench.train import save_checkpoint


def _cfg(name, patch=None):
    return OmegaConf.create({"name": name, "patch_size": patch})


def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    torch.manual_seed(0)
    m = models.build_model(_cfg("hybrid_micro", 8), 10, 32).eval()
    save_checkpoint(tmp_path / "final.pt", {"model": m.state_dict(), "identity": {}})
    m2 = models.build_model(_cfg("hybrid_micro", 8), 10, 32).eval()
    m2.load_state_dict(transfer.load_state(tmp_path / "final.pt"))
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(m(x), m2(x))


@pytest.mark.parametrize("name,patch", [("vit_micro", 4), ("bit_micro", None), ("hybrid_micro", 8)])
def test_finetune_at_a_new_resolution_and_class_count(name, patch):
    torch.manual_seed(0)
    pre = models.build_model(_cfg(name, patch), 10, 32)
    ft = models.build_model(_cfg(name, patch), 5, 48)
    info = transfer.load_for_transfer(ft, pre.state_dict())
    assert info["pos_embed_resampled"] == (name != "bit_micro")
    if name != "bit_micro":  # the weights themselves: timm's bicubic resampling of the old grid
        from timm.layers import resample_abs_pos_embed

        old, new = pre.pos_embed.detach(), ft.pos_embed.detach()
        assert old.shape[1] == 1 + (32 // patch) ** 2 and new.shape[1] == 1 + (48 // patch) ** 2
        want = resample_abs_pos_embed(old, new_size=[48 // patch] * 2, num_prefix_tokens=1)
        torch.testing.assert_close(new, want, rtol=0, atol=0)
        assert torch.equal(new[:, 0], old[:, 0])  # the class token's embedding is copied
        assert new.abs().mean() > 0.5 * old.abs().mean()  # not zeros, not shrunk
    y = ft(torch.randn(2, 3, 48, 48))
    assert y.shape == (2, 5) and torch.count_nonzero(y) == 0  # new head is zero-initialised
    body = {k: v for k, v in ft.state_dict().items() if "head" not in k and "pos_embed" not in k}
    for k, v in body.items():
        if not k.endswith("fc.weight") and not k.endswith("fc.bias"):
            torch.testing.assert_close(v, pre.state_dict()[k])


def test_checkpoint_of_another_architecture_is_refused():
    vit = models.build_model(_cfg("vit_micro", 4), 10, 32)
    bit = models.build_model(_cfg("bit_micro"), 10, 32)
    with pytest.raises(ConfigError, match="another architecture|must use the same model"):
        transfer.load_for_transfer(vit, bit.state_dict())


def test_missing_checkpoint_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="train.save_final=true"):
        transfer.resolve_checkpoint("abc123", [tmp_path])


FT = [
    "task=transfer", "task.finetune.data.name=synthetic", "task.finetune.data.root=null",
    "task.finetune.data.image_size=48", "task.finetune.data.train_size=256",
    "task.finetune.data.test_size=128", "task.finetune.data.channels=null",
    "task.finetune.data.num_classes=5", "task.finetune.train.epochs=1",
    "task.finetune.train.batch_size=64", "eval.fewshot=true", "eval.fewshot_shots=[2,5]",
    "eval.fewshot_seeds=2",
]


def test_transfer_writes_linked_rows_and_reuses_the_pretraining(run_cli, tmp_path):
    code, rdir = run_cli(*FT)
    assert code == 0
    rows = {r["task"]: r for r in results.load_rows(rdir)[0]}
    pre, tr = rows["train"], rows["transfer"]
    assert tr["pretrain_run_id"] == pre["run_id"] and pre["status"] == tr["status"] == "ok"
    assert tr["pretrain_flops"] == pre["train_flops"] and tr["pretrain_dataset"] == "synthetic"
    assert tr["finetune_flops"] == tr["train_flops"] > 0 and tr["image_size"] == 48
    assert tr["num_classes"] == 5 and set(tr["fewshot"]) == {"2", "5"}
    assert tr["fewshot_top1"] == tr["fewshot"]["5"] and tr["fewshot_shots"] == 5
    for acc in tr["fewshot"].values():  # a fraction of 128 test images, averaged over 2 seeds
        assert 0 <= acc <= 1 and (acc * 128 * 2) == pytest.approx(round(acc * 128 * 2))
    assert (rdir / "ckpt" / pre["run_id"] / "final.pt").exists()
    assert pre["train_flops_budget"] is None is tr["train_flops_budget"]  # epoch budgets
    # a second fine-tune recipe reuses the same pre-training (no new pre-training row)
    budget = int(tr["train_flops"])
    code, _ = run_cli(*FT, "task.finetune.train.lr=0.001", f"task.finetune.train.flops={budget}")
    assert code == 0
    tasks = sorted(r["task"] for r in results.load_rows(rdir)[0])
    assert tasks == ["train", "transfer", "transfer"]
    tr2 = next(r for r in results.load_rows(rdir)[0]
               if r["task"] == "transfer" and r["run_id"] != tr["run_id"])
    assert tr2["train_flops_budget"] == budget  # the fine-tune's budget, not the pre-training's

    from benchbench.report.cli import main as report

    assert report([str(rdir), "--compute", "pretrain_flops", "--n-boot", "50"]) == 0
    assert (rdir / "report" / "report.md").exists()


def test_probe_a_checkpoint_by_run_id(run_cli):
    code, rdir = run_cli("train.save_final=true", "train.steps=1")
    (pre,) = results.load_rows(rdir)[0]
    code, _ = run_cli("task=probe", f"init.checkpoint='{pre['run_id']}'", "eval.fewshot_shots=[5]",
                      "eval.fewshot_seeds=2", "eval.fewshot_l2=0.01")
    assert code == 0
    probe = next(r for r in results.load_rows(rdir)[0] if r["task"] == "probe")
    assert probe["samples_seen"] == 0 and probe["pretrain_run_id"] == pre["run_id"]
    assert 0 <= probe["fewshot_top1"] <= 1 and probe["fewshot"] == {"5": probe["fewshot_top1"]}
    # recomputed here from the checkpoint: its frozen features, the same 5-shot probe
    from benchbench import data
    from benchbench.train import extract_features, fewshot_probe

    c = probe["config"]
    ds = data.load_dataset(OmegaConf.create(c["data"]))
    model = models.build_model(OmegaConf.create(c["model"]), ds.num_classes, 32)
    model.load_state_dict(transfer.load_state(rdir / "ckpt" / pre["run_id"] / "final.pt"))
    cpu = torch.device("cpu")
    feats = [extract_features(model, data.make_loader(ds, part=part, batch_size=128,
                                                      image_size=32, drop_last=False)
                              .eval_batches(128), device=cpu) for part in ("train", "test")]
    want = fewshot_probe(*feats[0], *feats[1], num_classes=ds.num_classes, shots=5, seeds=2,
                         l2=float(c["eval"]["fewshot_l2"]))
    assert probe["fewshot_top1"] == pytest.approx(want["fewshot_top1"], abs=1e-9)


def test_init_from_timm_pretrained_weights_in_the_local_cache(tmp_path):
    """init.checkpoint=timm:<name> loads timm's pretrained weights from the local Hugging Face
    cache, offline. The cache is made here: a tiny timm model's weights, laid out as the hub
    stores them. lr=1e-30 (lr must be positive): the saved final weights are the loaded ones to
    1e-20 (head: zero, re-initialised)."""
    import os
    import subprocess
    import sys

    import timm
    from conftest import TINY
    from safetensors.torch import save_file

    torch.manual_seed(1)
    src = timm.create_model("test_resnet", pretrained=False)
    want = {k: v.detach().clone().contiguous() for k, v in src.state_dict().items()}
    repo = tmp_path / "hf" / "hub" / "models--timm--test_resnet.r160_in1k"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(want, str(repo / "snapshots" / commit / "model.safetensors"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)

    rdir = tmp_path / "res"
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    env.pop("HF_HUB_CACHE", None)
    p = subprocess.run(
        [sys.executable, "-m", "benchbench.cli", *TINY, f"results.dir={rdir}", "model=timm",
         "model.timm_name=test_resnet", "init.checkpoint=timm:test_resnet.r160_in1k",
         "train.lr=1e-30", "train.steps=1", "train.save_final=true"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    (row,) = results.load_rows(rdir)[0]
    assert row["pretrain_run_id"] == "timm:test_resnet.r160_in1k" and row["num_classes"] == 10
    got = transfer.load_state(rdir / "ckpt" / row["run_id"] / "final.pt")
    params = {n for n, _ in src.named_parameters()}
    head = {"fc.weight", "fc.bias"}
    assert head <= params and set(got) == set(want)
    for k in params - head:
        assert torch.allclose(got[k], want[k], rtol=0, atol=1e-20), k
    assert got["fc.weight"].shape == (10, want["fc.weight"].shape[1])
    assert got["fc.weight"].abs().max() < 1e-20 and got["fc.bias"].abs().max() < 1e-20
