"""Bad input keeps every good record and is named in the manifest: truncated and unreadable
tars, skipped keys with their reasons, the cap on examples, and the Beam pipeline run in
separate worker processes (as on a cluster) writing what the local runner writes."""

import csv
import io
import json
import logging
import os
import random
import shutil
import tarfile

import curation_inputs as pipeline
import numpy as np
import pytest
from PIL import Image

from cclip_jax.curation import (
    adapters,
    bad_input,
    beam_runner,
    local_runner,
    read_batches,
    shards,
    tar_reader,
)

# The byte-identity test's fixtures (module-scoped there; pytest builds them again here).
webdataset_dir = pipeline.webdataset_dir
load_config = pipeline.load_config


def noise_png(seed, size=40):
    # Noise does not compress: images much larger than the 512-byte tar headers, as in real
    # shards, so that a cut at a fraction of the file lands in image data.
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def whole_tar(num, prefix="t"):
    """A well-formed webdataset tar (png + txt + json per record), as bytes."""
    buf = io.BytesIO()
    caps = pipeline.scene_captions(num, seed=2)
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for j in range(num):
            key = f"{prefix}{j:05d}"
            pipeline.add_file(tar, f"{key}.png", noise_png(j))
            pipeline.add_file(tar, f"{key}.txt", caps[j].encode())
            pipeline.add_file(tar, f"{key}.json", json.dumps({"id": j}).encode())
    return buf.getvalue()


def complete_keys(data, cut):
    """Keys whose caption and image members lie wholly before byte `cut`, by tarfile's own
    listing of the uncut archive (member data offsets and sizes)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    done = {m.name for m in members if m.offset_data + m.size <= cut}
    keys = dict.fromkeys(m.name.split(".")[0] for m in members)
    return [k for k in keys if f"{k}.png" in done and f"{k}.txt" in done]


def _cuts(data):
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        m = tar.getmembers()
    return {
        "two_thirds": len(data) * 2 // 3,  # the reported defect
        "in_image_data": m[30].offset_data + 20,  # m[30]: the 11th record's png
        "in_caption_data": m[31].offset_data + 5,
        "in_header": m[31].offset + 100,
        "at_member_boundary": m[31].offset,  # png whole, caption header absent
        "after_record": m[33].offset,  # record whole, no end-of-archive marker
        "last_padding": m[-1].offset_data + m[-1].size,
    }


@pytest.mark.parametrize("where", list(_cuts(whole_tar(45))))
def test_truncated_tar_keeps_its_complete_records(tmp_path, where):
    data = whole_tar(45)
    cut = _cuts(data)[where]
    path = tmp_path / "cut.tar"
    path.write_bytes(data[:cut])
    items = list(adapters.read_unit(0, str(path), "webdataset", adapters.ReadOptions()))
    kept = [x.key for x in items if isinstance(x, adapters.Example)]
    expected = complete_keys(data, cut)
    assert kept == expected
    problem = items[-1]
    assert isinstance(problem, adapters.UnitProblem) and problem.path == str(path)
    assert problem.problem == adapters.UNIT_TRUNCATED and problem.records == len(expected)
    # The record at the cut (when one was begun) is counted as truncated, not as missing.
    skips = [x for x in items if isinstance(x, adapters.Skip)]
    assert all(s.reason == adapters.RECORD_TRUNCATED for s in skips) and len(skips) <= 1
    # Every record begun (a member header whole before the cut) is kept or skipped.
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        begun = {
            m.name.split(".")[0] for m in tar.getmembers() if m.offset + tarfile.BLOCKSIZE <= cut
        }
    assert len(kept) + len(skips) == len(begun)


def test_damaged_headers_and_files(tmp_path):
    data = bytearray(whole_tar(12))
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        m = tar.getmembers()
    data[m[9].offset + 20] ^= 0xFF  # a bad header checksum: tarfile would just stop there
    (tmp_path / "corrupt.tar").write_bytes(bytes(data))
    (tmp_path / "garbage.tar").write_bytes(b"this is not a tar file\n" * 40)
    (tmp_path / "empty.tar").write_bytes(b"")
    opts = adapters.ReadOptions()
    items = list(adapters.read_unit(0, str(tmp_path / "corrupt.tar"), "webdataset", opts))
    assert [x.key for x in items if isinstance(x, adapters.Example)] == [
        "t00000",
        "t00001",
        "t00002",
    ]
    assert items[-1].problem == adapters.UNIT_CORRUPT and items[-1].records == 3
    assert f"byte {m[9].offset}" in items[-1].detail
    for name in ("garbage.tar", "empty.tar"):
        (problem,) = adapters.read_unit(1, str(tmp_path / name), "webdataset", opts)
        assert problem.problem == adapters.UNIT_UNREADABLE and problem.records == 0
        assert "\n" not in problem.detail  # one line, for the console
    assert tar_reader.read_tar(str(tmp_path / "garbage.tar")).samples == {}


def test_csv_cut_by_unreadable_row(tmp_path):
    rows = [
        ["image", "caption"],
        ["a.png", "a red square"],
        ["b.png", "x" * 140_000],
        ["c.png", "a blue circle"],
    ]
    with open(tmp_path / "t.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    items = list(
        adapters.read_unit(
            0, str(tmp_path / "t.csv"), "csv", adapters.ReadOptions(caption_only=True)
        )
    )
    assert [x.key for x in items[:-1]] == ["a.png"]  # the row before the damage is kept
    assert items[-1].problem == adapters.UNIT_CORRUPT and items[-1].records == 1
    assert "field limit" in items[-1].detail


@pytest.fixture(scope="module")
def damaged_dir(webdataset_dir, tmp_path_factory):
    """The byte-identity test's two tars, plus an unreadable tar and, last, a tar cut to 2/3."""
    root = tmp_path_factory.mktemp("damaged")
    for name in os.listdir(webdataset_dir):
        shutil.copy(os.path.join(webdataset_dir, name), root / name)
    (root / "00000_garbage.tar").write_bytes(b"not a tar\n" * 100)
    data = whole_tar(45)
    cut = len(data) * 2 // 3
    (root / "00002.tar").write_bytes(data[:cut])
    return str(root), complete_keys(data, cut)


