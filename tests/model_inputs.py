"""Model inputs for the model tests: random images and captions, and random variables of a
model's shapes drawn with numpy."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cclip_jax import models

B, K = 4, 3  # the default batch size and number of concepts of `make_inputs`


def make_inputs(model: models.TwoTower, seed: int = 0, batch: int = B, concepts: int = K):
    """Random images `[B, S, S, 3]`, right-padded captions `[B, L]`, concepts `[K, L]`."""
    rng = np.random.default_rng(seed)
    s = model.image["image_size"]
    length = model.text["max_len"]
    vocab = model.text["vocab_size"]

    def tokens(n: int) -> np.ndarray:
        ids = rng.integers(2, vocab, size=(n, length))
        lengths = rng.integers(1, length + 1, size=n)
        return np.where(np.arange(length)[None] < lengths[:, None], ids, 0).astype(np.int32)

    images = rng.uniform(-1, 1, size=(batch, s, s, 3)).astype(np.float32)
    return dict(images=images, texts=tokens(batch), concepts=tokens(concepts))


def random_variables(model: models.TwoTower, seed: int = 0) -> dict:
    """Random variables of `model`'s shapes, drawn with numpy.

    Why not `model.init`: on a CPU, compiling the threefry draws of every initializer costs
    seconds per model, while these tests only need generic, well-scaled weights (the real
    initialisation runs in the sharding tests and the temperature test).
    """
    rng = np.random.default_rng(seed)
    temperatures = {"t": np.log(10.0), "cond_t": np.log(10.0), "b": -10.0, "cond_b": -10.0}

    def draw(path, leaf):
        name = path[-1].key
        if name in temperatures:
            return jnp.asarray(temperatures[name], leaf.dtype)
        if name == "scale":  # LayerNorm
            return jnp.asarray(1 + 0.1 * rng.standard_normal(leaf.shape), leaf.dtype)
        fan_in = math.prod(leaf.shape[:-1]) if leaf.ndim > 1 and name != "embedding" else 1
        std = 0.02 if fan_in == 1 else fan_in**-0.5
        return jnp.asarray(std * rng.standard_normal(leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, nn.unbox(model.abstract_params()))
