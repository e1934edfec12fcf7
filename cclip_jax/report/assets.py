"""The report's files folder (`DIR/report_files/`): plots and copies of the images it shows.

Images are copied rather than linked so the report can be moved or archived with its folder; the
images shown are few and tiny. The folder is emptied first, so a re-written report never shows a
plot left over from an earlier one.
"""

from __future__ import annotations

import io
import os
import shutil

FILES_DIR = "report_files"

_MAGIC = ((b"\x89PNG", ".png"), (b"\xff\xd8", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"))


def image_ext(data: bytes) -> str | None:
    """The file extension browsers expect for encoded image bytes, or None if unrecognised."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return next((ext for magic, ext in _MAGIC if data.startswith(magic)), None)


class Assets:
    """Names, writes and copies the files of one report.

    Args:
      report_dir: the folder that holds `report.html`; files go to `report_dir/report_files/`
        and are referred to by paths relative to `report_dir`.
    """

    def __init__(self, report_dir: str):
        self.dir = os.path.join(report_dir, FILES_DIR)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self._count = 0
        self._copied: dict[str, str | None] = {}

    def new(self, stem: str, ext: str) -> tuple[str, str]:
        """A fresh `(absolute path, relative src)` pair; `stem` must be a safe file-name part."""
        self._count += 1
        name = f"{self._count:04d}_{stem}{ext}"
        return os.path.join(self.dir, name), f"{FILES_DIR}/{name}"

    def add_bytes(self, data: bytes, stem: str = "img") -> str | None:
        """Writes encoded image bytes; returns their src, or None when they are not an image a
        browser shows (re-encoded to PNG when Pillow can read them)."""
        ext = image_ext(data)
        if ext is None:
            try:
                from PIL import Image

                buf = io.BytesIO()
                Image.open(io.BytesIO(data)).save(buf, format="PNG")
            except Exception:  # any undecodable bytes: the page shows a placeholder instead
                return None
            data, ext = buf.getvalue(), ".png"
        path, src = self.new(stem, ext)
        with open(path, "wb") as f:
            f.write(data)
        return src

    def add_file(self, source: str, stem: str = "img") -> str | None:
        """Copies an image file (once per source path); None when it is missing or unreadable."""
        if source not in self._copied:
            try:
                with open(source, "rb") as f:
                    data = f.read()
            except OSError:
                self._copied[source] = None
            else:
                self._copied[source] = self.add_bytes(data, stem)
        return self._copied[source]
