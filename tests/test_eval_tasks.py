"""Task runners with a deterministic colour scorer on tiny tasks loaded from files in the real
formats: exact metric values (ties included), skipped images, cut captions named by item, and
chunked embedding equal to one chunk."""

import json
from pathlib import Path

import numpy as np
import pytest
from eval_files import save_image, write_json
from PIL import Image

from cclip_jax.evaluation import datasets, retrieval, tasks

COLOURS = {"red": (1, -1, -1), "green": (-1, 1, -1), "blue": (-1, -1, 1)}


class ColourScorer:
    """Image embedding: the mean RGB colour in [-1, 1]. Text embedding: the sum of its colour
    words' RGB vectors over its first `max_words` words (more words are cut). Similarity: dot
    product. So a red image scores 3 with "red", -1 with "green" / "blue", 0 with no colour."""

    image_size = 4
    max_words = 6

    def __init__(self):
        self.image_batches = []

    def embed_images(self, images):
        assert images.shape[1:] == (4, 4, 3) and images.dtype == np.float32
        self.image_batches.append(len(images))
        return images.mean(axis=(1, 2))

    def embed_texts(self, texts):
        words = [t.lower().replace(".", " ").split() for t in texts]
        emb = np.array(
            [
                sum(
                    (np.array(COLOURS[w], float) for w in ws[: self.max_words] if w in COLOURS),
                    np.zeros(3),
                )
                for ws in words
            ]
        )
        return emb.reshape(len(texts), 3), np.array([len(ws) > self.max_words for ws in words])

    def similarity(self, image_emb, text_emb):
        return image_emb @ text_emb.T


def save_png(path, colour):
    """PNG bytes whatever the name says: exact colours (PIL reads by content)."""
    save_image(path, colour, size=(6, 5), fmt="PNG")


# -------------------------------------------------------------------------- pairs


@pytest.fixture
def sugarcrepe(tmp_path):
    items = {  # (image colour or None for a missing file, caption, negative caption)
        "0": ("red", "a red square.", "a green square."),  # right: 3 vs -1
        "1": ("lime", "a green ball", "a blue ball"),  # right
        "2": ("blue", "a red ball", "a blue ball"),  # wrong
        "3": ("red", "a square", "a ball"),  # tie 0 vs 0: 0.5
        "4": (None, "a red cat", "a blue cat"),  # image missing: skipped
        "5": ("red", "a red square on a table in a room", "a blue square"),  # cut, right
    }
    data = {}
    for key, (colour, pos, neg) in items.items():
        name = f"{int(key) + 139:012d}.jpg"
        if colour:  # PNG bytes under a COCO .jpg name: exact colours, PIL reads by content
            save_png(tmp_path / "val2017" / name, colour)
        data[key] = {"filename": name, "caption": pos, "negative_caption": neg}
    write_json(tmp_path / "add_att.json", data)
    # swap_obj: one right item, replace_att: one wrong item.
    write_json(
        tmp_path / "swap_obj.json",
        {"0": {"filename": "000000000139.jpg", "caption": "red", "negative_caption": "blue"}},
    )
    write_json(
        tmp_path / "replace_att.json",
        {"7": {"filename": "000000000139.jpg", "caption": "blue", "negative_caption": "red"}},
    )
    return datasets.load_sugarcrepe(
        str(tmp_path), str(tmp_path / "val2017"), subsets=["add_att", "swap_obj", "replace_att"]
    )


def test_run_pairs(sugarcrepe):
    task = sugarcrepe["add_att"]
    result = tasks.run_pairs(ColourScorer(), task)
    assert result["metrics"] == {"accuracy": pytest.approx(3.5 / 5)}  # 1 + 1 + 0 + 0.5 + 1
    # Each evaluated item's score, by id (what the experiment's bootstrap resamples).
    assert result["per_item"]["accuracy"] == [1, 1, 0, 0.5, 1]
    assert len(result["per_item"]["ids"]) == 5 == len(set(result["per_item"]["ids"]))
    assert result["n"] == 5 and result["chance"] == {"accuracy": 0.5}
    assert result["skipped"] == 1 and result["skipped_examples"] == [
        "000000000143.jpg (missing file)"
    ]
    assert result["truncated"] == 1
    assert result["truncated_examples"] == [
        f"{task.source}: item 5 true caption (longer than the text length, cut)"
    ]
    json.dumps(result)  # JSON-ready


def test_run_pairs_chunked_equals_one_chunk(sugarcrepe):
    scorer = ColourScorer()
    chunked = tasks.run_pairs(scorer, sugarcrepe["add_att"], batch_size=2)
    assert max(scorer.image_batches) <= 2 and len(scorer.image_batches) == 3
    assert chunked == tasks.run_pairs(ColourScorer(), sugarcrepe["add_att"], batch_size=256)


