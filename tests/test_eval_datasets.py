"""Benchmark loaders on small files in the published formats (SugarCrepe, ARO, Winoground,
Karpathy splits, image folders, TFDS), the real SugarCrepe files when present, image reading,
and bad input: missing files and folders, wrong formats, partial image folders."""

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cclip_jax.evaluation import datasets
from cclip_jax.evaluation.images import DEFAULT_TEMPLATES, Skipped, load_images

SUGARCREPE_DIR = Path(os.environ.get(
    "CCLIP_SUGARCREPE", Path(__file__).resolve().parents[2] / "shared/data/sugarcrepe"))

# Items copied from the real SugarCrepe files (add_att.json and swap_obj.json, ids 0-2).
ADD_ATT = {
    "0": {"filename": "000000085329.jpg",
          "caption": "A drawing of a young woman with many facial piercings.",
          "negative_caption": "A drawing of a tattooed young woman with many facial piercings."},
    "1": {"filename": "000000562121.jpg",
          "caption": "Two zebras are battling each other on hind legs.",
          "negative_caption": "Two striped-and-spotted zebras are battling each other on hind "
                              "legs."},
    "2": {"filename": "000000166391.jpg",
          "caption": "cars are stopped at a traffic light on a highway",
          "negative_caption": "Congested cars are stopped at a traffic light on a highway."},
}
SWAP_OBJ = {
    "0": {"filename": "000000222235.jpg",
          "caption": "A cat sits on its hind legs, and swats at the plant.",
          "negative_caption": "A cat sits on the plant, and swats at its hind legs."},
    "1": {"filename": "000000480021.jpg",
          "caption": "A man on a motorcycle is waving at two men.",
          "negative_caption": "Two men on a motorcycle are waving at a man."},
}


