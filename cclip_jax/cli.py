"""What the command lines share: process set-up, quiet library logs, and errors the user can
fix as one line on stderr and exit 2.

    app.run(main, flags_parser=cli.parse_flags)      # a bad flag or config field: one line
    cli.quiet_libraries()                            # orbax's and grain's INFO lines off
    cli.setup_process(config)                        # once per process, before any training
    cli.run(trainer.train_and_evaluate, config, dir) # a bad setting, a missing file, a full disk

`--verbose` (or `CCLIP_VERBOSE=1`) shows the traceback instead. `curate` prints its errors the
same way (`error: ...`, exit 2).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from absl import flags
from absl import logging as absl_logging

if TYPE_CHECKING:
    import ml_collections

VERBOSE_ENV = "CCLIP_VERBOSE"
_VERBOSE = flags.DEFINE_bool(
    "verbose", False, f"Show tracebacks of user errors (also {VERBOSE_ENV}=1)."
)
# Raised for settings and inputs a user can fix (every config check names its field); the
# non-finite-loss stop (a FloatingPointError) names the step and the last good checkpoint.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, FloatingPointError)


def _verbose(argv: Sequence[str] = ()) -> bool:
    if os.environ.get(VERBOSE_ENV) == "1" or "--verbose" in argv:
        return True
    return bool(flags.FLAGS.is_parsed() and _VERBOSE.value)


def one_line(error: BaseException) -> str:
    """The error's message on one line (config_dict's suggestions come on a second line)."""
    text = str(error)
    if "Traceback (most recent call last):" in text:
        # config_flags wraps an error raised inside a config file with that file's traceback:
        # keep what it says before the traceback and the traceback's last line (the error).
        head, _, trace = text.partition("Traceback (most recent call last):")
        lines = [line for line in trace.splitlines() if line.strip()]
        text = f"{head.strip()} {lines[-1].strip() if lines else ''}"
    # config_dict's AttributeError carries the repr of a KeyError: literal \' and \n.
    text = text.replace("\\n", " ").replace("\\'", "'")
    text = " ".join(text.split())
    return text.strip("'\"") or type(error).__name__


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad flag, config file or config field as one line."""
    try:
        rest = flags.FLAGS(argv)
        _check_config_files(argv)
        return rest
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        if _verbose(argv):
            raise
        # A misspelled `--config.modle=1` surfaces as AttributeError("'modle' Did you mean
        # "model"..."): name the flag it came from.
        message = one_line(e)
        found = re.match(r"'?(\w+)'\s*(.*)", message) if isinstance(e, AttributeError) else None
        bad = [
            a.split("=")[0]
            for a in argv[1:]
            if found and a.startswith("--config.") and a.split("=")[0].endswith(f".{found[1]}")
        ]
        if bad:
            message = f"{bad[0]}: no such config field" + (f"; {found[2]}" if found[2] else "")
        fail(message)


def _check_config_files(argv: list[str]) -> None:
    """config_flags defers a config file it cannot open until the config is first read (an
    `_ErrorConfig` stands in): report it here, as one line, before anything runs."""
    for name in flags.FLAGS:
        if type(flags.FLAGS[name].value).__name__ == "_ErrorConfig":
            spec = next((a.split("=", 1)[1] for a in argv[1:] if a.startswith(f"--{name}=")), "")
            fail(f"--{name}={spec}: no such config file ({os.path.abspath(spec.split(':', 1)[0])})")


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
        fail(
            f"disk full writing {e.filename or 'the run folder'}: {e.strerror}. Free space "
            "and rerun the same command: the run resumes from its last complete checkpoint"
        )


def setup_process(config: ml_collections.ConfigDict) -> None:
    """Process-wide set-up from a training config, once per process before anything trains:
    `jax.distributed.initialize()` when `config.distributed` (it may run only once), and
    XLA's persistent compilation cache when `config.compilation_cache_dir` is set."""
    import jax  # here, not at the top: commands that never train need no JAX

    if config.distributed:
        try:
            jax.distributed.initialize()
        except (ValueError, RuntimeError) as e:
            # Without a cluster (Slurm, a TPU pod, or the coordinator flags) JAX finds nothing
            # to join; say which launch the config is meant for and how to run on one host.
            raise ValueError(
                f"config.distributed=True but jax.distributed.initialize() found no cluster "
                f"({one_line(e)}): this config is for a multi-host launch (launch/gpu_slurm.sh, "
                "launch/tpu_pod.sh); to try it on one host pass --config.distributed=False"
            ) from e
    if config.compilation_cache_dir:
        jax.config.update(
            "jax_compilation_cache_dir", os.path.expanduser(config.compilation_cache_dir)
        )
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


class _QuietLibraries(logging.Filter):
    """Drops INFO records of orbax and grain: they log several lines per checkpoint file."""

    def filter(self, record: logging.LogRecord) -> bool:
        noisy = "/orbax/" in record.pathname or "/grain/" in record.pathname
        return record.levelno >= logging.WARNING or not noisy


def quiet_libraries() -> None:
    """Keeps orbax's and grain's per-file INFO lines off the console."""
    absl_logging.get_absl_handler().addFilter(_QuietLibraries())
