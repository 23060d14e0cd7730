"""`benchbench-plan <launch overrides>`: the bill of a launch, before anything runs.

For every point the launch would run (status.points' expansion, composed faster: once per
choice of config groups, the other overrides applied as Hydra applies them): its run_id and
state (status.state_of), its exact train_flops (the row's own functions: the analytic ViT
count or the meta-built model's count, train.resolve_budget, measure.train_flops), its
predicted device time (task=measure rows, else an assumed MFU x the device's peak) and, where
the rows' frontier surrogate says it (benchbench.adaptive, the sweep's own), a predicted top-1
with a 90% band for one run. No model is trained and
no ViT is built.
"""
from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

ASSUMED_MFU = 0.4  # a well-tuned bf16 training run (PaLM reports 46%, Chowdhery et al. 2022)
BAND = 0.90  # the predicted accuracy's band
COLUMNS = ("run_id", "state", "done", "will_run", "overrides", "task", "model", "image_size",
           "flops_per_image", "steps", "samples_seen", "train_flops", "predicted_device_s",
           "device_s_basis", "predicted_energy_j", "predicted_top1", "predicted_top1_lo",
           "predicted_top1_hi", "top1_basis", "error")


def points(args: list[str]) -> list[tuple[list[str], Any]]:
    """status.points' grid (status.launch_grid), composed once per choice of config groups
    (hydra overrides included); each point's other overrides are applied to a copy as Hydra
    applies them (ConfigLoaderImpl._apply_overrides_to_config), so thousands of points take
    seconds."""
    from hydra import compose
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from benchbench.launch_checks import CONF_DIR
    from benchbench.status import launch_grid

    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()}
    parser = OverridesParser.create()

    def is_group(o: Any) -> bool:
        key = o.key_or_group
        return key in groups or "/" in key or o.package is not None

    out: list[tuple[list[str], Any]] = []
    with launch_grid(args) as (grid, hydra_args):
        bases: dict[tuple[str, ...], bytes] = {}
        parsed_once: dict[str, Any] = {}
        for over in grid:
            try:
                parsed = [parsed_once[o] if o in parsed_once else parsed_once.setdefault(
                    o, parser.parse_overrides([o])[0]) for o in over]  # parsing is the cost
                key = tuple(o.input_line for o in parsed if is_group(o))
                if key not in bases:  # no hydra node: no point reads it, and copies cost
                    full = compose("config", overrides=[*hydra_args, *key])
                    bases[key] = pickle.dumps(
                        OmegaConf.masked_copy(full, [k for k in full if k != "hydra"]))
                cfg = pickle.loads(bases[key])  # a deep copy, 5x faster than copy.deepcopy
                OmegaConf.set_struct(cfg, True)  # as Hydra has it when it applies overrides
                ConfigLoaderImpl._apply_overrides_to_config(
                    [o for o in parsed if not is_group(o)], cfg)
                OmegaConf.set_readonly(cfg, False)
                out.append((over, cfg))
            except Exception as e:  # noqa: BLE001 - one bad point: listed as an error
                out.append((over, e))
    return out


@lru_cache(maxsize=64)
def _data_facts(data_json: str) -> tuple[int, int, int | None]:
    """(num_classes, channels, training images) the row will have, from the dataset's own
    reader and subset rules (data.load's): only labels and sizes matter, so a generated set
    loads one image and a file set is read once per (name, root, classes, val split)."""
    from benchbench.data.base import DATASETS
    from benchbench.data.load import check_classes, check_size
    from benchbench.data.subsets import val_count

    data = json.loads(data_json)
    spec = DATASETS.get(str(data.get("name", "synthetic")))
    n_cfg, k_cfg = data.get("train_size"), data.get("num_classes")
    if spec.generated:  # the reader draws exactly train_size (or its default) images
        train, _, k = spec.load({**data, "train_size": 1, "test_size": 1})
        return k, int(data.get("channels") or train.x.shape[1]), n_cfg or spec.default_train_size
    train, _, k = spec.load(data)
    if k_cfg is not None:
        check_classes(str(data["name"]), k, k_cfg)
        k, y = k_cfg, train.y[train.y < k_cfg]
    else:
        y = train.y
    n = len(y)
    if data.get("val_split") is not None:  # carved out of train before any subset
        n -= val_count(data["val_split"], n)
    check_size(str(data["name"]), "train", n_cfg, n, k_cfg)
    return k, int(data.get("channels") or train.x.shape[1]), n_cfg or n


