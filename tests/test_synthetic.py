"""Tests of the synthetic world's scenes, rendering, captions, oracle and splits."""

import itertools
import json

import numpy as np
import pytest
from PIL import Image

from cclip_jax import synthetic as syn
from cclip_jax.synthetic import grammar, rendering, scene, splits

SIZE = 32


def _scenes(split, count, seed=0):
    return [syn.sample_scene(seed, i, split) for i in range(count)]


def _obj(shape, colour, size, x, y):
    return syn.SceneObject(shape, colour, size, x, y, syn.COLOURS[colour])


# A red square clearly left of a large blue circle, both at the same height.
HAND_MADE = syn.Scene(
    (_obj("square", "red", "small", 0.2, 0.5), _obj("circle", "blue", "large", 0.7, 0.52)), 7
)


def test_same_seed_and_index_give_identical_examples():
    for index in range(20):
        a = syn.training_example(3, index, "natural", SIZE)
        b = syn.training_example(3, index, "natural", SIZE)
        assert a.scene == b.scene
        assert a.caption == b.caption
        np.testing.assert_array_equal(a.image, b.image)


def test_different_seeds_and_splits_give_different_scenes():
    base = _scenes("train", 20, seed=0)
    assert sum(a != b for a, b in zip(base, _scenes("train", 20, seed=1), strict=True)) >= 19
    assert sum(a != b for a, b in zip(base, _scenes("iid", 20, seed=0), strict=True)) >= 19
    assert len(set(base)) == len(base)


def test_scene_json_round_trip_ignores_extra_fields():
    for s in _scenes("productivity", 5) + _scenes("train", 5):
        d = json.loads(json.dumps(s.to_json()))
        assert syn.Scene.from_json(d) == s
        assert syn.Scene.from_json(d | {"caption": "a star", "preset": "clean"}) == s


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "mauve"}, "colour: unknown value 'mauve'; known: red"),
        ({"shape": "blob"}, "shape: unknown value 'blob'"),
        ({"x": 1.5}, "x/y"),
        ({"rgb": [1, 2]}, "rgb"),
    ],
)
def test_scene_from_json_names_the_bad_field(change, message):
    d = HAND_MADE.to_json()
    d["objects"][1] |= change
    with pytest.raises(ValueError, match=r"scene\.objects\[1\]\." + message.split(":")[0]):
        syn.Scene.from_json(d)
    with pytest.raises(ValueError, match="missing field"):
        syn.Scene.from_json({"objects": [{"shape": "star"}]})


def test_relations_are_labelled_only_with_a_clear_margin():
    for s in _scenes("train", 150) + _scenes("productivity", 50) + _scenes("compositional", 50):
        assert scene.is_valid(s)
        for a, b in itertools.combinations(s.objects, 2):
            for d in (a.x - b.x, a.y - b.y):
                assert abs(d) <= scene.ALIGNED or abs(d) >= scene.MARGIN
            assert np.hypot(a.x - b.x, a.y - b.y) >= a.radius + b.radius
        for i, rel, j in s.relations():
            a, b = s.objects[i], s.objects[j]
            d = {
                "left of": b.x - a.x,
                "right of": a.x - b.x,
                "above": b.y - a.y,
                "below": a.y - b.y,
            }
            assert d[rel] >= scene.MARGIN
            assert (j, scene.CONVERSE[rel], i) in s.relations()
        # Any two objects are clearly apart on some axis, so a relation can always be stated.
        for i, j in itertools.permutations(range(len(s.objects)), 2):
            assert any(f[0] == i and f[2] == j for f in s.relations())


@pytest.mark.parametrize("size", [32, 64])
def test_rendered_pixels_match_the_scene_graph(size):
    palette = np.array(list(syn.COLOURS.values()), dtype=float)
    for s in _scenes("productivity", 10) + _scenes("train", 20):
        img = syn.render(s, size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        covered = np.zeros((size, size), bool)
        for o in s.objects:
            # The centre pixel has exactly the object's colour; the nearest named colour is its own.
            pixel = img[int(o.y * size), int(o.x * size)]
            np.testing.assert_array_equal(pixel, o.rgb)
            nearest = syn.COLOUR_NAMES[np.argmin(((palette - pixel) ** 2).sum(1))]
            assert nearest == o.colour
            d = rendering.diameter_px(o.size, size)
            r0, c0 = rendering.object_window(o.x, o.y, d, size)
            mask = rendering.shape_mask(o.shape, d)[..., 0] > 0
            covered[r0 : r0 + d, c0 : c0 + d] |= mask
            # Most of the shape's interior shows the object's colour.
            inner = rendering.shape_mask(o.shape, d)[..., 0] == 1.0
            window = img[r0 : r0 + d, c0 : c0 + d]
            assert (window[inner] == o.rgb).all()
        # Everything else is the noisy grey background.
        bg = img[~covered].astype(int)
        assert np.abs(bg - rendering.BACKGROUND).max() <= rendering.NOISE_AMPLITUDE
        assert bg.std() > 1.0  # it is noised


def test_shapes_are_distinguishable():
    masks = {s: rendering.shape_mask(s, 20)[..., 0] > 0.5 for s in syn.SHAPES}
    for a, b in itertools.combinations(syn.SHAPES, 2):
        iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
        assert iou < 0.85, (a, b, iou)


def test_png_round_trip(tmp_path):
    img = syn.render(HAND_MADE, SIZE)
    data = syn.encode_png(img)
    np.testing.assert_array_equal(syn.decode_png(data), img)
    (tmp_path / "x.png").write_bytes(data)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "x.png")), img)