def test_manifest_names_damaged_files_and_skipped_keys(damaged_dir, tmp_path, caplog):
    root, kept = damaged_dir
    with caplog.at_level(logging.WARNING):
        m = local_runner.run(load_config("small"), root, "webdataset", str(tmp_path))
    c = m["counts"]
    # read = written + leftover_dropped + skipped, over every reason.
    assert c["read"] == c["written"] + c["leftover_dropped"] + sum(c["skipped"].values())
    assert c["accepted"] == 70 + len(kept) == c["written"] + c["leftover_dropped"]
    assert c["skipped"] == {**{r: 1 for r in pipeline.BAD_REASONS.values()}, "record_truncated": 1}
    written = {k for b in read_batches(str(tmp_path)) for k in b["key"]}
    assert len(written & set(kept)) >= len(kept) - c["leftover_dropped"]

    bad = m["bad_input"]
    cut_tar, garbage = os.path.join(root, "00002.tar"), os.path.join(root, "00000_garbage.tar")
    assert bad["files"]["truncated"]["count"] == 1
    (entry,) = bad["files"]["truncated"]["examples"]
    assert entry["file"] == cut_tar and entry["records"] == len(kept)
    (entry,) = bad["files"]["unreadable"]["examples"]
    assert entry["file"] == garbage and entry["records"] == 0
    # Every skipped key, with its reason and file.
    listed = {(e["file"], e["key"], r) for r, v in bad["records"].items() for e in v["examples"]}
    one = os.path.join(root, "00001.tar")
    assert {(one, k, r) for k, r in pipeline.BAD_REASONS.items()} <= listed
    assert len(listed) == sum(c["skipped"].values())
    begun = f"t{len(kept):05d}"  # the record at the cut
    assert (cut_tar, begun, "record_truncated") in listed
    # The console names both files and says what happened.
    log = caplog.text
    assert f"{cut_tar}: truncated after {len(kept)} complete records" in log
    assert f"{garbage}: unreadable" in log
    with open(tmp_path / shards.MANIFEST) as f:
        assert json.load(f)["bad_input"] == bad


