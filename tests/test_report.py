"""The read-along page, the cross-model summary and the README's findings table (sparseprobe_core/report.py),
built from a synthetic manifest with tiny figures and notebooks; the README and summary.png must agree with
the committed manifest; and a real headless browser (Debian's chromium) opens the page: every image loads,
every link resolves."""

from __future__ import annotations

import base64
import html
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from sparseprobe_core import config, manifest, paths, report

SMOL, GEMMA = "smollm2-135m", "gemma3-270m"


def _png(colour: str = "steelblue") -> bytes:
    """A small valid PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _verdict(claim, verdict, headline, layer=None, figure=None):
    entry = {"claim": claim, "layer": layer, "verdict": verdict, "headline": headline}
    return entry | ({"figure": figure} if figure else {})


def _notebook(path: Path, title: str) -> None:
    """A tiny executed notebook: a heading, a code cell with text and an image output."""
    png = base64.b64encode(_png("orange")).decode()
    image = new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"})
    cells = [
        new_markdown_cell(f"# {title}\n\nSome text with a formula $a_i w_i$."),
        new_code_cell("print('holds')", outputs=[new_output("stream", name="stdout", text="holds\n"), image]),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(new_notebook(cells=cells), path)


@pytest.fixture
def fake_run(tmp_path) -> dict[str, Path]:
    """A finished run as run_all.sh leaves it: figures/MANIFEST.json with verdicts on two models (the second
    ran notebook 01 only, as in the ci profile), tiny figures, executed notebooks, a README with markers."""
    figures, notebooks = tmp_path / "figures", tmp_path / "notebooks"
    runs = {
        SMOL: {
            "01_theory_check": [
                _verdict("1", "holds", "identity error 3e-06 on 30 layers x 20 concepts", figure="01_identity"),
                _verdict("2", "cannot tell", "precision@k* 0.77 vs 0.68 | 2 of 5 real layers"),
            ],
            "02_probe_training": [
                _verdict("3-detection", "does not hold", "AUROC@10 -0.014 [-0.025, -0.003] vs z-scored L1"),
            ],
            "03_ranking_comparison": [
                _verdict("4", "does not hold", "area -0.05 vs f_stat, p = 0.004", layer=14, figure="03_curves"),
                _verdict("4", "holds", "area +0.02", layer=7, figure="03_curves"),
            ],
        },
        GEMMA: {"01_theory_check": [_verdict("1", "holds", "identity error 2e-06", figure="01_identity")]},
    }
    data = {"git_commit": "0123456789abcdef", "core": {}, "models": {}}
    for model, nbs in runs.items():
        slug = config.model_slug(model)
        entry = data["models"][model] = {"notebooks": {}, "figures": {}}
        for name, verdicts in nbs.items():
            keys = {
                f"claim{v['claim']}" + (f"_layer{v['layer']}" if v["layer"] is not None else ""): v for v in verdicts
            }
            entry["notebooks"][name] = {
                "params": {"profile": "ci", "model": model, "concepts": ["python_string"]},
                "numbers": {"auroc10": 0.91, "area_k": [1, 2, 5]},
                "verdicts": keys,
            }
            for fig in {v.get("figure") for v in verdicts if v.get("figure")} | {f"{name[:2]}_extra"}:
                entry["figures"][fig] = {"notebook": name, "file": f"{fig}.png", "caption": f"caption of {fig}"}
                (figures / slug).mkdir(parents=True, exist_ok=True)
                (figures / slug / f"{fig}.png").write_bytes(_png())
            folder = notebooks if model == config.DEFAULT_MODEL else notebooks / slug
            _notebook(folder / f"{name}.ipynb", f"{name} on {model}")
    manifest.write_json(figures / manifest.MANIFEST, data)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n\n{report.README_BEGIN}\nold table\n{report.README_END}\n\nafter\n")
    return {"figures": figures, "notebooks": notebooks, "out": tmp_path / "report", "readme": readme, "manifest": data}


def test_findings_are_grouped_by_claim_in_order(fake_run):
    found = report.findings(fake_run["manifest"])
    assert [f.label for f in found] == ["1", "2", "3 (detection)", "4, layer 7", "4, layer 14"]
    assert set(found[0].verdicts) == {SMOL, GEMMA} and set(found[1].verdicts) == {SMOL}
    assert found[0].verdicts[SMOL].figure == "01_identity" and found[1].verdicts[SMOL].figure is None


def test_summary_table_names_every_verdict_and_escapes_pipes(fake_run):
    table = report.summary_markdown(fake_run["manifest"])
    lines = table.strip().splitlines()
    assert lines[0] == f"| claim | `{SMOL}` | `{GEMMA}` |" and len(lines) == 2 + 5
    assert "✓ **holds**: identity error 2e-06" in lines[2]
    assert "precision@k* 0.77 vs 0.68 \\| 2 of 5" in lines[3] and lines[3].endswith("| no verdict |")
    assert lines[4].endswith("| not run |")  # gemma did not run notebook 02
    assert all(line.count(" | ") == 2 for line in lines[2:])  # three columns on every row


def test_report_builds_page_summary_and_readme(fake_run):
    where = ["--figures", fake_run["figures"], "--notebooks", fake_run["notebooks"], "--out", fake_run["out"]]
    result = subprocess.run(
        [sys.executable, "-m", "sparseprobe_core", "report", *map(str, where), "--readme", str(fake_run["readme"])],
        capture_output=True,
        text=True,
        cwd=paths.ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "read-along page:" in result.stderr
    out = fake_run["out"]
    page = (out / "index.html").read_text()
    for f in report.findings(fake_run["manifest"]):
        for v in f.verdicts.values():
            assert html.escape(v.headline) in page
    rendered = sorted(p.relative_to(out).as_posix() for p in (out / "notebooks").rglob("*.html"))
    assert rendered == [
        f"notebooks/{GEMMA}/01_theory_check.html",
        *(f"notebooks/{SMOL}/{n}.html" for n in ("01_theory_check", "02_probe_training", "03_ranking_comparison")),
    ]
    notebook_page = (out / "notebooks" / SMOL / "02_probe_training.html").read_text()
    assert "back to the read-along page" in notebook_page and "<script src=" not in notebook_page
    assert "http://" not in page and "https://" not in page  # nothing fetched from the web
    summary = fake_run["figures"] / report.SUMMARY_PNG
    assert report.summary_figure_digest(summary) == report.findings_digest(fake_run["manifest"])
    readme = fake_run["readme"].read_text()
    assert "old table" not in readme and readme.startswith("# title\n\nbefore\n") and readme.endswith("\nafter\n")
    assert report.readme_findings(readme) == report.readme_block(fake_run["manifest"])
    assert not report.update_readme(fake_run["readme"], fake_run["manifest"])  # a second run changes nothing


def test_readme_without_markers_is_one_line_error(tmp_path, fake_run):
    readme = tmp_path / "NO_MARKERS.md"
    readme.write_text("# nothing here\n")
    with pytest.raises(ValueError, match="README has no findings block"):
        report.update_readme(readme, fake_run["manifest"])


def test_readme_findings_match_the_committed_manifest():
    data = json.loads((paths.FIGURES / manifest.MANIFEST).read_text())
    assert "models" in data, "figures/MANIFEST.json predates per-model runs: rerun ./run_all.sh"
    text = (paths.ROOT / "README.md").read_text()
    assert report.readme_findings(text) == report.readme_block(data), (
        "README.md's findings table disagrees with figures/MANIFEST.json: run ./run_all.sh (or "
        "python -m sparseprobe_core report --readme README.md) and commit README.md"
    )
    summary = paths.FIGURES / report.SUMMARY_PNG
    assert summary.is_file() and report.summary_figure_digest(summary) == report.findings_digest(data), (
        "figures/summary.png was not made from figures/MANIFEST.json: run ./run_all.sh and commit it"
    )


# ---------------------------------------------------------------------------------------------
# a real browser
# ---------------------------------------------------------------------------------------------

SCREENSHOTS = paths.ROOT / ".cache" / "report-screenshots"


def _browser():
    """Headless Debian chromium driven by Selenium through chromedriver (no download of any browser)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing: pip install -e '.[dev]' (the dev extra has it)")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("chromium or chromedriver is missing: apt-get install chromium chromium-driver (run_tests.sh does)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    for flag in ("--disable-background-networking", "--no-first-run", "--window-size=1400,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


BROKEN_IMAGES = "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"


def _check_page(browser, url: str) -> list[str]:
    """Open `url`; assert that every image loaded; return the page's links (absolute URLs)."""
    browser.get(url)
    assert browser.execute_script("return document.readyState") == "complete"
    assert browser.title, f"{url} has no title (an error page?)"
    assert browser.execute_script(BROKEN_IMAGES) == [], url
    return browser.execute_script("return Array.from(document.links).map(a => a.href)")


def test_page_opens_offline_in_a_real_browser(fake_run):
    page = report.build(fake_run["figures"], fake_run["notebooks"], fake_run["out"])
    browser = _browser()
    try:
        links = _check_page(browser, page.as_uri())
        n_images = browser.execute_script("return document.images.length")
        assert n_images >= 1 + 5  # the summary and a figure per verdict
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1400, min(height + 100, 6000))
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(SCREENSHOTS / "index.png"))
        ids = set(browser.execute_script("return Array.from(document.querySelectorAll('[id]')).map(e => e.id)"))
        for url in sorted(set(links)):
            parsed = urlparse(url)
            assert parsed.scheme == "file", f"{url}: the page links outside itself"
            target = Path(unquote(parsed.path))
            assert target.is_file() and target.is_relative_to(fake_run["out"]), url
            if target == page:
                assert parsed.fragment in ids, f"{url}: no element with that id"
            elif target.suffix == ".html":  # a rendered notebook: it opens, its images load, its back link works
                back = _check_page(browser, url)
                assert any(Path(unquote(urlparse(b).path)) == page for b in back), url
    finally:
        browser.quit()
    print(f"screenshot: {SCREENSHOTS / 'index.png'}")
