"""The Beam runner: the same curation as an Apache Beam pipeline (DirectRunner to clusters).

Stages map one to one onto the local runner and call the same engine-free functions (`runs`
for the start and the end; per bundle of captions the corpus-wide `concepts.caption_ngrams` and
`neighbours.route_keys`; per caption `neighbours.spread_key`; per pool `batches.assemble_pool`):

  units --FlatMap(read)--> examples (+ tagged skips and damaged units: one BadInputLog)
  --tokenise, n-grams (per bundle)--> Count.PerElement
  --band filter--> kept concepts (side input) --> per caption: concepts, MinHash route
  --GroupByKey(caption)--> copies beyond a pool's budget spread over other pools
  --GroupByKey(pool)--> assemble_pool (BM25, greedy batches, masked captions, labels)
  leftovers --GroupByKey--> one leftover pool --> batches with their global order (side input)
  --GroupByKey(shard)--> ArrayRecord shard files + per-shard stats
  driver: tokenizer, manifest (last, atomic)

Given the same input and config, the shards and manifest equal the local runner's (tested).
Writers open plain file paths: on a cluster, `--out` must be a file system every worker and
the driver mount (e.g. a GCS FUSE / NFS / HDFS mount); see docs/curation.md.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import ml_collections
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

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

_SIDE = "_beam_side"  # per-run side outputs (stats) the driver folds into the manifest
# Captions per call of the corpus-wide n-gram and routing functions: numpy's per-call overhead
# (~0.4 ms a call, measured on one caption) would otherwise dominate a caption's own work.
_BUNDLE = 1024


class Record(NamedTuple):
    """One accepted caption as it travels through the pipeline."""

    ordinal: tuple[int, int]
    key: str
    caption: str
    image: bytes
    tokens: list[str]
    concepts: list[str]
    route: int


def _read(unit: tuple[int, Any], fmt: str, opts: adapters.ReadOptions) -> Iterator[Any]:
    index, spec = unit
    for item in adapters.read_unit(index, spec, fmt, opts):
        if isinstance(item, adapters.Example):
            yield item
        else:  # a Skip or a UnitProblem
            yield beam.pvalue.TaggedOutput("bad", item)


class _BadInputFn(beam.CombineFn):
    """`bad_input.BadInputLog` as a combiner: the local runner's rule, merged across workers."""

    def create_accumulator(self) -> bad_input.BadInputLog:
        return bad_input.BadInputLog()

    def add_input(self, log: bad_input.BadInputLog, item: Any) -> bad_input.BadInputLog:
        log.add(item)
        return log

    def merge_accumulators(self, logs: Any) -> bad_input.BadInputLog:
        out = bad_input.BadInputLog()
        for log in logs:
            out = out.merge(log)
        return out

    def extract_output(self, log: bad_input.BadInputLog) -> dict[str, Any]:
        return log.raw()


def _words(
    examples: list[adapters.Example], max_n: int
) -> Iterator[tuple[adapters.Example, list[str], list[str]]]:
    """Each example of a bundle with its tokens and candidate n-grams (one vectorised call)."""
    tokens = [text_lib.words(ex.caption) for ex in examples]
    yield from zip(examples, tokens, concepts.caption_ngrams(tokens, max_n), strict=True)


def _in_band(kv: tuple[str, int], n: int, min_df: int, max_df_frac: float) -> bool:
    return concepts.in_band(kv[1], n, min_df, max_df_frac)


def _attach(
    items: list[tuple[adapters.Example, list[str], list[str]]], kept: dict[str, int], seed: int
) -> Iterator[Record]:
    """Records of a bundle: each caption's concepts (its n-grams in the band) and route key."""
    cons = [[g for g in ngrams if g in kept] for _, _, ngrams in items]
    rows = concepts.encode(cons)
    route = neighbours.route_keys(
        rows.vocab, rows, [text_lib.normalize(ex.caption) for ex, _, _ in items], seed
    )
    for (ex, toks, _), c, key in zip(items, cons, route.tolist(), strict=True):
        yield Record(ex.ordinal, ex.key, ex.caption, ex.image, toks, c, key)


def _spread_copies(kv: tuple[str, list[Record]], budget: int, seed: int) -> Iterator[Record]:
    """The copies of one caption, in input order, with `neighbours.spread_key`'s routes."""
    caption, copies = kv
    for j, r in enumerate(sorted(copies, key=lambda r: r.ordinal)):
        yield r._replace(route=neighbours.spread_key(r.route, caption, j, budget, seed))


def _pool_key(rec: Record, n: int, pool_size: int) -> tuple[int, Record]:
    return int(neighbours.pool_of(rec.route, neighbours.num_pools(n, pool_size))), rec


