"""A published benchmark whose files are missing: the message names the config field and the
path (or says the field is empty), the other evaluations still run and are written, and the
evaluate CLI exits non-zero."""

from __future__ import annotations

import json
import re

import ml_collections
import numpy as np
import pytest
from PIL import Image

from cclip_jax import evaluate
from cclip_jax.config import base
from cclip_jax.evaluation import datasets, suite
from cclip_jax.evaluation import scorer as scorer_lib

COLOURS = {"red": (1.0, -1.0, -1.0), "blue": (-1.0, -1.0, 1.0)}


class ColourScorer:
    """A model stand-in: images embed as their mean colour, texts as the colour they name."""

    image_size = 8

    def embed_images(self, images):
        return np.asarray(images, np.float32).mean(axis=(1, 2))

    def embed_texts(self, texts):
        emb = [
            next((COLOURS[w] for w in re.findall("[a-z]+", t) if w in COLOURS), (0.0, 1.0, 0.0))
            for t in texts
        ]
        return np.asarray(emb, np.float32), np.zeros(len(texts), bool)

    def similarity(self, image_emb, text_emb):
        return np.asarray(image_emb) @ np.asarray(text_emb).T


def eval_config(tmp_path, image_dir):
    """SugarCrepe (one item per subset, its image folder as given) and a zero-shot class
    folder that runs."""
    (tmp_path / "json").mkdir()
    for subset in datasets.SUGARCREPE_SUBSETS:
        (tmp_path / f"json/{subset}.json").write_text(
            json.dumps(
                {
                    "0": {
                        "filename": "0.jpg",
                        "caption": "a red car",
                        "negative_caption": "a blue car",
                    }
                }
            )
        )
    for colour in COLOURS:
        (tmp_path / "classes" / colour).mkdir(parents=True)
        Image.new("RGB", (8, 8), colour).save(tmp_path / "classes" / colour / "a.png")
    e = base.eval_config()
    e.report = False
    e.synthetic.num_items = 0
    e.sugarcrepe.json_dir = str(tmp_path / "json")
    e.sugarcrepe.image_dir = image_dir
    e.zeroshot.folder = str(tmp_path / "classes")
    return ml_collections.ConfigDict({"eval": e})


@pytest.mark.parametrize("image_dir", ["", "nowhere/val2017"])
def test_missing_sugarcrepe_images_named_by_field(tmp_path, image_dir):
    config = eval_config(tmp_path, image_dir)
    results: dict = {}
    suite.external_suite(ColourScorer(), config, results)
    error = results["sugarcrepe/all"]["error"]
    if image_dir:
        assert error == (
            "config.eval.sugarcrepe.image_dir='nowhere/val2017': COCO val2017 "
            "image folder does not exist"
        )
    else:
        assert error == (
            "config.eval.sugarcrepe.image_dir is empty: set it to the COCO val2017 image folder"
        )
    # The other evaluation still ran; only the broken one counts as failed.
    assert results["zeroshot/folder"]["metrics"]["top1"] == 1.0
    assert suite.failed(results) == ["sugarcrepe/all"]


def test_loader_says_when_the_folder_is_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"COCO val2017 image folder: no path given"):
        datasets.load_sugarcrepe(str(tmp_path), "")


def test_evaluate_cli_exits_nonzero_after_writing(tmp_path, monkeypatch, capsys):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / scorer_lib.CONFIG_FILE).write_text("{}")  # a training run's folder
    config = eval_config(tmp_path, "")
    monkeypatch.setattr(
        scorer_lib.ModelScorer,
        "from_workdir",
        classmethod(lambda cls, *a, **k: (ColourScorer(), 7)),
    )
    monkeypatch.setattr(
        scorer_lib, "load_run_config", lambda workdir: config.copy_and_resolve_references()
    )
    assert evaluate.run(config, str(workdir)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: 1 evaluation(s) failed (the others are in {workdir}/eval/"
        "step_00000007.json): sugarcrepe/all: config.eval.sugarcrepe.image_dir is "
        "empty: set it to the COCO val2017 image folder"
    ]
    with open(workdir / "eval/step_00000007.json") as f:
        results = json.load(f)["results"]
    assert "error" in results["sugarcrepe/all"] and "metrics" in results["zeroshot/folder"]

    # With the images in place every evaluation runs, and the status is 0.
    (tmp_path / "val2017").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "val2017/0.jpg")
    config.eval.sugarcrepe.image_dir = str(tmp_path / "val2017")
    assert evaluate.run(config, str(workdir)) == 0
    with open(workdir / "eval/step_00000007.json") as f:
        assert json.load(f)["results"]["sugarcrepe/all"]["metrics"]["swap_att"] == 1.0
