"""Training entry point: `python -m cclip_jax.main --config=configs/demo.py --workdir=DIR`.

Only parses flags (`--config.key=value` overrides any config field), quiets library INFO logs,
sets up the process (`cli.setup_process`), checks the config, builds the demo's data when
`config.data.curated_dir` is empty (`cclip_jax.curation.demo_data`, one line per stage it
builds) and hands over to `cclip_jax.training.trainer.train_and_evaluate`.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from cclip_jax import cli, run_folder

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: checkpoints, metrics, TensorBoard.")
_LIBRARY_INFO = flags.DEFINE_bool(
    "library_info", False, "Show INFO logs of orbax and grain (one per file they write)."
)
_FORCE = flags.DEFINE_bool(
    "force_config_change",
    False,
    "Resume a run folder with a config that differs from its own (outside the fields that may "
    "change on resume); the change is recorded in DIR/history.jsonl.",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not _LIBRARY_INFO.value:
        cli.quiet_libraries()
    config = _CONFIG.value
    cli.run(run_folder.check_workdir, _WORKDIR.value)  # gs:// without gcsfs: one line
    cli.run(cli.setup_process, config)  # a bad distributed setting: one line too
    # After flag parsing: Grain workers need parsed absl flags.
    from cclip_jax.curation import demo_data
    from cclip_jax.training import checks, trainer

    cli.run(checks.validate_config, config)  # before any data is built for it
    if not config.data.curated_dir:
        config.data.curated_dir = cli.run(demo_data.ensure_demo_data, config)
    cli.run(trainer.train_and_evaluate, config, _WORKDIR.value, force_config_change=_FORCE.value)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
