"""The few-shot probe's draws (issue 23, "the tests still let through"): every draw seed takes
its own shots, exactly k per class, from the training split only; big_vision's std epsilon."""
from __future__ import annotations

import pytest
import torch

from benchbench import evaluate, results
from benchbench.evaluate import STD_EPS, draw_shots, fewshot_lsr, fewshot_probe, shot_stats


def _labels(per_class: int = 30, k: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    return torch.arange(k).repeat(per_class)[torch.randperm(per_class * k, generator=g)]


@pytest.mark.parametrize("shots", [1, 5, 10])
def test_each_draw_seed_takes_its_own_shots_k_per_class(shots):
    y = _labels()
    draws = [draw_shots(y, num_classes=6, shots=shots, seed=s) for s in range(3)]
    for ix in draws:
        assert torch.bincount(y[ix], minlength=6).tolist() == [shots] * 6
        assert len(set(ix.tolist())) == len(ix)  # no image twice in one draw
    sets = [frozenset(ix.tolist()) for ix in draws]
    assert len(set(sets)) == 3  # a seed that is ignored gives one draw three times
    assert torch.equal(draws[1], draw_shots(y, num_classes=6, shots=shots, seed=1))  # repeatable


def test_draws_nest_across_shot_counts_as_big_vision():
    """big_vision permutes each class once per seed and takes the first k: 1 in 5 in 10."""
    y = _labels()
    for seed in range(3):
        one, five, ten = (set(draw_shots(y, num_classes=6, shots=k, seed=seed).tolist())
                          for k in (1, 5, 10))
        assert one <= five <= ten


def test_probe_accuracy_spreads_over_draws():
    """1-shot on overlapping classes: which image is the shot changes the accuracy, so the
    per-draw accuracies differ (all equal when every draw takes the same shots)."""
    g = torch.Generator().manual_seed(0)
    y = _labels(per_class=40, k=4)
    x = torch.nn.functional.one_hot(y, 4).double() + 0.8 * torch.randn(len(y), 4, generator=g)
    yte = _labels(per_class=50, k=4)
    xte = torch.nn.functional.one_hot(yte, 4).double() + 0.8 * torch.randn(len(yte), 4, generator=g)
    out = fewshot_probe(x, y, xte, yte, num_classes=4, shots=1, seeds=4, l2=1.0)
    accs = out["fewshot_top1_per_seed"]
    assert len(set(accs)) > 1 and torch.tensor(accs).std() > 0.01
    assert out["fewshot_top1"] == pytest.approx(sum(accs) / 4)


def test_std_epsilon_is_big_vision_s():
    """big_vision fewshot_lsr (_precompute_cache): (x - mean) / (jnp.std(x) + 1e-5), the
    population std; a dimension constant on the shots is divided by 1e-5, not by 1."""
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(8, 3, generator=g), torch.full((8, 1), 2.0)], 1)
    mu, sd = shot_stats(x)
    assert STD_EPS == 1e-5
    torch.testing.assert_close(mu, x.double().mean(0, keepdim=True))
    torch.testing.assert_close(sd, x.double().std(0, correction=0, keepdim=True) + 1e-5,
                               rtol=0, atol=1e-15)
    assert sd[0, 3].item() == 1e-5
    # and fewshot_lsr uses it: a test feature off the shots' constant weighs in 1e5 times
    y = torch.tensor([0, 1] * 4)
    sep = torch.cat([x[:, :3], (2 * y - 1).double()[:, None] * 1e-3], 1)
    xte = torch.tensor([[0.0, 0.0, 0.0, 1e-3], [0.0, 0.0, 0.0, -1e-3]]).double()
    assert fewshot_lsr(sep, y, xte, torch.tensor([1, 0]), num_classes=2, l2=1.0) == 1.0


