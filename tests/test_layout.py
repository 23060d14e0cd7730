"""The package's shape (issue 11): one concern per module, each small and saying its job."""
from __future__ import annotations

from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "benchbench"
MODULES = sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)
MAX_LINES = 420  # "about 400": a module past this wants splitting by concern


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_module_is_small_and_its_first_line_says_its_job(path):
    lines = path.read_text().splitlines()
    assert len(lines) <= MAX_LINES, f"{path.name}: {len(lines)} lines; split it by concern"
    if not lines:
        return  # an empty __init__.py
    first = lines[0]
    assert first.startswith('"""') and len(first.strip('"').strip()) > 10, (
        f"{path.name}: the first line should be a docstring saying the module's one job")
    assert not any(ln.startswith("# ----") or ln.startswith("# ====") for ln in lines), (
        f"{path.name}: banner comments mark a module that wants to be two")
