"""Issue 12: the paper's probe, the validation split and selection, recipes as data, named
augmentation recipes, and time that adds up across resumes."""
from __future__ import annotations

import itertools
import os
import signal
import time

import pytest
import torch
from omegaconf import OmegaConf

from benchbench import data, results
from benchbench.data import augment as aug
from benchbench.data.subsets import carve_val, nested_subset, val_count
from benchbench.errors import ConfigError
from benchbench.evaluate import fewshot_probe
from benchbench.train import (
    Budget,
    Interrupted,
    lr_lambda,
    make_optimizer,
    resolve_lr,
    train,
    warmup_steps_of,
)

REPO_CONF = os.path.join(os.path.dirname(__file__), "..", "benchbench", "conf")


def _scaled_problem(seed: int = 0):
    """Features whose class signal sits in a few small dimensions among large noisy ones:
    a probe that does not standardise depends on the overall scale."""
    k, d = 5, 48
    centers = 3 * torch.randn(k, 6, generator=torch.Generator().manual_seed(99))
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(k).repeat(40)
    signal_ = centers[y] + 0.5 * torch.randn(len(y), 6, generator=g)
    noise = 30 * torch.randn(len(y), d - 6, generator=g)
    return torch.cat([signal_, noise], 1), y


def test_probe_accuracy_does_not_depend_on_the_feature_scale():
    x, y = _scaled_problem()
    xte, yte = _scaled_problem(1)
    accs = [fewshot_probe(x * s, y, xte * s, yte, num_classes=5, shots=10, seeds=3)["fewshot_top1"]
            for s in (0.01, 1.0, 100.0)]
    assert accs[0] == accs[1] == accs[2]
    assert accs[0] > 0.5  # well above chance (0.2): the probe reads the small dimensions


def test_probe_has_a_bias_so_shifted_features_score_the_same():
    x, y = _scaled_problem()
    xte, yte = _scaled_problem(1)
    base = fewshot_probe(x, y, xte, yte, num_classes=5, shots=10)["fewshot_top1"]
    shifted = fewshot_probe(x + 1e3, y, xte + 1e3, yte, num_classes=5, shots=10)["fewshot_top1"]
    assert base == shifted


def test_only_the_drawn_shots_are_featurised_and_the_probe_data_may_differ(run_cli, monkeypatch):
    from benchbench import evaluate

    seen = []
    real = evaluate.extract_features

    def spy(model, batches, **kw):
        f, y = real(model, batches, **kw)
        seen.append(len(y))
        return f, y

    monkeypatch.setattr(evaluate, "extract_features", spy)
    code, rdir = run_cli("eval.fewshot=true", "eval.fewshot_shots=[2,5]", "eval.fewshot_seeds=2")
    assert code == 0
    row = results.load_rows(rdir)[0][0]
    # train split 256 images, test 128: featurised at most 10 classes x (2 + 5) x 2 draws
    assert seen[0] <= 10 * 7 * 2 and seen[1] == 128
    assert row["fewshot_dataset"] == "synthetic" and set(row["fewshot"]) == {"2", "5"}
    if not os.path.isdir("/usr/share/datasets/fashion-mnist"):
        pytest.skip("Fashion-MNIST not installed")
    seen.clear()
    code, rdir = run_cli("eval.fewshot=true", "+eval.fewshot_data={name: fashion_mnist, "
                         "test_size: 100}", results=rdir.parent / "other")
    assert code == 0
    row = results.load_rows(rdir)[0][0]
    assert row["fewshot_dataset"] == "fashion_mnist" and seen[0] <= 10 * 5 * 3 and seen[1] == 100


def test_val_split_is_class_balanced_disjoint_from_every_subset_and_the_same_for_every_size():
    y = torch.arange(10).repeat_interleave(100)[torch.randperm(1000, generator=torch.Generator().manual_seed(3))]
    val, rest = carve_val(y, 50)
    assert len(val) == 50 and torch.bincount(y[val], minlength=10).tolist() == [5] * 10
    assert set(val.tolist()).isdisjoint(rest.tolist()) and len(val) + len(rest) == 1000
    for seed in (0, 1):
        for n in (100, 400, 950):
            sub = rest[nested_subset(y[rest], n, seed)]
            assert set(sub.tolist()).isdisjoint(val.tolist())
    assert torch.equal(carve_val(y, 50)[0], val)  # one fixed draw
    assert val_count(0.1, 1000) == 100 and val_count(30, 1000) == 30
    for bad in (0, 1000, 1.5, -0.1, True, "x"):
        with pytest.raises(ConfigError, match="data.val_split"):
            val_count(bad, 1000)


