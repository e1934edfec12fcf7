"""Every training config loads and validates; invalid values fail at start naming the field."""

from __future__ import annotations

import os

import ml_collections
import pytest

from cclip_jax import config as config_lib
from cclip_jax import models
from cclip_jax.training import checks, optim
from cclip_jax.training.setup import build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = [
    ("demo.py", None), ("demo.py", "smoke"), ("siglip_demo.py", None),
    ("siglip_demo.py", "baseline"), ("clip_demo.py", None), ("clip_demo.py", "curated"),
    ("cclip_b16.py", "gpu"), ("cclip_b16.py", "tpu"), ("siglip_b16.py", "gpu"),
    ("siglip_b16.py", "tpu,baseline"), ("clip_b16.py", "tpu"), ("finetune_siglip.py", "gpu"),
]


def load(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
    path = os.path.join(ROOT, "configs", name)
    return config_lib.load(path if arg is None else f"{path}:{arg}")


@pytest.mark.parametrize(("name", "arg"), CONFIGS)
def test_configs_load_and_validate(name, arg):
    c = load(name, arg)
    checks.validate_config(c)
    for field in ("total_steps", "checkpoint_every_steps", "log_every_steps", "seed",
                  "batch_size"):
        assert isinstance(c[field], int), field
    models.build_model(c.model)
    optim.make_optimizer(c)
    if "b16" in name or "finetune" in name:
        assert c.model.image.image_size == 224 and c.model.image.variant == "B/16"
        assert c.model.dtype == "bfloat16"
    if name.startswith(("siglip", "clip")):
        assert c.cond_weight == 0


@pytest.mark.parametrize(("field", "value", "match"), [
    ("total_steps", 0, "config.total_steps=0"),
    ("cond_weight", -1.0, "config.cond_weight"),
    ("loss", "hinge", "config.loss='hinge'"),
])
def test_invalid_top_level_fields_are_named(field, value, match):
    c = load("demo.py")
    c[field] = value
    with pytest.raises(ValueError, match=match):
        checks.validate_config(c)


def test_invalid_nested_fields_are_named(tmp_path):
    c = load("demo.py")
    c.model.image.variant = "XXL/16"
    with pytest.raises(ValueError, match=r"config\.model.image.variant"):
        checks.validate_config(c)
    c = load("demo.py")
    c.data.mode = "baseline"
    with pytest.raises(ValueError, match=r"config\.cond_weight must be 0"):
        checks.validate_config(c)
    c = load("demo.py")
    c.optim.lr_mults.proj = 1.0
    with pytest.raises(ValueError, match=r"config\.optim.lr_mults"):
        optim.make_optimizer(c)
    c = load("demo.py")
    c.data.curated_dir = str(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match=r"config\.data.curated_dir"):
        build(c)
    c = load("demo.py")
    c.data.curation.bm25 = 1
    with pytest.raises(ValueError, match=r"config\.data.curation.bm25"):
        build(c)


class _Source:
    curated_dir, batch_size, max_concepts = "/x", 16, 16


def test_data_checks_name_batch_size_and_mesh():
    c = load("demo.py", "smoke")
    with pytest.raises(ValueError, match=r"config\.batch_size=16 is not divisible by the 3"):
        checks.check_data(c, _Source(), 100, 3)
    c.batch_size = 32
    with pytest.raises(ValueError, match=r"config\.batch_size=32 differs from the curated"):
        checks.check_data(c, _Source(), 100, 1)
    c.batch_size = 16
    with pytest.raises(ValueError, match=r"config\.model.text.vocab_size=1024"):
        checks.check_data(c, _Source(), 5000, 1)


@pytest.mark.slow  # compiles a B/16 training step (about a minute on 2 cores)
@pytest.mark.parametrize(("name", "arg"), [("cclip_b16.py", "gpu"), ("clip_b16.py", "tpu")])
def test_b16_train_step_compiles_on_eight_devices(name, arg, tmp_path):
    """The B/16 configs' whole step (bfloat16 towers with remat, their mesh and sharding rules,
    the ring losses, AdamW) compiles on 8 devices: nothing at scale has run here, so this is
    what catches a rule or shape that only the B/16 layout exercises. The batch is cut to 16
    rows of a tiny curated folder (compiled, never executed)."""
    import jax
    import numpy as np

    from cclip_jax import data as data_lib

    demo = load("demo.py", "smoke")
    demo.data.cache_dir = str(tmp_path)
    c = load(name, arg)
    c.batch_size = 16
    c.data.curated_dir = data_lib.ensure_demo_data(demo)
    c.distributed = False
    setup = build(c)
    assert int(np.prod(list(setup.mesh.shape.values()))) == 8
    rows = setup.batch.rows
    size, length = c.model.image.image_size, c.model.text.max_len
    shapes = {"images": ((16, size, size, 3), np.float32), "text": ((16, length), np.int32),
              "concepts": ((16, length), np.int32), "labels": ((16, 16), np.int8),
              "text_cut": ((16,), np.int8), "concepts_cut": ((16,), np.int8)}
    batch = {k: jax.ShapeDtypeStruct(s, d, sharding=rows) for k, (s, d) in shapes.items()}
    assert set(batch) == set(data_lib.ARRAY_FIELDS)
    compiled = setup.step.lower(setup.abstract_state, batch).compile()
    assert compiled.cost_analysis() is not None
