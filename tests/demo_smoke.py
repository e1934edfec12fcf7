"""The smoke demo config (`configs/demo.py:smoke`) that the data and training tests share; its
data is built once per pytest process by the `smoke_curated` fixture (tests/conftest.py)."""

from __future__ import annotations

import os

import ml_collections

from cclip_jax.config import load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "demo.py") + ":smoke"


def smoke_config(cache_dir: str, curated_dir: str = "") -> ml_collections.ConfigDict:
    """`configs/demo.py:smoke` with its data cache at `cache_dir` and `curated_dir` set."""
    c = load(SMOKE)
    c.data.cache_dir = str(cache_dir)
    c.data.curated_dir = curated_dir
    return c
