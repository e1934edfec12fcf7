"""Curated output: ArrayRecord shards, the manifest, and random-access readers.

Layout of `out_dir`:

  batches-SSSSS.array_record   `batches_per_shard` batches each (the last shard may hold fewer)
  tokenizer.model              SentencePiece model with `<M>` (trained unless one was given)
  manifest.json                written last, atomically: its presence means the run is complete

A run starts with `clear_previous`: the old manifest, then the old shards, are removed.

Inside a shard, batch j occupies records `j * (B + 1)` .. `j * (B + 1) + B`: first one *batch
record* (its concept strings, padded with "" to `max_concepts`), then its B *example records*
in batch order (key, caption, label row int8 [max_concepts], image bytes). Reading rows
`[r0, r1)` of batch i is therefore one contiguous ArrayRecord range read, with no index.

Records are a 4-byte tag, then little-endian u32 lengths, then the fields:

  batch:   b"CCB1" | u32 len(json) | json {"batch", "concepts", "num_concepts"}
  example: b"CCE2" | u32 len(key) | u32 len(caption) | u32 K | key utf-8 | caption utf-8
           | int8[K] labels | image bytes (the rest)
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.model"
FORMAT = "cclip-curated-v1"
_BATCH_TAG, _EXAMPLE_TAG = b"CCB1", b"CCE2"


def shard_name(index: int) -> str:
    """File name of shard `index`."""
    return f"batches-{index:05d}.array_record"


def encode_batch_record(batch_index: int, concepts: list[str], width: int) -> bytes:
    """The batch record: concept strings padded with "" to `width`."""
    meta = json.dumps(
        {
            "batch": batch_index,
            "concepts": concepts + [""] * (width - len(concepts)),
            "num_concepts": len(concepts),
        },
        ensure_ascii=False,
    ).encode()
    return _BATCH_TAG + struct.pack("<I", len(meta)) + meta


def encode_example_record(key: str, caption: str, labels: np.ndarray, image: bytes) -> bytes:
    """One example record; `labels` is int8 [K]."""
    k, c = key.encode(), caption.encode()
    row = labels.astype(np.int8, copy=False).tobytes()
    return b"".join((_EXAMPLE_TAG, struct.pack("<III", len(k), len(c), len(row)), k, c, row, image))


def decode_batch_record(record: bytes) -> dict[str, Any]:
    if record[:4] != _BATCH_TAG:
        raise ValueError("not a batch record: the shard layout is broken")
    (n,) = struct.unpack_from("<I", record, 4)
    return json.loads(record[8 : 8 + n])


def decode_example_record(record: bytes) -> tuple[dict[str, str], np.ndarray, bytes]:
    """`({"key", "caption"}, labels int8 [K], image bytes)` of one example record."""
    if record[:4] != _EXAMPLE_TAG:
        raise ValueError("not an example record: the shard layout is broken")
    nk, nc, k = struct.unpack_from("<III", record, 4)
    a = 16 + nk
    b = a + nc
    meta = {"key": record[16:a].decode(), "caption": record[a:b].decode()}
    labels = np.frombuffer(record, dtype=np.int8, count=k, offset=b)
    return meta, labels, record[b + k :]


class ShardWriter:
    """Writes batches, in global order, into consecutive shards.

    Args:
      out_dir: output folder (created).
      batches_per_shard: batches per shard file.
      width: `max_concepts` (K of every label row).
      options: ArrayRecord writer options; `group_size:1` makes each record its own chunk so
        that random access reads only what it needs.
      first_shard: index of the first shard written (the Beam runner writes shards in parallel).
    """

    def __init__(
        self, out_dir: str, batches_per_shard: int, width: int, options: str, first_shard: int = 0
    ):
        os.makedirs(out_dir, exist_ok=True)
        self._dir, self._per, self._width, self._opts = out_dir, batches_per_shard, width, options
        self._shard = self._first = first_shard
        self._writer: ArrayRecordWriter | None = None
        self._in_shard = 0
        self.shards: list[dict[str, Any]] = []
        self.num_batches = 0

    def write(
        self,
        keys: list[str],
        captions: list[str],
        images: list[bytes],
        concepts: list[str],
        labels: np.ndarray,
    ) -> None:
        """Appends one batch (`labels`: int8 [B, max_concepts])."""
        if self._writer is None:
            name = shard_name(self._shard)
            self._writer = ArrayRecordWriter(os.path.join(self._dir, name), self._opts)
            self.shards.append({"file": name, "num_batches": 0})
        index = self._first * self._per + self.num_batches
        self._writer.write(encode_batch_record(index, concepts, self._width))
        for key, cap, img, row in zip(keys, captions, images, labels, strict=True):
            self._writer.write(encode_example_record(key, cap, row, img))
        self.num_batches += 1
        self._in_shard += 1
        self.shards[-1]["num_batches"] += 1
        if self._in_shard == self._per:
            self._close_shard()

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._shard += 1
            self._in_shard = 0

    def close(self) -> list[dict[str, Any]]:
        """Closes the open shard; returns `[{"file", "num_batches"}]` of the shards written."""
        self._close_shard()
        return self.shards


def iter_captions(shard_path: str) -> Iterator[str]:
    """The captions of one shard in record order (used to train the tokenizer; no manifest
    needed, so it runs before the run is complete)."""
    reader = ArrayRecordReader(shard_path)
    try:
        for start in range(0, reader.num_records(), 4096):
            for rec in reader.read(start, min(start + 4096, reader.num_records())):
                if rec[:4] == _EXAMPLE_TAG:
                    yield decode_example_record(rec)[0]["caption"]
    finally:
        reader.close()


def write_manifest(out_dir: str, manifest: dict[str, Any]) -> None:
    """Writes `manifest.json` atomically (temp file + rename): the run's completion mark.

    The files it lists (shards, tokenizer) are flushed to disk first, so that after a power
    loss a manifest never stands next to shards whose data was still in the page cache."""
    for name in [s["file"] for s in manifest.get("shards", [])] + [manifest.get("tokenizer")]:
        if name and os.path.exists(os.path.join(out_dir, name)):
            fd = os.open(os.path.join(out_dir, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    tmp = os.path.join(out_dir, f".{MANIFEST}.tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(out_dir, MANIFEST))


def invalidate(out_dir: str) -> None:
    """Removes a previous manifest so that a half-rewritten folder never looks complete."""
    path = os.path.join(out_dir, MANIFEST)
    if os.path.exists(path):
        os.remove(path)


def is_shard_name(name: str) -> bool:
    """Whether `name` is one of the curator's own shard files (`shard_name` of some index)."""
    return re.fullmatch(r"batches-\d{5,}\.array_record", name) is not None


