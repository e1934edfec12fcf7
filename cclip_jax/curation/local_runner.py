"""The local runner: the whole curation on one machine (multiprocessing over pools).

Stages (each with a progress bar): read -> tokenise -> concepts -> route into pools ->
assemble each pool (BM25, greedy batches, masked captions, labels; `num_workers` processes) ->
one pool of leftovers -> write shards -> tokenizer -> manifest (last, atomic).
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable
from typing import Any, TypeVar

import ml_collections
import numpy as np
from tqdm import tqdm

from cclip_jax.curation import (
    adapters,
    bad_input,
    batches,
    concepts,
    neighbours,
    runs,
    shards,
    stats,
)
from cclip_jax.curation import text as text_lib
from cclip_jax.curation.concepts import Corpus

# Corpus-wide arrays for forked workers (copy-on-write; nothing big is pickled per task).
_SHARED: dict[str, Any] = {}
_CHUNK = 65536  # captions per tokenisation task
T = TypeVar("T")
R = TypeVar("R")


def _tokenise(span: tuple[int, int]) -> tuple[list[str], np.ndarray, np.ndarray]:
    return concepts.encode_chunk([text_lib.words(c) for c in _SHARED["captions"][slice(*span)]])


def _assemble(task: tuple[tuple[int, int], np.ndarray]) -> tuple[list[batches.Batch], np.ndarray]:
    pool_id, members = task
    pool = batches.PoolData.from_global(members, _SHARED["words"], _SHARED["concepts"])
    return batches.assemble_pool(pool, pool_id, _SHARED["opts"])


def plan_pools(route: np.ndarray, pool_size: int) -> list[tuple[tuple[int, int], np.ndarray]]:
    """Pool tasks `((pool, chunk), members)` in output order; members in ordinal order."""
    pools = neighbours.num_pools(len(route), pool_size)
    pid = neighbours.pool_of(route, pools)
    order = np.argsort(pid, kind="stable")
    bounds = np.searchsorted(pid[order], np.arange(pools + 1))
    tasks = []
    for p in range(pools):
        members = order[bounds[p] : bounds[p + 1]]
        tasks += [
            (chunk, members[rows])
            for chunk, rows in neighbours.split_pool(p, route[members], pool_size)
        ]
    return tasks


def run(
    config: ml_collections.ConfigDict, input_path: str, input_format: str, out_dir: str
) -> dict[str, Any]:
    """Curates `input_path` into `out_dir`; returns the manifest (also written to disk).

    Raises:
      adapters.InputError: wrong path, unknown format, or no usable example at all.
    """
    job = runs.start(config, input_path, input_format, out_dir)
    quiet = not config.progress
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    keys: list[str] = []
    captions: list[str] = []
    images: list[bytes] = []
    ordinals: list[tuple[int, int]] = []
    bad = bad_input.BadInputLog()
    for ui, unit in enumerate(tqdm(job.units, desc="read", disable=quiet)):
        for item in adapters.read_unit(ui, unit, input_format, job.read):
            if not isinstance(item, adapters.Example):
                bad.add(item)
                continue
            keys.append(item.key)
            captions.append(item.caption)
            images.append(item.image)
            ordinals.append(item.ordinal)
    bad_report = runs.check_input(job, bad, len(captions))  # now: the damage is known
    timings["read"] = time.perf_counter() - t0

    t = time.perf_counter()
    _SHARED["captions"] = captions
    spans = [(a, min(a + _CHUNK, len(captions))) for a in range(0, len(captions), _CHUNK)]
    words = concepts.merge(_map(_tokenise, spans, config.num_workers, quiet, "tokenise"))
    timings["tokenise"] = time.perf_counter() - t

    t = time.perf_counter()
    cons = concepts.extract_concepts(
        words, max_n=config.max_ngram, min_df=config.min_df, max_df_frac=config.max_df_frac
    )
    concept_rows = Corpus(cons.strings, cons.ids, cons.offsets)
    normalised = [text_lib.normalize(c) for c in captions]
    route = neighbours.route_keys(cons.strings, concept_rows, normalised, config.seed)
    route = neighbours.spread_copies(route, normalised, job.copy_budget, config.seed)
    del normalised
    timings["concepts"] = time.perf_counter() - t

    t = time.perf_counter()
    tasks = plan_pools(route, config.pool_size)
    _SHARED.update(words=words, concepts=concept_rows, opts=job.assembly)
    results = _map(_assemble, tasks, config.num_workers, quiet, "assemble pools")
    leftovers = np.sort(np.concatenate([r[1] for r in results]))
    left_batches, dropped = _assemble((batches.LEFTOVER_POOL, leftovers))
    all_batches = [b for r in results for b in r[0]] + left_batches
    timings["assemble"] = time.perf_counter() - t

    t = time.perf_counter()
    writer = shards.ShardWriter(
        out_dir, config.batches_per_shard, config.max_concepts, config.array_record_options
    )
    acc = stats.BatchStats()
    for b in tqdm(all_batches, desc="write", disable=quiet):
        m = b.members.tolist()
        writer.write(
            [keys[i] for i in m],
            [captions[i] for i in m],
            [images[i] for i in m],
            b.concepts,
            b.labels,
        )
        acc.add(b)
    shard_list = writer.close()
    timings["write"] = time.perf_counter() - t

    t = time.perf_counter()
    rkeys = np.array([batches.random_order_key(o, config.seed) for o in ordinals], np.int64)
    first = np.lexsort((np.arange(len(rkeys)), rkeys))
    first = first[: batches.random_sample_size(config.batch_size)]
    random_share = batches.random_sharing([cons.row(i) for i in first.tolist()], config.batch_size)
    result = runs.finish(
        job,
        "local",
        bad=bad,
        bad_report=bad_report,
        accepted=len(captions),
        dropped=len(dropped),
        batch_stats=acc,
        concept_strings=cons.strings,
        concept_df=cons.df,
        concept_pairs=len(cons.ids),
        shard_list=shard_list,
        random_sharing=random_share,
        captions=(captions[i] for b in all_batches for i in b.members.tolist()),
    )
    timings["tokenizer+manifest"] = time.perf_counter() - t
    logging.info("curation stage times (s): %s", {k: round(v, 2) for k, v in timings.items()})
    result["_timings"] = timings  # returned to callers (benchmark); not in manifest.json
    return result


def _map(fn: Callable[[T], R], tasks: list[T], workers: int, quiet: bool, desc: str) -> list[R]:
    """`[fn(t) for t in tasks]`, in order, on `workers` forked processes (they inherit
    `_SHARED` without pickling the corpus)."""
    out: list[R] = []
    with tqdm(total=len(tasks), desc=desc, disable=quiet) as bar:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                out.append(fn(task))
                bar.update()
            return out
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for r in pool.imap(fn, tasks):
                out.append(r)
                bar.update()
    return out