def test_load_dataset_carves_validation_before_the_nested_subsets(tmp_path):
    base = {"name": "digits", "train_size": None, "test_size": None, "image_size": 8,
            "channels": None, "num_classes": None, "seed": 0, "val_split": 100}
    vals = []
    for n in (200, 600, None):
        ds = data.load_dataset({**base, "train_size": n})
        assert ds.val is not None and len(ds.val) == 100
        vals.append(ds.val.x.flatten(1))
        train_rows = {tuple(r.tolist()) for r in ds.train.x.flatten(1)}
        assert not train_rows & {tuple(r.tolist()) for r in ds.val.x.flatten(1)}
    assert torch.equal(vals[0], vals[1]) and torch.equal(vals[1], vals[2])
    syn = data.load_dataset({"name": "synthetic", "train_size": 300, "test_size": 100,
                             "image_size": 32, "seed": 0, "val_split": 50})
    assert len(syn.val) == 50 and len(syn.train) == 300
    assert data.load_dataset({**base, "val_split": None}).val is None


def test_rows_carry_val_top1_and_early_stopping_keeps_the_best_epoch(run_cli):
    code, rdir = run_cli("data.val_split=100", "train.epochs=4", "train.eval_every_epochs=1",
                         "train.early_stop=1", "train.lr=0.05")
    assert code == 0
    row = results.load_rows(rdir)[0][0]
    assert 0 <= row["val_top1"] <= 1 and row["val_size"] == 100 and row["top1"] is not None
    assert row["best_step"] is not None and row["best_step"] <= row["steps"]
    assert row["stopped_early"] in (True, False)
    if row["stopped_early"]:
        assert row["steps"] < 16 and row["samples_seen"] == row["steps"] * 64
    code, rdir = run_cli("train.eval_every_epochs=1", results=rdir.parent / "noval")
    assert code == 2  # selection on validation without a validation split is a config error


def test_selection_restores_the_best_weights_and_stops_early():
    from benchbench.evaluate import Selection

    model = torch.nn.Linear(6, 2)
    scores = iter([0.5, 0.7, 0.6, 0.6, 0.9])
    weights = []

    def validate(m):
        weights.append(m.weight.detach().clone())
        return next(scores)

    sel = Selection(validate=validate, every=2, patience=2)
    res = train(model, _batches, tcfg=_tc(), budget=Budget(20, 8), device=torch.device("cpu"),
                progress=False, selection=sel)
    assert res.stopped_early and res.steps == 8 and res.best_step == 4 and res.val_top1 == 0.7
    assert torch.equal(model.weight, weights[1])  # the weights validated at step 4


def _tc(**kw):
    base = {"optimizer": "adamw", "lr": 1e-2, "weight_decay": 0.05, "batch_size": 8,
            "warmup_frac": 0.1, "schedule": "cosine", "grad_clip": 1.0, "checkpoint_every_s": 0}
    return OmegaConf.create({**base, **kw})


def _batches(start):
    for step in itertools.count(start):
        g = torch.Generator().manual_seed(step)
        x = torch.randn(8, 6, generator=g)
        yield x, (x[:, 0] > 0).long()


def test_absolute_warmup_steps_replace_the_fraction_and_must_end_before_the_run():
    f = lr_lambda(_tc(warmup_steps=10), 1000)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(10) == pytest.approx(1.0)
    assert warmup_steps_of(_tc(warmup_steps=None, warmup_frac=0.1), 1000) == 100
    with pytest.raises(ConfigError, match="train.warmup_steps=10000 is not shorter"):
        warmup_steps_of(_tc(warmup_steps=10000), 2189)


def test_learning_rate_per_model_from_the_preset_table_and_a_swept_lr_wins():
    pre = OmegaConf.load(os.path.join(REPO_CONF, "train", "paper_jft.yaml"))
    assert pre.lr is None and pre.warmup_steps == 10000
    assert resolve_lr(pre, "ViT-H/14") == 3e-4 and resolve_lr(pre, "ViT-B/32") == 8e-4
    assert resolve_lr(pre, "R50+ViT-B/16") == 8e-4 and resolve_lr(pre, "R152x2") == 6e-4
    pre.lr = 1e-3
    assert resolve_lr(pre, "ViT-H/14") == 1e-3
    pre.lr = None
    with pytest.raises(ConfigError, match="not in train.lr_by_model"):
        resolve_lr(pre, "ViT-Ti/16")


