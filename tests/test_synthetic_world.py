"""Tests of the synthetic world's evaluation items, file writers and CLI."""

import json
import os
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from cclip_jax import synthetic as syn
from cclip_jax.synthetic import __main__ as cli
from cclip_jax.synthetic import writers

SIZE = 32
ITEMS_PER_KIND = 12


@pytest.fixture(scope="module")
def items():
    return {
        (split, kind): syn.make_items(0, split, kind, ITEMS_PER_KIND)
        for split in syn.EVAL_SPLITS
        for kind in syn.KINDS
    }


def _bag(caption):
    return Counter(caption.split())


def test_items_are_deterministic():
    for kind in syn.KINDS:
        assert syn.make_item(4, "productivity", kind, 3) == syn.make_item(
            4, "productivity", kind, 3
        )
        assert syn.make_item(4, "iid", kind, 3) != syn.make_item(5, "iid", kind, 3)


def test_item_captions_agree_with_the_oracle(items):
    for (split, kind), rows in items.items():
        for item in rows:
            if kind in syn.PAIR_KINDS:
                assert syn.holds(item.scene, item.positive) is True, item
                assert syn.holds(item.scene, item.negative) is False, item
                assert len(item.scene.objects) == (3 if split == "productivity" else 2)
            else:
                (s0, s1), (c0, c1) = item.scenes, item.captions
                assert syn.holds(s0, c0) and syn.holds(s1, c1), item
                assert syn.holds(s0, c1) is False and syn.holds(s1, c0) is False, item


def test_swap_negatives_defeat_a_bag_of_words_model(items):
    """A swap negative has exactly the positive's words, so any bag-of-words scorer is at 50%."""
    rng = np.random.default_rng(0)
    vocab = sorted({w for rows in items.values() for it in rows for w in _caption_words(it)})
    # Integer weights: sums are exact whatever the word order.
    weights = dict(zip(vocab, rng.integers(-1000, 1000, size=len(vocab)).tolist(), strict=True))

    def bow_score(caption):
        return sum(weights[w] for w in caption.split())

    for (_, kind), rows in items.items():
        if kind not in syn.SWAP_KINDS and not kind.startswith("group_"):
            continue
        correct = 0.0
        for item in rows:
            pos, neg = (item.positive, item.negative) if kind in syn.SWAP_KINDS else item.captions
            assert _bag(pos) == _bag(neg), (pos, neg)
            sp, sn = bow_score(pos), bow_score(neg)
            correct += 1.0 if sp > sn else 0.5 if sp == sn else 0.0
        assert correct / len(rows) == 0.5, kind


def test_controls_are_solvable_by_a_bag_of_words_model(items):
    """object/attribute replace name a shape or colour absent from the image: words suffice."""
    for (_, kind), rows in items.items():
        if kind not in syn.CONTROL_KINDS:
            continue
        for item in rows:
            present = {w for o in item.scene.objects for w in (o.shape, o.colour)}

            def score(caption, present=present):
                return sum(w in present for w in caption.split())

            assert score(item.positive) > score(item.negative), item


def test_group_images_differ_only_by_the_swap(items):
    for (_, kind), rows in items.items():
        if kind not in syn.GROUP_KINDS:
            continue
        for item in rows[:4]:
            s0, s1 = item.scenes
            assert s0.noise_seed == s1.noise_seed
            a, b = syn.render(s0, SIZE), syn.render(s1, SIZE)
            assert (a != b).any(axis=-1).mean() > 0.01
            changed = [
                f
                for f in ("colour", "size", "x", "y")
                if [getattr(o, f) for o in s0.objects] != [getattr(o, f) for o in s1.objects]
            ]
            expected = {"group_attribute": ["colour"], "group_size": ["size"]}
            assert changed == expected.get(kind, ["x", "y"]) or (
                kind == "group_relation" and set(changed) <= {"x", "y"} and changed
            )


