"""Curation input adapters: webdataset tars, CSV files (a byte order mark too) and TFDS
datasets read with every skipped sample accounted for by reason, and a wrong path or an
empty input failing at the start."""

import csv
import io
import os

import curation_inputs as inputs
import numpy as np
import pytest
from curation_inputs import BAD_REASONS, load_config, png, scene_captions
from PIL import Image

from cclip_jax.curation import adapters, local_runner

# The shared input fixtures (module-scoped: pytest builds them once for this module).
webdataset_dir = inputs.webdataset_dir
csv_file = inputs.csv_file


def test_webdataset_adapter_reads_and_accounts(webdataset_dir):
    opts = adapters.ReadOptions()
    units = adapters.list_units(webdataset_dir, "webdataset", opts)
    assert [os.path.basename(u) for u in units] == ["00000.tar", "00001.tar"]
    items = [x for i, u in enumerate(units) for x in adapters.read_unit(i, u, "webdataset", opts)]
    ok = [x for x in items if isinstance(x, adapters.Example)]
    skipped = {x.key: x.reason for x in items if isinstance(x, adapters.Skip)}
    assert len(ok) == 70 and ok[0].key == "000000" and ok[0].ordinal == (0, 0)
    assert ok[0].caption == scene_captions(70)[0] and ok[0].image == png((0, 0, 0))
    assert skipped == BAD_REASONS


def test_csv_adapter_reads_and_accounts(csv_file):
    opts = adapters.ReadOptions()
    (unit,) = adapters.list_units(csv_file, "csv", opts)
    items = list(adapters.read_unit(0, unit, "csv", opts))
    ok = [x for x in items if isinstance(x, adapters.Example)]
    assert len(ok) == 30 and ok[3].key == "img/3.png" and ok[3].image == png()
    assert [x.reason for x in items if isinstance(x, adapters.Skip)] == [
        "image_missing",
        "caption_not_utf8",
        "caption_empty",
    ]
    # Caption-only runs need no image column and read no image.
    items = list(adapters.read_unit(0, unit, "csv", adapters.ReadOptions(caption_only=True)))
    assert sum(isinstance(x, adapters.Example) and x.image == b"" for x in items) == 31


def test_csv_with_byte_order_mark(tmp_path):
    """Excel writes UTF-8 CSVs with a BOM; it must not become part of the first column's name."""
    (tmp_path / "a.png").write_bytes(png())
    with open(tmp_path / "bom.csv", "w", newline="", encoding="utf-8-sig") as f:
        csv.writer(f).writerows([["image", "caption"], ["a.png", "a red square"]])
    assert (tmp_path / "bom.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    opts = adapters.ReadOptions()
    (unit,) = adapters.list_units(str(tmp_path / "bom.csv"), "csv", opts)
    (ex,) = adapters.read_unit(0, unit, "csv", opts)
    assert ex == adapters.Example((0, 0), "a.png", "a red square", png())


def test_wrong_path_and_empty_input_fail_at_start(tmp_path):
    opts = adapters.ReadOptions()
    with pytest.raises(adapters.InputError, match="does not exist"):
        adapters.list_units(str(tmp_path / "nope"), "csv", opts)
    with pytest.raises(adapters.InputError, match="empty input"):
        adapters.list_units(str(tmp_path), "webdataset", opts)
    with pytest.raises(adapters.InputError, match="input_format"):
        adapters.list_units(str(tmp_path), "parquet", opts)
    with pytest.raises(adapters.InputError, match="empty input"):
        adapters.list_units(str(tmp_path), "tfds", opts)
    (tmp_path / "empty.csv").write_text("image,caption\n")
    with pytest.raises(adapters.InputError, match="no usable example"):
        local_runner.run(
            load_config("small"), str(tmp_path / "empty.csv"), "csv", str(tmp_path / "out")
        )
    c = load_config("small")
    c.max_present = 100
    with pytest.raises(ValueError, match=r"config\.max_present"):
        local_runner.run(c, str(tmp_path / "empty.csv"), "csv", str(tmp_path / "out"))


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    tfds = pytest.importorskip("tensorflow_datasets")
    caps = scene_captions(20, seed=2)

    class CurationTestCaptions(tfds.core.GeneratorBasedBuilder):
        # Images as uint8 tensors: preparing an Image feature needs TensorFlow, which this
        # environment (like training hosts) does not have; the adapter handles both.
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Tensor(shape=(8, 8, 3), dtype=np.uint8),
                        "caption": tfds.features.Text(),
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, cap in enumerate([*caps, "   "]):
                yield i, {"image": np.full((8, 8, 3), i, np.uint8), "caption": cap}

    builder = CurationTestCaptions(
        data_dir=str(tmp_path_factory.mktemp("tfds")), file_format="array_record"
    )
    builder.download_and_prepare()
    return builder.data_dir, caps


def test_tfds_adapter(tfds_dir, tmp_path):
    path, caps = tfds_dir
    opts = adapters.ReadOptions(tfds_unit_size=8)
    units = adapters.list_units(path, "tfds", opts)
    assert len(units) == 3  # 21 records in units of 8
    items = [x for i, u in enumerate(units) for x in adapters.read_unit(i, u, "tfds", opts)]
    ok = [x for x in items if isinstance(x, adapters.Example)]
    assert sorted(x.caption for x in ok) == sorted(caps)
    assert [x.reason for x in items if isinstance(x, adapters.Skip)] == ["caption_empty"]
    pixels = np.asarray(Image.open(io.BytesIO(ok[0].image)))
    assert pixels.shape == (8, 8, 3) and len(np.unique(pixels)) == 1  # lossless PNG
    c = load_config("small")
    c.batch_size = 4
    m = local_runner.run(c, path, "tfds", str(tmp_path))
    assert m["num_batches"] == 5 and m["counts"]["skipped"] == {"caption_empty": 1}