def test_every_generated_caption_holds_for_its_scene():
    for preset in syn.PRESETS:
        for i, s in enumerate(_scenes("train", 100) + _scenes("productivity", 30)):
            caption = syn.make_caption(s, preset, i)
            assert syn.holds(s, caption) is True, (s, caption)


def test_clean_captions_are_complete_and_dense_natural_ones_are_not():
    def stats(preset):
        shapes, colours = [], []
        for i, s in enumerate(_scenes("productivity", 40)):
            words = syn.make_caption(s, preset, i).split()
            shapes.append(sum(w in syn.SHAPES for w in words) / len(s.objects))
            colours.append(sum(w in syn.COLOUR_NAMES for w in words) / len(s.objects))
        return np.mean(shapes), np.mean(colours)

    assert stats("clean") == (1.0, 1.0)
    natural = stats("natural")
    assert natural[0] < 0.8 and natural[1] < 0.6


def test_knobs_control_the_captions():
    s = syn.sample_scene(0, 0, "productivity")
    salient = grammar.salience_order(s)[0]
    for seed in range(10):
        only = syn.make_caption(s, {"p_salient_only": 1.0}, seed)
        assert only == grammar.noun_phrase(s.objects[salient])
        bare = syn.make_caption(s, {"p_attribute": 0.0, "p_relation": 0.0}, seed).split()
        assert not set(bare) & set(syn.COLOUR_NAMES + syn.SIZE_NAMES + ("left", "above", "below"))
        para = syn.make_caption(s, {"p_paraphrase": 1.0, "shuffle": False}, seed)
        assert syn.holds(s, para)
    assert syn.make_caption(s, "natural", 5) == syn.make_caption(s, "natural", 5)


def test_bad_presets_and_knobs_name_the_problem():
    with pytest.raises(ValueError, match="preset: unknown value 'fancy'; known: clean, natural"):
        syn.make_caption(HAND_MADE, "fancy", 0)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['p_typo'\]"):
        syn.make_caption(HAND_MADE, {"p_typo": 1.0}, 0)
    with pytest.raises(ValueError, match=r"CaptionKnobs\.p_mention"):
        syn.CaptionKnobs(p_mention=2.0)
    with pytest.raises(ValueError, match="split: unknown value 'dev'"):
        syn.sample_scene(0, 0, "dev")


@pytest.mark.parametrize(
    ("phrase", "expected"),
    [
        ("red", True),
        ("green", False),
        ("circle", True),
        ("red square", True),
        ("blue square", False),
        ("a small red square", True),
        ("a large red square", False),
        ("an orange square", False),
        ("left of", True),
        ("left", True),
        ("above", False),
        ("of", True),
        ("a", True),
        ("square left of a", True),
        ("circle left", False),
        ("a red square left of a blue circle", True),
        ("a blue circle left of a red square", False),
        ("a large blue circle right of a red square", True),
        ("a square and a circle", True),
        ("<M> red <M> left of <M> blue <M>", True),
        ("<M> blue <M> right of <M> red <M>", True),
        ("<M> blue <M> left of <M> red <M>", False),
        ("<M> large <M> left of <M> small <M>", False),
        ("<m> red <m> right of <m>", False),
        ("<M> circle and <M> square", True),
        ("a <M> circle", True),
        ("A Red Square.", True),
        ("red small square", None),
        ("purple elephant", None),
        ("left a", None),
        ("", None),
    ],
)
def test_oracle_on_a_hand_made_scene(phrase, expected):
    assert syn.holds(HAND_MADE, phrase) is expected


def test_masked_gaps_stay_inside_a_clause_unless_asked_otherwise():
    # "a blue circle and a square left of a blue circle and a red square" is a true caption, so
    # the text pattern matches it; but within one clause nothing blue is left of anything red.
    for pattern in ["<M> blue <M> left of <M> red <M>", "<M> large <M> left of <M> small <M>"]:
        assert syn.holds(HAND_MADE, pattern) is False
        assert syn.holds(HAND_MADE, pattern, within_clause=False) is True
    assert syn.holds(HAND_MADE, "<M> red <M> left of <M> blue <M>") is True


def test_every_pattern_of_a_true_caption_holds():
    """Masking words of a caption true of its scene gives a phrase that holds (within one clause
    when the caption has one clause; as text otherwise)."""
    rng = np.random.default_rng(0)
    for i, s in enumerate(_scenes("productivity", 30) + _scenes("train", 30)):
        words = syn.make_caption(s, "clean", i).split()
        for _ in range(5):
            keep = rng.random(len(words)) < 0.5
            pattern = " ".join(w if k else "<M>" for w, k in zip(words, keep, strict=True))
            assert syn.holds(s, pattern, within_clause=False) is True, (s, pattern)
            if "and" not in words:
                assert syn.holds(s, pattern) is True, (s, pattern)


def test_splits_hold_out_pairs_triples_and_three_object_scenes():
    train = _scenes("train", 400)
    assert {len(s.objects) for s in train} == {1, 2}
    multi = [s for s in train if len(s.objects) > 1]
    for s in multi:
        assert not splits.held_out_pairs_in(s) and not splits.held_out_triples_in(s)
        for i, rel, j in s.relations():
            a, b = s.objects[i].shape, s.objects[j].shape
            assert (a, rel, b) not in syn.HELD_OUT_TRIPLES
    # Held-out pairs are still seen, alone.
    assert any(splits.held_out_pairs_in(s) for s in train if len(s.objects) == 1)
    for s in _scenes("compositional", 50):
        assert len(s.objects) == 2 and splits.contains_held_out(s)
    for s in _scenes("productivity", 50):
        assert len(s.objects) == 3 and not splits.contains_held_out(s)
    assert all(len(s.objects) < 3 for s in _scenes("iid", 100))
