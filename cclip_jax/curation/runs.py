"""The start and the end of a curation run, the same for both runners.

`start` checks the config, lists the input and clears the output folder; `check_input` logs the
bad-input report and refuses an input without a usable example; `finish` counts, then writes the
tokenizer and the manifest. Between them each runner does the middle (read, concepts, routing,
pools, shards) its own way, with the same engine-free functions.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any

import ml_collections
import numpy as np

from cclip_jax.curation import (
    adapters,
    bad_input,
    batches,
    kinds,
    manifest,
    neighbours,
    settings,
    shards,
    stats,
)


@dataclasses.dataclass(frozen=True)
class Run:
    """What one run curates and how (from `start`).

    Attributes:
      config: the validated curation config.
      input_path, input_format, out_dir: as given to the runner.
      read: the adapters' options; assembly: batch-assembly options (both picklable).
      units: the input units (`adapters.list_units`), in order.
      copy_budget: copies of one caption a pool takes before they spread (`neighbours`).
    """

    config: ml_collections.ConfigDict
    input_path: str
    input_format: str
    out_dir: str
    read: adapters.ReadOptions
    assembly: batches.AssemblyOptions
    units: list[Any]
    copy_budget: int


def start(
    config: ml_collections.ConfigDict, input_path: str, input_format: str, out_dir: str
) -> Run:
    """Validates the config, lists the input units and removes an earlier curation's files.

    Raises:
      ValueError: an unusable config value; adapters.InputError: wrong path or format.
    """
    settings.validate(config)
    read = adapters.ReadOptions.from_config(config)
    assembly = batches.AssemblyOptions.from_config(config)
    units = adapters.list_units(input_path, input_format, read)
    stale = shards.clear_previous(out_dir)
    if stale:
        logging.info("removed %d file(s) of an earlier curation from %s", len(stale), out_dir)
    budget = neighbours.copy_budget(config.pool_size, config.batch_size, config.max_duplicates)
    return Run(config, input_path, input_format, out_dir, read, assembly, units, budget)


def check_input(run: Run, bad: bad_input.BadInputLog, accepted: int) -> dict[str, Any]:
    """Logs the bad-input report (as soon as the damage is known) and returns it.

    Raises:
      adapters.InputError: no example was accepted.
    """
    report = bad.report(run.units)
    bad_input.log_report(report)
    if not accepted:
        raise adapters.InputError(
            f"no usable example in {run.input_path}; {bad_input.summary(report)}"
        )
    return report


def finish(
    run: Run,
    runner: str,
    *,
    bad: bad_input.BadInputLog,
    bad_report: dict[str, Any],
    accepted: int,
    dropped: int,
    batch_stats: stats.BatchStats,
    concept_strings: list[str],
    concept_df: np.ndarray,
    concept_pairs: int,
    shard_list: list[dict[str, Any]],
    random_sharing: float,
    captions: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Counts the run, then writes the tokenizer and `manifest.json` (last). Returns the manifest.

    Args:
      run: from `start`; runner: "local" or "beam".
      bad, bad_report: the bad-input log and its report (`check_input`).
      accepted: examples read and kept; dropped: the leftover pool's remainder (< B).
      batch_stats: all written batches' stats.
      concept_strings, concept_df: the C kept concepts (sorted) and int64 [C] their document
        frequencies; concept_pairs: (caption, concept) pairs over all accepted captions.
      shard_list: the shards' descriptions, in order.
      random_sharing: mean sharing of the random baseline batches.
      captions: the written captions in batch order, when the runner has them (tokenizer
        training reads the shards otherwise).
    """
    counts = manifest.make_counts(
        accepted, bad.skipped(), dropped, batch_stats.examples, kinds.count_kinds(concept_strings)
    )
    return manifest.finish(
        run.out_dir,
        run.config,
        runner=runner,
        input_path=run.input_path,
        input_format=run.input_format,
        units=run.units,
        shard_list=shard_list,
        counts=counts,
        batch_stats=batch_stats.to_dict(),
        concept_stats=stats.concept_summary(concept_strings, concept_df, accepted, concept_pairs),
        random_sharing=random_sharing,
        bad_input=bad_report,
        captions=captions,
    )
