"""The launch's checks that `benchbench`, `benchbench-status`, `benchbench-plan` and the sweep
share, below the command modules so that none of them imports another (no import cycle)."""
from __future__ import annotations

import uuid
from pathlib import Path

from benchbench.errors import ConfigError, closest_first

PKG_DIR = Path(__file__).resolve().parent
CONF_DIR = PKG_DIR / "conf"  # shipped in the package; the top-level conf/ and sweeps/ link here
# Config groups a user picks from on the command line; a typo is answered before Hydra runs.
GROUPS = ("model", "data", "train", "task", "study", "debug")


def _register_resolvers(*, fresh: bool = False) -> None:
    from omegaconf import OmegaConf

    if fresh or not OmegaConf.has_resolver("bb_uid"):
        # Unique per launch: log dirs named by time alone collide (Hydra #1817, #2925), and
        # so do two launches in one process within a second (a relaunch with nothing to run)
        uid = uuid.uuid4().hex[:6]
        OmegaConf.register_new_resolver("bb_uid", lambda: uid, replace=True)


def group_options(group: str) -> list[str]:
    d = CONF_DIR / group
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def check_overrides(argv: list[str]) -> None:
    """Unknown group options (model=vit_xx) -> one clear error, closest names first."""
    for arg in argv:
        if "=" not in arg or arg.startswith("-"):
            continue
        key, _, val = arg.partition("=")
        key = key.lstrip("+~")
        if key not in GROUPS or not val:
            continue
        valid = group_options(key)
        for choice in val.split(","):
            choice = choice.strip()
            if choice in ("null", "") or choice in valid:
                continue
            opts = closest_first(choice, valid)
            hint = f" Did you mean '{opts[0]}'?" if opts else ""
            raise ConfigError(
                f"unknown {key} '{choice}'.{hint} Valid {key} options: {', '.join(opts)} "
                f"(files in {'sweeps/' if key == 'study' else f'conf/{key}/'})."
            )


def check_args(argv: list[str]) -> None:
    """The override checks `benchbench` and `benchbench-status` share: group options, key
    typos, value types and Hydra's quoting, each one ConfigError."""
    from benchbench.overrides import check_keys

    check_overrides(argv)
    check_keys(argv, CONF_DIR)


def _redact_file(path: Path) -> None:
    """Hydra's sweeper saves the whole config, overrides included, as multirun.yaml: mask
    the secrets in it (wandb.api_key=..., any *token*), as every row's config is masked."""
    from omegaconf import OmegaConf

    from benchbench.results import atomic_write_text, redact

    if not path.is_file():
        return
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    clean = redact(data)
    if clean != data:
        atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(clean)))
