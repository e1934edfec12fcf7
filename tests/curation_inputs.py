"""Inputs of the curation tests: caption corpora (SugarCrepe's captions, captions in the
synthetic world's style), the small config, and webdataset and CSV inputs with bad samples
(module fixtures: a test module uses one by binding it, `webdataset_dir = inputs.webdataset_dir`).
"""

import csv
import glob
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cclip_jax.curation import concepts, settings, text

# The team's shared data lies beside the checkout (`../shared`), in CI too.
SUGARCREPE = os.environ.get(
    "CCLIP_SUGARCREPE", str(Path(__file__).resolve().parents[2] / "shared/data/sugarcrepe")
)


def encode_captions(captions):
    """The `concepts.Corpus` of `captions`' words."""
    return concepts.encode([text.words(c) for c in captions])


def sugarcrepe_captions(n):
    """The first `n` of SugarCrepe's captions and negative captions (skips without the data)."""
    caps = []
    for f in sorted(glob.glob(f"{SUGARCREPE}/*.json")):
        for v in json.load(open(f)).values():
            caps += [v["caption"], v["negative_caption"]]
    if not caps:
        pytest.skip("sugarcrepe data not available")
    return caps[:n]


COLOURS = ["red", "blue", "green", "yellow"]
SHAPES = ["square", "circle", "triangle"]
RELATIONS = ["left of", "right of", "above", "below"]


def load_config(arg=None):
    """The curation config (`arg`: a variant such as "small"), without progress bars."""
    c = settings.default_config(arg)
    c.progress = False
    return c


def scene_captions(n, seed=0):
    """Captions in the synthetic world's style (1-2 objects, colour, size, relation)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = f"{rng.choice(['small ', 'large ', ''])}{rng.choice(COLOURS)} {rng.choice(SHAPES)}"
        if rng.random() < 0.7:
            b = f"{rng.choice(COLOURS)} {rng.choice(SHAPES)}"
            out.append(f"a {a} {rng.choice(RELATIONS)} a {b}")
        else:
            out.append(f"a {a}")
    return out


def png(colour=(255, 0, 0)):
    """An 8x8 PNG of one colour, as bytes."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
    return buf.getvalue()


def add_file(tar, name, data):
    """Adds `data` (bytes) to the open `tar` as the file `name`."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


BAD = {  # webdataset samples that must be skipped, by reason
    "bad_empty": ("   ", png()),
    "bad_utf8": (b"a red \xff\xfe square", png()),
    "bad_long": ("a red square " * 200, png()),
    "bad_image": ("a red square", b"\x89PNG\r\n\x1a\nnot really a png"),
    "bad_noimage": ("a red square", None),
    "bad_nocaption": (None, png()),
}
BAD_REASONS = {
    "bad_empty": "caption_empty",
    "bad_utf8": "caption_not_utf8",
    "bad_long": "caption_too_long",
    "bad_image": "image_corrupt",
    "bad_noimage": "image_missing",
    "bad_nocaption": "caption_missing",
}


@pytest.fixture(scope="module")
def webdataset_dir(tmp_path_factory):
    """Two tars of 35 good samples (keys `000000`-`000069`, captions `scene_captions(70)`), the
    second also holding the `BAD` samples."""
    root = tmp_path_factory.mktemp("wds")
    caps = scene_captions(70)
    for shard in range(2):
        with tarfile.open(root / f"{shard:05d}.tar", "w") as tar:
            for i in range(35):
                j = shard * 35 + i
                key = f"{j:06d}"
                add_file(tar, f"{key}.png", png((j * 3 % 256, 0, 0)))
                add_file(tar, f"{key}.txt", caps[j].encode())
                add_file(tar, f"{key}.json", json.dumps({"id": j}).encode())
            if shard == 1:
                for key, (cap, img) in BAD.items():
                    if img is not None:
                        add_file(tar, f"{key}.png", img)
                    if cap is not None:
                        add_file(tar, f"{key}.txt", cap if isinstance(cap, bytes) else cap.encode())
    return str(root)


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory):
    """A CSV of 30 good rows (`scene_captions(30, seed=1)`), then a missing image, an
    undecodable caption and an empty one."""
    root = tmp_path_factory.mktemp("csv")
    (root / "img").mkdir()
    caps = scene_captions(30, seed=1)
    with open(root / "train.csv", "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        for i, cap in enumerate(caps):
            (root / "img" / f"{i}.png").write_bytes(png())
            w.writerow([f"img/{i}.png", cap])
        w.writerow(["img/missing.png", "a red square"])
        w.writerow(["img/0.png", "a blue \udcff circle"])  # an undecodable byte in the file
        w.writerow(["img/1.png", ""])
    return str(root / "train.csv")
