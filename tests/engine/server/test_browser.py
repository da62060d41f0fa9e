"""The upload page in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``).

Drives selenium with the system chromedriver (no browser downloads); skipped with the reason
when either is missing. Saves a screenshot of the result page under ``artifacts/browser/``
(git-ignored) and prints its path.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.engine.server.conftest import live_server

REPO = Path(__file__).resolve().parents[2]
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = REPO / "artifacts" / "browser"


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    binary = _chromium()
    if binary is None or not Path(CHROMEDRIVER).exists():
        pytest.skip(
            "headless Chromium not installed: apt-get install -y chromium chromium-driver "
            f"(need a chromium binary and {CHROMEDRIVER})"
        )
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1200,2400",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        opts.add_argument(flag)
    from selenium.webdriver.chrome.service import Service

    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_upload_page_shows_result_in_headless_chromium(browser, serve_engine, shared_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    video = shared_dir / "videos" / "dfdc_like_fake.mp4"
    with live_server(serve_engine, tmp_path / "data") as base:
        browser.get(base + "/")
        slider = browser.find_element(By.ID, "seq_slider")
        # the original's steps: index 0 is 10 frames
        browser.execute_script(
            "arguments[0].value = 0; arguments[0].dispatchEvent(new Event('input'))", slider
        )
        assert browser.find_element(By.ID, "seq_len").get_attribute("value") == "10"
        assert browser.find_element(By.ID, "seq_out").text == "10"
        browser.find_element(By.ID, "video").send_keys(str(video))
        browser.find_element(By.ID, "submit").click()
        WebDriverWait(browser, 180).until(ec.presence_of_element_located((By.ID, "label")))
        label = browser.find_element(By.ID, "label").text
        confidence = browser.find_element(By.ID, "confidence").text
        assert label in ("REAL", "FAKE")
        assert confidence.endswith("%") and 50 <= float(confidence[:-1]) <= 100

        def loaded(selector: str) -> list:
            imgs = browser.find_elements(By.CSS_SELECTOR, selector)
            ok = browser.execute_script(
                "return arguments[0].every(i => i.complete && i.naturalWidth > 0)", imgs
            )
            assert ok, f"{selector}: an image did not load"
            return imgs

        assert len(loaded("#crops img")) == 10
        assert len(loaded("#person_0_crops img")) == 10  # the scored person's panel
        assert len(loaded("#heatmaps img")) == 10
        assert len(loaded("#frames img")) == 10
        chart = loaded("#chart")
        assert chart[0].size["width"] > 300
        assert browser.find_element(By.ID, "timings").text.count("ms") >= 4
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "upload_result.png"
        browser.save_screenshot(str(shot))
        print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000