def test_bad_item_arguments_name_the_argument():
    with pytest.raises(
        ValueError, match="kind: unknown value 'colour_swap'; known: attribute_swap"
    ):
        syn.make_item(0, "iid", "colour_swap", 0)
    with pytest.raises(ValueError, match="split: evaluation items"):
        syn.make_item(0, "train", "size_swap", 0)


def _caption_words(item):
    texts = [item.positive, item.negative] if hasattr(item, "positive") else item.captions
    return [w for t in texts for w in t.split()]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    meta = syn.write_world(
        out, num_train=25, preset="natural", seed=3, image_size=SIZE, num_eval=3,
        workers=1, shard_size=10, progress=False,
    )  # fmt: skip
    return out, meta


def test_world_shards_hold_png_txt_and_scene_json(world):
    out, meta = world
    shards = sorted((out / "train").glob("*.tar"))
    assert [s.name for s in shards] == ["00000.tar", "00001.tar", "00002.tar"]
    assert meta["train"]["shards"] == [f"train/{s.name}" for s in shards]
    seen = []
    for shard in shards:
        for key, members in writers.read_shard(shard).items():
            assert sorted(members) == ["json", "png", "txt"]
            index = int(key)
            seen.append(index)
            expected = syn.training_example(3, index, "natural", SIZE)
            record = json.loads(members["json"])
            # What the curation code does: read the scene graph back and score with the oracle.
            assert syn.Scene.from_json(record) == expected.scene
            assert members["txt"].decode() == record["caption"] == expected.caption
            assert syn.holds(syn.Scene.from_json(record), record["caption"]) is True
            np.testing.assert_array_equal(syn.decode_png(members["png"]), expected.image)
    assert seen == list(range(25))


def test_world_csv_points_at_existing_images(world):
    out, _ = world
    rows = writers.read_csv(out / "train.csv")
    assert (out / "train.csv").read_text().splitlines()[0] == "image,caption"
    assert len(rows) == 25
    for index, row in enumerate(rows):
        assert not Path(row["image"]).is_absolute()
        image = syn.decode_png((out / row["image"]).read_bytes())
        np.testing.assert_array_equal(image, syn.training_example(3, index, "natural", SIZE).image)
        assert row["caption"] == syn.training_example(3, index, "natural", SIZE).caption


def test_world_eval_items_have_relative_existing_images(world):
    out, meta = world
    for split in syn.EVAL_SPLITS:
        for kind in syn.KINDS:
            assert meta["eval"][split][kind] == f"eval/{split}/{kind}.jsonl"
            rows = syn.load_items(out, split, kind)
            assert [r["index"] for r in rows] == [0, 1, 2]
            for row in rows:
                assert row["kind"] == kind
                paths = row["images"] if kind in syn.GROUP_KINDS else [row["image"]]
                for p in paths:
                    assert p.startswith(f"eval/{split}/images/") and (out / p).is_file()
                if kind in syn.GROUP_KINDS:
                    assert len(row["captions"]) == 2 and len(row["images"]) == 2
                else:
                    scene = syn.Scene.from_json(row["scene"])
                    assert syn.holds(scene, row["positive"]) is True
                    assert syn.holds(scene, row["negative"]) is False


def test_world_json_is_written_last_and_rewriting_is_a_no_op(world):
    out, meta = world
    assert json.loads((out / "world.json").read_text()) == meta
    assert meta["settings"]["seed"] == 3 and meta["settings"]["image_size"] == SIZE
    assert not list(out.glob(".staging-*"))
    stamp = (out / "train.csv").stat().st_mtime_ns
    again = syn.write_world(
        out, num_train=25, preset="natural", seed=3, image_size=SIZE, num_eval=3, workers=1,
        shard_size=10, progress=False,
    )  # fmt: skip
    assert again == meta and (out / "train.csv").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="num_train: 25 there, 26 asked"):
        syn.write_world(out, num_train=26, preset="natural", seed=3, image_size=SIZE, num_eval=3)


