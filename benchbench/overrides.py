"""Check `key=value` overrides against the keys benchbench's configs define, before Hydra runs.

Hydra answers a typo (`train.epoch=3`) with "Key 'epoch' is not in struct ... use
+train.epoch=3", and following that advice runs with the key silently ignored under a new
run_id. Here an unknown key gets the closest valid keys instead, and a value of the wrong
type (`train.lr=abc`) is named with the type the key takes, both as one ConfigError.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from benchbench.errors import ConfigError, closest_first

# Config groups mounted at their own name (the rest of conf/ is the top-level config.yaml);
# study and debug files are `@package _global_`: they only set keys defined elsewhere.
_MOUNTED = ("model", "data", "train", "task")
_NUMBER = (int, float)


def _load(path: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    d = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return d if isinstance(d, dict) else {}


def _merge(into: dict[str, Any], d: dict[str, Any]) -> None:
    """Union of the key trees; a leaf keeps the set of value types seen across options."""
    for k, v in d.items():
        if isinstance(v, dict):
            node = into.get(k)
            if not isinstance(node, dict):
                node = into[k] = {}
            if not v:
                node["*"] = True  # an empty dict: any key below it is the user's
            _merge(node, v)
        elif not isinstance(into.get(k), dict):
            types = into.setdefault(k, set())
            if isinstance(types, set) and v is not None:
                types.add(type(v))


@lru_cache(maxsize=1)
def key_tree(conf_dir: str) -> dict[str, Any]:
    """Every key any option of any group sets: group options are unioned, so a key of one
    model (model.timm_name) is valid for all; leaves hold the types their values take."""
    conf = Path(conf_dir)
    tree: dict[str, Any] = {}
    top = _load(conf / "config.yaml")
    top.pop("defaults", None)
    top.pop("hydra", None)
    _merge(tree, top)
    groups: dict[str, dict[str, Any]] = {}
    for g in _MOUNTED:
        groups[g] = {}
        for f in sorted((conf / g).glob("*.yaml")):
            keys = {k: v for k, v in _load(f).items() if k != "defaults"}
            # a `@package _global_` option (task=replay) sets top-level keys (replay.pool)
            _merge(tree if _global(f) else groups[g], keys)
    for g in _MOUNTED:  # `- /data@finetune.data: x` in a group file mounts a whole group
        for f in sorted((conf / g).glob("*.yaml")):
            for entry in _load(f).get("defaults") or []:
                if isinstance(entry, dict):
                    for spec in entry:
                        src, _, pkg = str(spec).lstrip("/").partition("@")
                        if pkg and src in groups:
                            node = groups[g]
                            for part in pkg.split("."):
                                node = node.setdefault(part, {})
                            _merge(node, _as_plain(groups[src]))
    for g, sub in groups.items():
        tree.setdefault(g, {})
        _merge(tree[g], _as_plain(sub))
    return tree


def _global(path: Path) -> bool:
    return path.read_text().lstrip().startswith("# @package _global_")


def _as_plain(tree: dict[str, Any]) -> dict[str, Any]:
    """A key tree back as example values (one per type), for merging at another place."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out[k] = _as_plain(v) or {}
        elif isinstance(v, set):
            out[k] = _example(v)
        else:
            out[k] = v
    return out


def _example(types: set[type]) -> Any:
    if not types:
        return None
    t = sorted(types, key=lambda t: t.__name__)[0]
    return {bool: False, int: 0, float: 0.0, str: "", list: []}.get(t)


def _leaves(tree: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in tree.items():
        if k == "*":
            continue
        path = f"{prefix}{k}"
        out.append(path)
        if isinstance(v, dict):
            out.extend(_leaves(v, path + "."))
    return out


def _lookup(tree: dict[str, Any], key: str) -> tuple[bool, Any]:
    """(known, node): node is the leaf's type set, a subtree, or None below an open dict."""
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict):
            return False, None
        if part not in node:
            return bool(node.get("*")), None
        node = node[part]
    return True, node


def _type_name(types: set[type]) -> str | None:
    """What a key whose defaults have these types expects, or None when anything goes."""
    if not types or not types <= {int, float, bool}:
        return None
    if types == {bool}:
        return "true or false"
    if bool in types:
        return None
    return "a whole number" if types == {int} else "a number"


def _values(o: Any) -> list[Any]:
    if o.is_sweep_override():
        try:
            return list(o.sweep_iterator())
        except Exception:  # noqa: BLE001 - e.g. an interval sweep: Hydra checks those
            return []
    return [o.value()]


# boolean keys that also take a name: data.augment=true | false | inception | light2 | augreg ...
_NAMES_TOO = ("data.augment", "task.finetune.data.augment")


