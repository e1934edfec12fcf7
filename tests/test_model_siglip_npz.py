"""The big_vision SigLIP `.npz` loader, against checkpoints written with big_vision's key names.

The expected keys and shapes are spelled out here from big_vision's two-tower tree (the names
HF's `convert_siglip_to_hf.py` reads from `webli_en_b16_224_63724782.npz`), independently of
the model code, so a renamed module in the model makes these tests fail.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from cclip_jax import models
from cclip_jax.models.siglip_npz import save_siglip_npz


def _block_shapes(d: int, mlp: int, heads: int) -> dict[str, tuple[int, ...]]:
    hd = d // heads
    attn = {}
    for name in ("query", "key", "value"):
        attn[f"MultiHeadDotProductAttention_0/{name}/kernel"] = (d, heads, hd)
        attn[f"MultiHeadDotProductAttention_0/{name}/bias"] = (heads, hd)
    attn["MultiHeadDotProductAttention_0/out/kernel"] = (heads, hd, d)
    attn["MultiHeadDotProductAttention_0/out/bias"] = (d,)
    mlp_shapes = {
        "MlpBlock_0/Dense_0/kernel": (d, mlp),
        "MlpBlock_0/Dense_0/bias": (mlp,),
        "MlpBlock_0/Dense_1/kernel": (mlp, d),
        "MlpBlock_0/Dense_1/bias": (d,),
    }
    return attn | mlp_shapes


def big_vision_siglip_shapes(
    variant: str, image_size: int, vocab: int, max_len: int, depth: int | None = None
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a big_vision SigLIP two-tower `.npz` (MAP image head, text `head`)."""
    size = models.decode_variant(variant)
    d, mlp, heads, p = size.width, size.mlp_dim, size.num_heads, size.patch_size
    depth = depth or size.depth
    norm = {"scale": (d,), "bias": (d,)}
    block = _block_shapes(d, mlp, heads)
    block |= {f"LayerNorm_{i}/{k}": s for i in (0, 1) for k, s in norm.items()}
    out = {"t": (1,), "b": (1,)}
    out |= {
        "img/embedding/kernel": (p, p, 3, d),
        "img/embedding/bias": (d,),
        "img/pos_embedding": (1, (image_size // p) ** 2, d),
        "img/MAPHead_0/probe": (1, 1, d),
    }
    out |= {f"img/MAPHead_0/{k}": s for k, s in _block_shapes(d, mlp, heads).items()}
    out |= {f"img/MAPHead_0/LayerNorm_0/{k}": s for k, s in norm.items()}
    out |= {
        "txt/Embed_0/embedding": (vocab, d),
        "txt/pos_embedding": (1, max_len, d),
        "txt/head/kernel": (d, d),
        "txt/head/bias": (d,),
    }
    for tower, enc in (("img", "Transformer"), ("txt", "Encoder_0")):
        for i in range(depth):
            out |= {f"{tower}/{enc}/encoderblock_{i}/{k}": s for k, s in block.items()}
        out |= {f"{tower}/{enc}/encoder_norm/{k}": s for k, s in norm.items()}
    return {f"params/{k}": s for k, s in out.items()}


SMALL = dict(variant="mu/8", image_size=32, vocab=512, max_len=16, depth=2)


def _small_config(image_size: int = 32, scan: bool = False):
    cfg = models.siglip_config("mu/8", image_size, vocab_size=512, max_len=16)
    cfg.image.depth = cfg.text.depth = 2
    cfg.scan_layers = scan
    return cfg


def _initial_params(model: models.TwoTower):
    """Abstract tower parameters plus real temperatures (all the loader needs; no compiling)."""
    params = nn.unbox(model.abstract_params())
    params["params"].update(nn.unbox(model.init(jax.random.key(0)))["params"])
    return params


@pytest.fixture
def small_npz(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        k: rng.standard_normal(s).astype(np.float32)
        for k, s in big_vision_siglip_shapes(**SMALL).items()
    }
    path = tmp_path / "siglip_small.npz"
    np.savez(path, **arrays)
    return str(path), arrays


def test_b16_tree_matches_big_vision_names_and_shapes():
    model = models.build_model(models.siglip_config("B/16"))
    ours = traverse_util.flatten_dict(nn.unbox(model.abstract_params())["params"], sep="/")
    ours = {f"params/{k}": tuple(v.shape) for k, v in ours.items()}
    theirs = big_vision_siglip_shapes("B/16", 224, 32_000, 64)
    theirs |= {"params/t": (), "params/b": ()}  # scalars here, [1] in the file
    extra = {"params/cond_t": (), "params/cond_b": ()}  # the conditional term is ours
    assert ours == theirs | extra
    # SigLIP B/16's published tower sizes: 92.9M (image) and 110.3M (text, 32k vocabulary).
    n_img = sum(np.prod(s) for k, s in ours.items() if k.startswith("params/img/"))
    n_txt = sum(np.prod(s) for k, s in ours.items() if k.startswith("params/txt/"))
    assert n_img == pytest.approx(92.88e6, rel=1e-3) and n_txt == pytest.approx(110.3e6, rel=1e-3)


def test_every_key_lands(small_npz):
    path, arrays = small_npz
    model = models.build_model(_small_config())
    loaded, report = models.load_siglip_npz(path, _initial_params(model), return_report=True)
    assert report.unused == [] and report.missing == [] and report.resampled == {}
    assert sorted(report.kept_from_init) == ["cond_b", "cond_t"]
    assert len(report.loaded) == len(arrays)
    flat = traverse_util.flatten_dict(loaded["params"], sep="/")
    for key, value in arrays.items():
        ours = flat[key.removeprefix("params/")]
        np.testing.assert_array_equal(ours, value.reshape(ours.shape))
    np.testing.assert_allclose(flat["cond_t"], np.log(10.0), rtol=1e-6)
    assert flat["t"].shape == () and flat["t"] == arrays["params/t"][0]


def test_save_round_trip(small_npz, tmp_path):
    path, arrays = small_npz
    model = models.build_model(_small_config())
    loaded = models.load_siglip_npz(path, _initial_params(model))
    out = tmp_path / "again.npz"
    save_siglip_npz(loaded, str(out))
    with np.load(out) as f:
        again = {k: f[k] for k in f.files}
    assert set(again) == set(arrays) | {"params/cond_t", "params/cond_b"}
    for key, value in arrays.items():
        np.testing.assert_array_equal(again[key], value)


def test_loads_into_scanned_layers(small_npz):
    path, arrays = small_npz
    model = models.build_model(_small_config(scan=True))
    loaded = models.load_siglip_npz(path, _initial_params(model), cond_from_plain=True)
    stacked = loaded["params"]["txt"]["Encoder_0"]["encoderblock"]["MlpBlock_0"]["Dense_0"]
    for i in range(2):
        np.testing.assert_array_equal(
            stacked["kernel"][i],
            arrays[f"params/txt/Encoder_0/encoderblock_{i}/MlpBlock_0/Dense_0/kernel"],
        )
    np.testing.assert_array_equal(loaded["params"]["cond_t"], arrays["params/t"][0])
    np.testing.assert_array_equal(loaded["params"]["cond_b"], arrays["params/b"][0])


def test_other_resolution_resamples_position_grid(small_npz, tmp_path):
    _, arrays = small_npz
    # A posemb that is a linear ramp along x: bilinear resampling keeps it a ramp.
    ramp = np.broadcast_to(np.arange(4, dtype=np.float32)[None, :, None], (4, 4, 32))
    arrays = dict(arrays, **{"params/img/pos_embedding": ramp.reshape(1, 16, 32)})
    np.savez(tmp_path / "ramp.npz", **arrays)
    model = models.build_model(_small_config(image_size=64))
    loaded, report = models.load_siglip_npz(
        str(tmp_path / "ramp.npz"), _initial_params(model), return_report=True
    )
    assert report.resampled == {"img/pos_embedding": ((1, 16, 32), (1, 64, 32))}
    grid = np.asarray(loaded["params"]["img"]["pos_embedding"]).reshape(8, 8, 32)
    assert np.all(np.diff(grid[:, :, 0], axis=1) >= 0)  # still increasing along x
    np.testing.assert_allclose(grid[:, :, 0], grid[:1, :, 0].repeat(8, 0))  # constant along y
    assert grid[0, 0, 0] == pytest.approx(0.0) and grid[0, -1, 0] == pytest.approx(3.0)


def test_strict_report_names_unused_and_missing(small_npz, tmp_path):
    _, arrays = small_npz
    arrays = dict(arrays)
    del arrays["params/txt/head/bias"]
    arrays["params/img/head/kernel"] = np.zeros((32, 32), np.float32)  # an image projection
    np.savez(tmp_path / "bad.npz", **arrays)
    model = models.build_model(_small_config())
    with pytest.raises(ValueError, match=r"txt/head/bias.*img/head/kernel"):
        models.load_siglip_npz(str(tmp_path / "bad.npz"), _initial_params(model))
    _, report = models.load_siglip_npz(
        str(tmp_path / "bad.npz"), _initial_params(model), strict=False, return_report=True
    )
    assert report.missing == ["txt/head/bias"] and report.unused == ["img/head/kernel"]


def test_mis_shaped_array_is_reported(small_npz, tmp_path):
    _, arrays = small_npz
    arrays = dict(arrays, **{"params/txt/Embed_0/embedding": np.zeros((100, 32), np.float32)})
    np.savez(tmp_path / "vocab.npz", **arrays)
    model = models.build_model(_small_config())
    with pytest.raises(ValueError, match=r"txt/Embed_0/embedding \(checkpoint \(100, 32\)"):
        models.load_siglip_npz(str(tmp_path / "vocab.npz"), _initial_params(model))


def test_siglip_config_asks_for_sticky_eos():
    """big_vision's SigLIP configs tokenize with `eos="sticky", pad_value=1`."""
    text = models.siglip_config("So400m/14", max_len=16).text
    assert text.sticky_eos is True and text.pad_id == 1 and text.mask_padding is False
    assert text.lowercase is True
    assert models.get_default_model_config("B", patch_size=16).text.sticky_eos is False


def test_bfloat16_checkpoint_loads(small_npz, tmp_path):
    """numpy writes ml_dtypes bfloat16 arrays as untyped `V2` records; they load as the
    float32 values of the bfloat16 numbers (bf16 -> f32 is exact)."""
    _, arrays = small_npz
    bf16 = {k: v.astype(jnp.bfloat16) for k, v in arrays.items()}
    np.savez(tmp_path / "bf16.npz", **bf16)
    with np.load(tmp_path / "bf16.npz") as f:
        assert f["params/t"].dtype == np.dtype("V2")  # what makes the plain read fail
    model = models.build_model(_small_config())
    loaded = models.load_siglip_npz(str(tmp_path / "bf16.npz"), _initial_params(model))
    flat = traverse_util.flatten_dict(loaded["params"], sep="/")
    for key, value in arrays.items():
        ours = np.asarray(flat[key.removeprefix("params/")])
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours, bf16[key].astype(np.float32).reshape(ours.shape))
        # bfloat16 keeps 8 significant bits: relative rounding error at most 2**-8.
        np.testing.assert_allclose(ours, value.reshape(ours.shape), rtol=2.0**-8, atol=0)


def _corner_aligned_reference(grid: np.ndarray, g_new: int) -> np.ndarray:
    """float64 `[g, g, D]` -> `[g_new, g_new, D]`, linear interpolation with the corner samples
    on the corners: output index i reads input coordinate x = i (g - 1) / (g_new - 1), the
    weighted mean (1 - w) a[floor x] + w a[floor x + 1], w = x - floor x; rows, then columns."""
    g = grid.shape[0]

    def along(a: np.ndarray, axis: int) -> np.ndarray:
        out = []
        for i in range(g_new):
            x = i * (g - 1) / (g_new - 1)
            lo = min(int(np.floor(x)), g - 2)
            w = x - lo
            out.append((1 - w) * np.take(a, lo, axis) + w * np.take(a, lo + 1, axis))
        return np.stack(out, axis)

    return along(along(grid.astype(np.float64), 0), 1)


def test_position_grid_resampled_as_big_vision():
    """big_vision's `resample_posemb` (`scipy.ndimage.zoom(order=1)`) aligns corners; checked
    against the formula in float64, 14x14 -> 16x16 (B/16 at 224 -> 256 px) and 4x4 -> 7x7."""
    from cclip_jax.models.siglip_npz import _resample_grid

    rng = np.random.default_rng(1)
    for g, g_new, d in ((14, 16, 5), (4, 7, 3), (16, 14, 2)):
        grid = rng.standard_normal((g, g, d)).astype(np.float32)
        ours = _resample_grid(grid.reshape(1, g * g, d), g_new * g_new)
        assert ours.shape == (1, g_new * g_new, d) and ours.dtype == np.float32
        want = _corner_aligned_reference(grid, g_new)
        np.testing.assert_allclose(ours.reshape(g_new, g_new, d), want, atol=1e-6, rtol=0)
        # The four corners are copied exactly.
        np.testing.assert_array_equal(
            ours.reshape(g_new, g_new, d)[:: g_new - 1, :: g_new - 1], grid[:: g - 1, :: g - 1]
        )
    # B/16, 224 -> 256 px: [1, 196, 768] -> [1, 256, 768].
    assert _resample_grid(np.zeros((1, 196, 768), np.float32), 256).shape == (1, 256, 768)


def test_b16_224_checkpoint_grid_loads_at_256(tmp_path):
    """The loader resamples a B/16 224-px grid for a 256-px model (report and shape)."""
    shapes = big_vision_siglip_shapes("mu/16", 224, 512, 16, depth=1)
    arrays = {k: np.full(s, 0.5, np.float32) for k, s in shapes.items()}
    np.savez(tmp_path / "g14.npz", **arrays)
    cfg = models.siglip_config("mu/16", 256, vocab_size=512, max_len=16)
    cfg.image.depth = cfg.text.depth = 1
    model = models.build_model(cfg)
    loaded, report = models.load_siglip_npz(
        str(tmp_path / "g14.npz"), _initial_params(model), return_report=True
    )
    assert report.resampled == {"img/pos_embedding": ((1, 196, 32), (1, 256, 32))}
    np.testing.assert_allclose(loaded["params"]["img"]["pos_embedding"], 0.5)
