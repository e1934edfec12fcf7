"""NegCLIP hard negatives: the swap rule, its coverage of the synthetic grammar, and the
pipeline's `hard_text` / `hard_ok` fields."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from demo_smoke import smoke_config

from cclip_jax import data as data_lib
from cclip_jax import synthetic as syn
from cclip_jax.curation import CuratedShards
from cclip_jax.data.hard_negatives import swap_counts, swap_hard_negative
from cclip_jax.training import sharding

CASES = [
    # Attribute swap (binding): whole attribute runs change places.
    ("a red square left of a blue circle", "a blue square left of a red circle"),
    (
        "a small red circle left of a large blue square and a star",
        "a large blue circle left of a small red square and a star",
    ),
    ("a wooden table next to a metal chair", "a metal table next to a wooden chair"),
    # Articles follow the new first word.
    ("an orange star left of a red circle", "a red star left of an orange circle"),
    ("a red star left of an orange star", "an orange star left of a red star"),
    # Same noun, different attributes, ordered by a relation: the objects swap places.
    ("a red square above a blue square", "a blue square above a red square"),
    # Equal attributes: the nouns swap (the relation orders them).
    ("a red square left of a red circle", "a red circle left of a red square"),
    ("two white dogs on a white sofa", "two white sofa on a white dogs"),
    # Casing and punctuation stay where they were.
    ("Red apples and a green pear.", "Green apples and a red pear."),
    ("A small, red ball on a large WOODEN table!", "A large WOODEN ball on a small, red table!"),
    ("AN ORANGE CAT ON A BLACK MAT", "A BLACK CAT ON AN ORANGE MAT"),
    ("a red  car,  then a blue bus", "a blue  car,  then a red bus"),
    # The first two pairs that qualify; later ones stay.
    ("a red cup, a blue cup and a green plate", "a green cup, a blue cup and a red plate"),
]
UNSWAPPABLE = [
    "a dog on a sofa",  # no attribute at all
    "a red car",  # one pair
    "the car is red and the bus is blue",  # predicates, not adjective-noun pairs
    "a red square and a blue square",  # swapping only reorders a conjunction: a paraphrase
    "a red square and a red circle",
    "a small cat next to a small dog",  # "next to" does not order them either
    "a red square left of a red square",  # nothing differs
    # No attribute slot (colour, size, other) named on both sides: a caption that names only
    # some attributes may be true both ways ("a blue circle" may be large).
    "a blue circle right of a large star",
    "an orange star left of a small circle",
    "a small, red ball on a wooden table",
    "a circle left of a square",  # no adjective-noun pair (the rule needs an attribute)
    "",
    "red blue green",  # attributes without nouns
]


@pytest.mark.parametrize(("caption", "want"), CASES)
def test_swaps(caption, want):
    assert swap_hard_negative(caption) == want


@pytest.mark.parametrize("caption", UNSWAPPABLE)
def test_unswappable_is_none(caption):
    assert swap_hard_negative(caption) is None


def test_swap_is_an_involution_on_attribute_swaps_and_counts():
    for caption, want in CASES[:3]:
        assert swap_hard_negative(want) == caption
    assert swap_counts([c for c, _ in CASES] + UNSWAPPABLE) == (
        len(CASES),
        len(CASES) + len(UNSWAPPABLE),
    )


@pytest.mark.parametrize("preset", ["clean", "natural"])
def test_synthetic_captions_swap_into_false_captions(preset):
    """On the grammar's captions every swap is false of the scene (the oracle), and with the
    clean preset every caption of a two-object scene is swapped."""
    from cclip_jax.synthetic.splits import STREAM_CAPTION, sample_scene, stream_rng

    swapped = two = 0
    for i in range(300):
        scene = sample_scene(0, i, "train")
        caption = syn.make_caption(scene, preset, stream_rng(0, STREAM_CAPTION, "train", i))
        hard = swap_hard_negative(caption)
        two += len(scene.objects) >= 2
        if hard is not None:
            swapped += 1
            assert syn.holds(scene, caption) is True
            assert syn.holds(scene, hard) is False, (caption, hard)
    if preset == "clean":
        assert swapped == two > 0
    else:
        assert 0 < swapped < two


@pytest.fixture(scope="module")
def curated(smoke_curated):
    return smoke_curated


def _spec(curated_dir, **kw):
    """The smoke config's spec on `curated_dir`, seed 3, no augmentation, with `kw` changed."""
    base = data_lib.DataSpec.from_config(smoke_config("", curated_dir))
    return dataclasses.replace(base, **{"seed": 3, "max_shift": 0, "brightness": 0.0, **kw})


def test_pipeline_hard_fields(curated):
    shards = CuratedShards(curated)
    n = shards.num_batches
    tok = data_lib.Tokenizer(shards.tokenizer_path, 16)
    it_plain = iter(data_lib.build_dataset(_spec(curated)))
    it_hard = iter(data_lib.build_dataset(_spec(curated, hard_negatives=True)))
    total = ok = 0
    for _ in range(n):
        plain, e = next(it_plain), next(it_hard)
        assert "hard_text" not in plain and "hard_ok" not in plain  # the default: unchanged
        for field in (*data_lib.ARRAY_FIELDS, "batch"):
            np.testing.assert_array_equal(e[field], plain[field])
        assert e["hard_text"].dtype == np.int32 and e["hard_text"].shape == e["text"].shape
        assert e["hard_ok"].dtype == np.int8 and e["hard_ok"].shape == (len(e["text"]),)
        captions = shards.read_rows(int(e["batch"]))["caption"]
        for row, caption in enumerate(captions):
            hard = swap_hard_negative(caption)
            assert e["hard_ok"][row] == (hard is not None)
            if hard is None:
                np.testing.assert_array_equal(e["hard_text"][row], e["text"][row])
                continue
            ok += 1
            np.testing.assert_array_equal(e["hard_text"][row], tok([hard])[0])
            decoded = tok.processor.decode([int(i) for i in e["hard_text"][row] if i != 0])
            assert decoded and hard.startswith(decoded), (hard, decoded)  # a prefix if cut
            assert not np.array_equal(e["hard_text"][row], e["text"][row])
        total += len(captions)
    assert 0 < ok < total  # the demo's natural captions: some swap, most cannot


def test_global_batch_carries_the_hard_fields(curated):
    mesh = sharding.make_mesh({"data": 4, "fsdp": 2})
    it = iter(data_lib.build_dataset(_spec(curated, hard_negatives=True)))
    local = next(it)
    batch = data_lib.make_global_batch(local, sharding.batch_split(mesh, sharding.get_rules()).rows)
    assert set(batch) == {*data_lib.ARRAY_FIELDS, *data_lib.OPTIONAL_ARRAY_FIELDS}
    for field in ("hard_text", "hard_ok"):
        assert batch[field].sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"))
        assert batch[field].shape == local[field].shape
        np.testing.assert_array_equal(np.asarray(batch[field]), local[field])
    assert len(batch["hard_text"].addressable_shards) == 8
    plain = data_lib.make_global_batch(
        next(iter(data_lib.build_dataset(_spec(curated)))),
        sharding.batch_split(mesh, sharding.get_rules()).rows,
    )
    assert set(plain) == set(data_lib.ARRAY_FIELDS)
