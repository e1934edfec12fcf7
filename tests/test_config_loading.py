"""`cclip_jax.config`: `load` reads a config file as `--config` does, `override` sets dotted
paths, `variant` applies a named table of them; each error is one line naming what is wrong."""

from __future__ import annotations

import os
import subprocess
import sys

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from cclip_jax import models
from cclip_jax.config import load, override, variant
from cclip_jax.models import config as model_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")


def _write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_load_passes_what_follows_the_first_colon(tmp_path, monkeypatch):
    _write(tmp_path / "c.py", "def get_config(arg='none'):\n    return {'arg': arg}\n")
    assert load(str(tmp_path / "c.py")) == {"arg": "none"}  # no `:`: get_config()
    assert load(f"{tmp_path / 'c.py'}:gpu,baseline") == {"arg": "gpu,baseline"}
    assert load(f"{tmp_path / 'c.py'}:a:b") == {"arg": "a:b"}
    assert load(f"{tmp_path / 'c.py'}:") == {"arg": ""}
    monkeypatch.chdir(tmp_path)  # a relative path is read from the working directory
    assert load("c.py:x") == {"arg": "x"}


def test_load_names_a_missing_file_and_a_file_without_get_config(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^config file \S+/nope\.py does not exist"):
        load(f"{tmp_path / 'nope.py'}:smoke")
    empty = _write(tmp_path / "empty.py", "CONFIG = 1\n")
    with pytest.raises(ValueError, match=rf"^config file {empty} defines no get_config\(\)$"):
        load(empty)


@pytest.mark.parametrize(
    "spec",
    [
        "demo.py",
        "demo.py:smoke",
        "cclip_b16.py:tpu",
        "siglip_b16.py:tpu,baseline",
        "curate.py:small",
        "experiment_v2.py:quick",
    ],
)
def test_load_gives_the_config_of_the_config_flag(spec):
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values)
    values(["prog", f"--config={os.path.join(CONFIGS, spec)}"])
    assert load(os.path.join(CONFIGS, spec)).to_dict() == values.config.to_dict()


def test_importing_the_package_and_the_curation_defaults_imports_no_jax():
    code = (
        "import sys, cclip_jax.config, cclip_jax.curation.settings as s; s.default_config();"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'jax', 'flax'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert out.strip() == "[]"


def test_override_sets_paths_in_place_in_config_dicts_and_plain_dicts():
    c = ml_collections.ConfigDict({"seed": 0, "model": {"gate": "identity", "image": {"d": 2}}})
    assert override(c, {"seed": 3, "model.image.d": 1, "model.new": True}) is c
    assert c.to_dict() == {"seed": 3, "model": {"gate": "identity", "image": {"d": 1}, "new": True}}
    d = {"data": {"curated_dir": ""}}
    assert override(d, {"data.curated_dir": "/x"}) == {"data": {"curated_dir": "/x"}}


def test_override_errors_name_the_path():
    c = ml_collections.ConfigDict({"seed": 0, "model": {"gate": "identity"}})
    with pytest.raises(
        ValueError,
        match=r"^config\.modle\.gate: config has no section "
        r"'modle' \(it has model, seed\)$",
    ):
        override(c, {"modle.gate": "ones"})
    with pytest.raises(ValueError, match=r"^config\.seed\.x: config\.seed is not a section"):
        override(c, {"seed.x": 1})
    with pytest.raises(ValueError, match=r"^config\.seed='a': Could not override"):
        override(c, {"seed": "a"})
    c.lock()
    with pytest.raises(ValueError, match=r"^config\.model\.gaet='ones': .*cannot be added"):
        override(c, {"model.gaet": "ones"})
    assert c.to_dict() == {"seed": 0, "model": {"gate": "identity"}}


def test_variant_applies_one_named_table_entry():
    table = {"gpu": {"batch_size": 4096}, "tpu": {"batch_size": 32_768, "mesh.data": 1}}
    c = ml_collections.ConfigDict({"batch_size": 256, "mesh": {"data": -1}})
    assert variant(c, table, None).batch_size == 256  # no `:arg`: the config as it is
    assert variant(c, table, "tpu").to_dict() == {"batch_size": 32_768, "mesh": {"data": 1}}
    with pytest.raises(ValueError, match=r"^unknown platform 'gpx'; known: gpu, tpu$"):
        variant(c, table, "gpx", kind="platform")


def test_config_files_use_their_variant_tables():
    gpu, tpu = load(f"{CONFIGS}/cclip_b16.py:gpu"), load(f"{CONFIGS}/cclip_b16.py:tpu")
    assert (gpu.batch_size, gpu.mesh.to_dict()) == (4096, {"data": -1, "fsdp": 8, "tensor": 1})
    assert (tpu.batch_size, tpu.mesh.to_dict()) == (32_768, {"data": 1, "fsdp": -1, "tensor": 1})
    assert load(f"{CONFIGS}/cclip_b16.py").to_dict() == gpu.to_dict()
    with pytest.raises(ValueError, match=r"^unknown platform 'gpx'; known: gpu, tpu$"):
        load(f"{CONFIGS}/cclip_b16.py:gpx")
    with pytest.raises(ValueError, match=r"^unknown variant 'smok'; known: smoke$"):
        load(f"{CONFIGS}/demo.py:smok")
    assert load(f"{CONFIGS}/curate.py:small").batch_size == 8


def test_model_defaults_and_gate_choices_have_one_source():
    cfg = models.get_default_model_config()
    fields = models.TwoTower.__dataclass_fields__
    assert cfg.temperature_init == cfg.cond_temperature_init == 10.0  # SigLIP's exp(t)
    assert fields["temperature_init"].default == fields["cond_temperature_init"].default == 10.0
    assert fields["bias_init"].default == fields["cond_bias_init"].default == -10.0
    assert tuple(model_config.GATES) == ("identity", "softplus", "sigmoid", "ones")
