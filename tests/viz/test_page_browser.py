"""The replay page in a real browser: headless Chromium driven by selenium.

Needs Debian's ``chromium`` and ``chromium-driver`` (``bash scripts/install_browser.sh``) and the
``selenium`` package (a test dependency); skipped with the reason when one is missing, except where
FLEXMDM_REQUIRE_BROWSER is set (CI sets it: there, a missing browser fails the run). When the environment variable
FLEXMDM_SCREENSHOT is set, a screenshot of the page is also written there (that is how
docs/img/trace_page.png is made).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from flexmdm.constraints import Prompt
from flexmdm.viz import (
    read_trace_jsonl,
    render_page,
    replay_states,
    step_table,
    write_trace_jsonl,
)
from tests.viz.test_viz import LETTERS, VOCAB, letters_decode, sample_run

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not installed (run: bash scripts/install_browser.sh)"
    if not CHROMEDRIVER.exists():
        return f"{CHROMEDRIVER} not installed (run: bash scripts/install_browser.sh)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    reason = _missing()
    if reason and os.environ.get("FLEXMDM_REQUIRE_BROWSER"):
        pytest.fail(f"FLEXMDM_REQUIRE_BROWSER is set but {reason}")
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-extensions", "--window-size=1200,1000", "--force-device-scale-factor=1",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


TOKENS_JS = """
return Array.from(document.querySelectorAll('#sequence .tok')).map(function (el) {
  return el.classList.contains('mask') ? null : el.textContent;
});
"""

SEEK_JS = """
var slider = document.getElementById('step');
slider.value = String(arguments[0]);
slider.dispatchEvent(new Event('input', {bubbles: true}));
return Number(slider.max);
"""


def _seek(driver, k):
    return driver.execute_script(SEEK_JS, k)


def _decoded(ids):
    return [None if i == VOCAB.mask_id else text for i, text in zip(ids, letters_decode(ids))]


def test_page_replays_to_the_final_sample(browser, tmp_path):
    out = sample_run(0, batch=2, steps=32)
    path = write_trace_jsonl(out.trace, tmp_path / "trace.jsonl", vocab=VOCAB, final_sequences=out.sequences(),
                             metadata={"denoiser": "fake (phrase-leaning random logits)", "steps": 32})
    page = render_page(path, tmp_path / "page.html", decode=letters_decode, sequence=0,
                       title="FlexMDM: watching a sample grow")
    browser.get(page.as_uri())
    assert browser.find_elements("id", "sequence") and browser.find_elements("id", "step")
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors

    top = _seek(browser, 10**6)  # the browser clamps it to max
    final = browser.execute_script(TOKENS_JS)
    assert final == letters_decode(out.sequences()[0])
    assert all(text in LETTERS for text in final)
    assert browser.find_element("id", "length").text == str(len(final))
    assert browser.find_element("id", "masks").text == "0"

    # every intermediate state matches the Python replay of the same step
    header, events = read_trace_jsonl(path)
    states = {s["step"]: s["tokens"] for s in replay_states(header, events, 0)}
    table = step_table([e for e in events if e["sequence"] == 0])
    assert top == len(table)
    for k in range(top + 1):
        _seek(browser, k)
        expected = states[-1] if k == 0 else states[table[k - 1][0]]
        assert browser.execute_script(TOKENS_JS) == _decoded(expected), f"slider at {k}"
        masks = browser.execute_script("return document.querySelectorAll('#sequence .tok.mask').length")
        assert masks == expected.count(VOCAB.mask_id)

    for k in (top, 3, 5, 4, 0, top - 1, top):  # jumps both ways
        _seek(browser, k)
        expected = states[-1] if k == 0 else states[table[k - 1][0]]
        assert browser.execute_script(TOKENS_JS) == _decoded(expected), f"jump to {k}"

    # the play button runs to the end on its own
    _seek(browser, 0)
    browser.execute_script("var s = document.getElementById('speed'); s.value = '10';"
                           "s.dispatchEvent(new Event('change'));")
    browser.find_element("id", "play").click()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and browser.find_element("id", "counter").text != f"{top} / {top}":
        time.sleep(0.1)
    assert browser.find_element("id", "counter").text == f"{top} / {top}"
    assert browser.execute_script(TOKENS_JS) == final

    # screenshot at a state with both masks and tokens: the most telling picture
    middle = next((k for k in range(top + 1)
                   if k and states[table[k - 1][0]].count(VOCAB.mask_id) * 3 <= len(states[table[k - 1][0]])
                   and VOCAB.mask_id in states[table[k - 1][0]]), top)
    browser.execute_script("document.getElementById('speed').value = '1';")
    _seek(browser, top)
    _seek(browser, middle)  # backwards: replays from the start
    height, chrome = browser.execute_script(
        "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]")
    browser.set_window_size(1200, min(max(int(height) + int(chrome), 600), 2000))
    time.sleep(0.6)  # let the reveal animation settle
    shot = tmp_path / "trace_page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("FLEXMDM_SCREENSHOT"):
        target = Path(os.environ["FLEXMDM_SCREENSHOT"])
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


def test_page_with_a_prompt_and_hostile_token_strings(browser, tmp_path):
    prompt = Prompt.prefix([[19, 7, 4, 26]], VOCAB.pad_id)  # "the "
    out = sample_run(4, prompt=prompt, steps=12)
    evil = "</script><img src=x onerror=alert(1)>"

    def decode(ids):
        return [evil if i == 0 else text for i, text in zip(ids, letters_decode(ids))]

    page = render_page(read_trace_jsonl(write_trace_jsonl(out.trace, tmp_path / "t.jsonl")),
                       tmp_path / "page.html", decode=decode)
    browser.get(page.as_uri())
    start = browser.execute_script(TOKENS_JS)
    assert start == ["t", "h", "e", " "]
    prompt_tokens = browser.execute_script("return document.querySelectorAll('#sequence .tok.prompt').length")
    assert prompt_tokens == 4
    _seek(browser, 10**6)
    assert browser.execute_script(TOKENS_JS) == decode(out.sequences()[0])
    assert browser.execute_script("return document.querySelectorAll('#sequence img, #sequence b').length") == 0
