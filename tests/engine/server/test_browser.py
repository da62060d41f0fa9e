"""The upload page in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``).

Drives selenium with the system chromedriver (no browser downloads); skipped with the reason
when either is missing. Uploads one video per verdict (FAKE, REAL, UNCERTAIN, NO_FACE, and a
clip of two people) and saves a screenshot of each result page under the test's ``tmp_path``
(never into the repository; the paths are printed).

The verdicts come from the tiny test model: copies of it are calibrated (temperature 1) with
thresholds chosen from its own scores of the clips, so that one clip reads FAKE and another REAL;
a clip made grayscale reads UNCERTAIN (GRAYSCALE_SOURCE); a clip of colour gradients has no face.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.engine.server.conftest import (
    calibrated_copy,
    grayscale_video,
    live_server,
    no_face_video,
    side_by_side_video,
    thresholds_between,
)

CHROMEDRIVER = "/usr/bin/chromedriver"
SEQ_LEN = 4
CANDIDATES = ("pair480p_fake.mp4", "pair480p_real.mp4", "dfdc_like_fake.mp4", "dfdc_like_real.mp4")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _start_chromium(tmp_path: Path, *extra: str):
    """A headless Chromium under selenium (skips the test when either is missing)."""
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
        "--window-size=1200,1800",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *extra,
    ):
        opts.add_argument(flag)
    from selenium.webdriver.chrome.service import Service

    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    return driver


@pytest.fixture
def browser(tmp_path):
    driver = _start_chromium(tmp_path)
    yield driver
    driver.quit()


@pytest.fixture
def camera_browser(tmp_path, shared_dir):
    """Chromium whose camera is a fake device playing 4 s of the 480p clip (looped), scaled to
    640 px wide (a .y4m made with ffmpeg); permission prompts are accepted."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("needs Debian's ffmpeg CLI to make the fake camera's video (make setup)")
    y4m = tmp_path / "camera.y4m"
    subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-i",
                    str(shared_dir / "videos" / "pair480p_real.mp4"), "-t", "4", "-vf",
                    "scale=640:-2", "-pix_fmt", "yuv420p", str(y4m)],
                   check=True, timeout=120)  # fmt: skip
    driver = _start_chromium(
        tmp_path,
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={y4m}",
    )
    yield driver
    driver.quit()


def _engine(model: Path, shared_dir: Path, **options):
    from engine.api import Engine

    engine = Engine.load(
        model, backend="ort", models_dir=str(shared_dir / "models"), download=False, **options
    )
    engine.prepare()
    return engine


def _wait(browser, seconds: float):
    """A WebDriverWait that checks every 50 ms (Selenium's default is 500 ms)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, seconds, poll_frequency=0.05)


def _upload(browser, base: str, video: Path, *, check_slider: bool = False) -> None:
    """Upload ``video`` through the form (SEQ_LEN frames) and wait for its result page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    browser.get(base + "/")
    if check_slider:  # the original's steps: index 0 is 10 frames
        slider = browser.find_element(By.ID, "seq_slider")
        browser.execute_script(
            "arguments[0].value = 0; arguments[0].dispatchEvent(new Event('input'))", slider
        )
        assert browser.find_element(By.ID, "seq_len").get_attribute("value") == "10"
        assert browser.find_element(By.ID, "seq_out").text == "10"
    # fewer frames than the slider offers, to keep the test short
    browser.execute_script(f"document.getElementById('seq_len').value = {SEQ_LEN}")
    browser.find_element(By.ID, "video").send_keys(str(video))
    browser.find_element(By.ID, "submit").click()
    _wait(browser, 180).until(ec.presence_of_element_located((By.ID, "verdict")))