@pytest.mark.parametrize("wrap", ["plain", "compiled", "ddp-like"])
def test_no_weight_decay_on_biases_norms_position_embedding_and_class_token(wrap):
    from benchbench import models

    m = models.build_model(OmegaConf.create({"name": "vit_micro", "patch_size": 8}), 10, 32, 3)
    w = {"plain": m, "compiled": torch.compile(m),
         "ddp-like": torch.nn.ModuleDict({"module": m})}[wrap]
    if wrap == "ddp-like":
        w.module = m  # DDP exposes the model as .module
    opt = make_optimizer(w, _tc(weight_decay=0.1), torch.device("cpu"))
    name = {id(p): n for n, p in m.named_parameters()}
    decayed = {name[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed and not {n for n in decayed if n in ("pos_embed", "cls_token")
                            or n.endswith(".bias") or "norm" in n}
    assert "patch_embed.proj.weight" in decayed


def test_augment_recipes_by_name_with_true_and_false_keeping_their_meaning():
    assert aug.recipe_name(True) == "cifar" and aug.recipe_name(False) == "none"
    assert aug.recipe_name("inception") == "inception"
    with pytest.raises(ConfigError, match="inception"):
        aug.recipe_name("inceptoin")


def _split(n=32, size=16):
    g = torch.Generator().manual_seed(0)
    return data.Split(torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
                      torch.arange(n) % 4)


@pytest.mark.parametrize("recipe", ["inception", "augreg"])
def test_each_recipe_is_resumable_and_differs_from_the_others(recipe):
    kw = dict(batch_size=8, image_size=16, mean=(0.5,) * 3, std=(0.25,) * 3, seed=2,
              num_classes=4)
    dl = data.DeviceLoader(_split(), augment=recipe, **kw)
    run = list(itertools.islice(dl.iter_from(0), 5))
    resumed = next(dl.iter_from(3))
    assert torch.equal(run[3][0], resumed[0]) and torch.equal(run[3][1], resumed[1])
    other = next(data.DeviceLoader(_split(), augment="cifar", **kw).iter_from(0))
    assert run[0][0].shape == (8, 3, 16, 16) and not torch.allclose(run[0][0], other[0])
    if recipe == "augreg":  # mixup: soft targets that still sum to one
        assert run[0][1].dtype.is_floating_point and torch.allclose(run[0][1].sum(1), torch.ones(8))


def test_evaluation_takes_the_centre_crop():
    x = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    x[..., 2:14, 2:14] = 200  # a bright centre, dark border
    s = data.Split(x, torch.zeros(1, dtype=torch.long))
    kw = dict(batch_size=1, image_size=16, mean=(0.0,) * 3, std=(1 / 255,) * 3)
    whole = next(data.DeviceLoader(s, **kw).eval_batches(1))[0]
    centre = next(data.DeviceLoader(s, crop_pct=0.75, **kw).eval_batches(1))[0]
    assert whole.min() == 0 and centre.min() > 150  # the 12 px centre, resized to 16


def test_train_and_wall_time_add_up_across_a_resume(tmp_path):
    ck = tmp_path / "last.pt"

    def slow_then_stop(step, loss):
        time.sleep(0.05)
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    tcfg = _tc()
    with pytest.raises(Interrupted):
        train(torch.nn.Linear(6, 2), _batches, tcfg=tcfg, budget=Budget(8, 8),
              device=torch.device("cpu"), ckpt_path=ck, progress=False, on_step=slow_then_stop)
    first = torch.load(ck, weights_only=True)
    assert first["elapsed_train_s"] >= 0.2 and first["elapsed_wall_s"] >= first["elapsed_train_s"]
    res = train(torch.nn.Linear(6, 2), _batches, tcfg=tcfg, budget=Budget(8, 8),
                device=torch.device("cpu"), ckpt_path=ck, progress=False)
    assert res.resumed and res.train_wall_s >= first["elapsed_train_s"]
    assert res.prior_wall_s == pytest.approx(first["elapsed_wall_s"])


def test_new_keys_left_null_keep_every_run_id():
    cfg = {"data": {"name": "x", "val_split": None, "crop_pct": None},
           "train": {"lr": 1.0, "warmup_steps": None, "lr_by_model": None,
                     "eval_every_epochs": None, "early_stop": None},
           "eval": {"fewshot_data": None}}
    old = {"data": {"name": "x"}, "train": {"lr": 1.0}, "eval": {}}
    assert results.run_id_of(cfg) == results.run_id_of(old)
    cfg["data"]["val_split"] = 100
    assert results.run_id_of(cfg) != results.run_id_of(old)


def test_val_count_and_carve_edges_found_by_mutants():
    """Killed mutants of data/subsets.py: a count of 1 is valid, a remainder is spread so the
    split has exactly n_val images, and a class too small for its share names the fix."""
    assert val_count(1, 10) == 1 and val_count(0.5, 10) == 5
    y = torch.arange(10).repeat(7)  # 10 classes x 7 images
    val, rest = carve_val(y, 23)  # 23 = 10 x 2 + 3: three classes give one more
    assert len(val) == 23 and len(rest) == 70 - 23
    per = torch.bincount(y[val], minlength=10)
    assert sorted(per.tolist()) == [2] * 7 + [3] * 3
    with pytest.raises(ConfigError, match=r"which has only 7; lower data\.val_split\.$"):
        carve_val(y, 70)


# --- issue 22: recipes per pre-training dataset, fine-tuning as Table 4 -------------------

def _preset(name):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=os.path.abspath(REPO_CONF), version_base="1.3"):
        return compose("config", overrides=[f"train={name}"]).train


def test_presets_per_pretraining_dataset_hold_tables_3_and_6():
    from benchbench.optim import resolve_recipe

    jft = _preset("paper_jft")
    assert jft.grad_clip is None and jft.weight_decay == 0.1 and jft.schedule == "linear"
    epochs = {m: resolve_recipe(jft, m, "imagefolder").epochs
              for m in ("ViT-H/14", "ViT-B/16", "ViT-L/16", "R200x3", "R50+ViT-L/16")}
    assert epochs == {"ViT-H/14": 14, "ViT-B/16": 7, "ViT-L/16": 7, "R200x3": 14,
                      "R50+ViT-L/16": 7}
    text = open(os.path.join(REPO_CONF, "train", "paper_jft.yaml")).read()
    assert "R200x3: 6.0e-4       # NOT FROM THE PAPER" in text
    assert OmegaConf.to_container(_preset("paper_pretrain")) == OmegaConf.to_container(jft)
    i21k = _preset("paper_i21k")
    assert (i21k.lr, i21k.weight_decay, i21k.dropout, i21k.lr_ref_batch) == (1e-3, 0.03, 0.1, 4096)
    assert resolve_recipe(i21k, "ViT-B/32", "x").epochs == 90
    assert resolve_recipe(i21k, "ViT-L/16", "x").epochs == 30
    with pytest.raises(ConfigError, match="set train.epochs=<n>"):
        resolve_recipe(i21k, "R50x1", "x")
    i1k = _preset("paper_i1k")
    assert (i1k.epochs, i1k.lr, i1k.schedule, i1k.weight_decay, i1k.dropout, i1k.grad_clip) == \
        (300, 3e-3, "cosine", 0.3, 0.1, 1.0)


def test_lr_follows_the_batch_by_lr_scaling():
    from benchbench.optim import effective_lr

    tc = _tc(batch_size=1024, lr_ref_batch=4096)
    assert effective_lr(_tc(batch_size=1024, lr_ref_batch=4096, lr_scaling="linear"), 3e-3) == \
        pytest.approx(7.5e-4)
    assert effective_lr(_tc(batch_size=1024, lr_ref_batch=4096, lr_scaling="sqrt"), 3e-3) == \
        pytest.approx(1.5e-3)
    assert effective_lr(tc, 3e-3) == 3e-3 and effective_lr(_tc(lr_scaling="none"), 3e-3) == 3e-3
    with pytest.raises(ConfigError, match="Valid: linear, sqrt, none"):
        effective_lr(_tc(lr_scaling="cubic", lr_ref_batch=8), 1.0)
    with pytest.raises(ConfigError, match="needs train.lr_ref_batch"):
        effective_lr(_tc(lr_scaling="linear"), 1.0)


def test_the_row_holds_the_effective_lr(run_cli):
    code, rdir = run_cli("train.lr=0.002", "train.lr_scaling=linear", "train.lr_ref_batch=128")
    assert code == 0
    row = results.load_rows(rdir)[0][0]
    assert row["lr"] == 0.002 and row["effective_lr"] == pytest.approx(0.001)  # batch 64 of 128


def test_warmup_is_the_papers_share_of_the_run_never_more():
    jft = _preset("paper_jft")
    paper = 303e6 * 7 / 4096  # ViT-B/16's 7 JFT epochs at 4096: 517,822 steps
    assert warmup_steps_of(jft, round(paper), "ViT-B/16") == 10000
    assert warmup_steps_of(jft, 5178, "ViT-B/16") == 100  # 1.9% of a 100x shorter run
    i21k = _preset("paper_i21k")
    short = OmegaConf.merge(i21k, {"epochs": 7})  # 7 epochs of i21k: 3.3%, not 41%
    total = round(14e6 * 7 / 4096)
    assert warmup_steps_of(short, total, "ViT-B/16") / total == pytest.approx(10000 / (14e6 * 90 / 4096), rel=1e-3)


def test_paper_studies_use_the_preset_of_their_data():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=os.path.abspath(REPO_CONF), version_base="1.3"):
        f34 = compose("config", overrides=["study=paper_fig3_4"]).train
        f5 = compose("config", overrides=["study=paper_fig5"]).train
    assert (f34.weight_decay, f34.epochs, f34.schedule, f34.dropout) == (0.3, 300, "cosine", 0.1)
    assert f34.batch_size == 1024 and f34.lr_scaling == "linear" and f34.lr_ref_batch == 4096
    assert (f5.weight_decay, f5.lr, f5.dropout, f5.ref_train_size) == (0.03, 1e-3, 0.1, 14_000_000)