def test_run_pairs_undecodable_image(sugarcrepe):
    task = sugarcrepe["add_att"]
    Path(task.image_paths[0]).write_bytes(b"not an image")
    result = tasks.run_pairs(ColourScorer(), task)
    assert result["n"] == 4 and result["skipped"] == 2  # missing at load, corrupt at run
    assert result["metrics"]["accuracy"] == pytest.approx(2.5 / 4)
    assert "cannot decode" in result["skipped_examples"][1]


def test_run_sugarcrepe(sugarcrepe):
    result = tasks.run_sugarcrepe(ColourScorer(), sugarcrepe)
    m = result["metrics"]
    assert m["add_att"] == pytest.approx(0.7) and m["swap_obj"] == 1.0
    assert m["replace_att"] == 0.0
    # Categories: the mean of their subsets' accuracies.
    assert m["add"] == pytest.approx(0.7) and m["swap"] == 1.0 and m["replace"] == 0.0
    assert result["n"] == 7 and result["skipped"] == 1 and result["truncated"] == 1
    assert set(result["subsets"]) == {"add_att", "swap_obj", "replace_att"}
    json.dumps(result)


def test_run_pairs_aro_boxes_and_groups(tmp_path):
    img = np.zeros((4, 8, 3), np.uint8)
    img[:, :4] = (255, 0, 0)  # left half red, right half blue
    img[:, 4:] = (0, 0, 255)
    (tmp_path / "images").mkdir()
    Image.fromarray(img).save(tmp_path / "images/1.jpg", format="PNG")

    def item(box_x, relation, true="red", false="blue"):
        return {
            "image_path": "1.jpg",
            "bbox_x": box_x,
            "bbox_y": 0,
            "bbox_w": 4,
            "bbox_h": 4,
            "true_caption": true,
            "false_caption": false,
            "relation_name": relation,
        }

    path = write_json(
        tmp_path / "visual_genome_relation.json",
        [
            item(0, "on"),  # crop is red: right
            item(4, "on"),  # crop is blue: wrong
            item(4, "under", "blue", "red"),  # right
            # The whole image (mean (0, -1, 0)) scores red and blue alike (1 and 1): 0.5.
            {**item(0, "under"), "bbox_w": 8},
        ],
    )
    task = datasets.load_aro(path, str(tmp_path / "images"), "vg_relation")
    result = tasks.run_pairs(ColourScorer(), task)
    assert result["metrics"] == pytest.approx(
        {"accuracy": 2.5 / 4, "macro_accuracy": (0.5 + 0.75) / 2}
    )
    assert result["groups"] == {
        "on": {"accuracy": 0.5, "n": 2},
        "under": {"accuracy": 0.75, "n": 2},
    }
    task.min_group_size = 3  # as ARO's attribution table: small groups left out
    result = tasks.run_pairs(ColourScorer(), task)
    assert result["groups"] == {} and "macro_accuracy" not in result["metrics"]


# ------------------------------------------------------------------------- groups


def test_run_groups(tmp_path):
    lines = [  # (image_0 colour, image_1 colour, caption_0, caption_1)
        ("red", "blue", "red", "blue"),  # all right: 1, 1, 1
        ("red", "blue", "a thing", "another thing"),  # all tied: 1/4, 1/4, 1/6
        ("red", "blue", "blue", "red"),  # all wrong
        ("red", None, "red", "blue"),  # image_1 missing: skipped
    ]
    with open(tmp_path / "examples.jsonl", "w") as f:
        for i, (c0, c1, t0, t1) in enumerate(lines):
            for j, colour in enumerate((c0, c1)):
                if colour:
                    save_png(tmp_path / "images" / f"ex_{i}_img_{j}.png", colour)
            f.write(
                json.dumps(
                    {
                        "id": i,
                        "caption_0": t0,
                        "caption_1": t1,
                        "image_0": f"ex_{i}_img_0",
                        "image_1": f"ex_{i}_img_1",
                        "tag": "Object" if i < 2 else "Relation",
                        "secondary_tag": "",
                        "num_main_preds": 1,
                    }
                )
                + "\n"
            )
    task = datasets.load_winoground(str(tmp_path / "examples.jsonl"), str(tmp_path / "images"))
    for batch_size in (1, 256):
        result = tasks.run_groups(ColourScorer(), task, batch_size=batch_size)
        assert result["metrics"] == pytest.approx(
            {"text": 1.25 / 3, "image": 1.25 / 3, "group": (1 + 1 / 6) / 3}
        )
        assert result["chance"] == pytest.approx({"text": 0.25, "image": 0.25, "group": 1 / 6})
        assert result["n"] == 3 and result["skipped"] == 1
        assert result["per_item"]["ids"] == ["0", "1", "2"]
        assert result["per_item"]["group"] == pytest.approx([1, 1 / 6, 0], abs=1e-6)
        assert result["tags"]["Object"] == pytest.approx(
            {"text": 0.625, "image": 0.625, "group": 7 / 12, "n": 2}
        )
    # An image of another item must not leak into an item's 2x2 block: check item 2 alone.
    Path(task.image_paths[0][0]).unlink()
    Path(task.image_paths[1][0]).unlink()
    result = tasks.run_groups(ColourScorer(), task, batch_size=3)
    assert result["metrics"] == {"text": 0.0, "image": 0.0, "group": 0.0}
    assert result["n"] == 1 and result["skipped"] == 3


