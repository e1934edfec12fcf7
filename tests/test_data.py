"""The Grain pipeline: determinism, whole batches, per-process slices, baseline mode, state."""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
import pytest
from demo_smoke import smoke_config

from cclip_jax import data as data_lib
from cclip_jax import models
from cclip_jax.curation import CuratedShards, demo_data
from cclip_jax.data.transforms import lower_keeping_mask
from cclip_jax.training import sharding


@pytest.fixture(scope="module")
def curated(smoke_curated):
    """A small curated folder (synthetic world + curation), made once (tests/conftest.py)."""
    return smoke_curated


def spec(curated_dir, **kw):
    """The smoke config's spec (no Grain workers) on `curated_dir`, seed 3, with `kw` changed."""
    base = data_lib.DataSpec.from_config(smoke_config("", curated_dir))
    return dataclasses.replace(base, **{"seed": 3, **kw})


def take(ds, n, it=None):
    it = it if it is not None else iter(ds)
    return [next(it) for _ in range(n)], it


def test_demo_data_is_cached_and_matches_config(curated, tmp_path_factory):
    shards = CuratedShards(curated)
    assert shards.batch_size == 16 and shards.max_concepts == 16
    assert shards.num_batches >= 4
    # A second call with the same config reuses the folder (no rewrite: same mtime).
    mtime = os.path.getmtime(os.path.join(curated, "manifest.json"))
    c = smoke_config(os.path.dirname(curated))
    assert demo_data.ensure_demo_data(c) == curated
    assert os.path.getmtime(os.path.join(curated, "manifest.json")) == mtime


def test_spec_is_the_configs_and_the_dataset_carries_what_it_opened(curated):
    c = smoke_config("", curated)
    c.data.num_workers, c.seed = 3, 5
    c.model.text.lowercase, c.model.text.sticky_eos = True, True
    s = data_lib.DataSpec.from_config(c)
    assert (s.lowercase, s.sticky_eos) == (True, True)
    assert data_lib.build_dataset(s).tokenizer.lowercase is True
    assert (s.curated_dir, s.num_workers, s.seed, s.image_size, s.max_len) == (
        curated,
        3,
        5,
        32,
        16,
    )
    with pytest.raises(ValueError, match=r"^config\.data\.curated_dir is empty"):
        data_lib.DataSpec.from_config(smoke_config(""))
    ds = data_lib.build_dataset(spec(curated))
    assert (ds.source.batch_size, ds.source.max_concepts, ds.source.max_present) == (16, 16, 8)
    assert ds.tokenizer.model_path == os.path.join(curated, "tokenizer.model")
    assert ds.tokenizer.vocab_size() == 128
    with pytest.raises(FileNotFoundError, match=r"/nope\.model \(config\.data\.tokenizer"):
        data_lib.build_dataset(spec(curated, tokenizer="/nope.model"))


def test_pipeline_is_deterministic_and_seeded(curated):
    a, _ = take(data_lib.build_dataset(spec(curated)), 3)
    b, _ = take(data_lib.build_dataset(spec(curated)), 3)
    for x, y in zip(a, b, strict=True):
        for field in (*data_lib.ARRAY_FIELDS, "batch"):
            np.testing.assert_array_equal(x[field], y[field])
    n = CuratedShards(curated).num_batches
    order = [int(e["batch"]) for e in take(data_lib.build_dataset(spec(curated)), n)[0]]
    other = [int(e["batch"]) for e in take(data_lib.build_dataset(spec(curated, seed=4)), n)[0]]
    assert sorted(order) == sorted(other) == list(range(n))  # one epoch = every batch once
    assert order != other


def test_batches_arrive_whole_with_their_labels(curated):
    shards = CuratedShards(curated)
    n = shards.num_batches
    ds = data_lib.build_dataset(spec(curated, max_shift=0, brightness=0.0))
    elements, _ = take(ds, n + 2)
    tok = data_lib.Tokenizer(shards.tokenizer_path, 16)
    for e in elements:
        raw = shards.read_rows(int(e["batch"]))
        np.testing.assert_array_equal(e["labels"], raw["labels"])
        np.testing.assert_array_equal(e["text"], tok(raw["caption"]))
        np.testing.assert_array_equal(e["concepts"], tok(raw["concepts"]))
        first = data_lib.transforms.decode_image(raw["image"][0], 32)
        np.testing.assert_array_equal(e["images"][0], first)
        assert e["images"].shape == (16, 32, 32, 3) and e["images"].dtype == np.float32
        assert e["text"].dtype == np.int32 and e["labels"].dtype == np.int8
    # Epoch 2 is a new permutation of the same batches.
    epoch2 = [int(e["batch"]) for e in take(ds, 2 * n)[0][n:]]
    assert sorted(epoch2) == list(range(n))