def test_finetune_preset_is_table_4_and_its_study_sweeps_the_lr_grid_on_validation():
    from hydra import compose, initialize_config_dir

    from benchbench.optim import resolve_recipe

    ft = _preset("paper_finetune")
    assert (ft.optimizer, ft.momentum, ft.batch_size, ft.schedule, ft.weight_decay,
            ft.grad_clip, ft.warmup_steps) == ("sgd", 0.9, 512, "cosine", 0.0, 1.0, 500)
    steps = {d: resolve_recipe(ft, "ViT-B/16", d).steps
             for d in ("imagenet", "cifar10", "cifar100", "pets", "flowers", "vtab")}
    assert steps == {"imagenet": 20000, "cifar10": 10000, "cifar100": 10000, "pets": 500,
                     "flowers": 500, "vtab": 2500}
    assert warmup_steps_of(resolve_recipe(ft, "ViT-B/16", "pets"), 500 * 2) == 500
    with initialize_config_dir(config_dir=os.path.abspath(REPO_CONF), version_base="1.3"):
        st = compose("config", overrides=["study=paper_finetune"], return_hydra_config=True)
    assert str(st.hydra.sweeper.params["train.lr"]) == "0.001,0.003,0.01,0.03"
    assert st.data.val_split == 0.02 and st.data.image_size == 384
    assert st.data.augment == "inception" and st.train.optimizer == "sgd"


