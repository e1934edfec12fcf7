"""Loading big_vision SigLIP `.npz` checkpoints into `TwoTower` parameters.

A SigLIP checkpoint (e.g. `gs://big_vision/siglip/webli_en_b16_224_63724782.npz`) is a flat
`.npz` whose keys are the two-tower tree joined with `/` under `params/`:
`params/img/embedding/kernel [16, 16, 3, 768]`, `params/img/Transformer/encoderblock_0/
MultiHeadDotProductAttention_0/query/kernel [768, 12, 64]`, `params/img/MAPHead_0/probe`,
`params/txt/Embed_0/embedding [32000, 768]`, `params/txt/pos_embedding [1, 64, 768]`,
`params/txt/head/kernel`, `params/t [1]`, `params/b [1]`, ... Our towers use the same names
(see `layers.py`), so loading is a checked one-to-one copy plus these conversions:

* scanned (`encoderblock`, stacked on a leading axis) <-> unscanned (`encoderblock_0..N-1`)
  blocks, in either direction;
* the image `pos_embedding` `[1, g*g, D]` is resampled to the model's grid when it differs
  (another resolution or patch size) as big_vision's `resample_posemb` does: linear
  interpolation with corners aligned (`scipy.ndimage.zoom(order=1)`), so the corner positions
  are kept exactly; the text one is truncated when `max_len` is shorter than the checkpoint's;
* `t`, `b` of shape `[1]` become our scalars;
* bfloat16 arrays (numpy writes ml_dtypes' bfloat16 as raw 2-byte `V2` records, without the
  type) are read back as bfloat16 and widened, exactly, to float32.

`cond_t`/`cond_b` (the conditional term) do not exist in SigLIP: they keep their initial values
(from the config) or, with `cond_from_plain=True`, copy the checkpoint's `t`/`b`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np
import scipy.ndimage
from flax import traverse_util

from cclip_jax.models import config as model_config
from cclip_jax.models import sizes

_COND = {"cond_t": "t", "cond_b": "b"}
_SCANNED = re.compile(r"(^|/)encoderblock/")
_UNSCANNED = re.compile(r"(^|/)encoderblock_(\d+)/")


@dataclasses.dataclass
class LoadReport:
    """What `load_siglip_npz` did, key by key (keys are `/`-joined, without `params/`)."""

    loaded: list[str]
    resampled: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]
    kept_from_init: list[str]
    unused: list[str]
    missing: list[str]

    def __str__(self) -> str:
        return (
            f"loaded {len(self.loaded)} arrays; resampled {self.resampled or 'none'}; "
            f"kept from init {self.kept_from_init or 'none'}; unused {self.unused or 'none'}; "
            f"missing {self.missing or 'none'}"
        )


def siglip_config(
    variant: str = "B/16",
    image_size: int = 224,
    *,
    vocab_size: int = 32_000,
    max_len: int = 64,
) -> ml_collections.ConfigDict:
    """`config.model` whose tree matches a big_vision SigLIP checkpoint of `variant`.

    SigLIP: MAP pooling and no projection on the image side, `last` pooling with a `head` on the
    text side (same size name as the image tower), embedding width = tower width, and a text tower
    without padding mask that reads the last position, fed as big_vision's SigLIP configs tokenize
    (`eos="sticky"`, `pad_value=1`): `sticky_eos=True` puts EOS after the text, or last when the
    text is cut, and padding is id 1 (EOS in the c4_en/mc4 vocabularies); texts are lower-cased
    first (`lowercase=True`: the SigLIP tokenizers were trained on lower-cased text, and
    big_vision's SigLIP 2 configs tokenize `lower(key="texts")|tok(...)`). Set `image_size` to
    fine-tune at another resolution; the loader resamples the position grid.
    """
    size = sizes.decode_variant(variant)
    if size.patch_size is None:
        raise ValueError(
            f"siglip_config needs a variant with a patch size, e.g. 'B/16': {variant!r}"
        )
    name = variant.split("/")[0]
    cfg = model_config.get_default_model_config(
        name, patch_size=size.patch_size, image_size=image_size
    )
    cfg.image.proj = False
    cfg.text.update(
        vocab_size=vocab_size,
        max_len=max_len,
        pad_id=1,
        mask_padding=False,
        sticky_eos=True,
        lowercase=True,
    )
    cfg.embed_dim = size.width
    return cfg


def _read_npz(path: str) -> dict[str, np.ndarray]:
    """The `.npz` arrays by key (without `params/`); bfloat16 ones widened to float32."""
    with np.load(path, allow_pickle=False) as f:
        return {k.removeprefix("params/"): _widen_bfloat16(k, f[k]) for k in f.files}


def _widen_bfloat16(key: str, value: np.ndarray) -> np.ndarray:
    """A `V2` array (how numpy stores an ml_dtypes bfloat16 array: its header keeps only the
    item size) -> float32 of the same shape; other arrays unchanged.

    A 2-byte record is taken as bfloat16: float16 is stored as `<f2`, and jax checkpoints have
    no other 2-byte non-numpy type. Widening bfloat16 to float32 is exact.
    """
    if value.dtype.kind != "V" or value.dtype.names is not None:
        return value
    if value.dtype.itemsize != 2:
        raise ValueError(
            f"checkpoint array {key} has an untyped {value.dtype.itemsize}-byte "
            f"dtype {value.dtype} (only 2-byte, bfloat16, is understood)"
        )
    return value.view(jnp.bfloat16).astype(np.float32)


def _match_layout(ckpt: dict[str, np.ndarray], target: Mapping[str, Any]) -> dict[str, Any]:
    """Stacks or splits encoder blocks so the checkpoint uses the target's layout."""
    out: dict[str, Any] = {}
    stacks: dict[str, dict[int, np.ndarray]] = {}
    for key, value in ckpt.items():
        m = _UNSCANNED.search(key)
        scanned_key = _UNSCANNED.sub(r"\1encoderblock/", key, count=1) if m else None
        if m and key not in target and scanned_key in target:
            stacks.setdefault(scanned_key, {})[int(m.group(2))] = value
        elif _SCANNED.search(key) and key not in target:
            for i, layer in enumerate(value):
                out[_SCANNED.sub(rf"\1encoderblock_{i}/", key, count=1)] = layer
        else:
            out[key] = value
    for key, layers_by_index in stacks.items():
        out[key] = np.stack([layers_by_index[i] for i in sorted(layers_by_index)])
    return out


def _resample_grid(posemb: np.ndarray, n_new: int) -> np.ndarray:
    """`[1, g*g, D]` -> float32 `[1, n_new, D]`: the square grid resampled as big_vision's
    `models/vit.py:resample_posemb` does, for parity with its fine-tuning at another resolution.

    `scipy.ndimage.zoom(order=1)` (default `grid_mode=False`) is linear interpolation with the
    corners aligned: output row `i` of `g_new` reads input row `i * (g_old - 1) / (g_new - 1)`
    (likewise for columns). `jax.image.resize` (used before) aligns pixel centres instead: at
    14 -> 16 (B/16, 224 -> 256 px) its sample positions are up to 0.054 grid steps away.
    """
    g_old, g_new = round(posemb.shape[1] ** 0.5), round(n_new**0.5)
    if g_old**2 != posemb.shape[1] or g_new**2 != n_new:
        raise ValueError(f"cannot resample non-square position grids {posemb.shape[1]} -> {n_new}")
    grid = np.asarray(posemb, np.float32).reshape(g_old, g_old, -1)
    grid = scipy.ndimage.zoom(grid, (g_new / g_old, g_new / g_old, 1), order=1)
    if grid.shape[:2] != (g_new, g_new):  # zoom rounds its output size; check, never guess
        raise ValueError(f"zoom gave a {grid.shape[:2]} grid, not {g_new}x{g_new}")
    return grid.reshape(1, n_new, -1)


def _convert(key: str, value: np.ndarray, want: tuple[int, ...]) -> np.ndarray | None:
    """The checkpoint value in the target shape, or None when no conversion applies."""
    if value.shape == want:
        return value
    if value.size == int(np.prod(want)) and key in ("t", "b"):
        return value.reshape(want)
    if key == "img/pos_embedding" and value.shape[-1] == want[-1]:
        return _resample_grid(value, want[1])
    if key == "txt/pos_embedding" and value.shape[-1] == want[-1] and want[1] <= value.shape[1]:
        return value[:, : want[1]]
    return None


def load_siglip_npz(
    path: str,
    params: Any,
    *,
    strict: bool = True,
    cond_from_plain: bool = False,
    return_report: bool = False,
) -> Any:
    """Loads a big_vision SigLIP `.npz` into `params` (a `TwoTower` tree; see module docs).

    Args:
      path: the `.npz` file.
      params: the model's initial parameters, either `{'params': tree}` or the tree itself,
        boxed or not; only their shapes/dtypes and the `cond_*` values are used.
      strict: raise if any checkpoint array is left unused or any parameter other than
        `cond_t`/`cond_b` has no checkpoint value (or a shape no conversion fixes).
      cond_from_plain: initialise `cond_t`/`cond_b` from the checkpoint's `t`/`b`.
      return_report: also return a `LoadReport`.

    Returns:
      Parameters with the input's structure (unboxed), as numpy-backed jax arrays;
      `(params, report)` when `return_report`.
    """
    wrapped = isinstance(params, Mapping) and set(params) == {"params"}
    tree = nn.unbox(params["params"] if wrapped else params)
    target = traverse_util.flatten_dict(dict(tree), sep="/")
    ckpt = _match_layout(_read_npz(path), target)

    new, loaded, kept, resampled, missing, used = {}, [], [], {}, [], set()
    for key, init in target.items():
        want = tuple(init.shape)
        source = _COND.get(key) if cond_from_plain else None
        if key in _COND and source is None:
            new[key], _ = init, kept.append(key)
            continue
        value = ckpt.get(source or key)
        converted = None if value is None else _convert(source or key, value, want)
        if converted is None:
            new[key] = init
            missing.append(key if value is None else f"{key} (checkpoint {value.shape} != {want})")
            continue
        if converted.shape != value.shape and key.endswith("pos_embedding"):
            resampled[key] = (tuple(value.shape), want)
        new[key] = jnp.asarray(converted, init.dtype)
        loaded.append(key)
        used.add(source or key)
    unused = sorted(set(ckpt) - used)
    report = LoadReport(loaded, resampled, kept, unused, missing)
    if strict and (unused or missing):
        raise ValueError(
            f"SigLIP checkpoint {path} does not match the model: {len(missing)} parameters "
            f"missing or mis-shaped {missing[:20]}, {len(unused)} checkpoint arrays unused "
            f"{unused[:20]}. Build the model with siglip_config(variant, ...) for a SigLIP "
            "checkpoint."
        )
    out = traverse_util.unflatten_dict(new, sep="/")
    out = {"params": out} if wrapped else out
    return (out, report) if return_report else out


def save_siglip_npz(params: Any, path: str) -> None:
    """Writes `TwoTower` parameters in big_vision's `.npz` layout (unscanned, `params/` keys).

    `cond_t`/`cond_b` are kept (big_vision ignores unknown top-level keys only if told to;
    drop them for strict big_vision loading).
    """
    tree = nn.unbox(params["params"] if set(params) == {"params"} else params)
    flat = traverse_util.flatten_dict(dict(tree), sep="/")
    out: dict[str, np.ndarray] = {}
    for key, value in flat.items():
        value = np.asarray(value)
        if _SCANNED.search(key):
            for i, layer in enumerate(value):
                out["params/" + _SCANNED.sub(rf"\1encoderblock_{i}/", key, count=1)] = layer
        else:
            out["params/" + key] = value.reshape(1) if value.ndim == 0 else value
    np.savez(path, **out)
