"""The synthetic evaluations: blind baseline at chance, conditional retrieval against the
oracle, the model scorer, and the experiment's aggregation."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cclip_jax import synthetic as syn
from cclip_jax.evaluation import metrics
from cclip_jax.evaluation import synthetic as syn_eval
from cclip_jax.evaluation.blind import BigramScorer
from cclip_jax.evaluation.images import load_images
from cclip_jax.evaluation.scorer import ModelScorer
from cclip_jax.experiment import analysis


def training_captions(n: int, preset: str = "natural") -> list[str]:
    return [syn.make_caption(syn.sample_scene(0, i, "train"), preset, i) for i in range(n)]


@pytest.mark.parametrize("split", ["iid", "compositional", "productivity"])
def test_blind_bigram_baseline_sits_at_chance_on_same_word_items(split):
    """A text-only model of the training captions cannot tell the two captions of a swap item
    apart (3 sigma of binomial noise), and a blind model's Winoground image score is chance."""
    blind = BigramScorer(training_captions(3000))
    n = 150
    for kind in syn.SWAP_KINDS:
        items = syn.make_items(7, split, kind, n)
        pos = np.array([blind.log_prob(i.positive) for i in items])
        neg = np.array([blind.log_prob(i.negative) for i in items])
        acc = metrics.pair_accuracy(pos, neg)
        assert abs(acc - 0.5) <= 3 * np.sqrt(0.25 / n), (split, kind, acc)
    groups = syn.make_items(7, split, "group_attribute", 40)
    s = np.array([[[blind.log_prob(c)] * 2 for c in g.captions] for g in groups])  # [N, c, i]
    assert metrics.winoground_scores(s)["image"] == pytest.approx(0.25)


class ColourScorer:
    """An image embedding that is the fraction of pixels of each palette colour, and a concept
    gate that keeps the colours a concept names: gated retrieval by colour is then exact."""

    image_size = 32

    def embed_images(self, images):
        pixels = (np.asarray(images) + 1.0) * 127.5  # back to 0..255
        out = [
            np.mean(np.abs(pixels - np.array(rgb)).max(-1) <= 20, axis=(1, 2))
            for rgb in syn.COLOURS.values()
        ]
        return np.stack(out, -1).astype(np.float32)

    def embed_concepts(self, concepts):
        gates = np.array(
            [[float(c in concept.split()) for c in syn.COLOURS] for concept in concepts], np.float32
        )
        return gates, np.zeros(len(concepts), bool)

    similarity = staticmethod(ModelScorer.similarity)
    gated_similarity = staticmethod(ModelScorer.gated_similarity)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("world"))
    syn.write_world(
        out,
        num_train=1,
        preset="clean",
        seed=3,
        image_size=32,
        num_eval=8,
        workers=1,
        csv=False,
        progress=False,
    )
    return out


def test_conditional_retrieval_by_colour_is_exact_with_a_colour_scorer(world):
    result = syn_eval.conditional_retrieval(
        ColourScorer(), world, "iid", num_queries=12, pool_size=48, keep_rows=4, top=3
    )
    m = result["metrics"]
    assert m["colour_p1"] == 1.0 and m["colour_p5"] == 1.0  # every image with the colour first
    # A shape gate is all zeros here: every candidate ties, so precision is the base rate.
    assert m["shape_p1"] < 1.0
    assert result["n"] == 12 * len(syn_eval.CONCEPT_TYPES) and result["skipped"] == 0
    assert 0 < result["chance"]["p1"] < 1
    # The plain-cosine baseline: the same queries ranked by cos(x_q, x_j), by hand.
    paths, scenes = syn_eval.scene_pool(world, "iid", 48)
    x = ColourScorer().embed_images(load_images(paths, 32)[0])
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    hits = []
    for q in range(12):
        sims = x @ x[q]
        sims[q] = -np.inf
        top = np.flatnonzero(sims == sims.max())  # ties: the expected precision
        for concept in syn_eval.query_concepts(scenes[q], q).values():
            hits.append(np.mean([bool(syn.holds(scenes[j], concept)) for j in top]))
    assert m["plain_p1"] == pytest.approx(np.mean(hits))
    for row in result["rows"]:
        # Rows name images relative to the world; their relevance flags are the oracle's.
        assert os.path.exists(os.path.join(world, row["query"]))
        assert len(row["results"]) == 3 and row["query"] not in [r["image"] for r in row["results"]]
        scenes = {p: s for p, s in zip(*syn_eval.scene_pool(world, "iid", 48), strict=True)}
        for r in row["results"]:
            scene = scenes[os.path.join(world, r["image"])]
            assert r["relevant"] == bool(syn.holds(scene, row["concept"]))


