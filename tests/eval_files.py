"""Files for the evaluation loader tests: solid-colour images and JSON files, written where a
benchmark's layout puts them."""

import json
from pathlib import Path

from PIL import Image


def save_image(path, colour, size=(8, 6), fmt=None):
    """A solid-colour image (JPEG for .jpg names, PNG otherwise); returns the path as a string."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = fmt or ("JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG")
    Image.new("RGB", size, colour).save(path, format=fmt)
    return str(path)


def write_json(path, data):
    """Writes `data` as JSON to `path` (making its folder); returns the path as a string."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data))
    return str(path)
