"""init.checkpoint=hf:<folder>: a transformers ViTForImageClassification folder in timm's ViT."""
from __future__ import annotations

import json

import pytest
import torch

from benchbench import models
from benchbench.errors import ConfigError
from benchbench.hf_vit import hf_pretrained_state

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A tiny random transformers ViT with vit_micro's shape, saved as save_pretrained does."""
    cfg = transformers.ViTConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                                 intermediate_size=128, image_size=32, patch_size=8,
                                 num_labels=10, hidden_act="gelu")
    torch.manual_seed(0)
    hf = transformers.ViTForImageClassification(cfg).eval()
    with torch.no_grad():  # random LayerNorm/bias values too: a swapped tensor shows
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    d = tmp_path_factory.mktemp("hf") / "tiny-vit"
    hf.save_pretrained(d)
    return d, hf


def test_hf_vit_logits_equal_in_benchbench_vit(hf_folder):
    d, hf = hf_folder
    model = models.build_model({"name": "vit_micro", "patch_size": 8}, 10, 32, 3).eval()
    model.load_state_dict(hf_pretrained_state(d), strict=True)  # every tensor, head and all
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want = hf(pixel_values=x).logits
        got = model(x)
    # LayerNorm eps differs (transformers 1e-12, timm 1e-6): far below the tolerance
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


def test_hf_folder_errors_name_the_problem(tmp_path, hf_folder):
    with pytest.raises(ConfigError, match="no such folder"):
        hf_pretrained_state(tmp_path / "nope")
    (tmp_path / "x").mkdir()
    with pytest.raises(ConfigError, match="config.json is missing"):
        hf_pretrained_state(tmp_path / "x")
    d, _ = hf_folder
    bad = tmp_path / "bert"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (bad / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes())
    with pytest.raises(ConfigError, match="model_type 'bert' is not 'vit'"):
        hf_pretrained_state(bad)
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "config.json").write_text((d / "config.json").read_text())
    (cut / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(ConfigError, match="unreadable"):
        hf_pretrained_state(cut)


def test_cli_probes_from_an_hf_folder(run_cli, hf_folder, capsys):
    """`init.checkpoint=hf:<folder>` through the real CLI: the probe runs on its weights."""
    d, _ = hf_folder
    code, rdir = run_cli("model.patch_size=8", f"init.checkpoint=hf:{d}", "task=probe",
                         "eval.fewshot_seeds=1")
    assert code == 0, capsys.readouterr().err
    (row,) = [json.loads(p.read_text()) for p in (rdir / "runs").glob("*.json")]
    assert row["status"] == "ok" and row["pretrain_run_id"] == f"hf:{d}"
    assert row["fewshot_top1"] is not None


def test_cli_names_a_missing_hf_folder(run_cli, tmp_path, capsys):
    code, _ = run_cli("model.patch_size=8", f"init.checkpoint=hf:{tmp_path / 'nope'}")
    assert code == 2 and "no such folder" in capsys.readouterr().err
