"""`load`: a config file and its argument, read as `config_flags.DEFINE_config_file` reads it."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
from typing import Any


def load(spec: str) -> Any:
    """`"path/to/file.py"` or `"path/to/file.py:arg"` -> the file's `get_config()` or
    `get_config("arg")`.

    The semantics of `--config=SPEC` (`ml_collections.config_flags.DEFINE_config_file`):
    everything after the first `:` is the argument, and a relative path is read from the
    working directory. Unlike the flag, the config comes back unlocked (callers edit it).

    Raises:
      FileNotFoundError: naming the file, when there is none at the path.
      ValueError: naming the file, when it defines no `get_config`.
    """
    path, *arg = spec.split(":", 1)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} does not exist (--config={spec})")
    # A name of its own per file: config files never collide with each other or a package.
    name = "cclip_config_" + re.sub(r"\W", "_", os.path.basename(path))
    loader = importlib.machinery.SourceFileLoader(name, path)  # any suffix, as config_flags
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
    loader.exec_module(module)
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ValueError(f"config file {path} defines no get_config()")
    return get_config(*arg)
