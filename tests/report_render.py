"""Rendering a report in headless Chromium for the report tests: the DOM after load, checked
to show every one of its images, and a screenshot checked not to be blank."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from cclip_jax import report
from cclip_jax.report import browser

needs_chromium = pytest.mark.skipif(
    browser.find_chromium() is None,
    reason="no headless Chromium on PATH (apt-get install chromium; .ci/run installs it)",
)

WINDOW = (1200, 900)


def render(html_path: str) -> tuple[str, int]:
    """The DOM after load, checked to show every one of its images; returns it and N."""
    dom = browser.dump_dom(html_path)
    n = len(re.findall(r"<img\b", dom))
    assert f'data-images-ok="{n}/{n}"' in dom, re.search(r"data-images-ok=\"[^\"]*\"", dom)
    return dom, n


def check_screenshot(html_path: str, png_path: str) -> None:
    """A `WINDOW`-sized screenshot of the page that shows more than a blank page."""
    report.screenshot(html_path, png_path, *WINDOW)
    with Image.open(png_path) as im:
        assert im.size == WINDOW
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 20  # text and plots, not a blank page