def clear_previous(out_dir: str) -> list[str]:
    """Makes `out_dir` ready for a new run: the old manifest goes first (so a run that dies
    from here on leaves a folder that never looks complete), then the shards and temp
    manifest of any earlier run. A smaller re-curation would otherwise leave old shards
    behind for a reader that globs `batches-*.array_record`. Only the curator's own file
    names are removed; anything else in the folder is left alone, and `tokenizer.model` is
    overwritten later (it may be the very file `config.tokenizer_model` names).

    Returns:
      The names removed (shards and temp manifest), sorted.
    """
    invalidate(out_dir)
    if not os.path.isdir(out_dir):
        return []
    stale = sorted(n for n in os.listdir(out_dir) if is_shard_name(n) or n == f".{MANIFEST}.tmp")
    for name in stale:
        os.remove(os.path.join(out_dir, name))
    return stale


class CorruptShardError(ValueError):
    """A curated shard's bytes fail their checksum (or cannot be parsed) where a batch lives;
    the message names the file, the batch and what the reader found."""


class CuratedShards:
    """Random access to a curated output folder (what the Grain pipeline reads).

    Args:
      out_dir: a folder written by `python -m cclip_jax.curate`.

    Attributes:
      manifest: the manifest dict.
      num_batches, batch_size (B), max_concepts (K), max_present (R).
      tokenizer_path: the SentencePiece model next to the shards.
    """

    def __init__(self, out_dir: str):
        path = os.path.join(out_dir, MANIFEST)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path} is missing: {out_dir} is not a complete curation output"
            )
        with open(path) as f:
            self.manifest: dict[str, Any] = json.load(f)
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{path}: unknown format {self.manifest.get('format')!r}")
        self.out_dir = out_dir
        self.batch_size: int = self.manifest["batch_size"]
        self.max_concepts: int = self.manifest["max_concepts"]
        self.max_present: int = self.manifest["max_present"]
        self.num_batches: int = self.manifest["num_batches"]
        self.tokenizer_path = os.path.join(out_dir, self.manifest["tokenizer"])
        self._starts = np.cumsum([0] + [s["num_batches"] for s in self.manifest["shards"]])
        self._readers: dict[int, ArrayRecordReader] = {}

    def __len__(self) -> int:
        return self.num_batches

    def _locate(self, batch_index: int) -> tuple[ArrayRecordReader, int]:
        if not 0 <= batch_index < self.num_batches:
            raise IndexError(f"batch {batch_index} out of range [0, {self.num_batches})")
        shard = self._shard_of(batch_index)
        if shard not in self._readers:
            path = os.path.join(self.out_dir, self.manifest["shards"][shard]["file"])
            if not os.path.exists(path):  # missing is not corrupt: never skipped as such
                raise FileNotFoundError(f"{path}, listed in {MANIFEST}, is missing")
            # Readahead off: training reads scattered batches, not a stream.
            self._readers[shard] = ArrayRecordReader(path, "readahead_buffer_size:0")
        return self._readers[shard], int(batch_index - self._starts[shard]) * (self.batch_size + 1)

    def _shard_of(self, batch_index: int) -> int:
        return int(np.searchsorted(self._starts, batch_index, side="right") - 1)

    def concepts(self, batch_index: int) -> list[str]:
        """The batch's concept strings, padded with "" to K."""
        reader, base = self._locate(batch_index)
        return decode_batch_record(reader.read([base])[0])["concepts"]

    def read_rows(
        self, batch_index: int, row_start: int = 0, row_stop: int | None = None
    ) -> dict[str, Any]:
        """Rows `[row_start, row_stop)` of one batch (a JAX process's slice).

        Returns:
          `{"key": [str], "image": [bytes], "caption": [str], "concepts": [str] (K, padded
          with ""), "num_concepts": int, "labels": int8 [rows, K]}`.

        Raises:
          CorruptShardError: naming the shard file and the batch, when its bytes fail their
            checksum or do not parse.
        """
        row_stop = self.batch_size if row_stop is None else row_stop
        if not 0 <= row_start <= row_stop <= self.batch_size:
            raise IndexError(f"rows [{row_start}, {row_stop}) not in [0, {self.batch_size}]")
        try:
            reader, base = self._locate(batch_index)
            header = decode_batch_record(reader.read([base])[0])
            records = (
                reader.read(base + 1 + row_start, base + 1 + row_stop)
                if row_stop > row_start
                else []
            )
        except RuntimeError as e:
            # Riegeli's data-loss errors ("Corrupted Riegeli/records file: ... hash mismatch")
            # mean bad bytes; any other (an I/O error, a permission) is not corruption and must
            # not be skipped as such.
            if "Corrupted" not in str(e):
                raise
            raise self._corrupt(batch_index, e) from e
        except ValueError as e:  # a record that does not parse
            raise self._corrupt(batch_index, e) from e
        out: dict[str, Any] = {"key": [], "image": [], "caption": []}
        rows = []
        for rec in records:
            try:
                meta, labels, image = decode_example_record(rec)
            except (ValueError, UnicodeDecodeError, struct.error) as e:
                raise self._corrupt(batch_index, e) from e
            out["key"].append(meta["key"])
            out["caption"].append(meta["caption"])
            out["image"].append(image)
            rows.append(labels)
        out["concepts"] = header["concepts"]
        out["num_concepts"] = header["num_concepts"]
        out["labels"] = np.stack(rows) if rows else np.zeros((0, self.max_concepts), np.int8)
        return out

    def __getitem__(self, batch_index: int) -> dict[str, Any]:
        return self.read_rows(batch_index)

    def _corrupt(self, batch_index: int, error: Exception) -> CorruptShardError:
        """The error naming the shard file of `batch_index`; its reader is dropped, so a
        later read opens the file afresh rather than trusting a reader that failed."""
        shard = self._shard_of(batch_index)
        reader = self._readers.pop(shard, None)
        if reader is not None:
            try:
                reader.close()
            except RuntimeError:  # a reader that failed may fail closing too: it is gone
                pass
        name = os.path.join(self.out_dir, self.manifest["shards"][shard]["file"])
        reason = str(error).split(";")[0]  # Riegeli's first clause says what failed
        return CorruptShardError(f"{name}: batch {batch_index} is corrupt ({reason})")

    def close(self) -> None:
        for r in self._readers.values():
            r.close()
        self._readers.clear()


def read_batches(out_dir: str) -> Iterator[dict[str, Any]]:
    """Yields each curated batch in order.

    Yields:
      `{"key": [str], "image": [bytes], "caption": [str], "concepts": [str], "labels": int8
      [B, K]}` (plus `num_concepts`), with K = `max_concepts`: padded concepts are "" and
      their label column is all 0.
    """
    shards = CuratedShards(out_dir)
    try:
        for i in range(shards.num_batches):
            yield shards.read_rows(i)
    finally:
        shards.close()
