"""Every training config loads and validates; invalid values fail at start naming the field."""

from __future__ import annotations

import os
import types

import ml_collections
import pytest

from cclip_jax import config as config_lib
from cclip_jax import models
from cclip_jax.curation import demo_data
from cclip_jax.training import checks, optim
from cclip_jax.training import setup as setup_lib
from cclip_jax.training.setup import build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = [
    ("demo.py", None),
    ("demo.py", "smoke"),
    ("siglip_demo.py", None),
    ("siglip_demo.py", "baseline"),
    ("clip_demo.py", None),
    ("clip_demo.py", "curated"),
    ("cclip_b16.py", "gpu"),
    ("cclip_b16.py", "tpu"),
    ("siglip_b16.py", "gpu"),
    ("siglip_b16.py", "tpu,baseline"),
    ("clip_b16.py", "tpu"),
    ("finetune_siglip.py", "gpu"),
]


def load(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
    path = os.path.join(ROOT, "configs", name)
    return config_lib.load(path if arg is None else f"{path}:{arg}")


@pytest.mark.parametrize(("name", "arg"), CONFIGS)
def test_configs_load_and_validate(name, arg):
    c = load(name, arg)
    checks.validate_config(c)
    for field in ("total_steps", "checkpoint_every_steps", "log_every_steps", "seed", "batch_size"):
        assert isinstance(c[field], int), field
    models.build_model(c.model)
    optim.make_optimizer(c)
    if "b16" in name or "finetune" in name:
        assert c.model.image.image_size == 224 and c.model.image.variant == "B/16"
        assert c.model.dtype == "bfloat16"
    if name.startswith(("siglip", "clip")):
        assert c.cond_weight == 0


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("total_steps", 0, "config.total_steps=0"),
        ("cond_weight", -1.0, "config.cond_weight"),
        ("loss", "hinge", "config.loss='hinge'"),
    ],
)
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
    with pytest.raises(
        ValueError,
        match=r"^config\.data\.curated_dir is empty: set it .* "
        r"build the demo data first",
    ):
        build(c)  # training reads curated folders: the demo's is built beforehand
    c.data.curated_dir = str(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match=r"config\.data.curated_dir"):
        build(c)
    c = load("demo.py")
    c.data.curation.bm25 = 1
    with pytest.raises(ValueError, match=r"config\.data.curation.bm25"):
        demo_data.ensure_demo_data(c)  # before anything is written


def _data(vocab: int) -> types.SimpleNamespace:
    """What `check_data` reads of a `data.Dataset`: its source's manifest fields, its tokenizer."""
    return types.SimpleNamespace(
        source=types.SimpleNamespace(curated_dir="/x", batch_size=16, max_concepts=16),
        tokenizer=types.SimpleNamespace(vocab_size=lambda: vocab),
    )


def test_data_checks_name_batch_size_and_mesh():
    c = load("demo.py", "smoke")
    with pytest.raises(ValueError, match=r"config\.batch_size=16 is not divisible by the 3"):
        checks.check_data(c, _data(100), 3)
    c.batch_size = 32
    with pytest.raises(ValueError, match=r"config\.batch_size=32 differs from the curated"):
        checks.check_data(c, _data(100), 1)
    c.batch_size = 16
    with pytest.raises(ValueError, match=r"config\.model.text.vocab_size=1024"):
        checks.check_data(c, _data(5000), 1)
    c.max_present = 17
    with pytest.raises(ValueError, match=r"config\.max_present=17 > max_concepts 16"):
        checks.check_data(c, _data(100), 1)


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # config_flags' loader
@pytest.mark.parametrize(("arg", "want"), [("8", 8), ("dense", "dense"), ("manifest", "manifest")])
def test_max_present_takes_an_int_or_a_name_on_the_command_line(arg, want):
    from absl import flags
    from ml_collections import config_flags

    argv = ["main", f"--config={ROOT}/configs/demo.py:smoke", f"--config.max_present={arg}"]
    fv = flags.FlagValues()  # as cclip_jax.main defines --config, overrides read from argv
    config_flags.DEFINE_config_file(
        "config", None, "", flag_values=fv, lock_config=True, sys_argv=argv
    )
    fv(argv)
    assert fv.config.max_present == want
    checks.validate_config(fv.config)


@pytest.mark.parametrize("value", [-1, 0, True, "8", "sparse", 2.0])
def test_max_present_refuses_other_values_naming_the_field(value):
    c = load("demo.py")
    c.max_present = value
    with pytest.raises(ValueError, match=r"config\.max_present=.* must be 'manifest'"):
        checks.validate_config(c)


@pytest.mark.parametrize(
    ("value", "cond_weight", "want", "logged"),
    [
        ("manifest", 1.0, 4, False),
        ("manifest", 0.0, 4, False),
        (3, 1.0, 3, False),
        ("dense", 1.0, None, False),
        (8, 1.0, None, True),  # 2R >= K: the dense path, said once
        (8, 0.0, None, False),  # no conditional term: nothing to say
    ],
)
def test_max_present_resolves_against_the_data(value, cond_weight, want, logged, monkeypatch):
    lines = []
    monkeypatch.setattr(setup_lib.logging, "info", lambda msg, *a: lines.append(msg % a))
    c = load("demo.py")
    c.max_present, c.cond_weight = value, cond_weight
    source = types.SimpleNamespace(max_present=4, max_concepts=16, curated_dir="/x")
    assert setup_lib.loss_max_present(c, source) == want
    assert len(lines) == int(logged)
    if logged:
        assert lines[0].startswith(
            "config.max_present=8: R = 8, K = 16 (/x): 2R >= K, so the "
            "conditional loss runs its dense path"
        )


@pytest.mark.slow  # compiles a B/16 training step (about a minute on 2 cores)
@pytest.mark.parametrize(("name", "arg"), [("cclip_b16.py", "gpu"), ("clip_b16.py", "tpu")])
def test_b16_train_step_compiles_on_eight_devices(name, arg, smoke_curated):
    """The B/16 configs' whole step (bfloat16 towers with remat, their mesh and sharding rules,
    the ring losses, AdamW) compiles on 8 devices: nothing at scale has run here, so this is
    what catches a rule or shape that only the B/16 layout exercises. The batch is cut to 16
    rows of a tiny curated folder (compiled, never executed)."""
    import jax
    import numpy as np

    from cclip_jax import data as data_lib

    c = load(name, arg)
    c.batch_size = 16
    c.data.curated_dir = smoke_curated
    c.distributed = False
    setup = build(c)
    assert int(np.prod(list(setup.mesh.shape.values()))) == 8
    rows = setup.batch.rows
    size, length = c.model.image.image_size, c.model.text.max_len
    shapes = {
        "images": ((16, size, size, 3), np.float32),
        "text": ((16, length), np.int32),
        "concepts": ((16, length), np.int32),
        "labels": ((16, 16), np.int8),
        "text_cut": ((16,), np.int8),
        "concepts_cut": ((16,), np.int8),
    }
    batch = {k: jax.ShapeDtypeStruct(s, d, sharding=rows) for k, (s, d) in shapes.items()}
    assert set(batch) == set(data_lib.ARRAY_FIELDS)
    compiled = setup.step.lower(setup.abstract_state, batch).compile()
    assert compiled.cost_analysis() is not None
