"""Evaluation image code: zero-shot classification sets (an image folder per class, a TFDS
dataset) and their bad input, image reading (crops, bytes, pixel arrays, missing and
undecodable files) and the `Skipped` record."""

import io
import os

import numpy as np
import pytest
from eval_files import save_image
from PIL import Image

from cclip_jax.evaluation import datasets
from cclip_jax.evaluation.images import DEFAULT_TEMPLATES, Skipped, load_images

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
    assert datasets.load_image_folder(str(tmp_path / "sets")).templates == list(DEFAULT_TEMPLATES)
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
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(4, 4, 3)),
                        "pixels": tfds.features.Tensor(shape=(4, 4, 3), dtype=np.uint8),
                        "label": tfds.features.ClassLabel(names=["dark_red", "blue"]),
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            return {"test": self._generate_examples()}

        def _generate_examples(self):
            for i in range(6):
                colour = np.array([[200, 0, 0], [0, 0, 255]][i % 2], np.uint8)
                pixels = np.broadcast_to(colour, (4, 4, 3)).copy()
                yield i, {"image": pixels, "pixels": pixels, "label": i % 2}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(image_feature.Image, "encode_example", encode_png)
        builder = EvalTestColours(
            data_dir=str(tmp_path_factory.mktemp("tfds")), file_format="array_record"
        )
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
    np.testing.assert_allclose(
        images[..., 0], np.broadcast_to(red[:, None, None], (6, 2, 2)), atol=1e-6
    )
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
    sources = [
        str(png),
        str(tmp_path / "missing.jpg"),
        str(tmp_path / "broken.png"),
        png.read_bytes(),
        two_tone,
    ]
    images, ok, skipped = load_images(
        sources, size=4, boxes=[(0, 0, 4, 4), None, None, (4, 0, 4, 4), None]
    )
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
