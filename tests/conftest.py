"""Test set-up shared by the whole suite.

Runs before any test module imports JAX: every test sees 8 fake CPU devices (so sharded code is
tested against unsharded code on one machine), and absl flags are parsed so code that reads
them (Grain's worker processes, absl-based CLIs imported as libraries) works under pytest.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
from absl import flags

jax.config.update("jax_num_cpu_devices", 8)

if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
