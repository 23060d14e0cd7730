"""report.html: one self-contained page per study, checked in a real browser (headless Debian
chromium driven by Playwright; `make browser` installs both, CI runs it).

The README's screenshot comes from this file run as a script:
    python tests/test_report_html.py results/fashion_mnist_compute docs/report_html.png
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "results" / "fashion_mnist_compute"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _report(study: Path, out: Path) -> Path:
    from benchbench.report.cli import main

    assert main([str(study), "--out", str(out), "--n-boot", "20", "--formats", "png"]) == 0
    return out / "report.html"


def _page_data(page: Path) -> dict:
    m = re.search(r'<script type="application/json" id="bb-data">(.*?)</script>',
                  page.read_text(), re.S)
    return json.loads(m.group(1))


def _ok_train_rows(study: Path) -> list[dict]:
    rows = [json.loads(p.read_text()) for p in sorted((study / "runs").glob("*.json"))]
    return [r for r in rows if r["status"] == "ok" and r.get("task", "train") == "train"]


@pytest.fixture(scope="module")
def fmc_study(tmp_path_factory):
    """A copy of the committed study: the page and what it is checked against are read from
    one snapshot, even while a re-run of the study adds rows to results/."""
    dst = tmp_path_factory.mktemp("fmc_study") / STUDY.name
    shutil.copytree(STUDY, dst, ignore=shutil.ignore_patterns("report", "logs", "claims"))
    return dst


@pytest.fixture(scope="module")
def fmc_page(fmc_study, tmp_path_factory):
    return _report(fmc_study, tmp_path_factory.mktemp("fmc") / "report")


def test_report_html_is_self_contained(fmc_page, fmc_study):
    """Every script is inline (no src=, no http), and the page holds one plotted run per row
    and the curve of every run that has one."""
    text = fmc_page.read_text()
    assert "<script src" not in text and "<link" not in text
    assert "default-src 'none'" in text  # the page's own policy: the browser fetches nothing
    page = re.sub(r"<script>.*?</script>", "", text, count=1, flags=re.S)  # minus plotly.js
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    data = _page_data(fmc_page)
    rows = _ok_train_rows(fmc_study)
    ids = {r["run_id"] for r in rows}
    plotted = [c[0] for t in data["fig_ca"]["data"] if t["meta"]["kind"] == "run"
               for c in t["customdata"]]
    assert sorted(plotted) == sorted(ids)
    assert set(data["curves"]) == {p.stem for p in (fmc_study / "metrics").glob("*.csv")} & ids
    for t in data["fig_ca"]["data"]:  # each family's frontier is drawn
        assert t["meta"]["kind"] in ("run", "mean", "frontier")
    assert {t["meta"]["family"] for t in data["fig_ca"]["data"] if t["meta"]["kind"] == "frontier"} \
        == {r["family"] for r in rows}
    summary = (fmc_page.parent / "report.md").read_text().split("## Summary")[1].split("##")[0]
    first = summary.strip().splitlines()[0].removeprefix("- ").split("`")[0]
    assert first in text


def test_command_reruns_the_same_run_id():
    """The command a click shows composes back to the row's own run_id (the defaults come
    from Hydra, so only what differs from them is printed)."""
    from hydra import compose, initialize_config_dir

    from benchbench import cli, point, results
    from benchbench.report.command import commands

    rows = _ok_train_rows(STUDY)[::7] + _ok_train_rows(REPO / "results" / "transfer_demo")[:1]
    cmds = commands({r["run_id"]: r["config"] for r in rows}, {})
    assert all(c.startswith("benchbench model=") for c in cmds.values())
    assert "results.dir" not in " ".join(cmds.values())  # not part of the run
    cli._register_resolvers()
    with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
        for r in rows:
            over = shlex.split(cmds[r["run_id"]])[1:]  # as a shell hands them over
            rid = results.run_id_of(point.resolved_config(compose("config", overrides=over)))
            assert rid == r["run_id"], cmds[r["run_id"]]


def test_command_of_an_unknown_model_is_empty():
    from benchbench.report.command import commands

    cfg = {"model": {"name": "no_such_model"}, "data": {"name": "synthetic"}, "seed": 0}
    assert commands({"x": cfg, "y": None}, {}) == {"x": "", "y": ""}


def test_equal_compute_panel_shows_bases_and_degrades_without_them():
    from benchbench.report import html_figures as hf

    ec = pd.DataFrame({"budget [FLOPs]": [1e11, 3e11, 9e11], "A": "ViT", "B": "BiT",
                       "A top-1 [%]": [80.0, 82.0, 83.0], "B top-1 [%]": [np.nan, 84.0, 86.0],
                       "A - B [pts]": [np.nan, -2.0, -3.0], "A - B CI low [pts]": [np.nan, -3, -4],
                       "A - B CI high [pts]": [np.nan, -1, -2]})
    with_b = ec.assign(**{"A basis": ["run", "interpolated", "held"],
                          "B basis": ["none", "run", "run"], "called": ["-", "BiT", "BiT"]})
    fig, note = hf.equal_compute(with_b, "top-1")
    vit = next(t for t in fig["data"] if t["name"] == "ViT")
    assert vit["marker"]["symbol"] == ["circle", "circle-open", "triangle-right-open"]
    assert next(t for t in fig["data"] if t["name"] == "BiT")["x"] == [3e11, 9e11]
    diff = next(t for t in fig["data"] if "−" in t["name"])
    assert diff["text"] == ["BiT", "BiT"] and note == ""
    fig, note = hf.equal_compute(ec, "top-1")
    assert "records no bases" in note
    assert set(next(t for t in fig["data"] if t["name"] == "ViT")["marker"]["symbol"]) == {"circle"}


def test_page_for_1000_runs_stays_under_10_mb(tmp_path):
    """1,000 runs, each with a 500-line training curve: under 10 MB (curves are thinned,
    the last line and evaluations kept), every run still plotted."""
    from benchbench.report import tables
    from benchbench.report.cli import Report
    from benchbench.report.html import write_html
    from benchbench.report.load import load_study
    from benchbench.results import empty_row, row_path, run_id_of

    rng = np.random.default_rng(0)
    root = tmp_path / "big"
    (root / "metrics").mkdir(parents=True)
    steps = np.arange(1, 501) * 10
    for i in range(1000):
        fam, model = [("vit", "ViT-micro/16"), ("bit", "R-micro")][i % 2]
        cfg = {"model": {"name": model}, "data": {"name": "synthetic", "train_size": 1000},
               "train": {"lr": 1e-3}, "seed": i}
        rid = run_id_of(cfg)
        row = dict(run_id=rid, study="big", status="ok", family=fam, model=model,
                   patch_size=16 if fam == "vit" else None, image_size=32, num_classes=10,
                   train_flops=float(1e11 * (1 + i % 10)), dataset="synthetic",
                   train_size=1000 * (1 + i % 3), seed=i, top1=float(rng.uniform(0.5, 0.9)),
                   val_top1=float(rng.uniform(0.5, 0.9)), task="train", config=cfg,
                   epochs=2, lr=1e-3, world_size=1)
        path = row_path(root, rid)  # written plainly: write_row's fsync per file takes seconds
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({**empty_row(), **row}))
        lines = [f"{s},{s * 64},{v:.6g}," for s, v in zip(steps, rng.uniform(0.1, 2, len(steps)))]
        lines[-1] += f"{rng.uniform(0.5, 0.9):.4f}"  # one evaluation, at the end
        (root / "metrics" / f"{rid}.csv").write_text(
            "step,samples_seen,loss,val_top1\n" + "\n".join(lines) + "\n")

    rep = Report(out=tmp_path, study=load_study(root))  # the page alone: the PNGs take minutes
    rep.tables["runs"] = tables.write_table(*tables.runs_table(rep.study), tmp_path, "runs")
    page = write_html(rep)
    assert page.stat().st_size < 10e6, page.stat().st_size
    assert page.read_text().count("<tr>") == 1001  # the runs table: a header and every run
    data = _page_data(page)
    assert sum(len(t["x"]) for t in data["fig_ca"]["data"] if t["meta"]["kind"] == "run") == 1000
    curve = next(iter(data["curves"].values()))
    assert len(curve["x"]) <= 160 and curve["x"][-1] == 500 * 10 * 64  # thinned, the end kept
    assert len(curve["val_top1"][1]) == 1


# --- the browser ---------------------------------------------------------------------------

def _browser_missing() -> str | None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        return "no chromium on PATH: install it with `make browser` (Debian: apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install -e '.[dev]'"
    return None


def check_in_browser(page_path: Path, screenshot: Path | None = None) -> dict:
    """Open the page from disk, hover and click its most isolated run; what happened."""
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    seen: dict = {"errors": [], "requests": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: seen["errors"].append(str(e)))
            page.on("request", lambda r: seen["requests"].append(r.url))
            page.goto(page_path.resolve().as_uri())
            page.wait_for_selector("#ca path.point")
            page.locator("#explore").scroll_into_view_if_needed()
            seen["rows"] = int(page.evaluate("document.body.dataset.rows"))
            seen["points"] = page.locator("#ca path.point").count()
            pts = page.evaluate("""() => {
              const gd = document.getElementById('ca'), L = gd._fullLayout;
              const r = gd.getBoundingClientRect(), out = [];
              gd._fullData.forEach(t => { if (t.visible !== true || t.meta.kind !== 'run') return;
                t.x.forEach((x, j) => out.push({id: t.customdata[j][0],
                  x: r.left + L.xaxis._offset + L.xaxis.l2p(Math.log10(x)),
                  y: r.top + L.yaxis._offset + L.yaxis.l2p(t.y[j])})); });
              return out; }""")
            xy = np.array([[q["x"], q["y"]] for q in pts])
            d = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(len(xy)) * 1e9
            target = pts[int(d.min(axis=1).argmax())]  # no neighbour under the cursor
            seen["target"] = target["id"]
            page.mouse.move(target["x"], target["y"])
            page.wait_for_selector("#ca .hoverlayer .hovertext", timeout=5000)
            seen["hover"] = page.locator("#ca .hoverlayer").text_content()
            page.mouse.click(target["x"], target["y"])
            page.wait_for_function("document.getElementById('curve').data !== undefined "
                                   "&& document.getElementById('curve').data.length > 0",
                                   timeout=5000)
            seen["curve_runs"] = page.evaluate(
                "document.getElementById('curve').data.map(t => t.meta.run_id)")
            seen["curve_points"] = page.evaluate(
                "document.getElementById('curve').data[0].x.length")
            seen["cmd"] = page.locator("#cmd").inner_text()
            if screenshot is not None:  # with the hover label showing
                page.mouse.move(target["x"] + 1, target["y"])
                page.wait_for_selector("#ca .hoverlayer .hovertext", timeout=5000)
                page.locator("#explore").screenshot(path=str(screenshot))
            th = page.locator("#runstable th", has_text="top-1").first
            th.click()  # ascending
            seen["sorted"] = page.evaluate(
                "c => Array.from(document.querySelectorAll('#runstable tbody tr'), "
                "tr => Number(tr.cells[c].dataset.v))", th.evaluate("e => e.cellIndex"))
            page.locator("input.tog[data-axis=family]").first.uncheck()
            seen["family_off"] = page.locator("input.tog[data-axis=family]").first.get_attribute("value")
            seen["points_after_toggle"] = page.locator("#ca path.point").count()
        finally:
            browser.close()
    return seen


def test_page_in_a_real_browser(fmc_page, fmc_study, tmp_path):
    """From file:// in headless chromium: no console error, no request but the file itself,
    one point per row, a hover names its run_id and a click draws that run's curve."""
    why = _browser_missing()
    if why:
        pytest.skip(f"browser test skipped: {why}")
    seen = check_in_browser(fmc_page, tmp_path / "shot.png")
    assert seen["errors"] == []
    assert seen["requests"] == [fmc_page.resolve().as_uri()]
    assert seen["points"] == seen["rows"] == len(_ok_train_rows(fmc_study))
    assert seen["target"] in seen["hover"]
    assert set(seen["curve_runs"]) == {seen["target"]}
    curve = pd.read_csv(fmc_study / "metrics" / f"{seen['target']}.csv")
    assert seen["curve_points"] == len(curve)
    assert seen["cmd"].startswith("benchbench model=")
    assert (tmp_path / "shot.png").stat().st_size > 10_000
    assert seen["sorted"] == sorted(seen["sorted"]) and len(seen["sorted"]) == seen["rows"]
    others = [r for r in _ok_train_rows(fmc_study) if r["family"] != seen["family_off"]]
    assert seen["points_after_toggle"] == len(others) > 0  # a family ticked off: its points go


if __name__ == "__main__":  # the README's screenshot: STUDY_DIR OUT_PNG
    study, shot = Path(sys.argv[1]), Path(sys.argv[2])
    with tempfile.TemporaryDirectory() as tmp:
        seen = check_in_browser(_report(study, Path(tmp) / "report"), shot)
    print(f"{shot}: {seen['points']} points for {seen['rows']} rows, clicked {seen['target']}")