def test_texts_longer_than_max_len_are_cut_and_flagged(curated):
    """What does not fit in `max_len` is cut and flagged (counted in the metrics), never
    dropped silently."""
    shards = CuratedShards(curated)
    short, _ = take(data_lib.build_dataset(spec(curated, max_len=3)), 4)
    tok = data_lib.Tokenizer(shards.tokenizer_path, 3)
    flagged = 0
    for e in short:
        raw = shards.read_rows(int(e["batch"]))
        for field, cut, texts in (
            ("text", "text_cut", raw["caption"]),
            ("concepts", "concepts_cut", raw["concepts"]),
        ):
            lengths = np.array([len(ids) for ids in tok.processor.encode(texts)])
            np.testing.assert_array_equal(e[field], tok(texts))
            np.testing.assert_array_equal(e[cut], lengths > 3)
            flagged += int(e[cut].sum())
    assert flagged > 0  # captions and masked captions are longer than 3 pieces


def test_each_process_reads_its_slice(curated):
    kw = dict(max_shift=0, brightness=0.0)
    whole, _ = take(data_lib.build_dataset(spec(curated, **kw)), 2)
    parts = [
        take(data_lib.build_dataset(spec(curated, **kw), process_index=p, process_count=2), 2)[0]
        for p in range(2)
    ]
    for step in range(2):
        assert (
            int(parts[0][step]["batch"])
            == int(parts[1][step]["batch"])
            == int(whole[step]["batch"])
        )
        for field in data_lib.ARRAY_FIELDS:
            joined = np.concatenate([parts[0][step][field], parts[1][step][field]])
            np.testing.assert_array_equal(joined, whole[step][field])
        assert parts[0][step]["text"].shape[0] == 8 and parts[0][step]["concepts"].shape[0] == 8


def test_baseline_mode_draws_iid_batches_of_the_same_pairs(curated):
    shards = CuratedShards(curated)
    src = data_lib.BatchSliceSource(curated, "baseline", seed=1)
    n, b = shards.num_batches, shards.batch_size
    keys = [k for i in range(n) for k in src[i]["key"]]
    all_keys = [k for i in range(n) for k in shards.read_rows(i)["key"]]
    assert sorted(keys) == sorted(all_keys)  # an epoch is every pair exactly once
    curated_sets = {frozenset(shards.read_rows(i)["key"]) for i in range(n)}
    assert frozenset(keys[:b]) not in curated_sets  # not a curated batch
    assert not src[0]["labels"].any()
    assert [k for k in src[n]["key"]] != keys[:b]  # epoch 2: a new permutation


def _augmentation_of(image, clean, max_shift, brightness):
    """Whether `image` is `clean` shifted by at most `max_shift` px (edge padding) with a
    brightness offset of at most `brightness`, clipped to [-1, 1]; and whether it differs."""
    m, s = max_shift, clean.shape[0]
    padded = np.pad(clean, ((m, m), (m, m), (0, 0)), mode="edge")
    inside = np.abs(image) < 1 - 1e-6  # pixels the clip did not touch
    for dy in range(2 * m + 1):
        for dx in range(2 * m + 1):
            shifted = padded[dy : dy + s, dx : dx + s]
            offset = float(np.mean((image - shifted)[inside]))
            if abs(offset) <= brightness + 1e-6 and np.allclose(
                image, np.clip(shifted + offset, -1, 1), atol=1e-5, rtol=0
            ):
                return True, (dy, dx) != (m, m) or abs(offset) > 1e-6
    return False, False


def test_default_augmentation_keeps_each_image_with_its_caption(curated):
    """With the trainer's default augmentation on (every other content check turns it off),
    row i of a batch is still pair i of the curated batch: its caption's tokens, and an image
    that is a shifted, brightened copy of that pair's image (not of another row's)."""
    data = smoke_config("").data
    assert (data.max_shift, data.brightness) == (2, 0.05)  # the defaults (cclip_jax/config/base.py)
    shards = CuratedShards(curated)
    tok = data_lib.Tokenizer(shards.tokenizer_path, 16)
    ds = data_lib.build_dataset(spec(curated, max_shift=data.max_shift, brightness=data.brightness))
    changed = 0
    for e in take(ds, 3)[0]:
        raw = shards.read_rows(int(e["batch"]))
        np.testing.assert_array_equal(e["text"], tok(raw["caption"]))
        for i, data_i in enumerate(raw["image"]):
            clean = data_lib.transforms.decode_image(data_i, 32)
            ok, moved = _augmentation_of(e["images"][i], clean, data.max_shift, data.brightness)
            assert ok, f"batch {int(e['batch'])} row {i}: not an augmentation of its own image"
            changed += moved
    assert changed > 40  # of 48 rows: the augmentation did run