def test_the_run_draws_new_shots_per_seed_from_the_train_split_only(run_cli, monkeypatch):
    """The whole path (evaluate.fewshot in a real run): each eval.fewshot_seeds draw fits its
    own shots, k per class, none of them a test image; the row keeps every draw's accuracy."""
    fits = []
    real = evaluate.fewshot_lsr

    def spy(x, y, x_test, y_test, **kw):
        fits.append((x.clone(), y.clone(), x_test))
        return real(x, y, x_test, y_test, **kw)

    monkeypatch.setattr(evaluate, "fewshot_lsr", spy)
    code, rdir = run_cli("eval.fewshot=true", "eval.fewshot_shots=[1,3]", "eval.fewshot_seeds=3")
    assert code == 0
    row = results.load_rows(rdir)[0][0]
    k = row["num_classes"]
    assert len(fits) == 2 * 3  # (shots, draw) pairs
    for i, shots in enumerate((1, 3)):
        draws = fits[3 * i: 3 * i + 3]
        for x, y, x_test in draws:
            assert torch.bincount(y, minlength=k).tolist() == [shots] * k
            # no shot is a test image: its feature row equals no test feature row
            assert not (torch.cdist(x.double(), x_test.double()) < 1e-9).any()
        feats = [frozenset(map(tuple, x.tolist())) for x, _, _ in draws]
        assert len(set(feats)) == 3, f"the {shots}-shot draws took the same shots"
    per_draw = row["fewshot_per_draw"]
    assert set(per_draw) == {"1", "3"} and all(len(v) == 3 for v in per_draw.values())
    assert row["fewshot"]["3"] == pytest.approx(sum(per_draw["3"]) / 3)


def _model_cfg(name: str, **kw):
    from conftest import REPO
    from omegaconf import OmegaConf

    node = OmegaConf.load(REPO / "benchbench" / "conf" / "model" / f"{name}.yaml")
    return OmegaConf.merge(node, kw)


def test_head_hidden_is_one_tanh_layer_of_the_model_width_giving_the_probe_features():
    from benchbench import models

    plain = models.build_model(_model_cfg("vit_micro"), 10, 32)
    torch.manual_seed(0)
    model = models.build_model(_model_cfg("vit_micro", head_hidden=True), 10, 32).eval()
    d = model.embed_dim
    assert models.count_params(model) - models.count_params(plain) == d * d + d
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        pooled = model.forward_features(x)[:, 0]  # the class token after the final norm
        want = torch.tanh(pooled @ model.fc_norm.fc.weight.T + model.fc_norm.fc.bias)
        torch.testing.assert_close(models.features(model, x), want)
        torch.testing.assert_close(model(x), model.head(want))
    assert models.features(plain, x).shape == want.shape == (3, d)


def test_head_hidden_is_refused_for_a_model_without_it():
    from benchbench import models
    from benchbench.errors import ConfigError

    with pytest.raises(ConfigError, match="head_hidden=true is ViT's pre-training head.*R50x1"):
        models.validate(_model_cfg("bit_r50x1", head_hidden=True), 224)
    with pytest.raises(ConfigError, match="model.head_hidden must be true, false or null"):
        models.validate(_model_cfg("vit_micro", head_hidden="yes"), 32)


def test_head_hidden_null_keeps_every_run_id():
    from conftest import REPO
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "benchbench" / "conf" / "config.yaml"))
    cfg["model"] = {"name": "vit_b", "patch_size": 16}
    before = results.run_id_of(cfg)
    cfg["model"]["head_hidden"] = None
    assert results.run_id_of(cfg) == before
    cfg["model"]["head_hidden"] = True
    assert results.run_id_of(cfg) != before