def _loaded(browser, selector: str, seconds: float = 10.0) -> list:
    """The images at ``selector``, once every one has loaded (decoded, non-zero width) within
    ``seconds``; fails naming the selector otherwise. (A just-changed ``src`` is still loading
    when the click returns: checked at once, it failed once on a loaded machine.)"""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By

    def all_loaded(b) -> list | bool:
        imgs = b.find_elements(By.CSS_SELECTOR, selector)
        ok = b.execute_script(
            "return arguments[0].length > 0 && "
            "arguments[0].every(i => i.complete && i.naturalWidth > 0)",
            imgs,
        )
        return imgs if ok else False

    try:
        return _wait(browser, seconds).until(all_loaded)
    except TimeoutException:
        raise AssertionError(f"{selector}: an image did not load in {seconds} s") from None


def _badge(browser, ident: str = "verdict") -> tuple[str, str, str, str]:
    """(data-verdict, words, amount or '', caption) of a verdict badge."""
    from selenium.webdriver.common.by import By

    badge = browser.find_element(By.ID, ident)
    amount = badge.find_elements(By.ID, f"{ident}_p")
    return (
        badge.get_attribute("data-verdict"),
        badge.find_element(By.ID, f"{ident}_words").text,
        amount[0].text if amount else "",
        badge.find_element(By.ID, f"{ident}_caption").text,
    )


def _percent(text: str) -> float:
    assert text.endswith("%"), text
    return float(text.strip("<>%"))


def _shot(browser, path: Path) -> Path:
    from selenium.webdriver.common.by import By

    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1200, min(max(height + 300, 900), 5000))
    browser.find_element(By.TAG_NAME, "body").screenshot(str(path))
    print(f"screenshot: {path}")
    assert path.stat().st_size > 10_000
    return path


def test_result_page_shows_each_verdict_in_headless_chromium(
    browser, tiny_model, serve_engine, shared_dir, tmp_path
):
    from selenium.webdriver.common.by import By

    videos = shared_dir / "videos"
    # the tiny model's own scores: the highest-scored clip reads FAKE, the lowest REAL
    scores = {
        name: serve_engine.predict(videos / name, seq_len=SEQ_LEN).p_fake for name in CANDIDATES
    }
    high, low = max(scores, key=scores.get), min(scores, key=scores.get)
    limits = thresholds_between(scores[high], scores[low])
    engine = _engine(calibrated_copy(tiny_model, tmp_path / "calibrated", **limits), shared_dir)
    clips = tmp_path / "clips"
    clips.mkdir()
    fake_clip = shutil.copy(videos / high, clips / "clip_a.mp4")  # neutral names on the page
    real_clip = shutil.copy(videos / low, clips / "clip_b.mp4")
    gray_clip = grayscale_video(videos / "pair480p_real.mp4", clips / "grayscale.mp4")
    no_face_clip = no_face_video(clips / "gradients.mp4")
    shots = tmp_path / "screenshots"
    shots.mkdir()

    with live_server(engine, tmp_path / "data") as base:
        # FAKE: "Manipulated" with the calibrated p_fake as a percentage, one person
        _upload(browser, base, Path(fake_clip), check_slider=True)
        verdict, words, amount, caption = _badge(browser)
        assert (verdict, words) == ("FAKE", "Manipulated")
        assert _percent(amount) == pytest.approx(scores[high] * 100, abs=0.06)
        assert "calibrated probability that it is manipulated" in caption
        assert "1 person was found" in browser.find_element(By.ID, "people_intro").text
        assert "4 frames analysed" in browser.find_element(By.ID, "details").text
        assert browser.find_element(By.ID, "person_0_verdict").get_attribute("data-verdict") == (
            "FAKE"
        )
        assert "4 frames" in browser.find_element(By.ID, "person_0").text
        assert "Calibrated model" in browser.find_element(By.ID, "model_note").text
        assert len(_loaded(browser, "#crops img")) == SEQ_LEN
        assert len(_loaded(browser, "#person_0_crops img")) == SEQ_LEN
        assert len(_loaded(browser, "#heatmaps img")) == SEQ_LEN
        assert len(_loaded(browser, "#frames img")) == SEQ_LEN
        assert _loaded(browser, "#chart")[0].size["width"] > 300
        assert browser.find_element(By.ID, "timings").text.count("ms") >= 4
        _shot(browser, shots / "fake.png")

        # REAL: "Authentic" with the probability that it is authentic
        _upload(browser, base, Path(real_clip))
        verdict, words, amount, caption = _badge(browser)
        assert (verdict, words) == ("REAL", "Authentic")
        assert _percent(amount) == pytest.approx((1 - scores[low]) * 100, abs=0.06)
        assert "probability that it is authentic" in caption
        assert "1 person was found" in browser.find_element(By.ID, "people_intro").text
        _shot(browser, shots / "real.png")

        # UNCERTAIN: "Cannot tell", the main reason in words, no percentage as a verdict
        _upload(browser, base, gray_clip)
        verdict, words, amount, caption = _badge(browser)
        assert (verdict, words, amount) == ("UNCERTAIN", "Cannot tell", "")
        assert "has no colour" in caption
        reasons = browser.find_elements(By.CSS_SELECTOR, "#reasons li")
        assert reasons[0].get_attribute("data-reason") == "GRAYSCALE_SOURCE"
        quality = browser.find_element(By.ID, "quality").text
        assert "colourfulness" in quality and "at least 1.5" in quality
        assert "1 person was found" in browser.find_element(By.ID, "people_intro").text
        _shot(browser, shots / "uncertain.png")

        # NO_FACE: "No face to judge", no percentage, no person panel, no heatmaps
        _upload(browser, base, no_face_clip)
        verdict, words, amount, caption = _badge(browser)
        assert (verdict, words, amount) == ("NO_FACE", "No face to judge", "")
        assert "no face was found" in caption.lower()
        for absent in ("#people_intro", ".person", "#heatmaps", "#crops", "#chart"):
            assert browser.find_elements(By.CSS_SELECTOR, absent) == [], absent
        assert "%" not in browser.find_element(By.ID, "verdict_box").text
        assert "4 frames analysed" in browser.find_element(By.ID, "details").text
        assert len(_loaded(browser, "#frames img")) == SEQ_LEN
        _shot(browser, shots / "no_face.png")