def test_iterator_state_restores_mid_epoch_with_workers(curated):
    ds = data_lib.build_dataset(spec(curated, num_workers=1))
    _, it = take(ds, 3)
    state = it.get_state()
    after, _ = take(ds, 2, it)
    fresh = iter(data_lib.build_dataset(spec(curated, num_workers=1)))
    fresh.set_state(state)
    again, _ = take(ds, 2, fresh)
    for x, y in zip(after, again, strict=True):
        assert int(x["batch"]) == int(y["batch"])
        np.testing.assert_array_equal(x["images"], y["images"])  # augmentation too


def test_global_batch_is_split_over_the_batch_axes(curated):
    mesh = sharding.make_mesh({"data": 4, "fsdp": 2})
    local = take(data_lib.build_dataset(spec(curated)), 1)[0][0]
    batch = data_lib.make_global_batch(local, sharding.batch_split(mesh, sharding.get_rules()).rows)
    assert batch["images"].shape == (16, 32, 32, 3)
    assert batch["concepts"].shape == (16, 16)
    assert batch["labels"].sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"))
    np.testing.assert_array_equal(np.asarray(batch["labels"]), local["labels"])
    assert len(batch["text"].addressable_shards) == 8


def test_bad_inputs_are_named(tmp_path, curated):
    with pytest.raises(FileNotFoundError, match=r"manifest\.json"):
        data_lib.BatchSliceSource(str(tmp_path))
    with pytest.raises(ValueError, match=r"config\.data.mode"):
        data_lib.BatchSliceSource(curated, "random")
    with pytest.raises(ValueError, match="example 'k1'"):
        data_lib.transforms.decode_image(b"not an image", 32, "k1")


def test_png_fast_path_equals_pillow_and_falls_back():
    """Unfiltered 8-bit PNGs (the synthetic world's) skip Pillow; every other file goes to
    Pillow; either way the pixels are Pillow's exactly, and a broken file names its key."""
    import io

    from PIL import Image

    from cclip_jax import synthetic as syn
    from cclip_jax.data import png
    from cclip_jax.data.transforms import decode_image, decode_pixels

    img = syn.render(syn.sample_scene(0, 5), 32)
    fast = syn.encode_png(img)
    np.testing.assert_array_equal(png.decode_unfiltered(fast), img)
    rgba = np.dstack([img, np.full(img.shape[:2], 9, np.uint8)])
    filtered, alpha = io.BytesIO(), io.BytesIO()
    Image.fromarray(img).save(filtered, format="PNG")  # Pillow picks per-row filters
    Image.fromarray(rgba).save(alpha, format="PNG", compress_level=0)
    assert png.decode_unfiltered(filtered.getvalue()) is None
    for data in (fast, filtered.getvalue(), alpha.getvalue()):
        want = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        np.testing.assert_array_equal(decode_pixels(data, 32), want)
    np.testing.assert_array_equal(decode_image(fast, 32), img.astype(np.float32) / 127.5 - 1)
    # A different size goes through Pillow's resize, as before.
    assert decode_pixels(fast, 16).shape == (16, 16, 3)
    with pytest.raises(ValueError, match="example 'k7': cannot decode"):
        decode_pixels(fast[:60], 32, "k7")


@pytest.fixture(scope="module")
def word_tokenizer(tmp_path_factory):
    """A tiny SentencePiece model (pad 0, unk 1, bos 2, EOS 3) in which `▁red` is one piece."""
    from cclip_jax.curation import tokenizer as curation_tokenizer

    words = ["red", "blue", "green", "cube", "ball", "small", "large"]
    corpus = [" ".join(words[(i + j) % 7] for j in range(5)) for i in range(200)]
    path = str(tmp_path_factory.mktemp("spm") / "words.model")
    return curation_tokenizer.train(corpus, path, vocab_size=64)


