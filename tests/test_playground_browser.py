"""The playground in a real browser: headless Chromium draws a 1 and a 0, and the networks read them.

The page is served by the real command (``python -m common.playground --port 0``); Debian's
``chromium`` is driven through its ``chromedriver`` by the small W3C WebDriver client in
``tests/webdriver.py`` (why not Selenium: see its docstring; in short, no new package and nothing
that could try to download a driver). The strokes are W3C pointer actions on the canvas (a mouse
for the 1, a pen for the 0), so the page's Pointer Events code runs as it does for a person; the
answers are read from the page's data attributes, waiting with a timeout for the answer to the
latest drawing.

Without the browser the test skips with one line, unless ``REQUIRE_BROWSER=1`` (CI sets it after
installing the browser), where it fails. ``PLAYGROUND_SCREENSHOT=docs/playground.png`` also writes
the screenshot there (the README's picture)::

    PLAYGROUND_SCREENSHOT=docs/playground.png python -m pytest tests/test_playground_browser.py
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from webdriver import Playground, WebDriver, browser_paths

from common.files import atomic_open

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHECKED_FROM = "04"
"""Stages from this number on must read both drawings right; earlier ones may not."""
ANSWERS = """
const status = document.getElementById("status"), canvas = document.getElementById("draw");
if (status.dataset.state !== "ready" || status.dataset.version !== canvas.dataset.version) return null;
return Object.fromEntries([...document.querySelectorAll(".stage")].map(card => [card.dataset.stage, card.dataset.top]));
"""
"""Every stage's top digit, once the page shows the answer to the latest drawing (else null)."""
STATUS = 'return document.getElementById("status").textContent'
INPUT_INK = """
const pixels = document.getElementById("input").getContext("2d").getImageData(0, 0, 140, 140).data;
let ink = 0;
for (let i = 0; i < pixels.length; i += 4) ink += pixels[i] > 128;
return ink;
"""
"""How many pixels of the 28x28 preview (drawn 140x140) are bright."""


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory):
    """A headless Chromium on the playground's page, served by the real command."""
    chromium, chromedriver = browser_paths()
    if not (chromium and chromedriver):
        missing = " and ".join(name for name, path in (("chromium", chromium), ("chromedriver", chromedriver))
                               if not path)
        reason = f"{missing} not on PATH (apt-get install chromium chromium-driver)"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    server = Playground()
    browser = None
    try:
        browser = WebDriver(chromium, chromedriver, tmp_path_factory.mktemp("chromedriver") / "log.txt")
        browser.open(server.url + "/")
        yield browser
    finally:
        if browser is not None:
            browser.quit()
        server.stop()


def vertical_stroke() -> list[tuple[int, int]]:
    """A "1": straight down through the canvas centre, pixels from the centre."""
    return [(0, y) for y in range(-95, 96, 19)]


def closed_loop() -> list[tuple[int, int]]:
    """A "0": an upright ellipse, 60 x 90 pixels of half-axes, closed where it started."""
    return [(round(60 * math.sin(2 * math.pi * k / 40)), round(-90 * math.cos(2 * math.pi * k / 40)))
            for k in range(41)]


def read_drawing(page: WebDriver, points: list[tuple[int, int]], pointer: str) -> dict[str, str]:
    """Clear, draw one stroke, and wait for every stage's answer: ``{stage name: top digit}``."""
    page.click("#clear")
    page.draw(page.find("#draw"), points, pointer)
    answers = page.wait_for(ANSWERS)
    assert answers, f"no answer to the drawing; the page says: {page.script(STATUS)}"
    return answers


def checked(answers: dict[str, str]) -> dict[str, str]:
    """The answers of the stages that must get both digits right (04 and later)."""
    return {name: top for name, top in answers.items() if name[:2] >= CHECKED_FROM}


def test_a_vertical_stroke_is_a_1_for_stage_04_and_later(page: WebDriver):
    answers = read_drawing(page, vertical_stroke(), "mouse")
    assert len(checked(answers)) >= 3, f"stages 04, 05 and 06 should all answer: {answers}"
    assert set(checked(answers).values()) == {"1"}, answers
    assert page.script(INPUT_INK) > 0, "the 28x28 preview shows no ink"


def test_a_closed_loop_is_a_0_and_the_page_is_photographed(page: WebDriver, tmp_path: Path):
    answers = read_drawing(page, closed_loop(), "pen")
    assert len(checked(answers)) >= 3, answers
    assert set(checked(answers).values()) == {"0"}, answers
    milliseconds = float(page.script('return document.getElementById("timing").dataset.milliseconds'))
    assert 0 < milliseconds < 1000, milliseconds
    picture = page.screenshot()
    assert picture.startswith(PNG_SIGNATURE)
    (tmp_path / "playground.png").write_bytes(picture)
    wanted = os.environ.get("PLAYGROUND_SCREENSHOT")
    if wanted:
        with atomic_open(wanted) as handle:
            handle.write(picture)


def test_a_transform_button_changes_what_the_networks_see(page: WebDriver):
    before = page.script('return document.getElementById("input").toDataURL()')
    page.click("#shift-right")
    assert page.wait_for(ANSWERS), "no answer after shifting the digit"
    assert page.script('return document.getElementById("transform-state").dataset.shift') == "1,0"
    assert page.script('return document.getElementById("input").toDataURL()') != before
    page.click("#reset-transform")
    assert page.wait_for(ANSWERS)
