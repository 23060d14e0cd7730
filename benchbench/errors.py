"""One exception type for user mistakes; its message always names the fix."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class BenchbenchError(ValueError):
    """A problem the user can fix (bad config, missing data, corrupt file).

    The CLI prints only the message (no traceback) unless HYDRA_FULL_ERROR=1 is set.
    """


class ConfigError(BenchbenchError):
    """The resolved config is invalid; raised before anything is built."""


class DataError(BenchbenchError):
    """A dataset is missing or malformed."""


class ResultsError(BenchbenchError):
    """A results file or directory cannot be read or written."""


class NoRowError(BenchbenchError):
    """The point has nothing to record (task=replay matched no row in its pool): no row is
    written, so benchbench-status lists the point as missing."""


def closest_first(name: str, valid: Iterable[str]) -> list[str]:
    """Valid names ordered by similarity to `name` (closest first), then alphabetically."""
    valid = sorted(set(valid))
    if not valid:
        return []
    close = difflib.get_close_matches(name, valid, n=len(valid), cutoff=0.0)
    return close or valid


def unknown_name(kind: str, name: str, valid: Iterable[str], how: str = "") -> BenchbenchError:
    """An error for an unknown registry key that lists the valid ones, closest first."""
    opts = closest_first(str(name), valid)
    hint = f" Did you mean '{opts[0]}'?" if opts else ""
    extra = f" {how}" if how else ""
    return ConfigError(f"unknown {kind} '{name}'.{hint} Valid {kind}s: {', '.join(opts)}.{extra}")
