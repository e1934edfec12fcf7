"""What the command lines share: an error the user can fix is one line on stderr and exit 2.

    app.run(main, flags_parser=cli.parse_flags)      # a bad flag or config field: one line
    cli.run(train.train_and_evaluate, config, dir)   # a bad setting, a missing file, a full disk

`--verbose` (or `CCLIP_VERBOSE=1`) shows the traceback instead. `curate` prints its errors the
same way (`error: ...`, exit 2).
"""

from __future__ import annotations

import errno
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from absl import flags

VERBOSE_ENV = "CCLIP_VERBOSE"
_VERBOSE = flags.DEFINE_bool("verbose", False,
                             f"Show tracebacks of user errors (also {VERBOSE_ENV}=1).")
# Raised for settings and inputs a user can fix (every config check names its field); the
# non-finite-loss stop (a FloatingPointError) names the step and the last good checkpoint.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, FloatingPointError)


def _verbose(argv: Sequence[str] = ()) -> bool:
    if os.environ.get(VERBOSE_ENV) == "1" or "--verbose" in argv:
        return True
    return bool(flags.FLAGS.is_parsed() and _VERBOSE.value)


def one_line(error: BaseException) -> str:
    """The error's message on one line (config_dict's suggestions come on a second line)."""
    # config_dict's AttributeError carries the repr of a KeyError: literal \' and \n.
    text = str(error).replace("\\n", " ").replace("\\'", "'")
    text = " ".join(text.split())
    return text.strip("'\"") or type(error).__name__


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad flag, config file or config field as one line."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        if _verbose(argv):
            raise
        # A misspelled `--config.modle=1` surfaces as AttributeError("'modle' Did you mean
        # "model"..."): name the flag it came from.
        message = one_line(e)
        found = re.match(r"'?(\w+)'\s*(.*)", message) if isinstance(e, AttributeError) else None
        bad = [a.split("=")[0] for a in argv[1:] if found and a.startswith("--config.")
               and a.split("=")[0].endswith(f".{found[1]}")]
        if bad:
            message = f"{bad[0]}: no such config field" + (f"; {found[2]}" if found[2] else "")
        fail(message)


def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)`, with user errors and a full disk as one line and exit 2."""
    try:
        return fn(*args, **kwargs)
    except USER_ERRORS as e:  # before OSError: FileNotFoundError is one
        if _verbose():
            raise
        fail(one_line(e))
    except OSError as e:
        if e.errno != errno.ENOSPC or _verbose():
            raise
        fail(f"disk full writing {e.filename or 'the run folder'}: {e.strerror}. Free space "
             "and rerun the same command: the run resumes from its last complete checkpoint")