def test_result_page_of_two_people_names_the_deciding_person(
    browser, tiny_model, serve_engine, shared_dir, tmp_path
):
    """Every person scored (--faces all): each panel has its own verdict badge, and the video's
    verdict names the person who decided it."""
    from selenium.webdriver.common.by import By

    videos = shared_dir / "videos"
    clip = side_by_side_video(
        videos / "pair480p_fake.mp4", videos / "dfdc_like_real.mp4", tmp_path / "two.mp4"
    )
    probe = _engine(tiny_model, shared_dir, faces="all")
    rec = probe.predict(clip, seq_len=SEQ_LEN).to_record()
    assert rec["people"] == 2 and len(rec["tracks"]) == 2, rec["tracks"]
    p = sorted(t["p_fake"] for t in rec["tracks"])
    model = calibrated_copy(tiny_model, tmp_path / "calibrated", **thresholds_between(p[1], p[0]))
    engine = _engine(model, shared_dir, faces="all")
    with live_server(engine, tmp_path / "data") as base:
        _upload(browser, base, clip)
        assert _badge(browser)[:2] == ("FAKE", "Manipulated")
        intro = browser.find_element(By.ID, "people_intro").text
        assert "2 people were found" in intro and "2 people were scored" in intro
        panels = browser.find_elements(By.CSS_SELECTOR, ".person")
        verdicts = [_badge(browser, f"person_{k}_verdict")[0] for k in range(len(panels))]
        assert sorted(verdicts) == ["FAKE", "REAL"]
        decider = verdicts.index("FAKE")
        decided = browser.find_element(By.ID, "decided_by").text
        assert f"person {decider + 1} of 2" in decided
        assert "decided the verdict" in panels[decider].text
        assert "decided the verdict" not in panels[1 - decider].text
        assert all("4 frames" in panel.text for panel in panels)
        for k in range(2):
            assert len(_loaded(browser, f"#person_{k}_crops img")) == SEQ_LEN
        _shot(browser, tmp_path / "two_people.png")


