"""Human-readable numbers with SI prefixes: one FLOP format and one count format for every output."""
from __future__ import annotations

import math

NA = "–"
_PREFIXES = ("", "k", "M", "G", "T", "P", "E", "Z")
FLOPS_CONVENTION = "2 x MACs, attention included"
FLOPS_NOTE = f"FLOPs ({FLOPS_CONVENTION})"  # the words captions use wherever FLOPs appear


def si(v: float | None, digits: int = 3, na: str = NA) -> tuple[str, str]:
    """(mantissa, prefix) with `digits` significant digits: 35100000000 -> ('35.1', 'G')."""
    try:
        v = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return na, ""
    if not math.isfinite(v):
        return na, ""
    if v == 0:
        return "0", ""
    e = min(max(int(math.floor(math.log10(abs(v)) / 3)), 0), len(_PREFIXES) - 1)
    m = v / 1000**e
    if abs(float(f"{m:.{digits}g}")) >= 1000 and e < len(_PREFIXES) - 1:
        e, m = e + 1, m / 1000  # 999.96 G rounds to 1 T, not "1e+03 G"
    return f"{m:.{digits}g}", _PREFIXES[e]


def fmt_flops(v: float | None, digits: int = 3, per: str = "", na: str = NA) -> str:
    """35.1e9 -> '35.1 GFLOPs'; per='img' -> '35.1 GFLOPs/img'. The one FLOP format."""
    m, p = si(v, digits, na)
    if m == na:
        return na
    return f"{m} {p}FLOPs" + (f"/{per}" if per else "")


def fmt_count(v: float | None, digits: int = 3, na: str = NA) -> str:
    """Counts of images and the like: 1000 -> '1k', 2500 -> '2.5k', 300 -> '300'."""
    m, p = si(v, digits, na)
    return na if m == na else f"{m}{p}"
