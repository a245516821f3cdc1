"""The HTML report as a reader sees it: rendered by a real headless Chromium (Debian's ``chromium``
and ``chromium-driver``, driven through selenium), every image decoded, the tables laid out, no
console error, and a screenshot of the whole page written next to the report.

Skipped, saying which piece is missing, where there is no browser; ``.ci/run`` installs both
packages, so CI runs it.
"""
import base64
import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from fact_fast import report, train
from fact_fast.utils.checkpoint import load_checkpoint

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TINY = ["--model", "fact_test", "--image-size", "64", "--dataset-kwargs", "num_samples=64", "--batch-size", "16",
        "--no-progress", "--threads", "1", "--warmup-epochs", "0.5"]


def _missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"no browser: {CHROMIUM} is absent (apt-get install chromium chromium-driver)"
    if not os.path.exists(CHROMEDRIVER):
        return f"no browser driver: {CHROMEDRIVER} is absent (apt-get install chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (requirements/dev.txt)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # the network is closed to tests: these keep Chromium from reaching out (updates, sync, QUIC probes)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("run"))
    assert train.main(TINY + ["--epochs", "2", "--out", run]) == 0
    out = str(tmp_path_factory.mktemp("report"))
    assert report.main([run, "--out", out, "--no-progress"]) == 0
    return run, out


# per <img>: the file its caption names, whether it finished loading, its decoded size, its laid-out size
IMAGES_JS = """
return Array.from(document.images).map(img => {
    const caption = img.nextElementSibling ? img.nextElementSibling.textContent : "";
    const file = (caption.match(/\\(([^()]+\\.png)\\)\\s*$/) || [null, null])[1];
    return {alt: img.alt, file: file, complete: img.complete, natural: [img.naturalWidth, img.naturalHeight],
            shown: [img.clientWidth, img.clientHeight]};
});
"""
TABLES_JS = """
return Array.from(document.querySelectorAll("table")).map(t => ({
    width: t.offsetWidth, height: t.offsetHeight,
    rows: Array.from(t.rows).map(r => Array.from(r.cells).map(c => [c.tagName, c.innerText, c.offsetWidth]))}));
"""


def _open(browser, path):
    browser.get("file://" + os.path.abspath(path))
    browser.get_log("browser")  # drop what an earlier page logged; what follows is this page's
    browser.refresh()
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def test_report_renders_in_a_browser(browser, report_dir):
    run, out = report_dir
    severe = _open(browser, os.path.join(out, "report.html"))
    assert severe == [], severe
    assert browser.title.startswith("fact_fast report:")

    images = browser.execute_script(IMAGES_JS)
    pngs = sorted(f for f in os.listdir(out) if f.endswith(".png"))
    assert sorted(i["file"] for i in images) == pngs and "codebook_usage.png" in pngs
    for img in images:
        assert img["complete"] and img["natural"][0] > 0, img
        with Image.open(os.path.join(out, img["file"])) as png:  # the embedded figure is the file's figure
            assert img["natural"] == list(png.size), img
        assert img["shown"][0] > 200 and img["shown"][1] > 100, img  # laid out, not collapsed

    summary, thresholds = browser.execute_script(TABLES_JS)
    ckpt = load_checkpoint(os.path.join(run, "best.pt"))
    test = json.load(open(os.path.join(run, "metrics_test.json")))
    cells = {row[0][1]: row[1][1] for row in summary["rows"]}
    assert cells["test mAP"] == f"{100 * test['mAP']:.2f}" and cells["classes"] == str(len(ckpt.class_names))
    with open(os.path.join(out, "thresholds.csv"), newline="") as fh:
        expected = list(csv.reader(fh))
    rows = thresholds["rows"]
    assert [c[1] for c in rows[0]] == expected[0] and {c[0] for c in rows[0]} == {"TH"}
    assert [r[0][1] for r in rows[1:]] == ckpt.class_names
    assert all(len(r) == len(expected[0]) and all(c[2] > 0 for c in r) for r in rows)  # every cell laid out
    assert thresholds["width"] > 400 and thresholds["height"] > 20 * len(rows)

    # the whole page, as a reader scrolls it, at a desktop width (the figures scale with the width)
    browser.set_window_size(1280, 1000)
    width, height = browser.execute_script("return [document.documentElement.scrollWidth, "
                                           "document.documentElement.scrollHeight]")
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    path = os.path.join(out, "report_screenshot.png")
    with open(path, "wb") as fh:
        fh.write(base64.b64decode(shot["data"]))
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("L")).astype(int)
    assert pixels.shape == (height, width) and height > 3000
    # painted where the layout put things: the last figure and the threshold table hold dark strokes
    for selector in ("img:last-of-type", "table:last-of-type"):
        top, bottom = browser.execute_script(
            f"const r = Array.from(document.querySelectorAll('{selector}')).pop().getBoundingClientRect();"
            "return [Math.round(r.top + window.scrollY), Math.round(r.bottom + window.scrollY)];")
        band = pixels[top:bottom]
        assert band.size and (band < 100).mean() > 0.005, (selector, top, bottom)
    assert (pixels[pixels.shape[0] // 2:] < 250).mean() > 0.05  # not a page blank below its middle


def test_a_broken_image_is_caught(browser, report_dir, tmp_path):
    """The checks above can fail: a figure cut short before its size does not decode in the browser."""
    _, out = report_dir
    html = open(os.path.join(out, "report.html")).read()
    start = html.index("data:image/png;base64,") + len("data:image/png;base64,")
    broken = tmp_path / "report.html"
    broken.write_text(html[:start + 12] + html[html.index("'", start):])  # signature only: no size
    _open(browser, str(broken))
    images = browser.execute_script(IMAGES_JS)
    assert [img["natural"][0] for img in images].count(0) == 1


def test_a_console_error_is_caught(browser, tmp_path):
    page = tmp_path / "error.html"
    page.write_text("<!DOCTYPE html><html><body><script>console.error('boom')</script></body></html>")
    severe = _open(browser, str(page))
    assert len(severe) == 1 and "boom" in severe[0]["message"]
