"""The HTML reports in a real browser: Debian's Chromium, headless, driven by Playwright.

A short real tiny_mesh run writes report.html; Chromium must load it offline with no console error,
draw every mesh (non-background pixels), and turn a mesh (and its start/now partner) when it is
dragged; the eval-motion page must animate its skeletons and the bench-edit page must show its images.
Outside CI the tests are skipped, with the reason, when Chromium or Playwright is missing; in CI
(``CI=true``) a missing browser is a failure.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageChops, ImageStat

from r3d.cli.main import main
from r3d.motion.artifacts import Motion

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BACKGROUND = (244, 245, 247)  # the cells' background, #f4f5f7


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def browser():
    """A headless system Chromium; skip (fail in CI) when it or Playwright is missing."""
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("the playwright package is not installed (pip install -e '.[test]')")
    if not CHROMIUM.is_file():
        missing.append(f"{CHROMIUM} is missing (apt-get install chromium)")
    if missing:
        reason = "; ".join(missing)
        if _in_ci():
            pytest.fail(f"CI must test the reports in a real browser, but {reason}")
        pytest.skip(reason)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


class Visit:
    """A page opened from a file, recording console errors, page errors and every non-local request."""

    def __init__(self, browser, path: Path) -> None:
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page = browser.new_page(viewport={"width": 1200, "height": 900})
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", self._request)
        self.page.goto(path.resolve().as_uri())

    def _request(self, request) -> None:
        if not request.url.startswith(("file:", "data:", "blob:")):
            self.requests.append(request.url)

    def shot(self, locator) -> Image.Image:
        locator.scroll_into_view_if_needed()
        return Image.open(io.BytesIO(locator.screenshot())).convert("RGB")

    def check_clean(self) -> None:
        assert self.errors == [], self.errors
        assert self.requests == [], f"the page fetched {self.requests}"


def foreground(image: Image.Image) -> float:
    """Fraction of pixels that differ clearly from the cells' background."""
    diff = ImageChops.difference(image, Image.new("RGB", image.size, BACKGROUND)).convert("L")
    return float((np.asarray(diff) > 24).mean())


def change(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute pixel difference (0-255) between two screenshots."""
    return ImageStat.Stat(ImageChops.difference(a, b).convert("L")).mean[0]


@pytest.fixture(scope="module")
def run_report(tmp_path_factory) -> Path:
    """report.html of a real, short tiny_mesh run (start and end evaluations, 2 samples per prompt)."""
    out = tmp_path_factory.mktemp("report") / "run"
    sets = ["train.iterations=1", "eval.every=1", "train.group_size=4", "eval.samples_per_prompt=2"]
    argv = ["grpo", str(REPO / "recipes" / "tiny_mesh.yaml"), "--out", str(out)]
    assert main([*argv, *[a for s in sets for a in ("--set", s)]]) == 0
    return out / "report.html"


def test_run_report_meshes_draw_and_turn_when_dragged(browser, run_report):
    """Chromium opens the run's report offline with no console error; every mesh viewer draws the
    mesh (non-background pixels); dragging one turns its view and its start/now partner's; the wheel
    zooms. Catches: a broken import map (no mesh ever ready), a blank canvas, controls not wired."""
    visit = Visit(browser, run_report)
    page = visit.page
    page.wait_for_function(
        "() => [...document.querySelectorAll('.mesh')].every(e => e.dataset.ready)", timeout=90_000
    )
    assert page.locator(".mesh").count() == 16  # 4 prompts x 2 samples x (start, end)
    assert page.evaluate("[...document.querySelectorAll('.mesh')].every(e => e.dataset.ready === '1')")
    first, partner = page.locator(".mesh canvas").nth(0), page.locator(".mesh canvas").nth(1)
    before, partner_before = visit.shot(first), visit.shot(partner)
    assert foreground(before) > 0.05 and foreground(partner_before) > 0.05
    box = first.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 70, y + 25, steps=8)
    page.mouse.up()
    page.wait_for_timeout(300)
    turned = visit.shot(first)
    assert change(before, turned) > 2.0
    assert change(partner_before, visit.shot(partner)) > 2.0  # the pair turns together
    assert foreground(turned) > 0.05
    page.mouse.move(x, y)
    page.mouse.wheel(0, -400)
    page.wait_for_timeout(300)
    zoomed = visit.shot(first)
    assert change(turned, zoomed) > 1.0 and foreground(zoomed) > foreground(turned)
    visit.check_clean()
    assert "reward" in page.locator("svg.chart").first.text_content()


def _walking(frames: int = 40) -> Motion:
    feats = np.zeros((frames, 263), np.float32)
    feats[:, 2] = 0.04  # root forward velocity (m / frame)
    feats[:, 3] = 0.95  # root height
    feats[:, 4:67] = np.tile(
        np.linspace(-0.4, 0.4, 63, dtype=np.float32), (frames, 1)
    )  # joints around the root
    return Motion(feats)


def test_motion_page_animates_skeletons(browser, tmp_path):
    """The eval-motion page loads with no console error and its skeletons move: the same canvas
    differs between two moments and shows non-background pixels."""
    from r3d.report.motion import write_motion_report

    report = {
        "settings": {
            "source": "test",
            "evaluator": "tiny-t2m",
            "reference": "synthetic",
            "replications": 2,
            "num_samples": 32,
        },
        "summary": {
            "FID": {"generated": [1.5, 0.2]},
            "Diversity": {"ground truth": [9.0, 0.1], "generated": [8.0, 0.3]},
        },
    }
    path = write_motion_report(
        report, [("generated", "a man walks", [_walking(), _walking(30)])], tmp_path / "m.html"
    )
    visit = Visit(browser, path)
    canvas = visit.page.locator(".motion canvas").first
    visit.page.wait_for_timeout(200)
    a = visit.shot(canvas)
    visit.page.wait_for_timeout(700)
    b = visit.shot(canvas)
    assert foreground(a) > 0.01 and change(a, b) > 0.1
    assert "8.0000 ± 0.3000" in visit.page.locator("table").inner_text()
    visit.check_clean()


def test_bench_edit_page_shows_its_images(browser, tmp_path):
    """The bench-edit page loads with no console error and every source / edited image decodes."""
    from test_report import bench_folder

    from r3d.edit.report import html_report

    report, samples, out = bench_folder(tmp_path)
    visit = Visit(browser, html_report(report, samples, out))
    sizes = visit.page.evaluate("[...document.images].map(i => i.complete ? i.naturalWidth : 0)")
    assert len(sizes) == 5 and all(w > 0 for w in sizes)
    assert "Samples without a score (2)" in visit.page.content()
    visit.check_clean()
