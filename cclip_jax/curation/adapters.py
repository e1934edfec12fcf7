"""Input adapters: webdataset tar shards, CSV/TSV files and prepared TFDS datasets.

Each adapter splits its input into *units* (a tar shard, a CSV file, a range of TFDS indices)
so that the Beam runner can read units in parallel, and yields, per unit, `Example`s and `Skip`s
in a fixed order. The ordinal `(unit, index)` of an example is its identity in every later
stage: pools are sorted by it, so the local and the Beam runner produce the same batches.

Bad records never crash a run and are never lost silently: each one is yielded as a `Skip` with
a reason, and a unit that is damaged (a tar cut short, a CSV file with unreadable bytes) yields
the records read before the damage and then one `UnitProblem` naming the file. The runners
fold both into the manifest (`bad_input.py`). A wrong path or an input with no units fails at
start with `InputError`.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import io
import os
from collections.abc import Iterator
from typing import Any, NamedTuple

from PIL import Image

from cclip_jax.curation import tar_reader, text

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")
FORMATS = ("webdataset", "csv", "tfds")

# Skip reasons (the manifest's `skipped` keys).
CAPTION_MISSING = "caption_missing"
CAPTION_EMPTY = "caption_empty"
CAPTION_NOT_UTF8 = "caption_not_utf8"
CAPTION_TOO_LONG = "caption_too_long"
IMAGE_MISSING = "image_missing"
IMAGE_CORRUPT = "image_corrupt"
RECORD_TRUNCATED = "record_truncated"  # its caption or image lies (partly) behind a cut
# Unit problems (the manifest's `bad_input.files` keys).
UNIT_TRUNCATED, UNIT_CORRUPT = tar_reader.TRUNCATED, tar_reader.CORRUPT
UNIT_UNREADABLE = tar_reader.UNREADABLE


class InputError(ValueError):
    """The input cannot be curated at all (wrong path, wrong format, nothing in it)."""


class Example(NamedTuple):
    """One accepted image-caption pair (a NamedTuple: millions are made per run).

    Attributes:
      ordinal: `(unit index, index inside the unit)`; total order over the input.
      key: the sample's key (webdataset key, CSV image path, TFDS index).
      caption: caption text, whitespace collapsed, original casing.
      image: encoded image bytes (b"" in caption-only runs).
    """

    ordinal: tuple[int, int]
    key: str
    caption: str
    image: bytes


class Skip(NamedTuple):
    """One rejected record: where it was and why."""

    ordinal: tuple[int, int]
    key: str
    reason: str


class UnitProblem(NamedTuple):
    """A unit that could not be read to its end (yielded after the records read before it).

    Attributes:
      unit: the unit's index.
      path: its file.
      problem: `UNIT_TRUNCATED`, `UNIT_CORRUPT` or `UNIT_UNREADABLE`.
      records: complete records read before the problem (kept or skipped by their own reason).
      detail: one line saying where and what.
    """

    unit: int
    path: str
    problem: str
    records: int
    detail: str


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """What adapters need from the config (a plain, picklable value for Beam workers)."""

    caption_only: bool = False
    check_images: bool = True
    max_caption_chars: int = 1000
    csv_image_column: str = "image"
    csv_caption_column: str = "caption"
    tfds_split: str = "train"
    tfds_image_key: str = "image"
    tfds_caption_key: str = "caption"
    tfds_unit_size: int = 10_000

    @classmethod
    def from_config(cls, config: Any) -> ReadOptions:
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{n: config[n] for n in names if n in config})


def check_caption(raw: bytes | str | None, opts: ReadOptions) -> tuple[str | None, str | None]:
    """Validates one raw caption.

    Returns:
      `(caption, None)` when accepted, else `(None, skip reason)`.
    """
    if raw is None:
        return None, CAPTION_MISSING
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None, CAPTION_NOT_UTF8
    else:
        try:  # surrogateescape'd bytes from a CSV file do not encode back
            raw.encode("utf-8")
        except UnicodeEncodeError:
            return None, CAPTION_NOT_UTF8
    caption = text.clean_caption(raw)
    if not text.has_token(caption):
        return None, CAPTION_EMPTY
    if len(caption) > opts.max_caption_chars:
        return None, CAPTION_TOO_LONG
    return caption, None


def check_image(data: bytes | None, opts: ReadOptions) -> tuple[bytes | None, str | None]:
    """Validates encoded image bytes (header + structure, without a full decode)."""
    if opts.caption_only:
        return b"", None
    if data is None:
        return None, IMAGE_MISSING
    if opts.check_images:
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.verify()
        except Exception:  # PIL raises many types for bad bytes; all mean "corrupt".
            return None, IMAGE_CORRUPT
    return data, None


def _accept(
    ordinal: tuple[int, int], key: str, caption: Any, image: Any, opts: ReadOptions
) -> Example | Skip:
    cap, reason = check_caption(caption, opts)
    if reason is not None:
        return Skip(ordinal, key, reason)
    img, reason = check_image(image, opts)
    if reason is not None:
        return Skip(ordinal, key, reason)
    return Example(ordinal, key, cap, img)


# ----------------------------------------------------------------------------- webdataset


def _webdataset_units(path: str) -> list[str]:
    if os.path.isdir(path):
        return sorted(glob.glob(os.path.join(path, "**", "*.tar"), recursive=True))
    return [path] if path.endswith(".tar") else []


def _read_webdataset(
    unit: int, path: str, opts: ReadOptions
) -> Iterator[Example | Skip | UnitProblem]:
    tar = tar_reader.read_tar(path)
    complete = 0
    for index, (key, files) in enumerate(tar.samples.items()):
        image = next((files[e] for e in IMAGE_EXTENSIONS if e in files), None)
        item = _accept((unit, index), key, files.get("txt"), image, opts)
        # The record at a cut lacks the caption or image that lay behind it: it was truncated,
        # not written without one. (With both read completely it is kept, like any other.)
        if (
            tar.problem
            and key == tar.last_key
            and isinstance(item, Skip)
            and item.reason in (CAPTION_MISSING, IMAGE_MISSING)
        ):
            item = item._replace(reason=RECORD_TRUNCATED)
        else:
            complete += 1
        yield item
    if tar.problem:
        yield UnitProblem(unit, path, tar.problem, complete, tar.detail)


# ----------------------------------------------------------------------------------- csv


def _csv_units(path: str) -> list[str]:
    if os.path.isdir(path):
        return sorted(
            p for ext in ("csv", "tsv") for p in glob.glob(os.path.join(path, f"*.{ext}"))
        )
    return [path] if path.endswith((".csv", ".tsv")) else []


def _csv_rows(unit: int, path: str) -> Iterator[list[str] | UnitProblem]:
    """The data rows of a CSV file after its header; a `UnitProblem` where reading fails.

    Reading stops at the first unreadable row (a disk error; an unclosed quote that swallows
    the rest of the file into one field over the csv module's limit): the rows before it are
    kept.
    """
    # utf-8-sig drops a leading byte-order mark (Excel writes one by default), which would
    # otherwise stick to the first column's name. surrogateescape keeps undecodable bytes
    # visible so that the row, not the file, is skipped.
    delimiter = "\t" if path.endswith(".tsv") else ","
    try:
        f = open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as e:
        yield UnitProblem(unit, path, UNIT_UNREADABLE, 0, f"cannot open: {e}")
        return
    with f:
        reader = csv.reader(f, delimiter=delimiter)
        rows = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except (csv.Error, OSError) as e:
                yield UnitProblem(
                    unit, path, UNIT_CORRUPT, max(rows - 1, 0), f"line {reader.line_num}: {e}"
                )
                return
            rows += 1
            yield row


def _read_csv(unit: int, path: str, opts: ReadOptions) -> Iterator[Example | Skip | UnitProblem]:
    folder = os.path.dirname(os.path.abspath(path))
    rows = _csv_rows(unit, path)
    fields = next(rows, None) or []
    if isinstance(fields, UnitProblem):
        yield fields
        return
    needed = [opts.csv_caption_column] + ([] if opts.caption_only else [opts.csv_image_column])
    missing = [c for c in needed if c not in fields]
    if missing:
        raise InputError(f"{path}: missing CSV column(s) {missing}; header is {fields}")
    cap_col = fields.index(opts.csv_caption_column)
    img_col = fields.index(opts.csv_image_column) if opts.csv_image_column in fields else -1
    name = os.path.basename(path)
    for index, row in enumerate(rows):
        if isinstance(row, UnitProblem):
            yield row
            return
        caption = row[cap_col] if cap_col < len(row) else None
        rel = row[img_col] if 0 <= img_col < len(row) else ""
        key = rel or f"{name}:{index}"
        image = None
        if not opts.caption_only and rel:
            try:
                with open(os.path.join(folder, rel), "rb") as img:
                    image = img.read()
            except OSError:
                image = None
        yield _accept((unit, index), key, caption, image, opts)


# ---------------------------------------------------------------------------------- tfds


def _tfds_source(path: str, opts: ReadOptions) -> Any:
    import tensorflow_datasets as tfds  # Imported lazily: heavy, and only this adapter needs it.

    return tfds.builder_from_directory(path).as_data_source(split=opts.tfds_split)


def _tfds_units(path: str, opts: ReadOptions) -> list[tuple[str, int, int]]:
    if not os.path.exists(os.path.join(path, "dataset_info.json")):
        return []
    n = len(_tfds_source(path, opts))
    step = opts.tfds_unit_size
    return [(path, start, min(start + step, n)) for start in range(0, n, step)]


def _encode_array(image: Any) -> bytes:
    # data_source decodes images to arrays; the shards store encoded bytes, so re-encode (PNG
    # is lossless, so the pixels the trainer sees are the dataset's pixels).
    buf = io.BytesIO()
    Image.fromarray(image.squeeze()).save(buf, format="PNG")
    return buf.getvalue()


def _read_tfds(
    unit: int, spec: tuple[str, int, int], opts: ReadOptions
) -> Iterator[Example | Skip]:
    path, start, stop = spec
    source = _tfds_source(path, opts)
    for index in range(start, stop):
        record = source[index]
        image = None
        if not opts.caption_only:
            image = record.get(opts.tfds_image_key)
            if image is not None and not isinstance(image, bytes):
                image = _encode_array(image)
        yield _accept(
            (unit, index - start), str(index), record.get(opts.tfds_caption_key), image, opts
        )


# ------------------------------------------------------------------------------- public


def list_units(path: str, input_format: str, opts: ReadOptions) -> list[Any]:
    """The input's units, in their fixed order; fails early with a clear message.

    Args:
      path: a file or folder (a tar shard or folder of them; a .csv/.tsv file or folder of them;
        a TFDS builder folder holding dataset_info.json).
      input_format: one of `FORMATS`.
      opts: reading options.

    Returns:
      One unit per element; pass each with its index to `read_unit`.
    """
    if input_format not in FORMATS:
        raise InputError(f"--input_format must be one of {FORMATS}, got {input_format!r}")
    if not os.path.exists(path):
        raise InputError(f"--input path does not exist: {path}")
    if input_format == "webdataset":
        units: list[Any] = _webdataset_units(path)
    elif input_format == "csv":
        units = _csv_units(path)
    else:
        units = _tfds_units(path, opts)
    if not units:
        raise InputError(f"no {input_format} input found at {path} (empty input)")
    return units


def read_unit(
    unit_index: int, unit: Any, input_format: str, opts: ReadOptions
) -> Iterator[Example | Skip | UnitProblem]:
    """Yields the unit's examples and skips in order, then its `UnitProblem` if it has one."""
    if input_format == "webdataset":
        yield from _read_webdataset(unit_index, unit, opts)
    elif input_format == "csv":
        yield from _read_csv(unit_index, unit, opts)
    else:
        yield from _read_tfds(unit_index, unit, opts)


def unit_fingerprint(unit: Any) -> dict[str, Any]:
    """Identity of one unit for the manifest: path, size and mtime (hashing is in shards)."""
    path = unit if isinstance(unit, str) else unit[0]
    desc: dict[str, Any] = {"unit": unit if isinstance(unit, str) else list(unit)}
    if os.path.isfile(path):
        desc["bytes"] = os.path.getsize(path)
    return desc
