"""HTML building blocks of the report: escaping, number formatting, tables, the page shell.

Every string that reaches the page goes through `esc` unless it is a `Markup` (HTML this package
built itself), so captions, concepts, file names and metric keys, all user data, can never
inject markup.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any


class Markup(str):
    """A string that is already HTML (built here from escaped parts): `esc` passes it through."""


def esc(value: Any) -> Markup:
    """`value` as HTML text: `Markup` unchanged, anything else escaped (quotes included)."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def join(parts: Iterable[Any], sep: str = "\n") -> Markup:
    """Escapes and concatenates `parts`, with `sep` (markup, inserted as is) between them."""
    return Markup(sep.join(esc(p) for p in parts))


def tag(name: str, body: Any = "", **attrs: Any) -> Markup:
    """`<name attrs>body</name>`; `cls=` gives `class=`, attributes with value None are left out."""
    shown = "".join(
        f' {("class" if k == "cls" else k.replace("_", "-"))}="{esc(v)}"'
        for k, v in attrs.items()
        if v is not None
    )
    return Markup(f"<{name}{shown}>{esc(body)}</{name}>")


def fmt(x: Any, fixed: bool = True) -> str:
    """A number for a cell. `fixed`: 3 decimals in the usual range (metrics in a column line
    up), 3 significant digits outside it; else 4 significant digits (config values, rates)."""
    if x is None:
        return "—"
    if not isinstance(x, float) or not math.isfinite(x):  # ints, strings, nan, inf as they are
        return str(x)
    if not fixed:
        return f"{x:.4g}"
    if x == 0 or 1e-3 <= abs(x) < 1e4:
        return f"{x:.3f}"
    return f"{x:.3g}"


def note(text: Any) -> Markup:
    """A visible remark: what is missing and why."""
    return tag("p", text, cls="note")


def section(anchor: str, title: str, *body: Any) -> Markup:
    """A titled `<section id=anchor>`."""
    return tag("section", join([tag("h2", title), *body]), id=anchor)


class Cell(Markup):
    """A `<td>` with a class, for `table` (e.g. `cell("skipped 3", "warn")`)."""


def cell(body: Any, cls: str | None = None, title: str | None = None) -> Cell:
    """A table cell with an optional class and hover title."""
    return Cell(tag("td", body, cls=cls, title=title))


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]], cls: str | None = None) -> Markup:
    """A table with a sticky header row; a cell is text (escaped), `Markup`, or a `Cell`."""
    head = tag("tr", join(tag("th", h) for h in header))
    body = join(
        tag("tr", join(c if isinstance(c, Cell) else tag("td", c) for c in row)) for row in rows
    )
    return tag("table", join([tag("thead", head), tag("tbody", body)]), cls=cls)


def image(src: str | None, alt: str, cls: str = "", missing: str = "image missing") -> Markup:
    """An `<img>` of a report file, or a visible placeholder when the file could not be had
    (a broken `<img>` would look like an empty box and fail the page's image check)."""
    if src is None:
        return tag("span", missing, cls=f"missing {cls}".strip(), title=alt)
    return Markup(f'<img src="{esc(src)}" alt="{esc(alt)}" class="{esc(cls)}" loading="eager">')


def figure(src: str | None, caption: Any, cls: str = "") -> Markup:
    """An image with a caption under it."""
    return tag("figure", join([image(src, str(caption), cls), tag("figcaption", caption)]))


def plot(src: str, title: str) -> Markup:
    """A plot PNG (its title is drawn in the image, so it gets no caption)."""
    return image(src, title, "plot")


def plots_block(images: Iterable[Markup], wide: bool = False) -> Markup:
    """Plots side by side in a grid, or `wide` ones (several panels) one under the other."""
    return tag("div", join(images), cls="wide" if wide else "plots")


def key_values(items: Iterable[tuple[str, Any]], columns: int = 1) -> Markup:
    """A compact table of `(name, value)` pairs, `columns` pairs per row."""
    cells = [join([tag("th", k), tag("td", fmt(v, fixed=False))]) for k, v in items]
    rows = [join(cells[i : i + columns]) for i in range(0, len(cells), columns)]
    return tag("table", join(tag("tr", r) for r in rows), cls="kv")


_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1280px;
       padding: 16px 24px; color: #1f2937; background: #fff; }
h1 { font-size: 22px; margin: 4px 0 8px; } h2 { font-size: 18px; margin: 28px 0 8px;
     border-bottom: 1px solid #d1d5db; } h3 { font-size: 15px; margin: 16px 0 6px; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; }
th, td { border: 1px solid #e5e7eb; padding: 3px 8px; text-align: left; vertical-align: top; }
thead th { background: #f3f4f6; position: sticky; top: 0; z-index: 1; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.best { font-weight: bold; } td.warn { background: #fef3c7; color: #92400e; }
td.key, th.key { font-family: ui-monospace, monospace; font-size: 12px; }
table.kv th { background: #f9fafb; font-weight: 600; }
.note { color: #6b7280; font-style: italic; background: #f9fafb; border-left: 3px solid #d1d5db;
        padding: 4px 10px; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 8px; }
.plots img.plot { width: 100%; max-width: 640px; } .wide img.plot { max-width: 100%; }
figure { margin: 0 6px 6px 0; display: inline-block; vertical-align: top; }
figcaption { font-size: 12px; color: #4b5563; max-width: 160px; overflow-wrap: anywhere; }
img.px { width: 96px; height: 96px; image-rendering: pixelated; object-fit: contain;
         border: 3px solid transparent; }
img.query { border-color: #2563eb; } img.hit { border-color: #16a34a; }
img.miss { border-color: #dc2626; }
.missing { display: inline-block; width: 96px; height: 96px; background: #f3f4f6;
           color: #9ca3af; font-size: 11px; text-align: center; padding-top: 36px;
           box-sizing: border-box; border: 1px dashed #d1d5db; }
.strip { display: flex; align-items: flex-start; gap: 4px; margin-bottom: 10px; }
.strip figure { width: 112px; }
.concept { align-self: center; font-weight: 600; padding: 0 10px; width: 160px; flex: none;
           overflow-wrap: anywhere; }
.chip { display: inline-block; border-radius: 8px; padding: 0 6px; margin: 1px 2px;
        font-size: 12px; }
.pos { background: #dcfce7; color: #166534; } .neg { background: #fee2e2; color: #991b1b; }
details { margin: 8px 0; } summary { cursor: pointer; color: #374151; }
"""

# The test harness (and anyone checking the page) reads `data-images-ok` on <body>: how many
# <img> really decoded, against how many there are. It runs after `load`, when all have settled.
_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.imagesOk = ok + "/" + imgs.length;
});
"""


def page(title: str, *body: Any) -> str:
    """The whole self-contained document: inline CSS, no external resources."""
    head = join([Markup('<meta charset="utf-8">'), tag("title", title), tag("style", Markup(_CSS))])
    main = join([tag("h1", title), *body, tag("script", Markup(_SCRIPT))])
    document = tag("html", join([tag("head", head), tag("body", main)]), lang="en")
    return f"<!doctype html>\n{document}\n"


def write_page(report_dir: str, document: str, name: str = "report.html") -> str:
    """Writes `report_dir/name` atomically (a reader never sees half a page); returns its path."""
    path = os.path.join(report_dir, name)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(document)
    os.replace(tmp, path)
    return path
