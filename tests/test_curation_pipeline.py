"""Curation end to end: shards + manifest + tokenizer of a local run, the reader,
determinism, the label rules, caption-only runs, the CLI, and the Beam runner writing what
the local runner writes. The input adapters are tested in test_curation_adapters.py."""

import io
import json
import os
import subprocess
import sys
import tarfile
from collections import Counter

import curation_inputs as inputs
import numpy as np
import pytest
import sentencepiece as spm
from curation_inputs import add_file, load_config, png, scene_captions
from PIL import Image

from cclip_jax.curation import (
    CuratedShards,
    beam_runner,
    local_runner,
    neighbours,
    read_batches,
    shards,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The shared input fixtures (module-scoped: pytest builds them once for this module).
webdataset_dir = inputs.webdataset_dir
csv_file = inputs.csv_file


@pytest.fixture(scope="module")
def curated(webdataset_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("out"))
    manifest = local_runner.run(load_config("small"), webdataset_dir, "webdataset", out)
    return out, manifest


def test_local_run_writes_shards_manifest_tokenizer(curated, webdataset_dir):
    out, m = curated
    assert m["counts"]["skipped"] == {
        "caption_empty": 1,
        "caption_missing": 1,
        "caption_not_utf8": 1,
        "caption_too_long": 1,
        "image_corrupt": 1,
        "image_missing": 1,
    }
    assert m["counts"]["accepted"] == 70 and m["counts"]["read"] == 76
    # 70 = 8 full batches + 6 leftover captions dropped (counted, not silent).
    assert m["num_batches"] == 8 and m["counts"]["leftover_dropped"] == 6
    assert m["counts"]["written"] + m["counts"]["leftover_dropped"] == 70
    assert [s["num_batches"] for s in m["shards"]] == [4, 4]
    assert all("sha256" in u for u in m["input"]["units"])
    assert m["sharing"]["curated"] >= m["sharing"]["random"]
    with open(os.path.join(out, shards.MANIFEST)) as f:
        assert json.load(f)["num_batches"] == 8
    sp = spm.SentencePieceProcessor(model_file=os.path.join(out, shards.TOKENIZER))
    assert sp.piece_to_id("<M>") != sp.unk_id()
    # Every gap is one piece (`▁<M>`: SentencePiece marks the space before it), not two.
    for text in ("<M> red <M>", "a <M> red <M>"):
        pieces = sp.encode(text, out_type=str)
        assert pieces.count("\u2581<M>") == 2 and "<M>" not in pieces


def test_reader_batches_and_random_access(curated, webdataset_dir):
    out, m = curated
    batches = list(read_batches(out))
    assert len(batches) == 8
    keys = [k for b in batches for k in b["key"]]
    assert len(set(keys)) == 64  # every caption used at most once
    # The manifest counts the members beyond max_duplicates (2) copies of a caption.
    copies = [Counter(" ".join(c.lower().split()) for c in b["caption"]).values() for b in batches]
    assert m["batches"]["duplicates_over_cap"] == sum(max(n - 2, 0) for c in copies for n in c)
    assert "duplicates_skipped" in m["batches"]
    caps = dict(zip([f"{i:06d}" for i in range(70)], scene_captions(70), strict=True))
    for b in batches:
        assert b["labels"].dtype == np.int8 and b["labels"].shape == (8, 16)
        assert len(b["concepts"]) == 16 and len(b["image"]) == 8
        assert all(caps[k] == c for k, c in zip(b["key"], b["caption"], strict=True))
        assert (b["labels"] == 1).sum(axis=1).max() <= 6  # max_present
        k = b["num_concepts"]
        assert not b["labels"][:, k:].any() and all(c == "" for c in b["concepts"][k:])
        for j, concept in enumerate(b["concepts"][:k]):  # +1 means the caption has it
            for row, cap in enumerate(b["caption"]):
                if b["labels"][row, j] == 1 and "<M>" not in concept:
                    assert f" {concept} " in f" {cap.lower()} "
    ds = CuratedShards(out)
    assert (ds.num_batches, ds.batch_size, ds.max_concepts, ds.max_present) == (8, 8, 16, 6)
    part = ds.read_rows(5, 2, 6)
    assert part["key"] == batches[5]["key"][2:6] and part["concepts"] == batches[5]["concepts"]
    np.testing.assert_array_equal(part["labels"], batches[5]["labels"][2:6])
    assert part["image"][0] == batches[5]["image"][2]
    Image.open(io.BytesIO(part["image"][0])).verify()
    with pytest.raises(IndexError):
        ds.read_rows(8)


def test_deterministic_and_idempotent(curated, webdataset_dir, tmp_path):
    out, _ = curated
    c = load_config("small")
    c.num_workers = 2  # the fixture used 1: the worker count must not change the output
    c.pool_size = 24
    again = local_runner.run(c, webdataset_dir, "webdataset", str(tmp_path / "w2"))
    c.num_workers = 1
    one = local_runner.run(c, webdataset_dir, "webdataset", str(tmp_path / "w1"))
    assert again["counts"] == one["counts"]
    for name in [s["file"] for s in again["shards"]] + [shards.TOKENIZER]:
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes()
    again = local_runner.run(load_config("small"), webdataset_dir, "webdataset", str(tmp_path))
    for name in [s["file"] for s in again["shards"]] + [shards.TOKENIZER]:
        with open(os.path.join(out, name), "rb") as a, open(tmp_path / name, "rb") as b:
            assert a.read() == b.read(), name
    # A re-run first removes the old manifest, so a crash mid-way never looks complete.
    shards.invalidate(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not a complete"):
        CuratedShards(str(tmp_path))
    c = load_config("small")
    c.seed = 1
    other = local_runner.run(c, webdataset_dir, "webdataset", str(tmp_path))
    assert [b["key"] for b in read_batches(str(tmp_path))] != [b["key"] for b in read_batches(out)]
    assert other["num_batches"] == 8


def test_label_rules_change_only_negatives(webdataset_dir, tmp_path):
    c = load_config("small")
    results = {}
    for rule in ("none", "complete", "attribute"):
        c.label_rule = rule
        local_runner.run(c, webdataset_dir, "webdataset", str(tmp_path / rule))
        results[rule] = np.stack([b["labels"] for b in read_batches(str(tmp_path / rule))])
    assert not (results["none"] == -1).any()
    for rule in ("complete", "attribute"):
        np.testing.assert_array_equal(results[rule] == 1, results["none"] == 1)
        assert (results[rule] == -1).any()
    # Attribute contradictions are a subset of complete-caption negatives on n-grams.
    assert (results["attribute"] == -1).sum() < (results["complete"] == -1).sum()


def test_csv_caption_only_run(csv_file, tmp_path):
    c = load_config("small")
    c.caption_only = True
    m = local_runner.run(c, csv_file, "csv", str(tmp_path))
    assert m["counts"]["skipped"] == {"caption_empty": 1, "caption_not_utf8": 1}
    assert m["counts"]["accepted"] == 31  # the missing image does not matter here
    assert all(img == b"" for b in read_batches(str(tmp_path)) for img in b["image"])


def test_cli(csv_file, tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cmd = [
        sys.executable,
        "-m",
        "cclip_jax.curate",
        "--config=configs/curate.py:small",
        f"--input={csv_file}",
        "--input_format=csv",
        f"--out={tmp_path}",
        "--config.batch_size=4",
        "--config.progress=False",
    ]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["num_batches"] == 7
    assert CuratedShards(str(tmp_path)).batch_size == 4
    bad = [*cmd[:4], f"--input={tmp_path}/missing", *cmd[5:]]
    res = subprocess.run(bad, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "does not exist" in res.stderr


@pytest.mark.slow
def test_beam_equals_local(webdataset_dir, tmp_path):
    """The Beam pipeline (DirectRunner, for real) writes the same output as the local runner."""
    c = load_config("small")
    c.pool_size = 24  # several pools, leftovers from each, one leftover pool
    local = local_runner.run(c, webdataset_dir, "webdataset", str(tmp_path / "local"))
    beam = beam_runner.run(c, webdataset_dir, "webdataset", str(tmp_path / "beam"))
    for m in (local, beam):
        m.pop("_timings")
    assert local.pop("runner") == "local" and beam.pop("runner") == "beam"
    assert json.dumps(local, sort_keys=True) == json.dumps(beam, sort_keys=True)
    for name in [s["file"] for s in local["shards"]] + [shards.TOKENIZER]:
        with open(tmp_path / "local" / name, "rb") as a, open(tmp_path / "beam" / name, "rb") as b:
            assert a.read() == b.read(), name
    got = list(read_batches(str(tmp_path / "beam")))
    assert len(got) == local["num_batches"] == 8
    assert local["counts"]["skipped"]["image_corrupt"] == 1
    assert sum(len(b["key"]) for b in got) + local["counts"]["leftover_dropped"] == 70
    assert not os.path.exists(tmp_path / "beam" / "_beam_side")


def test_beam_equals_local_when_copies_are_spread(tmp_path):
    """A caption with far more copies than one pool can cap (`neighbours.copy_budget`) is
    spread over pools (`neighbours.spread_key`): both runners must still write the same
    bytes."""
    caps = scene_captions(40) + ["a red square"] * 40  # as natural captions' "a star"
    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        for j, cap in enumerate(caps):
            add_file(tar, f"{j:06d}.png", png((j * 3 % 256, 0, 0)))
            add_file(tar, f"{j:06d}.txt", cap.encode())
    c = load_config("small")
    c.pool_size = 24
    budget = neighbours.copy_budget(c.pool_size, c.batch_size, c.max_duplicates)
    assert 40 > 2 * budget  # the spreading is exercised
    local = local_runner.run(c, str(tmp_path), "webdataset", str(tmp_path / "local"))
    beam = beam_runner.run(c, str(tmp_path), "webdataset", str(tmp_path / "beam"))
    for m in (local, beam):
        m.pop("_timings"), m.pop("runner")
    assert json.dumps(local, sort_keys=True) == json.dumps(beam, sort_keys=True)
    for name in [s["file"] for s in local["shards"]]:
        with open(tmp_path / "local" / name, "rb") as a, open(tmp_path / "beam" / name, "rb") as b:
            assert a.read() == b.read(), name
