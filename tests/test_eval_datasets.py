"""Benchmark loaders on small files in the published formats (SugarCrepe, ARO, Winoground,
Karpathy splits), the real SugarCrepe files when present, and bad input: missing files and
folders, wrong formats, partial image folders. The image code (classification sets, image
reading) is tested in test_eval_images.py."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from eval_files import save_image, write_json

from cclip_jax.evaluation import datasets

SUGARCREPE_DIR = Path(
    os.environ.get(
        "CCLIP_SUGARCREPE", Path(__file__).resolve().parents[2] / "shared/data/sugarcrepe"
    )
)

# Items copied from the real SugarCrepe files (add_att.json and swap_obj.json, ids 0-2).
ADD_ATT = {
    "0": {
        "filename": "000000085329.jpg",
        "caption": "A drawing of a young woman with many facial piercings.",
        "negative_caption": "A drawing of a tattooed young woman with many facial piercings.",
    },
    "1": {
        "filename": "000000562121.jpg",
        "caption": "Two zebras are battling each other on hind legs.",
        "negative_caption": "Two striped-and-spotted zebras are battling each other on hind legs.",
    },
    "2": {
        "filename": "000000166391.jpg",
        "caption": "cars are stopped at a traffic light on a highway",
        "negative_caption": "Congested cars are stopped at a traffic light on a highway.",
    },
}
SWAP_OBJ = {
    "0": {
        "filename": "000000222235.jpg",
        "caption": "A cat sits on its hind legs, and swats at the plant.",
        "negative_caption": "A cat sits on the plant, and swats at its hind legs.",
    },
    "1": {
        "filename": "000000480021.jpg",
        "caption": "A man on a motorcycle is waving at two men.",
        "negative_caption": "Two men on a motorcycle are waving at a man.",
    },
}


# ------------------------------------------------------------------------ SugarCrepe


@pytest.fixture
def sugarcrepe(tmp_path):
    write_json(tmp_path / "json/add_att.json", ADD_ATT)
    write_json(tmp_path / "json/swap_obj.json", SWAP_OBJ)
    for item in [*ADD_ATT.values(), *SWAP_OBJ.values()][:-1]:  # the last image is missing
        save_image(tmp_path / "val2017" / item["filename"], "red")
    return tmp_path


def test_sugarcrepe_small(sugarcrepe):
    tasks = datasets.load_sugarcrepe(
        str(sugarcrepe / "json"), str(sugarcrepe / "val2017"), subsets=["add_att", "swap_obj"]
    )
    add = tasks["add_att"]
    assert len(add) == 3 and add.ids == ["0", "1", "2"] and add.skipped.count == 0
    assert add.positives[1] == ADD_ATT["1"]["caption"]
    assert add.negatives[2] == ADD_ATT["2"]["negative_caption"]
    assert add.image_paths[0] == str(sugarcrepe / "val2017/000000085329.jpg")
    assert add.source.endswith("add_att.json") and add.boxes is None
    swap = tasks["swap_obj"]
    assert swap.ids == ["0"] and swap.skipped.count == 1
    assert swap.skipped.examples == ["000000480021.jpg (missing file)"]
    assert "1 skipped: 000000480021.jpg" in swap.skipped.note()


def test_sugarcrepe_bad_input(sugarcrepe):
    images = str(sugarcrepe / "val2017")
    with pytest.raises(FileNotFoundError, match=r"replace_rel\.json"):
        datasets.load_sugarcrepe(str(sugarcrepe / "json"), images, subsets=["replace_rel"])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        datasets.load_sugarcrepe(str(sugarcrepe / "json"), str(sugarcrepe / "nowhere"))
    with pytest.raises(ValueError, match="unknown SugarCrepe subsets"):
        datasets.load_sugarcrepe(str(sugarcrepe / "json"), images, subsets=["add_rel"])
    broken = {**ADD_ATT, "1": {"filename": "x.jpg", "caption": "a cat"}}
    write_json(sugarcrepe / "json/add_att.json", broken)
    with pytest.raises(
        datasets.FormatError, match=r"add_att.json: item '1': missing field 'negative_caption'"
    ):
        datasets.load_sugarcrepe(str(sugarcrepe / "json"), images, subsets=["add_att"])
    write_json(sugarcrepe / "json/add_att.json", list(ADD_ATT.values()))
    with pytest.raises(datasets.FormatError, match="expected an object mapping item ids"):
        datasets.load_sugarcrepe(str(sugarcrepe / "json"), images, subsets=["add_att"])
    (sugarcrepe / "json/add_att.json").write_text('{\n "0": {"filename": \n')
    with pytest.raises(datasets.FormatError, match=r"add_att.json: not valid JSON \(line 3"):
        datasets.load_sugarcrepe(str(sugarcrepe / "json"), images, subsets=["add_att"])


@pytest.mark.skipif(
    not (SUGARCREPE_DIR / "add_att.json").exists(),
    reason=f"real SugarCrepe files not found at {SUGARCREPE_DIR}",
)
def test_sugarcrepe_real_files(tmp_path):
    real = {
        s: json.loads((SUGARCREPE_DIR / f"{s}.json").read_text())
        for s in datasets.SUGARCREPE_SUBSETS
    }
    present = {"000000501523.jpg", "000000085329.jpg", "000000222235.jpg"}
    for name in present:
        save_image(tmp_path / name, "blue", size=(2, 2))
    tasks = datasets.load_sugarcrepe(str(SUGARCREPE_DIR), str(tmp_path))
    assert sorted(tasks) == sorted(datasets.SUGARCREPE_SUBSETS)
    total = 0
    for subset, task in tasks.items():
        items = real[subset]
        kept = [k for k, v in items.items() if v["filename"] in present]
        assert task.ids == kept
        assert task.skipped.count == len(items) - len(kept)
        assert all(e.endswith("(missing file)") for e in task.skipped.examples)
        total += len(items)
    assert total == 7511  # the README's count
    assert sum(len(t) for t in tasks.values()) >= 22  # 000000501523.jpg is used 22 times


# ------------------------------------------------------------------------------- ARO


def aro_item(i, **extra):
    return {
        "image_path": f"{2315375 + i}.jpg",
        "bbox_x": 0,
        "bbox_y": 1,
        "bbox_w": 4,
        "bbox_h": 5,
        "true_caption": "the horse is eating the grass",
        "false_caption": "the grass is eating the horse",
        **extra,
    }


def test_aro_relation_and_attribution(tmp_path):
    for i in range(3):
        save_image(tmp_path / "images" / f"{2315375 + i}.jpg", "green")
    rel = write_json(
        tmp_path / "visual_genome_relation.json",
        [
            aro_item(0, relation_name="eating"),
            aro_item(1, relation_name="on"),
            aro_item(3, relation_name="on"),
        ],
    )  # image 2315378 is missing
    task = datasets.load_aro(rel, str(tmp_path / "images"), "vg_relation")
    assert task.ids == ["0", "1"] and task.groups == ["eating", "on"]
    assert task.boxes == [(0.0, 1.0, 4.0, 5.0)] * 2 and task.min_group_size == 1
    assert task.skipped.count == 1 and "2315378.jpg" in task.skipped.examples[0]
    att = write_json(
        tmp_path / "visual_genome_attribution.json",
        [aro_item(i, attributes=["white", "black"]) for i in range(3)],
    )
    task = datasets.load_aro(att, str(tmp_path / "images"), "vg_attribution")
    assert task.groups == ["white_black"] * 3
    assert task.min_group_size == datasets.ARO_ATTRIBUTION_MIN_GROUP


def test_aro_bad_input(tmp_path):
    (tmp_path / "images").mkdir()
    bad = aro_item(1, relation_name="on")
    del bad["bbox_w"]
    path = write_json(tmp_path / "rel.json", [aro_item(0, relation_name="on"), bad])
    with pytest.raises(datasets.FormatError, match=r"rel\.json: item 1: missing field 'bbox_w'"):
        datasets.load_aro(path, str(tmp_path / "images"), "vg_relation")
    path = write_json(tmp_path / "rel.json", [aro_item(0)])
    with pytest.raises(datasets.FormatError, match="neither 'relation_name'"):
        datasets.load_aro(path, str(tmp_path / "images"), "vg_relation")
    path = write_json(tmp_path / "rel.json", [aro_item(0, relation_name="on", bbox_x="0")])
    with pytest.raises(datasets.FormatError, match="item 0: field 'bbox_x' has type str"):
        datasets.load_aro(path, str(tmp_path / "images"), "vg_relation")


# ------------------------------------------------------------------------ Winoground


def wino_line(i, **override):
    item = {
        "id": i,
        "caption_0": "an old person kisses a young person",
        "caption_1": "a young person kisses an old person",
        "image_0": f"ex_{i}_img_0",
        "image_1": f"ex_{i}_img_1",
        "tag": "Object",
        "secondary_tag": "",
        "num_main_preds": 1,
        "collapsed_tag": "Object",
        **override,
    }
    return json.dumps(item)


def test_winoground(tmp_path):
    for i in range(3):
        for j in range(2):
            if (i, j) != (1, 1):
                save_image(tmp_path / "images" / f"ex_{i}_img_{j}.png", "blue")
    path = tmp_path / "examples.jsonl"
    path.write_text("\n".join(wino_line(i) for i in range(3)) + "\n\n")
    task = datasets.load_winoground(str(path), str(tmp_path / "images"))
    assert task.ids == ["0", "2"] and task.tags == ["Object", "Object"]
    assert task.captions[0] == (
        "an old person kisses a young person",
        "a young person kisses an old person",
    )
    assert task.image_paths[1] == (
        str(tmp_path / "images/ex_2_img_0.png"),
        str(tmp_path / "images/ex_2_img_1.png"),
    )
    assert task.skipped.examples == ["id 1: ex_1_img_1.png (missing file)"]

    path.write_text(wino_line(0) + "\n" + wino_line(1, caption_1=None) + "\n")
    with pytest.raises(datasets.FormatError, match="line 2: field 'caption_1' has type"):
        datasets.load_winoground(str(path), str(tmp_path / "images"))
    path.write_text(wino_line(0) + "\n{oops\n")
    with pytest.raises(datasets.FormatError, match=r"examples\.jsonl: line 2: not valid JSON"):
        datasets.load_winoground(str(path), str(tmp_path / "images"))


# -------------------------------------------------------------------------- Karpathy


def karpathy_image(i, split, n_sentences=2, filepath=None):
    item = {
        "filename": f"COCO_val2014_{i:012d}.jpg",
        "imgid": i,
        "split": split,
        "sentids": list(range(n_sentences)),
        "cocoid": i,
        "sentences": [
            {"tokens": ["a", "cat"], "raw": f"image {i} caption {j}", "imgid": i, "sentid": j}
            for j in range(n_sentences)
        ],
    }
    if filepath:
        item["filepath"] = filepath
    return item


def test_karpathy_coco_layout(tmp_path):
    images = [
        karpathy_image(0, "test", filepath="val2014"),
        karpathy_image(1, "train", filepath="train2014"),
        karpathy_image(2, "test", n_sentences=3, filepath="val2014"),
        karpathy_image(3, "test", filepath="val2014"),  # file missing
        karpathy_image(4, "test", n_sentences=0, filepath="val2014"),
    ]
    for i in (0, 2, 4):
        save_image(tmp_path / "coco/val2014" / images[i]["filename"], "red")
    path = write_json(tmp_path / "dataset_coco.json", {"images": images, "dataset": "coco"})
    task = datasets.load_karpathy(path, str(tmp_path / "coco"))
    assert task.name == "coco_test" and task.ids == [images[0]["filename"], images[2]["filename"]]
    assert task.image_paths[1] == str(tmp_path / "coco/val2014" / images[2]["filename"])
    assert task.captions == [
        "image 0 caption 0",
        "image 0 caption 1",
        "image 2 caption 0",
        "image 2 caption 1",
        "image 2 caption 2",
    ]
    np.testing.assert_array_equal(task.caption_image, [0, 0, 1, 1, 1])
    assert task.skipped.count == 2
    assert task.skipped.examples == [
        f"{images[3]['filename']} (missing file)",
        f"{images[4]['filename']} (no caption)",
    ]


def test_karpathy_flickr_layout_and_errors(tmp_path):
    images = [karpathy_image(i, "test") for i in range(2)]
    for item in images:
        save_image(tmp_path / "flickr30k-images" / item["filename"], "red")
    path = write_json(
        tmp_path / "dataset_flickr30k.json", {"images": images, "dataset": "flickr30k"}
    )
    task = datasets.load_karpathy(path, str(tmp_path / "flickr30k-images"), name="f30k")
    assert task.name == "f30k" and len(task) == 2 and len(task.captions) == 4
    del images[1]["sentences"][0]["raw"]
    write_json(path, {"images": images})
    with pytest.raises(
        datasets.FormatError, match=r"images\[1\].sentences\[0\]: missing field 'raw'"
    ):
        datasets.load_karpathy(path, str(tmp_path / "flickr30k-images"))
    with pytest.raises(datasets.FormatError, match="no images in split 'val'"):
        write_json(path, {"images": [karpathy_image(0, "test")]})
        datasets.load_karpathy(path, str(tmp_path / "flickr30k-images"), split="val")