def _assemble(
    records: list[Record], pool_id: tuple[int, int], opts: batches.AssemblyOptions
) -> Iterator[Any]:
    pool = batches.PoolData.from_strings(
        np.arange(len(records)), [r.tokens for r in records], [r.concepts for r in records]
    )
    out, left = batches.assemble_pool(pool, pool_id, opts)
    for j, b in enumerate(out):
        rows = [records[i] for i in b.members.tolist()]
        yield (*pool_id, j), (rows, b)
    for i in left.tolist():
        yield beam.pvalue.TaggedOutput("left", records[i])


def _assemble_pool(
    kv: tuple[int, list[Record]], pool_size: int, opts: batches.AssemblyOptions
) -> Iterator[Any]:
    pool, records = kv
    records = sorted(records, key=lambda r: r.ordinal)
    route = np.array([r.route for r in records], dtype=np.int64)
    for chunk, rows in neighbours.split_pool(pool, route, pool_size):
        yield from _assemble([records[i] for i in rows.tolist()], chunk, opts)


def _assemble_leftovers(
    kv: tuple[int, list[Record]], opts: batches.AssemblyOptions
) -> Iterator[Any]:
    records = sorted(kv[1], key=lambda r: r.ordinal)
    for item in _assemble(records, batches.LEFTOVER_POOL, opts):
        if isinstance(item, beam.pvalue.TaggedOutput):
            yield beam.pvalue.TaggedOutput("dropped", 1)
        else:
            yield item


def _to_shard(item: tuple[tuple[int, ...], Any], order: dict, per_shard: int) -> tuple[int, Any]:
    index = order[item[0]]
    return index // per_shard, (index, item[1])


def _write_shard(
    kv: tuple[int, list[Any]], out_dir: str, config: dict[str, Any]
) -> tuple[int, dict[str, Any], stats.BatchStats]:
    shard, items = kv
    writer = shards.ShardWriter(
        out_dir,
        config["batches_per_shard"],
        config["max_concepts"],
        config["array_record_options"],
        first_shard=shard,
    )
    acc = stats.BatchStats()
    for _, (rows, b) in sorted(items, key=lambda x: x[0]):
        writer.write(
            [r.key for r in rows],
            [r.caption for r in rows],
            [r.image for r in rows],
            b.concepts,
            b.labels,
        )
        acc.add(b)
    (desc,) = writer.close()
    return shard, desc, acc


def _random_sharing(rows: list[tuple[int, tuple[int, int], list[str]]], batch_size: int) -> float:
    rows = sorted(rows, key=lambda r: (r[0], r[1]))
    vocab = {c: i for i, c in enumerate(sorted({c for r in rows for c in r[2]}))}
    ids = [np.array([vocab[c] for c in r[2]], dtype=np.int64) for r in rows]
    return batches.random_sharing(ids, batch_size)


def _save(value: Any, path: str) -> None:
    with open(path, "w") as f:
        json.dump(value, f, default=lambda o: o.__dict__)