def test_head_hidden_is_dropped_at_fine_tuning(run_cli):
    """Pre-train with the hidden layer, fine-tune from it: the fine-tune is backbone + a
    zero-initialised linear head (paper Sec. 3.1); a probe of the checkpoint keeps the layer."""
    code, rdir = run_cli("model.head_hidden=true", "train.save_final=true", "train.steps=1")
    assert code == 0
    (pre,) = results.load_rows(rdir)[0]
    code, _ = run_cli("model.head_hidden=true", "train.save_final=true", "train.steps=1",
                      f"init.checkpoint='{pre['run_id']}'", "train.lr=1e-30")
    assert code == 0
    rows = {r["run_id"]: r for r in results.load_rows(rdir)[0]}
    (ft,) = [r for r in rows.values() if r["run_id"] != pre["run_id"] and r["task"] != "probe"]
    from benchbench import transfer

    state = transfer.load_state(rdir / "ckpt" / ft["run_id"] / "final.pt")
    pre_state = transfer.load_state(rdir / "ckpt" / pre["run_id"] / "final.pt")
    assert "fc_norm.fc.weight" in pre_state and not any(k.startswith("fc_norm") for k in state)
    d = pre_state["fc_norm.fc.weight"].shape[0]
    assert pre["params"] - ft["params"] == d * d + d
    assert float(state["head.weight"].abs().max()) < 1e-20  # zero-initialised, lr 1e-30


@pytest.mark.parametrize("study", ["paper_fig3_4", "paper_fig5"])
def test_paper_presets_probe_another_dataset_at_big_vision_s_shots(study):
    from conftest import REPO
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO / "benchbench" / "conf" / "study" / f"{study}.yaml")
    trained_on = next(d["override /data"] for d in cfg.defaults if "override /data" in d)
    assert cfg.eval.fewshot is True and list(cfg.eval.fewshot_shots) == [1, 5, 10, 25]
    assert cfg.eval.fewshot_data.name not in (None, trained_on)
    assert cfg.eval.fewshot_data.name == "cifar100"  # big_vision configs/common_fewshot.py


def test_a_probe_without_its_data_folder_fails_before_training(run_cli, monkeypatch):
    from benchbench import train as train_mod

    steps = []
    real = train_mod.train
    monkeypatch.setattr(train_mod, "train", lambda *a, **k: steps.append(1) or real(*a, **k))
    code, rdir = run_cli("eval.fewshot=true", "eval.fewshot_data={name: cifar100, root: null}")
    assert code != 0 and not steps
    (row,) = results.load_rows(rdir)[0]
    assert "'eval.fewshot_data={name: cifar100, root: DIR}'" in row["error"]


def _rows_with_probe(tmp_path, probed_on):
    """The committed demo rows, each given a few-shot top-1 probed on `probed_on` (None: an
    older row without fewshot_dataset; "same": its own training data)."""
    import json

    from conftest import REPO

    (tmp_path / "runs").mkdir(parents=True)
    for p in sorted((REPO / "results" / "demo" / "runs").glob("*.json")):
        row = json.loads(p.read_text())
        if row.get("task") != "measure" and row["status"] == "ok":
            row["fewshot_top1"] = 0.5
            row["fewshot_dataset"] = row["dataset"] if probed_on == "same" else probed_on
        (tmp_path / "runs" / p.name).write_text(json.dumps(row))
    return tmp_path


@pytest.mark.parametrize("probed_on", ["same", None])
def test_report_says_probe_on_the_training_data_never_transfer(tmp_path, probed_on):
    from benchbench.report.load import load_study
    from benchbench.report.tables import runs_table

    study = load_study([_rows_with_probe(tmp_path, probed_on)], metric="fewshot_top1")
    assert study.metric_label == "few-shot top-1 (probe on the training data)"
    (note,) = [n for n in study.notes if "few-shot" in n]
    assert "probe on the training data" in note and "not how the features transfer" in note
    raw, _ = runs_table(study)
    probed = raw[raw["few-shot top-1 [%]"].notna()]
    assert len(probed) and set(probed["few-shot data"]) == {"probe on the training data"}


def test_report_names_the_probe_dataset_when_it_differs(tmp_path):
    from benchbench.report.load import load_study
    from benchbench.report.tables import runs_table

    study = load_study([_rows_with_probe(tmp_path, "cifar100")], metric="fewshot_top1")
    assert study.metric_label == "few-shot top-1"
    assert not [n for n in study.notes if "training data" in n]
    raw, _ = runs_table(study)
    assert set(raw.loc[raw["few-shot top-1 [%]"].notna(), "few-shot data"]) == {"cifar100"}