def test_examples_are_capped_counts_are_not(tmp_path):
    n_bad, cap = 250, bad_input.MAX_EXAMPLES
    with open(tmp_path / "many.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        for i in range(n_bad + 40):
            w.writerow([f"{i}.png", "" if i < n_bad else f"a red square number {i % 3}"])
    c = load_config("small")
    c.caption_only = True
    m = local_runner.run(c, str(tmp_path / "many.csv"), "csv", str(tmp_path / "out"))
    entry = m["bad_input"]["records"]["caption_empty"]
    assert entry["count"] == m["counts"]["skipped"]["caption_empty"] == n_bad
    assert [e["key"] for e in entry["examples"]] == [f"{i}.png" for i in range(cap)]
    assert m["bad_input"]["examples_per_reason"] == cap
    assert m["counts"]["read"] == n_bad + 40


def test_partial_logs_merge_to_the_sequential_log():
    """Beam merges workers' partial logs in any order: the result must not depend on it."""
    items = [
        adapters.Skip((u, i), f"k{u}-{i}", ["caption_empty", "image_corrupt"][i % 2])
        for u in range(3)
        for i in range(180)
    ]
    items += [adapters.UnitProblem(u, f"f{u}.tar", "truncated", u, "cut") for u in range(150)]
    sequential = bad_input.BadInputLog()
    for x in items:
        sequential.add(x)
    random.Random(0).shuffle(items)
    parts = [bad_input.BadInputLog() for _ in range(4)]
    for j, x in enumerate(items):
        parts[j % 4].add(x)
    merged = parts[3].merge(parts[1]).merge(parts[0].merge(parts[2]))
    merged = bad_input.BadInputLog.from_raw(json.loads(json.dumps(merged.raw())))
    assert merged.raw() == sequential.raw()
    report = merged.report([f"f{u}.tar" for u in range(150)])
    assert report["files"]["truncated"]["count"] == 150
    assert [e["file"] for e in report["files"]["truncated"]["examples"]] == [
        f"f{u}.tar" for u in range(bad_input.MAX_EXAMPLES)
    ]
    assert report["records"]["caption_empty"]["count"] == 270


def test_beam_multiprocess_equals_local(damaged_dir, tmp_path):
    """Beam's DirectRunner in multi_processing mode pickles the transforms and runs them in 2
    worker processes, as a cluster would; the shards, tokenizer and manifest (bad input
    included) must still equal the local runner's byte for byte. (~12 s on a busy 2-core VM,
    so not marked slow.)"""
    root, _ = damaged_dir
    c = load_config("small")
    c.pool_size = 24  # several pools, leftovers from each, one leftover pool
    local = local_runner.run(c, root, "webdataset", str(tmp_path / "local"))
    c.beam_options = (
        "--runner=DirectRunner --direct_running_mode=multi_processing --direct_num_workers=2"
    )
    beam = beam_runner.run(c, root, "webdataset", str(tmp_path / "beam"))
    for m in (local, beam):
        m.pop("_timings")
    assert local.pop("runner") == "local" and beam.pop("runner") == "beam"
    beam["settings"].pop("beam_options")
    local["settings"].pop("beam_options")
    assert json.dumps(local, sort_keys=True) == json.dumps(beam, sort_keys=True)
    assert beam["bad_input"]["files"]["truncated"]["count"] == 1
    for name in [s["file"] for s in local["shards"]] + [shards.TOKENIZER]:
        with open(tmp_path / "local" / name, "rb") as a, open(tmp_path / "beam" / name, "rb") as b:
            assert a.read() == b.read(), name
    assert not os.path.exists(tmp_path / "beam" / "_beam_side")