def save_image(path, colour, size=(8, 6), fmt=None):
    """A solid-colour image (JPEG for .jpg names, PNG otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = fmt or ("JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG")
    Image.new("RGB", size, colour).save(path, format=fmt)
    return str(path)


def write_json(path, data):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data))
    return str(path)


# ------------------------------------------------------------------------ SugarCrepe


@pytest.fixture
def sugarcrepe(tmp_path):
    write_json(tmp_path / "json/add_att.json", ADD_ATT)
    write_json(tmp_path / "json/swap_obj.json", SWAP_OBJ)
    for item in [*ADD_ATT.values(), *SWAP_OBJ.values()][:-1]:  # the last image is missing
        save_image(tmp_path / "val2017" / item["filename"], "red")
    return tmp_path


def test_sugarcrepe_small(sugarcrepe):
    tasks = datasets.load_sugarcrepe(str(sugarcrepe / "json"), str(sugarcrepe / "val2017"),
                                     subsets=["add_att", "swap_obj"])
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
    with pytest.raises(datasets.FormatError,
                       match=r"add_att.json: item '1': missing field 'negative_caption'"):
        datasets.load_sugarcrepe(str(sugarcrepe / "json"), images, subsets=["add_att"])
    write_json(sugarcrepe / "json/add_att.json", list(ADD_ATT.values()))
    with pytest.raises(datasets.FormatError, match="expected an object mapping item ids"):
        datasets.load_sugarcrepe(str(sugarcrepe / "json"), images, subsets=["add_att"])
    (sugarcrepe / "json/add_att.json").write_text('{\n "0": {"filename": \n')
    with pytest.raises(datasets.FormatError, match=r"add_att.json: not valid JSON \(line 3"):
        datasets.load_sugarcrepe(str(sugarcrepe / "json"), images, subsets=["add_att"])


@pytest.mark.skipif(not (SUGARCREPE_DIR / "add_att.json").exists(),
                    reason=f"real SugarCrepe files not found at {SUGARCREPE_DIR}")
def test_sugarcrepe_real_files(tmp_path):
    real = {s: json.loads((SUGARCREPE_DIR / f"{s}.json").read_text())
            for s in datasets.SUGARCREPE_SUBSETS}
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
    return {"image_path": f"{2315375 + i}.jpg", "bbox_x": 0, "bbox_y": 1, "bbox_w": 4,
            "bbox_h": 5, "true_caption": "the horse is eating the grass",
            "false_caption": "the grass is eating the horse", **extra}


def test_aro_relation_and_attribution(tmp_path):
    for i in range(3):
        save_image(tmp_path / "images" / f"{2315375 + i}.jpg", "green")
    rel = write_json(tmp_path / "visual_genome_relation.json",
                     [aro_item(0, relation_name="eating"), aro_item(1, relation_name="on"),
                      aro_item(3, relation_name="on")])  # image 2315378 is missing
    task = datasets.load_aro(rel, str(tmp_path / "images"), "vg_relation")
    assert task.ids == ["0", "1"] and task.groups == ["eating", "on"]
    assert task.boxes == [(0.0, 1.0, 4.0, 5.0)] * 2 and task.min_group_size == 1
    assert task.skipped.count == 1 and "2315378.jpg" in task.skipped.examples[0]
    att = write_json(tmp_path / "visual_genome_attribution.json",
                     [aro_item(i, attributes=["white", "black"]) for i in range(3)])
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
    item = {"id": i, "caption_0": "an old person kisses a young person",
            "caption_1": "a young person kisses an old person", "image_0": f"ex_{i}_img_0",
            "image_1": f"ex_{i}_img_1", "tag": "Object", "secondary_tag": "",
            "num_main_preds": 1, "collapsed_tag": "Object", **override}
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
    assert task.captions[0] == ("an old person kisses a young person",
                                "a young person kisses an old person")
    assert task.image_paths[1] == (str(tmp_path / "images/ex_2_img_0.png"),
                                   str(tmp_path / "images/ex_2_img_1.png"))
    assert task.skipped.examples == ["id 1: ex_1_img_1.png (missing file)"]

    path.write_text(wino_line(0) + "\n" + wino_line(1, caption_1=None) + "\n")
    with pytest.raises(datasets.FormatError, match="line 2: field 'caption_1' has type"):
        datasets.load_winoground(str(path), str(tmp_path / "images"))
    path.write_text(wino_line(0) + "\n{oops\n")
    with pytest.raises(datasets.FormatError, match=r"examples\.jsonl: line 2: not valid JSON"):
        datasets.load_winoground(str(path), str(tmp_path / "images"))


# -------------------------------------------------------------------------- Karpathy


def karpathy_image(i, split, n_sentences=2, filepath=None):
    item = {"filename": f"COCO_val2014_{i:012d}.jpg", "imgid": i, "split": split,
            "sentids": list(range(n_sentences)), "cocoid": i,
            "sentences": [{"tokens": ["a", "cat"], "raw": f"image {i} caption {j}",
                           "imgid": i, "sentid": j} for j in range(n_sentences)]}
    if filepath:
        item["filepath"] = filepath
    return item


def test_karpathy_coco_layout(tmp_path):
    images = [karpathy_image(0, "test", filepath="val2014"),
              karpathy_image(1, "train", filepath="train2014"),
              karpathy_image(2, "test", n_sentences=3, filepath="val2014"),
              karpathy_image(3, "test", filepath="val2014"),  # file missing
              karpathy_image(4, "test", n_sentences=0, filepath="val2014")]
    for i in (0, 2, 4):
        save_image(tmp_path / "coco/val2014" / images[i]["filename"], "red")
    path = write_json(tmp_path / "dataset_coco.json", {"images": images, "dataset": "coco"})
    task = datasets.load_karpathy(path, str(tmp_path / "coco"))
    assert task.name == "coco_test" and task.ids == [images[0]["filename"],
                                                     images[2]["filename"]]
    assert task.image_paths[1] == str(tmp_path / "coco/val2014" / images[2]["filename"])
    assert task.captions == ["image 0 caption 0", "image 0 caption 1", "image 2 caption 0",
                             "image 2 caption 1", "image 2 caption 2"]
    np.testing.assert_array_equal(task.caption_image, [0, 0, 1, 1, 1])
    assert task.skipped.count == 2
    assert task.skipped.examples == [f"{images[3]['filename']} (missing file)",
                                     f"{images[4]['filename']} (no caption)"]


def test_karpathy_flickr_layout_and_errors(tmp_path):
    images = [karpathy_image(i, "test") for i in range(2)]
    for item in images:
        save_image(tmp_path / "flickr30k-images" / item["filename"], "red")
    path = write_json(tmp_path / "dataset_flickr30k.json",
                      {"images": images, "dataset": "flickr30k"})
    task = datasets.load_karpathy(path, str(tmp_path / "flickr30k-images"), name="f30k")
    assert task.name == "f30k" and len(task) == 2 and len(task.captions) == 4
    del images[1]["sentences"][0]["raw"]
    write_json(path, {"images": images})
    with pytest.raises(datasets.FormatError,
                       match=r"images\[1\].sentences\[0\]: missing field 'raw'"):
        datasets.load_karpathy(path, str(tmp_path / "flickr30k-images"))
    with pytest.raises(datasets.FormatError, match="no images in split 'val'"):
        write_json(path, {"images": [karpathy_image(0, "test")]})
        datasets.load_karpathy(path, str(tmp_path / "flickr30k-images"), split="val")


# ------------------------------------------------------------------- classification


def test_image_folder(tmp_path):
    save_image(tmp_path / "sets/red_car/b.png", "red")
    save_image(tmp_path / "sets/red_car/a.JPG", "red")
    save_image(tmp_path / "sets/blue/c.png", "blue")
    (tmp_path / "sets/blue/notes.txt").write_text("not an image")
    task = datasets.load_image_folder(str(tmp_path / "sets"), templates=["a {}."])
    assert task.classnames == ["blue", "red car"] and task.templates == ["a {}."]
    np.testing.assert_array_equal(task.labels, [0, 1, 1])
    assert [os.path.basename(p) for p in task.image_paths] == ["c.png", "a.JPG", "b.png"]
    assert datasets.load_image_folder(str(tmp_path / "sets")).templates == list(
        DEFAULT_TEMPLATES)
    with pytest.raises(datasets.FormatError, match="no images in class folders"):
        datasets.load_image_folder(str(tmp_path / "sets/blue"))


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    tfds = pytest.importorskip("tensorflow_datasets")
    from tensorflow_datasets.core.features import image_feature

    def encode_png(self, pixels):
        # Preparing an Image feature needs TensorFlow (absent here, as on training hosts); the
        # feature stores encoded PNG bytes, so write exactly those. Reading needs no TF.
        buf = io.BytesIO()
        Image.fromarray(np.asarray(pixels, np.uint8)).save(buf, format="PNG")
        return buf.getvalue()

    class EvalTestColours(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(4, 4, 3)),
                "pixels": tfds.features.Tensor(shape=(4, 4, 3), dtype=np.uint8),
                "label": tfds.features.ClassLabel(names=["dark_red", "blue"])}))

        def _split_generators(self, dl_manager):
            return {"test": self._generate_examples()}

        def _generate_examples(self):
            for i in range(6):
                colour = np.array([[200, 0, 0], [0, 0, 255]][i % 2], np.uint8)
                pixels = np.broadcast_to(colour, (4, 4, 3)).copy()
                yield i, {"image": pixels, "pixels": pixels, "label": i % 2}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(image_feature.Image, "encode_example", encode_png)
        builder = EvalTestColours(data_dir=str(tmp_path_factory.mktemp("tfds")),
                                  file_format="array_record")
        builder.download_and_prepare()
    return builder.data_dir


@pytest.mark.parametrize("image_key", ["image", "pixels"])
def test_tfds_classification(tfds_dir, image_key):
    task = datasets.load_tfds_classification(tfds_dir, "test", image_key=image_key)
    assert task.classnames == ["dark red", "blue"] and task.image_paths is None
    assert len(task) == 6 and sorted(task.labels) == [0, 0, 0, 1, 1, 1]
    first = task.images[0]
    assert isinstance(first, bytes if image_key == "image" else np.ndarray)
    images, ok, skipped = load_images([task.images[i] for i in range(6)], size=2)
    assert ok.all() and skipped.count == 0
    # Class 0 is (200, 0, 0): red channel 200 / 127.5 - 1; class 1 is pure blue.
    red = np.where(task.labels == 0, 200 / 127.5 - 1, -1.0)
    np.testing.assert_allclose(images[..., 0], np.broadcast_to(red[:, None, None], (6, 2, 2)),
                               atol=1e-6)
    named = datasets.load_tfds_classification(tfds_dir, "test[:2]", classnames=["r", "b"])
    assert named.classnames == ["r", "b"] and len(named) == 2


def test_tfds_bad_input(tfds_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a prepared TFDS dataset"):
        datasets.load_tfds_classification(str(tmp_path), "test")
    with pytest.raises(datasets.FormatError, match="no feature 'img'"):
        datasets.load_tfds_classification(tfds_dir, "test", image_key="img")
    with pytest.raises(datasets.FormatError, match="'pixels' is a Tensor, expected a ClassLabel"):
        datasets.load_tfds_classification(tfds_dir, "test", label_key="pixels")


# --------------------------------------------------------------------------- images


def test_load_images(tmp_path):
    two_tone = np.zeros((4, 8, 3), np.uint8)
    two_tone[:, :4] = (255, 0, 0)  # left half red, right half blue
    two_tone[:, 4:] = (0, 0, 255)
    png = tmp_path / "two_tone.png"
    Image.fromarray(two_tone).save(png)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    sources = [str(png), str(tmp_path / "missing.jpg"), str(tmp_path / "broken.png"),
               png.read_bytes(), two_tone]
    images, ok, skipped = load_images(sources, size=4,
                                      boxes=[(0, 0, 4, 4), None, None, (4, 0, 4, 4), None])
    np.testing.assert_array_equal(ok, [True, False, False, True, True])
    assert images.shape == (5, 4, 4, 3) and images.dtype == np.float32
    np.testing.assert_array_equal(images[0], np.broadcast_to([1, -1, -1], (4, 4, 3)))  # crop
    np.testing.assert_array_equal(images[3], np.broadcast_to([-1, -1, 1], (4, 4, 3)))
    np.testing.assert_array_equal(images[1], 0)
    assert images.min() >= -1 and images.max() <= 1
    assert images[4, :, 0, 0].tolist() == [1.0] * 4  # whole image resized, not cropped
    assert skipped.count == 2
    assert skipped.examples[0] == f"{tmp_path / 'missing.jpg'} (missing file)"
    assert skipped.examples[1].startswith(f"{tmp_path / 'broken.png'} (cannot decode")


def test_skipped_record():
    s = Skipped()
    for i in range(7):
        s.add(f"f{i}.jpg", "missing file")
    assert s.count == 7 and len(s.examples) == Skipped.MAX_EXAMPLES
    assert s.note().endswith("f4.jpg (missing file), ...")
    s.extend(Skipped(3, ["x (y)"]))
    assert s.count == 10 and len(s.examples) == Skipped.MAX_EXAMPLES
    assert Skipped().note() == "0 skipped"
