"""Reading one webdataset tar shard up to its last complete member.

A download cut short (or a disk error) leaves a tar whose first members are intact. Reading it
as a whole loses them all, so members are read one at a time and reading stops at the first
failure, keeping what was read completely. `tarfile` reports damage in three ways, all handled:

* a member whose data runs past the end of the file raises `ReadError("unexpected end of
  data")` when read (or, at the next header, when its padding is missing);
* a header cut short, or a file ending right after a member, ends the iteration *silently*
  (`next()` returns None, as at a clean end);
* a damaged header in the middle (bad checksum) also ends the iteration silently.

So after a silent end the block at the stop offset is inspected: a clean archive has its
end-of-archive marker (zero blocks) there; nothing, a short block, or a non-zero block means
the file was truncated or is corrupt there.
"""

from __future__ import annotations

import dataclasses
import os
import tarfile
import zlib

TRUNCATED = "truncated"  # the file ends early: what came before it is kept
CORRUPT = "corrupt"  # unreadable bytes in the middle: what came before them is kept
UNREADABLE = "unreadable"  # not readable as a tar at all (nothing kept)

# What reading a damaged tar (possibly compressed: "r:*" detects gzip/bz2/xz) may raise.
_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)


@dataclasses.dataclass
class TarContents:
    """The samples read from one tar, and how reading ended.

    Attributes:
      samples: key -> {extension: bytes} of the members read completely, keys in first-seen
        order; a member only partly readable is left out (its key is still listed).
      last_key: the key of the last member reached: the record at the cut, when there is one
        (its other members may lie behind the cut).
      problem: None for a clean archive, else TRUNCATED, CORRUPT or UNREADABLE.
      detail: one line saying where and what (for the manifest and the console).
    """

    samples: dict[str, dict[str, bytes]] = dataclasses.field(default_factory=dict)
    last_key: str | None = None
    problem: str | None = None
    detail: str = ""


def _key(member: tarfile.TarInfo) -> tuple[str, str] | None:
    base = os.path.basename(member.name)
    if "." not in base:
        return None
    # webdataset convention: the key is everything before the first dot.
    stem, ext = base.split(".", 1)
    return os.path.join(os.path.dirname(member.name), stem), ext.lower()


def _kind(error: BaseException) -> str:
    # tarfile says "unexpected end of data" for data past the end of the file; EOFError comes
    # from a compressed stream that stops early. Anything else is damage, not a short file.
    if isinstance(error, EOFError) or "unexpected end" in str(error):
        return TRUNCATED
    return CORRUPT


def _end_problem(tar: tarfile.TarFile) -> tuple[str | None, str]:
    """After `next()` returned None: is there an end-of-archive marker where it stopped?"""
    offset = tar.offset
    try:
        tar.fileobj.seek(offset)
        block = tar.fileobj.read(tarfile.BLOCKSIZE)
    except _ERRORS as e:
        return _kind(e), f"cannot read the block at byte {offset}: {e}"
    if block and block.count(0) == len(block):
        return None, ""  # the marker (a short all-zero block still ends the members)
    if not block:
        return TRUNCATED, f"the file ends at byte {offset} with no end-of-archive marker"
    if len(block) < tarfile.BLOCKSIZE:
        return TRUNCATED, f"the file ends inside the member header at byte {offset}"
    return CORRUPT, f"unreadable member header at byte {offset}"


def read_tar(path: str) -> TarContents:
    """Reads every complete member of the tar at `path`; never raises for a damaged file."""
    out = TarContents()
    try:
        tar = tarfile.open(path, "r")
    except _ERRORS as e:
        # tarfile's message lists one line per compression it tried: keep it on one line.
        out.problem, out.detail = UNREADABLE, "cannot open as a tar: " + " ".join(str(e).split())
        return out
    with tar:
        member = None
        while True:
            try:
                member = tar.next()
            except _ERRORS as e:
                after = f" after member {member.name!r}" if member is not None else ""
                out.problem, out.detail = _kind(e), f"{e}{after}"
                break
            if member is None:
                out.problem, out.detail = _end_problem(tar)
                break
            named = _key(member) if member.isfile() else None
            if named is None:
                continue
            key, ext = named
            out.last_key = key
            try:
                f = tar.extractfile(member)
                data = f.read() if f else b""
            except _ERRORS as e:
                out.problem = _kind(e)
                out.detail = (
                    f"member {member.name!r} ({member.size} bytes at byte "
                    f"{member.offset_data}) cannot be read: {e}"
                )
                out.samples.setdefault(key, {})
                break
            out.samples.setdefault(key, {})[ext] = data
    return out