def _bad(value: Any, types: set[type]) -> bool:
    if value is None or (isinstance(value, str) and "${" in value):
        return False  # null, or an interpolation Hydra resolves
    if types == {bool}:
        return not isinstance(value, bool)
    return isinstance(value, bool) or not isinstance(value, _NUMBER)  # 2.5 epochs: allowed


def check_keys(argv: list[str], conf_dir: str | Path) -> None:
    """Raise ConfigError for `a.b=v` naming a key no config defines (closest keys first), or
    giving a number key a value of another type. `+key=v` (adding a key on purpose),
    `~key`, `hydra.*` and group choices (`model=x`, `hydra/launcher=x`) are left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import HydraException

    tree = key_tree(str(conf_dir))
    args = [a for a in argv if "=" in a and not a.startswith("-")]
    parser = OverridesParser.create()
    for arg in args:
        try:
            (o,) = parser.parse_overrides([arg])
        except (HydraException, ValueError) as e:
            raise ConfigError(_parse_hint(arg, e)) from None
        key = o.key_or_group
        if (o.type != OverrideType.CHANGE or o.package or "/" in key
                or key.split(".")[0] == "hydra"):
            continue
        if key in _MOUNTED + ("study", "debug"):
            continue  # a group choice (model=vit_b): checked by cli.check_overrides
        known, node = _lookup(tree, key)
        if not known:
            valid = _leaves(tree)
            near = closest_first(key, valid)[:3]
            raise ConfigError(
                f"unknown key {key}; did you mean {near[0]}? Closest keys: "
                f"{', '.join(near)} (benchbench reads only the keys in conf/; "
                f"`benchbench --cfg job` prints them all)."
            )
        if isinstance(node, dict) and not node.get("*"):
            sub = ", ".join(k for k in node if k != "*")
            raise ConfigError(f"{key} is a group of keys, not a value: set one of its keys "
                              f"({key}.<key>=...): {sub}.")
        if isinstance(node, set):
            want = _type_name(node)
            if want is None:
                continue
            for v in _values(o):
                if _bad(v, node) and not (key in _NAMES_TOO and isinstance(v, str)):
                    raise ConfigError(f"{key} takes {want}, got {key}={_show(v)}.")


def _parse_hint(arg: str, e: Exception) -> str:
    """Hydra's override grammar reads `{`, `[` and `(` itself: a value holding them (a brace
    pattern of shards) needs inner quotes, which the shell would otherwise strip."""
    key, _, val = arg.partition("=")
    why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return (f"Hydra cannot read the override {arg} ({why}): put a value holding braces, "
            f"brackets or parentheses in double quotes inside the shell's single quotes: "
            f"'{key}=\"{val.strip(chr(34))}\"'.")


# Hydra's run modes; it takes one per command and answers two with a bare ValueError
_MODES = {"-m": "-m", "--multirun": "-m", "--cfg": "--cfg", "-c": "--cfg", "--info": "--info",
          "-i": "--info", "--run": "--run", "-r": "--run", "--shell-completion": "--shell-completion",
          "-sc": "--shell-completion"}


def check_modes(argv: list[str]) -> None:
    """`benchbench --cfg job -m ...`: one ConfigError saying what to drop."""
    modes = sorted({_MODES[a.split("=")[0]] for a in argv if a.split("=")[0] in _MODES})
    if len(modes) < 2:
        return
    shows = [m for m in modes if m in ("--cfg", "--info")]
    if "-m" in modes and shows:
        raise ConfigError(f"{shows[0]} prints the config of one run and cannot go with -m: drop -m "
                          f"and give each swept key one value (seed=0, not seed=0,1).")
    raise ConfigError(f"{' and '.join(modes)} cannot go together: give one of them per command.")


def slurm_launcher(conf_dir: str | Path, choice: str) -> bool:
    """Whether hydra/launcher=<choice> submits to SLURM (submitit_slurm, or a preset on it)."""
    if choice == "submitit_slurm":
        return True
    f = Path(conf_dir) / "hydra" / "launcher" / f"{choice}.yaml"
    return f.is_file() and "submitit_slurm" in (_load(f).get("defaults") or [])


def check_launcher(argv: list[str], conf_dir: str | Path) -> None:
    """A SLURM launcher where there is no SLURM: one line (submitit raises a RuntimeError with a
    traceback, "Could not detect srun")."""
    import shutil

    for arg in argv:
        key, _, val = arg.partition("=")
        if key.lstrip("+") == "hydra/launcher" and val and slurm_launcher(conf_dir, val) \
                and shutil.which("srun") is None:
            raise ConfigError(f"no SLURM here (no srun on PATH) for hydra/launcher={val}: use "
                              f"hydra/launcher=local_gpus (or leave it out), or run on the cluster.")


def _show(v: Any) -> str:
    return "null" if v is None else (str(v).lower() if isinstance(v, bool) else str(v))
