"""Evaluation: top-1/top-5 over a held-out split, frozen features, and the paper's closed-form
few-shot linear probe."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchbench.checkpoint import unwrap
from benchbench.errors import ConfigError
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


def fewshot_probe(
    train_feats: torch.Tensor, train_labels: torch.Tensor,
    test_feats: torch.Tensor, test_labels: torch.Tensor, *,
    num_classes: int, shots: int, seeds: int = 3, l2: float = 1024.0,
) -> dict[str, Any]:
    """The paper's few-shot linear probe: closed-form regularised least squares from frozen
    features to {-1, 1}^K targets (big_vision evaluators/fewshot; l2 = 2^10), `shots`
    images per class, averaged over `seeds` draws. Returns accuracy as a fraction."""
    accs = []
    for s in range(seeds):
        g = torch.Generator().manual_seed(s)
        idx = []
        for c in range(num_classes):
            cls = (train_labels == c).nonzero().flatten()
            if len(cls) < shots:
                raise ConfigError(
                    f"few-shot needs {shots} images of class {c}, the train split has {len(cls)}; "
                    f"lower eval.fewshot_shots or raise data.train_size."
                )
            idx.append(cls[torch.randperm(len(cls), generator=g)[:shots]])
        ix = torch.cat(idx)
        x = train_feats[ix].double()
        mu = x.mean(0, keepdim=True)  # centre features (big_vision does the same)
        x = x - mu
        y = F.one_hot(train_labels[ix], num_classes).double() * 2 - 1
        # W = (X^T X + l2 I)^-1 X^T Y, plus a bias = mean target
        a = x.T @ x + l2 * torch.eye(x.shape[1], dtype=x.dtype)
        w = torch.linalg.solve(a, x.T @ y)
        b = y.mean(0, keepdim=True)
        pred = ((test_feats.double() - mu) @ w + b).argmax(1)
        accs.append((pred == test_labels).double().mean().item())
    return {"fewshot_top1": sum(accs) / len(accs), "fewshot_top1_per_seed": accs, "fewshot_shots": shots}
