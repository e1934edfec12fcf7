"""The loss library's docstring examples run and print what they say (doctest)."""

from __future__ import annotations

import doctest
import importlib

import jax.numpy as jnp
import numpy as np
import pytest

import cclip_jax.losses as losses

# Every public function's module; each must carry at least one example.
MODULES = sorted(
    {getattr(losses, name).__module__ for name in losses.__all__ if callable(getattr(losses, name))}
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module,
        extraglobs={"jnp": jnp, "np": np},
        verbose=False,
        optionflags=doctest.NORMALIZE_WHITESPACE,
    )
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