def _readme_protocol_rows():
    text = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    body = text.split("<!-- protocol-table -->")[1].split("<!-- /protocol-table -->")[0]
    rows = []
    for line in body.strip().splitlines()[2:]:
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        rows.append(dict(zip(("preset", "key", "paper", "bb", "why", "source"), cells)))
    return rows


def test_readme_protocol_table_reads_true_against_the_presets():
    import yaml

    rows = _readme_protocol_rows()
    assert {r["preset"] for r in rows} == {"paper_jft", "paper_i21k", "paper_i1k", "paper_finetune"}
    presets = {p: _preset(p) for p in {r["preset"] for r in rows}}
    for r in rows:
        node = presets[r["preset"]]
        head, _, sub = r["key"].partition(".")
        actual = node[head][sub] if sub else node[head]
        actual = OmegaConf.to_container(actual) if OmegaConf.is_config(actual) else actual
        bb, paper = yaml.safe_load(r["bb"]), yaml.safe_load(r["paper"])
        assert actual == bb, f"README says {r['preset']} {r['key']} = {bb}, the preset has {actual}"
        assert r["source"], f"{r['preset']} {r['key']}: no source"
        if not r["why"]:  # no difference stated: the paper's value is benchbench's
            assert paper == bb, f"{r['preset']} {r['key']}: paper {paper} != {bb} and no why"
    # every per-model lr of the JFT preset is in the table (a new entry cannot go unlisted)
    listed = {r["key"] for r in rows if r["preset"] == "paper_jft"}
    assert {f"lr_by_model.{m}" for m in presets["paper_jft"].lr_by_model} <= listed


def test_readme_augreg_table_matches_the_settings():
    from benchbench.data import augreg

    text = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    for name, s in augreg.SETTINGS.items():
        assert f"| {name} | {s.randaug[0]}, {s.randaug[1]} | {s.mixup} |" in text