def test_timeline_chart_click_shows_that_moment_in_headless_chromium(
    browser, serve_engine, shared_dir, tmp_path
):
    """A job with the "Whole video timeline" box checked: the page draws the person's chart
    (SVG) and clicking it late in the video, or a segment in the list, shows the thumbnail of
    the frame nearest that moment and the person's face there."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    clip = shutil.copy(shared_dir / "videos" / "pair480p_fake.mp4", tmp_path / "clip.mp4")
    with live_server(serve_engine, tmp_path / "data") as base:
        browser.get(base + "/")
        box = browser.find_element(By.ID, "timeline")
        assert not box.is_selected()  # off by default
        box.click()
        browser.execute_script(f"document.getElementById('seq_len').value = {SEQ_LEN}")
        browser.find_element(By.ID, "video").send_keys(str(clip))
        browser.find_element(By.ID, "submit").click()
        _wait(browser, 180).until(lambda b: b.find_elements(By.ID, "verdict"))
        chart = browser.find_element(By.CSS_SELECTOR, "svg.timeline")
        assert chart.size["width"] > 600
        assert browser.find_elements(By.CSS_SELECTOR, "svg.timeline .segment")
        frame = _loaded(browser, "#tl_frame")[0]
        _loaded(browser, "#tl_crop")
        first = frame.get_attribute("src")
        assert "/files/tl_frame_" in first
        cursor = browser.find_element(By.CSS_SELECTOR, "svg.timeline .cursor")
        assert cursor.get_attribute("visibility") == "hidden"

        # click at 90% of the chart's width: the thumbnail near the video's end
        ActionChains(browser).move_to_element_with_offset(
            chart, int(chart.size["width"] * 0.4), 0
        ).click().perform()
        _wait(browser, 10).until(lambda b: frame.get_attribute("src") != first)
        late = frame.get_attribute("src")
        _loaded(browser, "#tl_frame")
        crop = _loaded(browser, "#tl_crop")[0]
        assert crop.is_displayed() and "/files/tl_p0_" in crop.get_attribute("src")
        assert cursor.get_attribute("visibility") == "visible"
        assert float(cursor.get_attribute("x1")) > 0.75 * 900
        caption = browser.find_element(By.ID, "tl_caption").text
        assert caption.startswith("frame ") and " at 0:0" in caption
        assert "person 1: p_fake" in browser.find_element(By.ID, "tl_crop_caption").text
        index = int(frame.get_attribute("data-index"))
        assert f"tl_frame_{index:05d}.jpg" in late and index > 150  # 24 fps: past 6 s

        # a segment in words jumps to its start
        link = browser.find_element(By.CSS_SELECTOR, "#segments a")
        assert link.text.startswith("Manipulated from 0:00.")
        link.click()
        _wait(browser, 10).until(lambda b: frame.get_attribute("src") != late)
        assert int(frame.get_attribute("data-index")) < 24
        _shot(browser, tmp_path / "timeline.png")


_DRAWN = """
const S = window.dfeLive, line = S.lines[S.lines.length - 1];
const id = 'live_track_' + (line.track === null ? 'none' : String(line.track));
const badge = document.getElementById(id + '_badge');
return {line: line, verdict: badge.dataset.verdict, cls: badge.className,
  border: getComputedStyle(badge).borderTopColor,
  words: document.getElementById(id + '_words').textContent,
  p: document.getElementById(id + '_p').textContent,
  info: document.getElementById(id + '_info').textContent,
  counts: document.getElementById('live_counts').textContent,
  reasons: [...document.querySelectorAll('#' + id + '_reasons li')].map(li => li.dataset.reason),
  spark: document.querySelectorAll('#' + id + '_spark path').length,
  lines: S.lines.length, sent: S.sent, acked: S.acked, maxInFlight: S.maxInFlight,
  errors: S.errors};
