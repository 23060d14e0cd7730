"""Evaluation: top-1/top-5 over a held-out split, validation-based selection during training,
frozen features, and the paper's closed-form few-shot linear probe (big_vision fewshot_lsr)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchbench.checkpoint import unwrap
from benchbench.errors import ConfigError, unknown_name
from benchbench.runtime import autocast


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    *,
    num_classes: int,
    device: torch.device,
    precision: str = "fp32",
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Top-1 and top-5 accuracy (fractions) over every held-out sample exactly once.
    `all_reduce` sums the counts across ranks under DDP."""
    model.eval()
    counts = torch.zeros(3, dtype=torch.float64, device=device)  # n, top1, top5
    k = min(5, num_classes)
    for x, y in batches:
        with autocast(device, precision):
            logits = model(x)
        top = logits.float().topk(k, dim=1).indices
        hit = top == y[:, None]
        counts += torch.stack([
            torch.tensor(float(len(y)), device=device, dtype=torch.float64),
            hit[:, 0].sum().double(), hit.any(1).sum().double(),
        ])
    if all_reduce is not None:
        counts = all_reduce(counts)
    n, t1, t5 = counts.tolist()
    model.train()
    if n == 0:
        return {"top1": None, "top5": None, "eval_samples": 0}
    return {"top1": t1 / n, "top5": t5 / n if num_classes >= 5 else None, "eval_samples": int(n)}


@torch.inference_mode()
def extract_features(
    model: nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], *,
    device: torch.device, precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor]:
    from benchbench.models import features

    model.eval()
    feats, labels = [], []
    for x, y in batches:
        with autocast(device, precision):
            f = features(unwrap(model), x)
        feats.append(f.float().cpu())
        labels.append(y.cpu())
    model.train()
    return torch.cat(feats), torch.cat(labels)


BIAS_CONSTANT = 100.0  # big_vision fewshot_lsr: a constant feature, large so its weight is barely regularised
# big_vision evaluators/fewshot_lsr.py, _precompute_cache: std = jnp.std(x, axis=0) + 1e-5
STD_EPS = 1e-5


def draw_shots(labels: torch.Tensor, *, num_classes: int, shots: int, seed: int) -> torch.Tensor:
    """Indices of `shots` images per class, drawn with seed `seed` (only these are featurised)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.as_tensor(labels).cpu()
    idx = []
    for c in range(num_classes):
        cls = (labels == c).nonzero().flatten()
        if len(cls) < shots:
            raise ConfigError(
                f"few-shot needs {shots} images of class {c}, the train split has {len(cls)}; "
                f"lower eval.fewshot_shots or raise data.train_size."
            )
        idx.append(cls[torch.randperm(len(cls), generator=g)[:shots]])
    return torch.cat(idx)


def shot_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, population std + STD_EPS) [1, D] of the shots' features, as big_vision whitens."""
    x = x.double()
    return x.mean(0, keepdim=True), x.std(0, correction=0, keepdim=True) + STD_EPS


def fewshot_lsr(x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, *,
                num_classes: int, l2: float = 1024.0) -> float:
    """big_vision's fewshot_lsr: standardise every dimension on the shots (population std
    + 1e-5, as big_vision), append a bias feature, closed-form ridge regression to {-1, 1}^K
    targets, argmax. Returns accuracy. Sums run in float64 (big_vision: float32 on the CPU)."""
    x = x.double()
    mu, sd = shot_stats(x)

    def prep(f: torch.Tensor) -> torch.Tensor:
        z = (f.double() - mu) / sd
        return torch.cat([z, torch.full((len(z), 1), BIAS_CONSTANT, dtype=z.dtype)], 1)

    xs = prep(x)
    t = F.one_hot(torch.as_tensor(y).long(), num_classes).double() * 2 - 1
    n, d = xs.shape
    if n >= d:  # (X^T X + l2 I)^-1 X^T T
        w = torch.linalg.solve(xs.T @ xs + l2 * torch.eye(d, dtype=xs.dtype), xs.T @ t)
    else:  # the same, in the shots' dimension: X^T (X X^T + l2 I)^-1 T
        w = xs.T @ torch.linalg.solve(xs @ xs.T + l2 * torch.eye(n, dtype=xs.dtype), t)
    hits = 0
    for i in range(0, len(x_test), 8192):  # test features in chunks: no N x D double copy
        hits += int(((prep(x_test[i:i + 8192]) @ w).argmax(1) == y_test[i:i + 8192]).sum())
    return hits / max(len(x_test), 1)


