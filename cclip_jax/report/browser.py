"""Headless Chromium: the report's rendered DOM and screenshots (tests, README images).

Chromium runs with a throw-away profile per call, so parallel calls (pytest -n) never share or
lock one, and with `--no-sandbox`, which it needs when run as root (CI containers).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class ChromiumNotFoundError(RuntimeError):
    """No headless Chromium on PATH."""


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) binary on PATH, or None."""
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def _run(html_path: str, args: list[str], timeout: float) -> str:
    binary = find_chromium()
    if binary is None:
        raise ChromiumNotFoundError(
            "headless Chromium is needed for this and none is on PATH "
            f"(looked for {', '.join(BROWSERS)}); on Debian: apt-get install chromium"
        )
    url = pathlib.Path(os.path.abspath(html_path)).as_uri()
    with tempfile.TemporaryDirectory(prefix="cclip_chromium_") as profile:
        cmd = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            *args,
            url,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited with {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout


def dump_dom(html_path: str, timeout: float = 120) -> str:
    """The page's DOM after `load` (scripts run, images settled), serialised as HTML."""
    return _run(html_path, ["--dump-dom"], timeout)


def screenshot(
    html_path: str, png_path: str, width: int = 1200, height: int = 1600, timeout: float = 120
) -> str:
    """Renders `html_path` in a `width` × `height` window into `png_path`; returns `png_path`.

    Raises:
      ChromiumNotFoundError: no Chromium on PATH.
      RuntimeError: Chromium failed or wrote no image.
    """
    os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
    if os.path.exists(png_path):
        os.remove(png_path)  # so a stale file can never pass for this call's output
    _run(
        html_path,
        [f"--screenshot={os.path.abspath(png_path)}", f"--window-size={width},{height}"],
        timeout,
    )
    if not os.path.exists(png_path):
        raise RuntimeError(f"chromium wrote no screenshot to {png_path}")
    return png_path