@lru_cache(maxsize=256)
def _flops_per_image(model_json: str, image_size: int, num_classes: int, channels: int) -> int:
    """The row's flops_per_image: a ViT's analytic count (equal to fvcore's, tests/test_flops),
    any other model counted by fvcore on a meta-built copy (no weights), once per shape."""
    import torch

    from benchbench import measure, models
    from benchbench.models.specs import VIT_SIZES

    mcfg = json.loads(model_json)
    spec = models.spec_of(mcfg)
    models.validate(mcfg, image_size)
    if spec.family == "vit":
        v, p = VIT_SIZES[spec.vit], models.patch_size_of(mcfg)
        size = -(-image_size // p) * p  # pad_to_patch: tokens of the padded image
        return measure.analytic_vit_flops(v.depth, v.width, v.mlp, p, size, channels, num_classes)
    with torch.device("meta"):
        model = models.build_model(mcfg, num_classes, image_size, channels)
    return measure.count_flops(model, image_size, channels)["flops_per_image"]


def bill(cfg: Any) -> dict[str, Any]:
    """flops_per_image, steps, samples_seen and train_flops of a point, as its row will have
    them (task=train; probe trains nothing; other tasks are not priced here)."""
    from omegaconf import OmegaConf

    from benchbench import measure
    from benchbench.tasks.train import _max_steps
    from benchbench.train import Budget, resolve_budget

    task = str(cfg.task.name)
    if task == "probe":
        return {"steps": 0, "samples_seen": 0, "train_flops": 0}
    if task != "train":
        return {"device_s_basis": f"none: task={task} is not priced (only task=train is)"}
    data = OmegaConf.to_container(cfg.data, resolve=True)
    tcfg = cfg.train
    k, chans, n = data.get("num_classes"), data.get("channels"), data.get("train_size")
    by_epochs = tcfg.get("flops") is None and tcfg.get("steps") is None
    if k is None or chans is None or (by_epochs and n is None):  # else nothing is read
        k, chans, n = _data_facts(json.dumps(data, sort_keys=True, default=str))
    model = json.dumps(OmegaConf.to_container(cfg.model, resolve=True), sort_keys=True)
    fpi = _flops_per_image(model, int(cfg.data.image_size), k, chans)
    budget = resolve_budget(tcfg, flops_per_image=fpi,
                            steps_per_epoch=n // int(tcfg.batch_size))  # drop_last=True
    cap = _max_steps(cfg)
    if cap is not None:
        budget = Budget(min(budget.steps, cap), budget.global_batch)
    return {"flops_per_image": fpi, "steps": budget.steps, "samples_seen": budget.samples,
            "train_flops": measure.train_flops(fpi, budget.samples)}


class Evidence:
    """What a results dir's rows say about speed (task=measure rows) and accuracy (the
    adaptive sweep's surrogate, benchbench.adaptive: each family's frontier, fitted from
    three runs on, the same model that writes the sweep's pre-registered predictions)."""

    def __init__(self, rdir: Path):
        from benchbench.adaptive.design import Planner, from_rows
        from benchbench.errors import ResultsError
        from benchbench.report.load import load_study
        from benchbench.results import load_rows

        self.measure, self.post, self.range = None, None, {}
        self.why = f"no ok task=train rows in {rdir} to fit"
        try:
            self.measure = load_study(rdir).measure
        except ResultsError:
            return
        cands, rows = from_rows(load_rows(rdir)[0])
        if not cands:
            return
        fams = sorted({c.family for c in cands})
        planner = Planner("frontier", cands, sum(c.cost for c in cands), families=fams)
        self.post = planner.posterior(rows)
        for f in fams:
            xs = [c.x for c in cands if c.family == f]
            self.range[f] = (min(xs), max(xs))

    def speed(self, model: str, image_size: int) -> dict[str, Any] | None:
        m = self.measure
        if m is None or m.empty:
            return None
        m = m[(m["model"] == model) & (m["image_size"] == image_size)
              & m["train_img_per_s"].notna()]
        if m.empty:
            return None
        power = m["train_power_w"].median() if "train_power_w" in m else math.nan
        return {"img_per_s": float(m["train_img_per_s"].median()), "n": len(m),
                "device": str(m["device"].iloc[0]), "power_w": float(power)}

    def accuracy(self, family: str, flops: float) -> dict[str, Any]:
        from benchbench.adaptive.design import predict

        if self.post is None:
            return {"top1_basis": f"none: {self.why}"}
        if family not in self.range:
            return {"top1_basis": f"none: no ok {family} row to fit"}
        x = math.log10(flops)
        m, lo, hi = predict(self.post, family, x)
        a, b = self.range[family]
        where = "inside" if a <= x <= b else "extrapolated beyond"
        return {"predicted_top1": round(m, 4), "predicted_top1_lo": round(lo, 4),
                "predicted_top1_hi": round(hi, 4),
                "top1_basis": f"{family} frontier surrogate on {self.post.n_obs[family]} run(s), "
                              f"{where} its range; {BAND:.0%} band for one run"}


def plan_rows(grid: list[tuple[list[str], Any]], *, device: str = "H100",
              mfu: float = ASSUMED_MFU) -> list[dict[str, Any]]:
    """One dict (COLUMNS) per point of `grid` (points() / status.points())."""
    from benchbench import models, point, results, status
    from benchbench.measure.peak import peak_flops_from_table

    peak = peak_flops_from_table(device)
    evidence: dict[str, Evidence] = {}
    rows = []
    for over, cfg in grid:
        s = status.state_of(cfg)
        r: dict[str, Any] = dict.fromkeys(COLUMNS)
        r.update(run_id=s["run_id"], state=s["state"], overrides=" ".join(over))
        if s["state"] == "error":
            rows.append({**r, "will_run": False, "done": False, "error": s["error"]})
            continue
        r["will_run"] = s["state"] in ("missing", "interrupted") or (
            s["state"] in ("failed", "oom", "diverged") and not point.keeps(
                results.read_row(s["row"]), bool(cfg.study.get("retry_failed", False))))
        # done: a row a relaunch keeps (ok, or a failure it does not retry); running is not
        r["done"] = not r["will_run"] and s["state"] not in ("running", "broken")
        try:
            r.update(task=str(cfg.task.name), model=models.paper_name(cfg.model),
                     image_size=int(cfg.data.image_size), **bill(cfg))
        except Exception as e:  # noqa: BLE001 - a point that cannot be priced: one line
            rows.append({**r, "error": f"{type(e).__name__}: {e}".splitlines()[0][:200]})
            continue
        if r["train_flops"] is None:
            rows.append(r)
            continue
        rdir = Path(point.abs_path(str(cfg.results.dir)))
        ev = evidence.get(str(rdir)) or evidence.setdefault(str(rdir), Evidence(rdir))
        sp = ev.speed(r["model"], r["image_size"])
        if sp is not None:
            r["predicted_device_s"] = _sig(r["samples_seen"] / sp["img_per_s"])
            r["device_s_basis"] = (f"measured: {sp['img_per_s']:.4g} train img/s, median of "
                                   f"{sp['n']} task=measure row(s) on {sp['device']}")
            if math.isfinite(sp["power_w"]):
                r["predicted_energy_j"] = _sig(r["predicted_device_s"] * sp["power_w"])
        elif peak:
            r["predicted_device_s"] = _sig(r["train_flops"] / (mfu * peak))
            r["device_s_basis"] = f"assumed: MFU {mfu:g} x {device} bf16 peak {peak:.4g} FLOP/s"
        else:
            r["device_s_basis"] = f"none: no measure rows and {device} is not in the peak table"
        fam = models.family_of(cfg.model)
        r.update(ev.accuracy(fam, float(r["train_flops"])) if r["train_flops"] else {})
        rows.append(r)
    return rows


def _sig(x: float) -> float:
    return float(f"{x:.4g}")  # a prediction: four significant digits


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """FLOPs and device-hours (all runs, and those still to run; points sharing a run_id
    count once), the points' states, and the share of the device-hours (FLOPs where a run
    has no time) taken by the dearest 10% of the runs."""
    def tot(key: str, sel: list[dict[str, Any]]) -> float:
        return float(sum(r[key] or 0 for r in sel))

    # points that are the same run (e.g. a patch size swept over a CNN, which has none) run
    # once: the first launched computes it, the others find its row
    runs = list({r["run_id"]: r for r in rows if r["state"] != "error"}.values())
    runs += [r for r in rows if r["state"] == "error"]
    points, rows = rows, runs
    todo = [r for r in rows if r["will_run"]]
    cost = "predicted_device_s" if all(r["predicted_device_s"] is not None for r in rows
                                       if r["train_flops"]) else "train_flops"
    vals = sorted((r[cost] or 0 for r in rows), reverse=True)
    top = sum(vals[:max(1, math.ceil(len(vals) / 10))]) if vals else 0
    return {"points": len(points), "runs": len(rows), "to_run": len(todo),
            "states": dict(Counter(r["state"] for r in points)),
            "flops": tot("train_flops", rows), "flops_to_run": tot("train_flops", todo),
            "device_h": tot("predicted_device_s", rows) / 3600,
            "device_h_to_run": tot("predicted_device_s", todo) / 3600,
            "top10_share": top / sum(vals) if sum(vals) else 0.0, "top10_of": cost}


def _fmt(r: dict[str, Any]) -> str:
    if r["error"]:
        return f"{r['state']:<8} {r['run_id']}  {r['overrides']}  error: {r['error']}"
    acc = (f"  top1 {r['predicted_top1']:.3f} [{r['predicted_top1_lo']:.3f}, "
           f"{r['predicted_top1_hi']:.3f}]" if r["predicted_top1"] is not None else "")
    dev = (f"  {r['predicted_device_s'] / 3600:.3g} device-h"
           if r["predicted_device_s"] is not None else "")
    fl = f"{r['train_flops']:.4g} FLOPs" if r["train_flops"] is not None else "-"
    return f"{r['state']:<8} {r['run_id']}  {fl}{dev}{acc}  {r['overrides']}"


def main(argv: list[str] | None = None) -> int:
    """Console script `benchbench-plan`."""
    from benchbench.errors import BenchbenchError

    ap = argparse.ArgumentParser(
        prog="benchbench-plan",
        description="The bill of a launch before it runs: pass the launch's overrides "
                    "(e.g. study=fashion_mnist_compute, or -m model=vit_micro,bit_micro ...).")
    ap.add_argument("--out", default=None, help="write every point's line to this CSV")
    ap.add_argument("--budget", type=float, default=None, metavar="GPU_HOURS",
                    help="warn and exit 1 when the points still to run need more device-hours")
    ap.add_argument("--device", default="H100",
                    help="GPU of the assumed-MFU estimate (a name of the peak table)")
    ap.add_argument("--mfu", type=float, default=ASSUMED_MFU, help="the assumed MFU")
    ap.add_argument("--show", type=int, default=20, help="print at most this many points")
    ns, args = ap.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        from benchbench import cli
        from benchbench.measure.peak import PEAK_BF16_FLOPS, peak_flops_from_table

        if not 0 < ns.mfu <= 1:
            raise BenchbenchError(f"--mfu must be in (0, 1], got {ns.mfu}.")
        if ns.budget is not None and not ns.budget > 0:
            raise BenchbenchError(f"--budget is GPU-hours, a positive number; got {ns.budget}.")
        if peak_flops_from_table(ns.device) is None:
            raise BenchbenchError(f"unknown --device '{ns.device}'; the peak table knows "
                                  + ", ".join(p for p, _, _ in PEAK_BF16_FLOPS) + ".")
        bad = [a for a in args if a.startswith("-") and a not in ("-m", "--multirun")]
        if bad:
            raise BenchbenchError(f"unknown option {bad[0]}; see benchbench-plan --help.")
        cli.check_args(args)  # the launcher's checks: groups, key typos, value types
        rows = plan_rows(points(args), device=ns.device, mfu=ns.mfu)
    except BenchbenchError as e:
        print(f"benchbench-plan: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - Hydra's compose errors: one line, not a traceback
        print(f"benchbench-plan: error: {type(e).__name__}: {str(e).splitlines()[0]}",
              file=sys.stderr)
        return 2
    if ns.out:
        import csv

        Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
        with open(ns.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(rows)
    for r in rows[:ns.show]:
        print(_fmt(r))
    if len(rows) > ns.show:
        print(f"... {len(rows) - ns.show} more points" + (f" in {ns.out}" if ns.out else
                                                          " (--out plan.csv lists them all)"))
    t = totals(rows)
    states = ", ".join(f"{n} {s}" for s, n in sorted(t["states"].items()))
    same = (f", {t['runs']} distinct runs (points with one run_id run once)"
            if t["runs"] != t["points"] else "")
    print(f"{t['points']} points{same} ({states}); {t['to_run']} to run")
    print(f"train FLOPs: {t['flops']:.4g} in all, {t['flops_to_run']:.4g} to run")
    print(f"device-hours: {t['device_h']:.4g} in all, {t['device_h_to_run']:.4g} to run")
    print(f"the dearest 10% of the runs take {t['top10_share']:.0%} of the "
          f"{'device-hours' if t['top10_of'] == 'predicted_device_s' else 'FLOPs'}")
    errors = Counter(r["error"] for r in rows if r["error"])
    for why, n in errors.items():  # one line per distinct reason, not one per point
        first = next(r["overrides"] for r in rows if r["error"] == why)
        print(f"benchbench-plan: {n} point(s) not priced ({first}{', ...' if n > 1 else ''}): "
              f"{why}", file=sys.stderr)
    if ns.budget is not None and t["device_h_to_run"] > ns.budget:
        print(f"benchbench-plan: warning: the {t['to_run']} points to run need "
              f"{t['device_h_to_run']:.4g} device-hours, over the budget of {ns.budget:g}",
              file=sys.stderr)
        return 1
    return 2 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