# ---------------------------------------------------------------------- retrieval


def test_run_retrieval(tmp_path):
    def image(i, colour, captions, split="test"):
        if colour:
            save_png(tmp_path / "flickr" / f"{i}.jpg", colour)
        return {
            "filename": f"{i}.jpg",
            "split": split,
            "imgid": i,
            "sentences": [{"raw": c, "tokens": c.split()} for c in captions],
        }

    data = {
        "dataset": "flickr30k",
        "images": [
            image(0, "red", ["a red car", "something red"]),
            image(1, "lime", ["green field", "a thing"]),  # "a thing": no colour, ties all
            image(2, None, ["a blue cat", "blue"]),  # missing: skipped with its captions
            image(3, "blue", ["blue sky", "the blue sea over a long and sandy beach"]),  # cut
            image(4, "red", ["red"], split="val"),
        ],
    }
    task = datasets.load_karpathy(
        write_json(tmp_path / "dataset_flickr30k.json", data), str(tmp_path / "flickr")
    )
    for batch_size in (1, 4, 256):
        result = retrieval.run_retrieval(ColourScorer(), task, batch_size=batch_size)
        # i2t: every image's best caption is its own (3 vs at most 0). t2i: 5 of 6 captions
        # find their image first; "a thing" scores 0 with all 3 images: 1/3 at R@1.
        assert result["metrics"] == pytest.approx(
            {
                "i2t_r1": 1.0,
                "i2t_r5": 1.0,
                "i2t_r10": 1.0,
                "t2i_r1": (5 + 1 / 3) / 6,
                "t2i_r5": 1.0,
                "t2i_r10": 1.0,
            }
        )
        # Chance: 2 of 6 captions per image; one of 3 images per caption.
        assert result["chance"]["i2t_r1"] == pytest.approx(1 / 3)
        assert result["chance"]["t2i_r1"] == pytest.approx(1 / 3)
        assert result["n"] == 3 and result["n_captions"] == 6 and result["skipped"] == 1
        assert result["truncated_examples"] == [
            f"{task.source}: 3.jpg caption 1 (longer than the text length, cut)"
        ]


# ----------------------------------------------------------------- classification


def test_run_classification_image_folder(tmp_path):
    for rel, colour in [
        ("red/a.png", "red"),
        ("red/b.png", "red"),
        ("green/c.png", "lime"),
        ("green/d.png", "blue"),
        ("blue/e.png", "blue"),
    ]:
        save_png(tmp_path / "sets" / rel, colour)
    (tmp_path / "sets/blue/broken.png").write_bytes(b"not a png")
    task = datasets.load_image_folder(
        str(tmp_path / "sets"), templates=["a photo of a {}.", "a {} thing"]
    )
    assert task.classnames == ["blue", "green", "red"]
    for batch_size in (2, 256):
        result = retrieval.run_classification(
            ColourScorer(), task, batch_size=batch_size, ks=(1, 2)
        )
        # d.png is blue but filed as green: wrong at top 1; green ties red for second: 0.5.
        assert result["metrics"] == pytest.approx({"top1": 4 / 5, "top2": 4.5 / 5})
        assert result["chance"] == pytest.approx({"top1": 1 / 3, "top2": 2 / 3})
        assert result["n"] == 5 and result["skipped"] == 1 and result["num_classes"] == 3


def test_run_classification_in_memory_and_cut_prompts():
    images = [np.full((3, 3, 3), c, np.uint8) for c in ([255, 0, 0], [0, 0, 255])]
    task = datasets.ClassificationTask(
        "colours",
        None,
        np.array([0, 1]),
        ["red", "blue"],
        ["{}", "a very long prompt about a photo of a {}"],
        images=images,
    )
    result = retrieval.run_classification(ColourScorer(), task, ks=(1,))
    assert result["metrics"] == {"top1": 1.0}
    assert result["truncated"] == 2 and "class 'red' prompt" in result["truncated_examples"][0]


def test_class_embeddings_are_normalised_template_means():
    emb = retrieval.class_embeddings(ColourScorer(), ["red"], ["{}", "{} red"], datasets.Skipped())
    # Templates give (1,-1,-1) and (2,-2,-2): unit vectors agree, so the class is their direction.
    np.testing.assert_allclose(emb, [np.array([1, -1, -1]) / np.sqrt(3)])