"""
#: The border colour of each verdict's badge (the page's styles).
_BORDERS = {"FAKE": "rgb(204, 34, 34)", "REAL": "rgb(34, 136, 34)",
            "UNCERTAIN": "rgb(224, 160, 48)", "NO_FACE": "rgb(136, 136, 136)"}  # fmt: skip


def test_live_mode_draws_each_persons_rolling_verdict_from_the_camera(
    camera_browser, serve_engine, tmp_path
):
    """Live mode in headless Chromium with a fake camera: Camera opens it, frames go over the
    WebSocket, the person's panel shows the badge, the percentage and the reasons of the last
    line the server sent, and Stop ends the session with a clean close (1000). A page the
    browser would not give the camera to says why live mode is unavailable."""
    from selenium.webdriver.common.by import By

    from engine.server.pages import VERDICT_WORDS

    browser = camera_browser
    with live_server(serve_engine, tmp_path / "data") as base:
        # a page the browser does not trust with the camera (plain http, not localhost) says why
        hidden = browser.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument",
            {"source": "Object.defineProperty(window, 'isSecureContext', {value: false})"},
        )
        browser.get(base + "/")
        box = browser.find_element(By.ID, "live_unavailable")
        assert box.is_displayed() and "only to pages served over https or from localhost" in (
            box.text
        )
        assert not browser.find_element(By.ID, "live_camera").is_enabled()
        browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", hidden)

        browser.get(base + "/")
        assert not browser.find_element(By.ID, "live_unavailable").is_displayed()
        assert browser.find_element(By.ID, "live_stop").get_attribute("disabled")
        browser.find_element(By.ID, "live_camera").click()
        _wait(browser, 60).until(
            lambda b: b.execute_script("return window.dfeLive.lines.length") >= 2
        )
        drawn = browser.execute_script(_DRAWN)
        line = drawn["line"]
        print("drawn:", {k: v for k, v in drawn.items() if k != "line"})
        assert drawn["errors"] == []
        assert line["event"] == "verdict" and line["track"] == 0  # the clip's one person
        assert drawn["verdict"] == line["verdict"] in VERDICT_WORDS
        assert drawn["cls"] == f"badge small {line['verdict']}"
        assert drawn["border"] == _BORDERS[line["verdict"]]  # the page's badge styles apply
        assert drawn["words"] == VERDICT_WORDS[line["verdict"]]
        assert _percent(drawn["p"]) == pytest.approx(line["p_fake_calibrated"] * 100, abs=0.06)
        assert drawn["reasons"] == line["reasons"]  # all of them: the caption is the percentage
        assert drawn["info"].startswith(f"at {line['time']:.1f} s · latency ")
        assert drawn["spark"] == 1  # the sparkline of the person's p_fake
        assert line["frames"] >= 2  # frames the scorer was too busy for are counted, and said:
        assert f", {line['dropped']} by the scorer (behind)." in drawn["counts"]
        assert drawn["acked"] >= line["frames"] and drawn["maxInFlight"] <= 2
        assert browser.find_element(By.ID, "live_video").get_property("videoWidth") == 640
        _shot(browser, tmp_path / "live.png")

        browser.find_element(By.ID, "live_stop").click()
        _wait(browser, 30).until(lambda b: b.execute_script("return window.dfeLive.closed"))
        state = browser.execute_script(
            "const S = window.dfeLive; return {closed: S.closed, record: S.closedRecord, "
            "summary: S.summary, video: document.getElementById('live_video').srcObject}"
        )
        assert state["closed"] == {"code": 1000, "reason": "stopped by the client", "clean": True}
        assert state["record"]["code"] == 1000 and state["record"]["dropped"]["rate"] == 0
        assert state["summary"]["end"] == "eof" and state["summary"]["frames_scored"] >= 2
        assert state["video"] is None  # the camera is released
        status = browser.find_element(By.ID, "live_status").text
        assert status == "stopped: the connection closed cleanly"
        assert browser.find_element(By.ID, "live_camera").is_enabled()