def test_world_without_csv_has_only_shards(tmp_path):
    meta = syn.write_world(
        tmp_path, num_train=4, seed=1, image_size=SIZE, num_eval=0, csv=False, progress=False
    )
    assert meta["train"]["csv"] is None and meta["settings"]["csv"] is False
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "eval", "train", "world.json"]
    assert len(writers.read_shard(tmp_path / "train" / "00000.tar")) == 4


def test_concurrent_writers_agree(tmp_path):
    kwargs = dict(num_train=6, seed=4, image_size=SIZE, num_eval=1, workers=1, progress=False)
    with ThreadPoolExecutor(2) as pool:
        worlds = list(pool.map(lambda _: syn.write_world(tmp_path, **kwargs), range(2)))
    assert worlds[0] == worlds[1]
    assert len(writers.read_csv(tmp_path / "train.csv")) == 6
    assert not list(tmp_path.glob(".staging-*"))


def test_contact_sheet_shows_scenes_and_captions():
    sheet = syn.contact_sheet(seed=0, presets=("natural", "clean"), count=3, image_size=SIZE,
                              columns=2, scale=2)  # fmt: skip
    assert sheet.dtype == np.uint8 and sheet.shape[1] == 2 * (2 * SIZE + 12)
    first = syn.training_example(0, 0, "natural", SIZE).image
    tile = sheet[6 : 6 + 2 * SIZE : 2, 6 : 6 + 2 * SIZE : 2]
    np.testing.assert_array_equal(tile, first)
    with pytest.raises(ValueError, match="preset: unknown value 'x'"):
        syn.contact_sheet(presets=("x",))


def test_interrupted_world_is_replaced(tmp_path):
    # Leftovers of a run that died before world.json: stale files must not survive.
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "99999.tar").write_bytes(b"partial")
    (tmp_path / "train.csv").write_text("garbage")
    syn.write_world(tmp_path, num_train=3, seed=1, image_size=SIZE, num_eval=0, progress=False)
    assert [p.name for p in (tmp_path / "train").iterdir()] == ["00000.tar"]
    assert len(writers.read_csv(tmp_path / "train.csv")) == 3
    assert all(syn.load_items(tmp_path, "iid", k) == [] for k in syn.KINDS)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_train": 0}, "num_train: expected >= 1"),
        ({"preset": "tidy"}, "preset: unknown value 'tidy'; known: clean, natural"),
        ({"image_size": 4}, "image_size: expected >= 8"),
        ({"seed": -1}, "seed: expected >= 0"),
    ],
)
def test_write_world_rejects_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        syn.write_world(tmp_path, **({"num_train": 2} | kwargs))
    assert not (tmp_path / "world.json").exists()


def test_cli_rejects_unknown_preset(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--out", "x", "--num_train", "1", "--preset", "tidy"])
    assert "--preset: unknown value 'tidy'; known: clean, natural" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_end_to_end_with_workers_and_preview(tmp_path):
    out = tmp_path / "w"
    cmd = [
        sys.executable, "-m", "cclip_jax.synthetic", "--out", str(out), "--num_train", "30",
        "--preset", "clean", "--seed", "2", "--image_size", str(SIZE), "--num_eval", "2",
        "--workers", "2", "--shard_size", "8", "--preview", "--preview_count", "4",
    ]  # fmt: skip
    env = os.environ | {"JAX_PLATFORMS": "cpu"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    world = json.loads((out / "world.json").read_text())
    assert world["settings"]["preset"] == "clean" and len(world["train"]["shards"]) == 4
    assert len(writers.read_csv(out / "train.csv")) == 30
    preview = syn.decode_png((out / "preview.png").read_bytes())
    assert preview.ndim == 3 and preview.shape[1] > 4 * SIZE
    # Parallel workers write exactly the bytes a single process writes.
    single = tmp_path / "single"
    syn.write_world(
        single, num_train=30, preset="clean", seed=2, image_size=SIZE, num_eval=2, workers=1,
        shard_size=8, progress=False,
    )  # fmt: skip
    for rel in ["train/00001.tar", "train.csv", "eval/productivity/group_size.jsonl"]:
        assert (out / rel).read_bytes() == (single / rel).read_bytes(), rel