def test_binding_and_retrieval_tasks_read_the_world(world):
    pair = syn_eval.binding_task(world, "compositional", "attribute_swap")
    group = syn_eval.binding_task(world, "iid", "group_relation")
    assert len(pair) == 8 and all(os.path.exists(p) for p in pair.image_paths)
    assert len(group) == 8 and all(os.path.exists(p) for ab in group.image_paths for p in ab)
    task = syn_eval.retrieval_task(
        world, "iid", num_images=10, captions_per_image=3, preset="natural"
    )
    assert len(task.image_paths) == 10 and len(task.captions) == 30
    np.testing.assert_array_equal(task.caption_image, np.repeat(np.arange(10), 3))


def test_analysis_flattens_aggregates_and_states_the_rule():
    run = {
        "binding/iid/attribute_swap": {"metrics": {"accuracy": 0.6}},
        "binding/iid/group_size": {"metrics": {"text": 0.3, "image": 0.2, "group": 0.1}},
        "retrieval/synthetic_iid": {"metrics": {"i2t_r1": 0.5}},
        "cond_retrieval/compositional": {"metrics": {"p1": 0.7}},
        "sugarcrepe/all": {"metrics": {"accuracy": 0.9}},
        "binding/iid/x": {"error": "bad"},
    }
    flat = analysis.flatten(run)
    assert flat == {
        "iid/attribute_swap/accuracy": 0.6,
        "iid/group_size/text": 0.3,
        "iid/group_size/image": 0.2,
        "iid/group_size/group": 0.1,
        "iid/retrieval/i2t_r1": 0.5,
        "compositional/cond_retrieval/p1": 0.7,
    }
    agg = analysis.aggregate([{"k/a/accuracy": 0.6}, {"k/a/accuracy": 0.8}, {"k/a/accuracy": 0.7}])[
        "k/a/accuracy"
    ]
    assert agg["mean"] == pytest.approx(0.7) and agg["std"] == pytest.approx(0.1)
    assert agg["n_seeds"] == 3
    table = {
        "a": {"k/a/accuracy": {"mean": 0.9, "std": 0.05}},
        "b": {"k/a/accuracy": {"mean": 0.7, "std": 0.1}},
        "c": {"k/a/accuracy": {"mean": 0.8, "std": 0.1}},
    }
    lines = analysis.summarize(table, ["k/a/accuracy"], [("a", "b"), ("a", "c")], "clean", 1000)
    assert len(lines) == 2 and "a 0.900 ± 0.050 vs b 0.700" in lines[0]  # 0.2 > 0.15
    assert lines[1].startswith("[clean] 1 other")  # 0.1 <= 0.15: within the spread
    # On 20 items a difference of 0.2 is within the item noise (2·√2·√(.25/20) = 0.32).
    assert analysis.summarize(table, ["k/a/accuracy"], [("a", "b")], "x", 20)[0].startswith(
        "[x] 1 other"
    )
    assert analysis.chance_check(table, "a", ["k/a/accuracy"], "x", 1000)[0].endswith(
        "on 1 of 1 headline keys: k/a/accuracy."
    )


@pytest.mark.slow  # compiles the towers four times (about a minute on 2 cores)
def test_model_scorer_chunks_pads_and_gates(tmp_path):
    import flax.linen as nn
    import jax
    import ml_collections

    from cclip_jax import models
    from cclip_jax.curation import tokenizer as tok_lib
    from cclip_jax.data.transforms import Tokenizer

    model = models.build_model(models.get_default_model_config("mu"))
    params = nn.unbox(jax.device_get(model.init_params(jax.random.key(0))))["params"]
    path = tok_lib.train(training_captions(300), str(tmp_path / "tok.model"), vocab_size=64)
    scorer = ModelScorer(model, params, Tokenizer(path, 16), batch_size=4)
    images = np.random.default_rng(0).uniform(-1, 1, (10, 32, 32, 3)).astype(np.float32)
    x = scorer.embed_images(images)  # chunks of 4, the last padded
    whole = np.asarray(model.apply({"params": params}, images=images).image_emb)
    np.testing.assert_allclose(x, whole, rtol=2e-5, atol=2e-6)
    t, cut = scorer.embed_texts(["a red circle", " ".join(["a red circle"] * 8)])
    assert cut.tolist() == [False, True] and t.shape == (2, x.shape[1])
    g, _ = scorer.embed_concepts(["red"])
    ga, gb = x[:2] * g[0], x[:3] * g[0]
    ref = (ga @ gb.T) / np.outer(np.linalg.norm(ga, axis=1), np.linalg.norm(gb, axis=1))
    np.testing.assert_allclose(scorer.gated_similarity(x[:2], x[:3], g[0]), ref, rtol=1e-5)

    # The same towers written as a big_vision SigLIP .npz (no conditional temperature) and
    # scored from it (what `python -m cclip_jax.evaluate` does for `init_from=*.npz`) embed
    # identically.
    npz = str(tmp_path / "siglip.npz")
    models.save_siglip_npz({k: v for k, v in params.items() if not k.startswith("cond_")}, npz)
    config = ml_collections.ConfigDict({"model": models.get_default_model_config("mu")})
    again = ModelScorer.from_siglip_npz(npz, config, path, batch_size=4)
    np.testing.assert_allclose(again.embed_images(images), x, rtol=1e-6, atol=1e-7)
