"""A row's config back as the command that reruns it: `benchbench` + its non-default overrides.

The defaults are Hydra's own composition of the row's groups (model, data, task, and the
train option closest to the row), so the printed overrides are exactly what differs from
them; composing them again gives the row's run_id (tests/test_report_html.py checks it).
Only what defines the run (results.identity_config) is compared: output paths, launcher and
logging keys are left out.
"""
from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from benchbench.results import identity_config

GROUPS = ("model", "data", "task")  # groups named by the row's `<group>.name`
DERIVED = ("data.fingerprint",)  # computed by the run, never typed


def _flat(d: Mapping[str, Any], pre: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{pre}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _value(v: Any) -> str:
    """A Hydra override value: null, true/false, numbers, [lists], quoted strings."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ",".join(_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ",".join(f"{k}:{_value(x)}" for k, x in v.items()) + "}"
    s = str(v)
    plain = s and all(c.isalnum() or c in "_-./:+@" for c in s) and s not in ("null", "true", "false")
    return s if plain else json.dumps(s)  # Hydra reads a double-quoted string as itself


def _choices(config: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """The group selections a row's config may have come from: its model, data and task
    options with each train option (the row does not name its train option)."""
    groups = [f"{g}={config[g]['name']}" for g in GROUPS
              if isinstance(config.get(g), Mapping) and config[g].get("name")
              and f"{g}={config[g]['name']}" != "task=train"]  # the default task
    return [tuple(groups + ([] if t == "default" else [f"train={t}"])) for t in _train_options()]


def _train_options() -> list[str]:
    """Every conf/train option, `default` first: the row does not name its own."""
    from benchbench.cli import CONF_DIR

    names = sorted(p.stem for p in (CONF_DIR / "train").glob("*.yaml"))
    return ["default"] + [n for n in names if n != "default"]


def _compose_all(choices: Iterable[tuple[str, ...]]) -> dict[tuple[str, ...], dict[str, Any] | None]:
    """Each selection composed once, in one Hydra context (starting one costs ~1 s); a
    selection this version cannot compose (a group it lacks) maps to None."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from benchbench import cli, point

    choices = list(dict.fromkeys(choices))
    out: dict[tuple[str, ...], dict[str, Any] | None] = dict.fromkeys(choices)
    if not choices or GlobalHydra.instance().is_initialized():  # inside a Hydra app: not ours
        return out
    cli._register_resolvers()
    with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
        for c in choices:
            try:  # normalised as a run's own config is (measure rows, a CNN's patch)
                out[c] = point.resolved_config(compose("config", overrides=list(c)),
                                               fingerprint=False)
            except Exception:  # noqa: BLE001 - no command for that row, still a report
                out[c] = None
    return out


def overrides(config: Mapping[str, Any], bases: Mapping[tuple[str, ...], Any]) -> list[str] | None:
    """The overrides that turn the defaults (`bases`, from _compose_all) into `config`, for
    the train option that needs the fewest; None when none of its selections composed."""
    want, given = _flat(identity_config(config)), _flat(config)
    best: tuple[int, list[str]] | None = None
    for choice in _choices(config):
        base = bases.get(choice)
        if base is None:
            continue
        have, known = _flat(identity_config(base)), _flat(base)
        diff = [f"{k}={_value(v)}" if k in known else f"+{k}={_value(v)}"
                for k, v in want.items() if k not in DERIVED and (k not in have or have[k] != v)]
        diff += [f"~{k}" for k in have if k not in given and k not in DERIVED]
        if best is None or len(diff) < best[0]:  # ties: the earlier (default) option
            best = (len(diff), list(choice) + diff)
    return None if best is None else best[1]


def commands(configs: Mapping[str, Any], extra: Mapping[str, list[str]] | None = None) -> dict[str, str]:
    """run_id -> `benchbench <overrides> <extra[run_id]>`, shell-quoted; "" for a row whose
    config is missing or does not compose here (a row from another benchbench version)."""
    ok = {k: c for k, c in configs.items() if isinstance(c, Mapping) and c}
    bases = _compose_all(ch for c in ok.values() for ch in _choices(c))
    out = dict.fromkeys(configs, "")
    for k, c in ok.items():
        over = overrides(c, bases)
        if over is not None:
            out[k] = shlex.join(["benchbench", *over, *(extra or {}).get(k, [])])
    return out