def test_sticky_eos_follows_big_vision(word_tokenizer):
    """big_vision's `tokenize(eos="sticky")` (pp/ops_text.py, its docstring's examples with
    max_len=3, id("a")=2, EOS=1): "a" -> [2, 1, pad], "aa" -> [2, 2, 1], "aaa" -> [2, 2, 1];
    with pad_value=1 (SigLIP), "a" -> [2, 1, 1]. Here "red" is one piece and EOS is 3."""
    plain = data_lib.Tokenizer(word_tokenizer, 3)
    sticky = data_lib.Tokenizer(word_tokenizer, 3, sticky_eos=True)
    eos = sticky.eos_id()
    assert eos == 3 == sticky.processor.eos_id()
    ((r,),) = sticky.processor.encode(["red"])
    assert sticky.processor.encode(["red red red red"]) == [[r] * 4]  # one piece per word
    texts = ["red", "red red", "red red red", "red red red red", ""]
    ids, cut = sticky.tokenize(texts)
    np.testing.assert_array_equal(
        ids, [[r, eos, 0], [r, r, eos], [r, r, eos], [r, r, eos], [eos, 0, 0]]
    )
    # Cut: some piece was dropped. "red red" + EOS fills the 3 positions exactly.
    np.testing.assert_array_equal(cut, [False, False, True, True, False])
    # Without sticky EOS (this project's own models): no EOS, a long text keeps 3 pieces.
    ids, cut = plain.tokenize(texts)
    np.testing.assert_array_equal(ids, [[r, 0, 0], [r, r, 0], [r, r, r], [r, r, r], [0, 0, 0]])
    np.testing.assert_array_equal(cut, [False, False, False, True, False])
    # SigLIP pads with EOS itself (pad_value=1 there): a short caption is what it was before
    # sticky EOS existed; only a caption that fills max_len or more changes, its last id to EOS.
    siglip = data_lib.Tokenizer(word_tokenizer, 3, pad_id=eos, sticky_eos=True)
    old = data_lib.Tokenizer(word_tokenizer, 3, pad_id=eos)
    np.testing.assert_array_equal(siglip(["red"]), [[r, eos, eos]])
    np.testing.assert_array_equal(siglip(texts[:2]), old(texts[:2]))
    long = "small red cube next to a large blue ball"
    pieces = sticky.processor.encode([long])[0]
    assert len(pieces) > 3
    np.testing.assert_array_equal(siglip([long])[0], [*pieces[:2], eos])
    np.testing.assert_array_equal(old([long])[0], pieces[:3])


def test_lowercase_as_big_vision_keeps_the_mask_token(tmp_path):
    """`lowercase` (SigLIP: big_vision's `lower(key="texts")` before `tok`) lower-cases what a
    case-sensitive vocabulary would split otherwise, and leaves `<M>` as it is."""
    import sentencepiece as spm

    words = ["red", "blue", "cube", "ball", "small"]
    corpus = [" ".join(words[(i + j) % 5] for j in range(4)) for i in range(100)]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_prefix=str(tmp_path / "cased"),
        vocab_size=24,
        normalization_rule_name="nmt_nfkc",  # keeps case, as the SigLIP vocabularies do
        hard_vocab_limit=False,
        minloglevel=2,
    )
    path = str(tmp_path / "cased.model")
    plain = data_lib.Tokenizer(path, 8)
    lower = data_lib.Tokenizer(path, 8, lowercase=True)
    assert not np.array_equal(plain(["Red Cube"]), plain(["red cube"]))
    np.testing.assert_array_equal(
        lower(["Red Cube", "SMALL ball"]), plain(["red cube", "small ball"])
    )
    assert lower_keeping_mask("<M> Red <M> CUBE") == "<M> red <M> cube"
    text = models.siglip_config("B/16").text
    assert data_lib.Tokenizer.for_text_tower(path, text).lowercase is True
    default = models.get_default_model_config("B", patch_size=16).text
    assert data_lib.Tokenizer.for_text_tower(path, default).lowercase is False


def test_pipeline_tokenizes_with_sticky_eos_when_asked(curated):
    """`DataSpec.sticky_eos` (from `config.model.text.sticky_eos`) reaches the tokenizer."""
    shards = CuratedShards(curated)
    e = take(data_lib.build_dataset(spec(curated, max_len=3, sticky_eos=True)), 1)[0][0]
    tok = data_lib.Tokenizer(shards.tokenizer_path, 3, sticky_eos=True)
    raw = shards.read_rows(int(e["batch"]))
    np.testing.assert_array_equal(e["text"], tok(raw["caption"]))
    eos = tok.eos_id()
    lengths = np.array([len(ids) for ids in tok.processor.encode(raw["caption"])])
    np.testing.assert_array_equal(e["text_cut"], lengths > 2)  # 2 pieces + EOS fit in 3
    assert (lengths > 2).any() and np.all(e["text"][lengths > 2, -1] == eos)
