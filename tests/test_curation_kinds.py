"""`config.concept_kinds`: curation keeping only unigrams, attribute-noun bigrams or masked
captions (experiment arms), on a tiny synthetic world; `all` is the default, unchanged output."""

import hashlib
import json

import ml_collections
import pytest

from cclip_jax.curation import beam_runner, kinds, local_runner, read_batches, settings, text
from cclip_jax.synthetic import COLOUR_NAMES, SHAPES, SIZE_NAMES, write_world

# Decoded content (keys, concepts, labels of every batch) of the default curation of the world
# below, written by the curator before `concept_kinds` existed: `all` must stay exactly this.
# Change it only with a deliberate change of the curator's output (and a CURATOR_VERSION bump).
DEFAULT_DIGEST = "d13c8a72839cd00fe3ef7f02d1c30755a91e644c8067d84c57a067dfc6a48488"


def _config(kind=None):
    c = settings.default_config("small")
    c.progress = False
    if kind is not None:
        c.concept_kinds = kind
    return c


def _digest(out):
    h = hashlib.sha256()
    for b in read_batches(out):
        h.update(json.dumps([b["key"], b["concepts"], b["labels"].tolist()]).encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds_world")
    write_world(
        str(root),
        num_train=192,
        preset="natural",
        seed=0,
        image_size=8,
        num_eval=0,
        workers=1,
        csv=False,
        progress=False,
    )
    return str(root / "train")


@pytest.fixture(scope="module")
def curated(world, tmp_path_factory):
    """kind -> (out dir, manifest, batches); `all` is the unmodified default config."""
    out = {}
    for kind in kinds.KINDS:
        d = str(tmp_path_factory.mktemp(f"kinds_{kind}"))
        m = local_runner.run(_config(None if kind == "all" else kind), world, "webdataset", d)
        out[kind] = (d, m, list(read_batches(d)))
    return out


def _real(batch):
    return batch["concepts"][: batch["num_concepts"]]


def test_concept_kind_rule():
    for a in (*COLOUR_NAMES, *SIZE_NAMES):
        for s in SHAPES:  # every "attribute shape" of the synthetic grammar
            assert kinds.concept_kind(f"{a} {s}") == "attribute_noun"
    assert kinds.concept_kind("wooden table") == "attribute_noun"
    assert kinds.concept_kind("red") == kinds.concept_kind("circle") == "unigram"
    for other in (
        "small red",
        "circle left",
        "left of",
        "red 2",
        "red circle left",
        "square table",
        "a red circle",
    ):
        assert kinds.concept_kind(other) == "other", other
    assert kinds.concept_kind("<M> red <M>") == kinds.concept_kind("a <M> star") == "masked"
    assert set(text.ATTRIBUTE_OF) <= text.ATTRIBUTE_WORDS
    assert kinds.ngram_mask(["red", "red circle"], "all") is None
    assert kinds.ngram_mask(["red", "red circle"], "unigram").tolist() == [True, False]
    assert kinds.ngram_mask(["red", "red circle"], "masked").tolist() == [False, False]
    assert kinds.count_kinds(["red", "red circle", "left of"]) == {
        "attribute_noun": 1,
        "other": 1,
        "unigram": 1,
    }


def test_default_is_all_and_unchanged(curated):
    assert settings.default_config().concept_kinds == "all"
    out, m, got = curated["all"]
    assert m["settings"]["concept_kinds"] == "all"
    assert _digest(out) == DEFAULT_DIGEST, "the default curation (concept_kinds=all) changed"
    kinds_seen = {kinds.concept_kind(c) for b in got for c in _real(b)}
    assert kinds_seen == {"unigram", "attribute_noun", "other", "masked"}  # today's mix


@pytest.mark.parametrize("kind", ["unigram", "attribute_noun", "masked"])
def test_each_kind_keeps_only_its_concepts(curated, kind):
    _, m_all, all_batches = curated["all"]
    _, m, got = curated[kind]
    assert m["settings"]["concept_kinds"] == kind
    # The same batches (members, order) for every kind: only the concept columns differ.
    assert [b["key"] for b in got] == [b["key"] for b in all_batches]
    assert m["num_batches"] == m_all["num_batches"] == 24
    assert m["counts"]["concepts_by_kind"] == m_all["counts"]["concepts_by_kind"]
    concepts = [c for b in got for c in _real(b)]
    assert concepts, f"{kind}: no concept at all"
    for c in concepts:
        if kind == "unigram":
            assert " " not in c and text.MASK not in c, c
        elif kind == "attribute_noun":
            w = c.split(" ")
            assert len(w) == 2 and w[0] in text.ATTRIBUTE_WORDS and text.MASK not in c, c
        else:
            assert text.MASK in c, c
    for b, ref in zip(got, all_batches, strict=True):
        mine, theirs = _real(b), [c for c in _real(ref) if kinds.concept_kind(c) == kind]
        if kind == "masked":  # masked captions do not depend on the n-grams beside them
            assert mine == theirs
        else:  # the freed columns can only add concepts of the kind
            assert set(theirs) <= set(mine) and len(mine) <= 16
        assert not b["labels"][:, b["num_concepts"] :].any()
        for j, c in enumerate(mine):  # +1 still means the caption contains the n-gram
            for row, cap in enumerate(b["caption"]):
                if b["labels"][row, j] == 1 and kind != "masked":
                    assert f" {c} " in f" {cap.lower()} "
    # A batch with no concept of the kind is allowed and counted in the existing histogram.
    empty = sum(b["num_concepts"] == 0 for b in got)
    assert m["batches"]["concepts_per_batch"].get("0", 0) == empty
    assert sum(m["batches"]["concepts_per_batch"].values()) == m["num_batches"]
    if kind != "masked":
        assert m["batches"]["masked_per_batch"] == 0


def test_concepts_by_kind_counts(curated):
    m = curated["all"][1]
    by_kind = m["counts"]["concepts_by_kind"]
    assert sum(by_kind.values()) == m["concepts"]["num_concepts"]
    assert by_kind["attribute_noun"] > 0 and by_kind["unigram"] == m["concepts"]["by_order"]["1"]


def test_invalid_concept_kinds_fail_naming_the_field(world, tmp_path):
    base = _config().to_dict()
    for bad in ("bigram", "", "Unigram", ("unigram",)):
        d = dict(base, concept_kinds=bad)
        with pytest.raises(ValueError, match=r"^config\.concept_kinds=.*must be one of") as e:
            settings.validate(ml_collections.ConfigDict(d))
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"config\.concept_kinds='masked'.*max_masked"):
        settings.validate(
            ml_collections.ConfigDict(dict(base, concept_kinds="masked", max_masked=0))
        )
    with pytest.raises(ValueError, match=r"config\.concept_kinds"):
        local_runner.run(_config("attribute-noun"), world, "webdataset", str(tmp_path))


@pytest.mark.slow
def test_beam_equals_local_for_a_kind(world, tmp_path):
    c = _config("attribute_noun")
    c.pool_size = 24  # several pools and a leftover pool
    local = local_runner.run(c, world, "webdataset", str(tmp_path / "local"))
    beam = beam_runner.run(c, world, "webdataset", str(tmp_path / "beam"))
    for m in (local, beam):
        m.pop("_timings")
        m.pop("runner")
    assert json.dumps(local, sort_keys=True) == json.dumps(beam, sort_keys=True)
    for name in [s["file"] for s in local["shards"]]:
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "beam" / name).read_bytes()
