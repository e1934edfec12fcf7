"""Console logging of the command-line tools: library INFO lines kept off the console."""

from __future__ import annotations

import logging

from absl import logging as absl_logging


class _QuietLibraries(logging.Filter):
    """Drops INFO records of orbax and grain: they log several lines per checkpoint file."""

    def filter(self, record: logging.LogRecord) -> bool:
        noisy = "/orbax/" in record.pathname or "/grain/" in record.pathname
        return record.levelno >= logging.WARNING or not noisy


def quiet_libraries() -> None:
    """Keeps orbax's and grain's per-file INFO lines off the console."""
    absl_logging.get_absl_handler().addFilter(_QuietLibraries())