def fewshot_probe(
    train_feats: torch.Tensor, train_labels: torch.Tensor,
    test_feats: torch.Tensor, test_labels: torch.Tensor, *,
    num_classes: int, shots: int, seeds: int = 3, l2: float = 1024.0,
) -> dict[str, Any]:
    """The paper's few-shot linear probe (big_vision evaluators/fewshot, l2 = 2^10): `shots`
    images per class drawn from the train features, fewshot_lsr, averaged over `seeds` draws.
    Returns accuracy as a fraction. (Given features of the drawn shots only, call
    draw_shots + fewshot_lsr directly, as tasks/train does.)"""
    accs = []
    for s in range(seeds):
        ix = draw_shots(train_labels, num_classes=num_classes, shots=shots, seed=s)
        accs.append(fewshot_lsr(train_feats[ix], train_labels[ix], test_feats, test_labels,
                                num_classes=num_classes, l2=l2))
    return {"fewshot_top1": sum(accs) / len(accs), "fewshot_top1_per_seed": accs, "fewshot_shots": shots}


@dataclass
class Selection:
    """Validation during training: `validate(model)` -> accuracy every `every` steps; the best
    weights are kept (and restored at the end); `patience` evaluations without a gain stop
    the run early (None: never)."""

    validate: Callable[[nn.Module], float | None]
    every: int
    patience: int | None = None
    best: float | None = None
    best_step: int | None = None
    bad: int = 0
    state: dict[str, Any] | None = None
    last: float | None = None  # the latest validation accuracy (a training-curve column)

    def check(self, model: nn.Module, step: int) -> bool:
        """Evaluate after `step` steps; True when training should stop."""
        acc = self.last = self.validate(model)
        if acc is not None and (self.best is None or acc > self.best):
            self.best, self.best_step, self.bad = acc, step, 0
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()}
        else:
            self.bad += 1
        return self.patience is not None and self.bad >= self.patience

    def saved(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad": self.bad, "state": self.state}

    def restore(self, saved: dict[str, Any] | None) -> None:
        if saved:
            self.best, self.best_step = saved["best"], saved["best_step"]
            self.bad, self.state = saved["bad"], saved["state"]


@dataclass(frozen=True)
class Periodic:
    """eval.every_steps: accuracy every `every` steps for the training curve only (the run
    computes the same): `measure(model, with_val)` -> test_top1 (and val_top1 when asked)."""

    every: int
    measure: Callable[[nn.Module, bool], dict[str, float | None]]


def periodic(cfg: Any, test_batches: Callable[[], Iterator[Any]], val: Any, num_classes: int,
             eval_bs: int, device: Any, precision: str, denv: Any) -> Periodic | None:
    """eval.every_steps (null: off): the test split (capped as the final evaluation) and, with
    a data.val_split, validation, on the current weights; reuses `evaluate`/`selection_acc`."""
    from benchbench import distributed

    every = cfg.eval.get("every_steps")
    if every is None:
        return None
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ConfigError(f"eval.every_steps must be a whole number of steps >= 1 or null, "
                          f"got {every!r}.")

    def measure(model: nn.Module, with_val: bool) -> dict[str, float | None]:
        m = unwrap(model) if denv.enabled else model  # under DDP: the bare model, as the final eval
        out = {"test_top1": evaluate(m, test_batches(), num_classes=num_classes, device=device,
                                     precision=precision,
                                     all_reduce=distributed.all_reduce_sum if denv.enabled
                                     else None)["top1"]}
        if with_val and val is not None:
            out["val_top1"] = selection_acc(m, val, num_classes, eval_bs, device, precision, denv)
        return out

    return Periodic(every=every, measure=measure)


NEEDS_ROOT = ("cifar10", "cifar100", "imagefolder")  # conf/data files read from data.root


def probe_data_node(cfg: Any) -> Any:
    """eval.fewshot_data as a data config node (None: the training data), checked; called
    before training too, so a probe that cannot read its data fails before the run, not after."""
    from omegaconf import OmegaConf

    ref = cfg.eval.get("fewshot_data")
    if ref is None:
        return None
    over = OmegaConf.create({"name": ref} if isinstance(ref, str) else ref)
    conf = Path(__file__).resolve().parent.parent / "conf" / "data"
    valid = sorted(p.stem for p in conf.glob("*.yaml"))
    if over.get("name") not in valid:
        raise unknown_name("eval.fewshot_data", str(over.get("name")), valid,
                           "Name a conf/data/ file (null: the training data).")
    node = OmegaConf.merge(OmegaConf.load(conf / f"{over.name}.yaml"), over)
    if node.name in NEEDS_ROOT and node.get("root") is None:
        raise ConfigError(f"the few-shot probe reads {node.name} and has no folder for it: pass "
                          f"'eval.fewshot_data={{name: {node.name}, root: DIR}}', or "
                          f"eval.fewshot_data=null to probe the training data.")
    return node


def probe_dataset(cfg: Any, ds: Any) -> Any:
    """eval.fewshot_data: the probe's dataset, a conf/data/ name or a mapping with `name` and
    overrides (null: the training data), at the model's image size and channels."""
    from benchbench import data

    node = probe_data_node(cfg)
    if node is None:
        return ds
    node.image_size, node.channels = int(cfg.data.image_size), ds.channels
    return data.load_dataset(node)


def fewshot(cfg: Any, row: dict[str, Any], model: Any, ds: Any, loader_of: Any, device: Any,
            precision: str) -> None:
    """The paper's few-shot probe: draw the shots from the labels, featurise only those
    images and the probe test split, fewshot_lsr per (shots, seed)."""
    from dataclasses import replace

    import torch

    from benchbench.distributed import gather_shards

    pds = probe_dataset(cfg, ds)
    shots = [int(s) for s in cfg.eval.fewshot_shots]
    seeds = int(cfg.eval.fewshot_seeds)
    draws = {(s, k): draw_shots(pds.train.y, num_classes=pds.num_classes, shots=s, seed=k)
             for s in shots for k in range(seeds)}
    union = torch.unique(torch.cat(list(draws.values())))  # sorted; featurised once each
    sub = replace(pds, train=pds.train.take(union))
    bs = int(cfg.eval.batch_size)
    ftr, ytr = extract_features(model, loader_of("train", source=sub).eval_batches(bs),
                                device=device, precision=precision)
    fte, yte = extract_features(model, loader_of("test", source=pds).eval_batches(bs),
                                device=device, precision=precision)
    got = gather_shards(ftr, ytr, fte, yte)  # DDP: each rank's shard -> rank 0, in order
    if got is None:
        return  # not rank 0: its row is not written
    ftr, ytr, fte, yte = got
    l2 = float(cfg.eval.fewshot_l2)
    per_draw = {s: [fewshot_lsr(ftr[pos], ytr[pos], fte, yte, num_classes=pds.num_classes, l2=l2)
                    for k in range(seeds)
                    for pos in [torch.searchsorted(union, draws[(s, k)])]]
                for s in shots}
    acc = {s: sum(a) / seeds for s, a in per_draw.items()}
    main_shot = 5 if 5 in acc else shots[0]
    row.update(fewshot_top1=acc[main_shot], fewshot_shots=main_shot,
               fewshot={str(s): a for s, a in acc.items()}, fewshot_dataset=pds.name,
               fewshot_per_draw={str(s): a for s, a in per_draw.items()})


def selection_acc(model: Any, val: Any, num_classes: int, eval_bs: int, device: Any,
                  precision: str, denv: Any) -> float | None:
    """Top-1 on the validation split (summed over ranks under DDP)."""
    from benchbench import distributed

    return evaluate(model, val.eval_batches(eval_bs), num_classes=num_classes, device=device,
                    precision=precision,
                    all_reduce=distributed.all_reduce_sum if denv.enabled else None)["top1"]


def selection(tcfg: Any, val: Any, num_classes: int, eval_bs: int, steps_per_epoch: int,
              device: Any, precision: str, denv: Any) -> Selection | None:
    """train.eval_every_epochs: validate during training, keep the best weights, and stop
    after train.early_stop evaluations without a gain; None when not asked for."""
    every, patience = tcfg.get("eval_every_epochs"), tcfg.get("early_stop")
    if every is None:
        if patience is not None:
            raise ConfigError("train.early_stop needs train.eval_every_epochs (and data.val_split).")
        return None
    if val is None:
        raise ConfigError("train.eval_every_epochs selects on validation: set data.val_split.")
    if not isinstance(every, int | float) or isinstance(every, bool) or every <= 0:
        raise ConfigError(f"train.eval_every_epochs must be positive, got {every!r}.")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int)
                                 or patience < 1):
        raise ConfigError(f"train.early_stop must be a whole number >= 1 or null, got {patience!r}.")

    def validate(model: Any) -> float | None:  # under DDP: the bare model, as the final eval
        return selection_acc(unwrap(model) if denv.enabled else model, val, num_classes, eval_bs,
                             device, precision, denv)

    return Selection(validate=validate, every=max(1, round(float(every) * steps_per_epoch)),
                     patience=patience)
