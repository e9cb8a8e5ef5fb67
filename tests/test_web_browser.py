"""The spec's three clicks in a real browser (Debian's Chromium through chromium-driver + Selenium):
open the UI on a recorded case, click the slow trace, the slow span (on the chart itself), the root
finding — and the kernel events of that mechanism are on screen. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from isostack.report.view import kind_mechanisms
from tests.conftest import have
from tests.test_cases import CASES, load_case

ARTIFACTS = Path(os.environ.get("ISOSTACK_TEST_ARTIFACTS", Path(__file__).resolve().parent / "artifacts"))
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (have("chromium") and have("chromedriver")),
                       reason="needs Debian's chromium and chromium-driver (scripts/bootstrap.sh installs them)"),
]


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    # as root in a VM with no network: no sandbox, no GPU, none of Chromium's background connections
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,2200"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def _start_ui(data_dir: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "isostack", "--data-dir", str(data_dir), "ui", "--port", "0",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    text = ""
    while True:  # `--json` prints one object (pretty-printed) once listening
        line = proc.stdout.readline()
        assert line, f"isostack ui did not start: {proc.stderr.read() if proc.stderr else ''}"
        text += line
        try:
            return proc, json.loads(text)["url"]
        except json.JSONDecodeError:
            continue


def _wait(driver, predicate, what: str, timeout_s: float = 30.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(predicate, message=f"timed out waiting for {what}")


@pytest.mark.parametrize("case_dir", CASES, ids=[p.name for p in CASES])
def test_three_clicks_reach_the_kernel_events(case_dir: Path, tmp_path: Path, browser) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    store, truth, meta = load_case(case_dir, tmp_path / "store")
    proc, url = _start_ui(store.data_dir)
    try:
        browser.get(f"{url}?since={meta['inject_ns']}&until={meta['revert_ns']}")
        _wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded"), "the incidents")
        assert browser.find_element(By.ID, "verdict-answer").text
        row = browser.find_elements(By.CSS_SELECTOR, "tr.incident")[0]
        row.click()  # click 1: the slow trace
        _wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "trace", "the trace")
        span_id = row.get_attribute("data-span-id")
        if row.get_attribute("data-trace-id"):
            # click 2: the slow span, where the chart drew it (a real click on the canvas)
            chart = browser.find_element(By.ID, "xy")
            at = browser.execute_script("return window.isostackUI.spanPixel(arguments[0])", span_id)
            assert at, f"span {span_id} is not on the waterfall"
            size = chart.size
            ActionChains(browser).move_to_element_with_offset(
                chart, at["x"] - size["width"] / 2, at["y"] - size["height"] / 2).click().perform()
        # else: a service that stopped answering has no trace and no span; its chain opens with the incident
        _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "li.finding"), "the chain")
        root = browser.find_elements(By.CSS_SELECTOR, "li.finding")[0]
        assert (root.get_attribute("data-layer"), root.get_attribute("data-mechanism")) == \
            (truth["layer"], truth["mechanism"])
        stack_root = browser.find_element(By.CSS_SELECTOR, f"#stack [data-layer='{truth['layer']}']")
        assert "root" in stack_root.get_attribute("class")
        root.click()  # click 3: the root finding
        kinds = {k for k, ms in kind_mechanisms().items() if truth["mechanism"] in ms}
        rows = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#events-table tr.event"), "the events")
        shown = {r.get_attribute("data-kind") for r in rows}
        assert shown and shown <= kinds, f"events on screen {shown}, the mechanism reads {kinds}"
        assert all(r.is_displayed() for r in rows)
        # the lanes drew the same events at their real times (the chart's own data)
        drawn = browser.execute_script(
            "var o = window.isostackUI.state.xy.getOption(); return o.series[1].data.map(function (d) {"
            " return [d.ev.kind, d.value[0], d.value[1]]; });")
        assert any(k in kinds for k, _, _ in drawn)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        time.sleep(0.2)  # let the last repaint land before the screenshot
        browser.save_screenshot(str(ARTIFACTS / f"ui-{case_dir.name}.png"))
        severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
        assert not severe, severe
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_new_user_on_an_empty_store_is_told_what_feeds_it(tmp_path: Path, browser) -> None:
    from selenium.webdriver.common.by import By

    proc, url = _start_ui(tmp_path / "empty")
    try:
        browser.get(url)
        _wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded"), "the page")
        verdict = browser.find_element(By.ID, "verdict").text
        assert "No spans in the store yet." in verdict and "OTEL_EXPORTER_OTLP_ENDPOINT" in verdict
    finally:
        proc.terminate()
        proc.wait(timeout=10)
