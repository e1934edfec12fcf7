"""Curation CLI: raw image-caption pairs -> curated CCLIP batch shards.

  python -m cclip_jax.curate --config=configs/curate.py --input=PATH \
      --input_format=webdataset|csv|tfds --out=DIR [--runner=local|beam] [--config.x=y ...]

See docs/curation.md for the output layout and for running the Beam pipeline on a cluster.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from cclip_jax.curation import adapters

_CONFIG = config_flags.DEFINE_config_file("config", None, "Curation config file.", lock_config=True)
_INPUT = flags.DEFINE_string("input", None, "Input file or folder.")
_FORMAT = flags.DEFINE_enum("input_format", "webdataset", list(adapters.FORMATS), "Input format.")
_OUT = flags.DEFINE_string("out", None, "Output folder (shards, tokenizer, manifest).")
_RUNNER = flags.DEFINE_enum(
    "runner",
    "local",
    ["local", "beam"],
    "local: multiprocessing on this machine; beam: Apache Beam pipeline "
    "(DirectRunner unless config.beam_options names another runner).",
)


def main(argv: list[str]) -> None:
    del argv
    config = _CONFIG.value
    if config is None or _INPUT.value is None or _OUT.value is None:
        raise app.UsageError("--config, --input and --out are required")
    try:
        if _RUNNER.value == "local":
            from cclip_jax.curation import local_runner

            result = local_runner.run(config, _INPUT.value, _FORMAT.value, _OUT.value)
        else:
            from cclip_jax.curation import beam_runner

            result = beam_runner.run(config, _INPUT.value, _FORMAT.value, _OUT.value)
    except (adapters.InputError, ValueError) as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    timings = result.pop("_timings", {})
    summary = {k: result[k] for k in ("num_batches", "num_examples", "counts", "sharing")}
    print(
        json.dumps(
            {
                "out": _OUT.value,
                **summary,
                "stage_seconds": {k: round(v, 2) for k, v in timings.items()},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    app.run(main)
