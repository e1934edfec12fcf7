"""The run folder's file operations, for local paths and URLs (`gs://bucket/run`) alike.

Every read and write of a run folder goes through here (paths are plain strings). They are
`etils.epath` calls, the path layer orbax uses too: a local path goes to `os`, a `gs://` or
`s3://` URL to fsspec's filesystem for it (`gcsfs`, `s3fs`; epath takes `tf.io.gfile`
instead when TensorFlow is installed). Those packages are not in requirements.txt: `check`
turns a missing one into one line saying what to install, before anything is written,
where fsspec would raise its ImportError from deep inside the first writer.

An object store is not a disk in two ways this layer hides:

- it has no append: `append_text` on a URL reads the object and writes it whole again (the
  files appended to, `metrics.jsonl` and `history.jsonl`, hold one short line per logged
  step or per start);
- its rename is a copy and a delete, but an object becomes visible only once its upload is
  complete, so `write_atomic` writes a URL's object directly and a local file to a
  temporary name that is then renamed (a reader never sees half a file either way).
"""

from __future__ import annotations

import fnmatch
import os
import posixpath

from etils import epath

# The URL schemes a run folder may use, and the package fsspec needs for each. gcsfs brings
# google-cloud-storage, which orbax also imports for gs:// checkpoints.
SCHEME_PACKAGES = {"gs": "gcsfs", "s3": "s3fs"}


class PathBackendError(ValueError):
    """A run-folder URL whose scheme is not supported or whose package is not installed."""


def is_url(path: str) -> bool:
    """Whether `path` is a URL (`scheme://...`) rather than a local path."""
    return "://" in path


def check(path: str) -> None:
    """Raises `PathBackendError` (one line: what to install) when `path` is a URL whose
    filesystem cannot be used here; a local path always passes. gcsfs is asked for even where
    TensorFlow would serve epath: orbax needs the google-cloud-storage it brings."""
    if not is_url(path):
        return
    scheme = path.split("://", 1)[0]
    package = SCHEME_PACKAGES.get(scheme)
    if package is None:
        supported = ", ".join(f"{s}://" for s in SCHEME_PACKAGES)
        raise PathBackendError(
            f"{path}: {scheme}:// is not a supported run folder location "
            f"(a local path or one of {supported})"
        )
    import fsspec  # epath's backend for these schemes; only URLs need it

    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError:
        raise PathBackendError(
            f"{path}: a {scheme}:// run folder needs the {package} package, which is not "
            f"installed: pip install {package}=={fsspec.__version__} "
            f"(the release of the installed fsspec)"
        ) from None


def _path(path: str) -> epath.Path:
    check(path)
    return epath.Path(path)


def join(folder: str, *names: str) -> str:
    """`folder/name/...`: `os.path.join` for a local folder, `/`-joined for a URL."""
    if not is_url(folder):
        return os.path.join(folder, *names)
    return posixpath.join(folder, *names)


def basename(path: str) -> str:
    """The last part of `path` (a trailing `/` ignored)."""
    return posixpath.basename(path.rstrip("/")) if is_url(path) else os.path.basename(path)


def absolute(path: str) -> str:
    """`os.path.abspath` of a local path; a URL unchanged (checked)."""
    check(path)
    return path if is_url(path) else os.path.abspath(path)


def exists(path: str) -> bool:
    return _path(path).exists()


def isdir(path: str) -> bool:
    return _path(path).is_dir()


def makedirs(path: str) -> None:
    """Creates `path` and its parents (an existing folder is fine; a no-op on object stores,
    which have no folders)."""
    _path(path).mkdir(parents=True, exist_ok=True)


def listdir(path: str) -> list[str]:
    """The sorted names in folder `path` ([] when it does not exist)."""
    p = _path(path)
    return sorted(c.name for c in p.iterdir()) if p.is_dir() else []


def glob(folder: str, pattern: str) -> list[str]:
    """The sorted paths in `folder` whose name matches `pattern` (`fnmatch`, one level: the
    folder's own name is not a pattern, so `[` or `*` in it need no escaping)."""
    return [join(folder, n) for n in listdir(folder) if fnmatch.fnmatchcase(n, pattern)]


def read_text(path: str) -> str:
    """The file's text (UTF-8); `FileNotFoundError` when it does not exist."""
    return _path(path).read_text()


def read_bytes(path: str) -> bytes:
    return _path(path).read_bytes()


def write_atomic(path: str, data: str | bytes) -> None:
    """Writes `data` (text as UTF-8) so that a reader sees the old file or the whole new one;
    the parent folder must exist."""
    p = _path(path)
    target = p if is_url(path) else epath.Path(path + ".tmp")
    if isinstance(data, str):
        target.write_text(data)
    else:
        target.write_bytes(data)
    if target is not p:
        target.replace(p)


def append_text(path: str, text: str) -> None:
    """Appends `text` to the file (created when missing)."""
    p = _path(path)
    if not is_url(path):
        with p.open("a") as f:
            f.write(text)
        return
    old = p.read_text() if p.exists() else ""
    p.write_text(old + text)


def rmtree(path: str) -> None:
    """Removes the folder `path` and everything in it (nothing when it does not exist)."""
    p = _path(path)
    if p.exists():
        p.rmtree()


def copy_files(local_dir: str, dest_dir: str) -> list[str]:
    """Copies every file directly in the local folder `local_dir` into `dest_dir` (a local
    folder or a URL; created), replacing files of the same name; returns the copied paths."""
    makedirs(dest_dir)
    copied = []
    for name in sorted(os.listdir(local_dir)):
        source = os.path.join(local_dir, name)
        if os.path.isfile(source):
            with open(source, "rb") as f:
                write_atomic(join(dest_dir, name), f.read())
            copied.append(join(dest_dir, name))
    return copied
