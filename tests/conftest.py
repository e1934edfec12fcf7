"""Test set-up shared by the whole suite.

Runs before any test module imports JAX: every test sees 8 fake CPU devices (so sharded code is
tested against unsharded code on one machine), and absl flags are parsed so code that reads
them (Grain's worker processes, absl-based CLIs imported as libraries) works under pytest.

Shared fixtures: the smoke demo data (`configs/demo.py:smoke`, tests/demo_smoke.py), built
once per pytest process (each xdist worker builds its own) into a temporary cache, and configs
of it; XLA's persistent compilation cache for the modules that compile the same programs
several times.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import pytest
from absl import flags

jax.config.update("jax_num_cpu_devices", 8)

if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()

from demo_smoke import smoke_config  # noqa: E402 (after the devices are set)


@pytest.fixture(scope="session")
def smoke_curated(tmp_path_factory) -> str:
    """The smoke demo's curated folder (batch 16, K = 16, R = 8), its world and curation built
    once into a temporary cache. Tests only read it."""
    from cclip_jax.curation import demo_data

    return demo_data.ensure_demo_data(smoke_config(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def smoke_cache(smoke_curated) -> str:
    """The data cache holding `smoke_curated` (evaluation worlds are written beside it)."""
    return os.path.dirname(smoke_curated)


@pytest.fixture
def smoke(smoke_cache, smoke_curated):
    """`smoke(**overrides)`: a fresh smoke config on the shared cache and curated folder, with
    top-level `overrides` (`smoke(total_steps=3)`)."""

    def make(**overrides):
        c = smoke_config(smoke_cache, smoke_curated)
        for key, value in overrides.items():
            c[key] = value
        return c

    return make


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """XLA's persistent cache for one module: its tests that compile the same program compile
    it once (module-scoped: the previous settings come back after the module)."""
    old = (
        jax.config.jax_compilation_cache_dir,
        jax.config.jax_persistent_cache_min_compile_time_secs,
    )
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    yield
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])