def run(
    config: ml_collections.ConfigDict, input_path: str, input_format: str, out_dir: str
) -> dict[str, Any]:
    """Curates with Beam (runner from `config.beam_options`, DirectRunner by default).

    Returns:
      The manifest (also written to `out_dir/manifest.json`, last).
    """
    t0 = time.perf_counter()
    job = runs.start(config, input_path, input_format, out_dir)
    side = os.path.join(out_dir, _SIDE)
    # Side outputs of a run that died before `_finish` must not be folded into this one.
    shutil.rmtree(side, ignore_errors=True)
    os.makedirs(side)
    cfg = config.to_dict()
    args = shlex.split(config.beam_options) or ["--runner=DirectRunner"]
    bsz = config.batch_size

    with beam.Pipeline(options=PipelineOptions(args)) as p:
        read = (
            p
            | "Units" >> beam.Create(list(enumerate(job.units)))
            | "Read" >> beam.FlatMap(_read, input_format, job.read).with_outputs("bad", main="ex")
        )
        (
            read.bad
            | "BadInput" >> beam.CombineGlobally(_BadInputFn())
            | "SaveBadInput" >> beam.Map(_save, f"{side}/bad_input.json")
        )
        words = (
            read.ex
            | "BundleExamples" >> beam.BatchElements(max_batch_size=_BUNDLE)
            | "Words" >> beam.FlatMap(_words, config.max_ngram)
        )
        n = read.ex | "N" >> beam.combiners.Count.Globally()
        n | "SaveN" >> beam.Map(_save, f"{side}/accepted.json")
        seed = config.seed
        kept = (
            words
            | "Ngrams" >> beam.FlatMap(lambda w: w[2])
            | "DF" >> beam.combiners.Count.PerElement()
            | "Band"
            >> beam.Filter(_in_band, beam.pvalue.AsSingleton(n), config.min_df, config.max_df_frac)
        )
        records = (
            words
            | "BundleWords" >> beam.BatchElements(max_batch_size=_BUNDLE)
            | "Concepts" >> beam.FlatMap(_attach, beam.pvalue.AsDict(kept), seed)
        )

        (
            kept
            | "ConceptList" >> beam.combiners.ToList()
            | "SaveConcepts" >> beam.Map(lambda kv: _save(sorted(kv), f"{side}/concepts.json"))
        )
        (
            records
            | "Pairs" >> beam.Map(lambda r: len(r.concepts))
            | "SumPairs" >> beam.CombineGlobally(sum)
            | "SavePairs" >> beam.Map(_save, f"{side}/pairs.json")
        )
        (
            records
            | "RandomKey"
            >> beam.Map(
                lambda r: (batches.random_order_key(r.ordinal, seed), r.ordinal, r.concepts)
            )
            | "RandomSample"
            >> beam.combiners.Top.Smallest(
                batches.random_sample_size(bsz), key=lambda r: (r[0], r[1])
            )
            | "RandomSharing" >> beam.Map(_random_sharing, bsz)
            | "SaveRandom" >> beam.Map(_save, f"{side}/random.json")
        )

        records = (
            records
            | "ByCaption" >> beam.Map(lambda r: (text_lib.normalize(r.caption), r))
            | "GroupCopies" >> beam.GroupByKey()
            | "SpreadCopies" >> beam.FlatMap(_spread_copies, job.copy_budget, seed)
        )
        pools = (
            records
            | "Route" >> beam.Map(_pool_key, beam.pvalue.AsSingleton(n), config.pool_size)
            | "GroupPools" >> beam.GroupByKey()
            | "Assemble"
            >> beam.FlatMap(_assemble_pool, config.pool_size, job.assembly).with_outputs(
                "left", main="batch"
            )
        )
        left = (
            pools.left
            | "LeftKey" >> beam.Map(lambda r: (0, r))
            | "GroupLeft" >> beam.GroupByKey()
            | "AssembleLeft"
            >> beam.FlatMap(_assemble_leftovers, job.assembly).with_outputs("dropped", main="batch")
        )
        (
            left.dropped
            | "CountDropped" >> beam.CombineGlobally(sum)
            | "SaveDropped" >> beam.Map(_save, f"{side}/dropped.json")
        )
        all_batches = (pools.batch, left.batch) | "AllBatches" >> beam.Flatten()
        order = (
            all_batches
            | "BatchIds" >> beam.Map(lambda kv: kv[0])
            | "BatchIdList" >> beam.combiners.ToList()
            | "Order" >> beam.Map(lambda ids: {k: i for i, k in enumerate(sorted(ids))})
        )
        written = (
            all_batches
            | "ToShard"
            >> beam.Map(_to_shard, beam.pvalue.AsSingleton(order), config.batches_per_shard)
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShards" >> beam.Map(_write_shard, out_dir, cfg)
        )
        (
            written
            | "ShardList" >> beam.combiners.ToList()
            | "SaveShards"
            >> beam.Map(
                lambda xs: _save(
                    [[s, d, a.raw()] for s, d, a in sorted(xs, key=lambda x: x[0])],
                    f"{side}/shards.json",
                )
            )
        )

    return _finish(job, side, t0)


def _load(side: str, name: str, default: Any) -> Any:
    path = os.path.join(side, name)
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def _finish(job: runs.Run, side: str, t0: float) -> dict[str, Any]:
    """Driver side, after the pipeline: folds the side outputs into tokenizer + manifest."""
    bad = bad_input.BadInputLog.from_raw(
        _load(side, "bad_input.json", bad_input.BadInputLog().raw())
    )
    accepted = _load(side, "accepted.json", 0)
    bad_report = runs.check_input(job, bad, accepted)
    kept = _load(side, "concepts.json", [])
    shard_rows = _load(side, "shards.json", [])
    acc = stats.BatchStats()
    for _, _, raw in shard_rows:
        acc = acc.merge(stats.BatchStats.from_raw(raw))
    result = runs.finish(
        job,
        "beam",
        bad=bad,
        bad_report=bad_report,
        accepted=accepted,
        dropped=_load(side, "dropped.json", 0),
        batch_stats=acc,
        concept_strings=[k for k, _ in kept],
        concept_df=np.array([v for _, v in kept], dtype=np.int64),
        concept_pairs=_load(side, "pairs.json", 0),
        shard_list=[d for _, d, _ in shard_rows],
        random_sharing=_load(side, "random.json", 0.0),
    )
    for name in os.listdir(side):
        os.remove(os.path.join(side, name))
    os.rmdir(side)
    result["_timings"] = {"beam_total": time.perf_counter() - t0}
    return result
