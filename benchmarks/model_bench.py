"""Model benchmark: parameters and FLOPs per example for every named size, training speed for some.

    python benchmarks/model_bench.py                      # table for all sizes + tiny CPU speed
    python benchmarks/model_bench.py --sizes=mu,Ti,S,B --train=B/16@224 --batch=256 \\
        --dtype=bfloat16 --peak_tflops=989              # B/16 throughput and MFU on an H100

Table: parameters of each tower (from shapes, nothing allocated) and forward FLOPs per example
(one image + one caption, from XLA's cost analysis of the compiled forward pass) at SigLIP's
setting: 224 px, patch 16, 64 tokens, 32k vocabulary, embedding width = tower width.

Speed: a full training step (forward and backward of both towers plus the concept batch, the
SigLIP loss, an AdamW update) at the demo setting of each `--train` entry `SIZE/PATCH@PIXELS`.
Examples/s counts image-caption pairs; achieved FLOP/s uses the compiled step's own cost
analysis, and MFU divides it by `--peak_tflops` when given.
"""

from __future__ import annotations

import argparse
import math
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from cclip_jax import models


def _config(size: str, patch: int, pixels: int, *, tokens: int, vocab: int, dtype: str):
    cfg = models.get_default_model_config(size, patch_size=patch, image_size=pixels)
    cfg.text.update(max_len=tokens, vocab_size=vocab)
    cfg.dtype = dtype
    return cfg


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", float("nan")))


def size_table(sizes: list[str], batch: int) -> None:
    """Prints parameters (M) and forward GFLOPs per example for each size at 224 px / 64 tokens."""
    print(
        f"{'size':>8} {'img params M':>13} {'txt params M':>13} {'fwd GFLOPs/ex':>14} "
        f"{'compile s':>10}"
    )
    for size in sizes:
        cfg = _config(size, 16, 224, tokens=64, vocab=32_000, dtype="float32")
        model = models.build_model(cfg)
        shapes = nn.unbox(model.abstract_params())["params"]
        n_img = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes["img"]))
        n_txt = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes["txt"]))
        inputs = model.dummy_inputs(batch)
        del inputs["concepts"]
        fwd = jax.jit(lambda v, x, m=model: m.apply(v, **x))
        t0 = time.perf_counter()
        compiled = fwd.lower(nn.unbox(model.abstract_params()), inputs).compile()
        compile_s = time.perf_counter() - t0
        gflops = _flops(compiled) / batch / 1e9
        print(
            f"{size:>8} {n_img / 1e6:>13.2f} {n_txt / 1e6:>13.2f} {gflops:>14.2f} "
            f"{compile_s:>10.1f}",
            flush=True,
        )


def _sigmoid_loss(img: jax.Array, txt: jax.Array, scale: jax.Array, bias: jax.Array):
    img = img / jnp.linalg.norm(img, axis=-1, keepdims=True)
    txt = txt / jnp.linalg.norm(txt, axis=-1, keepdims=True)
    logits = scale * img @ txt.T + bias
    labels = 2 * jnp.eye(img.shape[0]) - 1
    return jnp.sum(jax.nn.softplus(-labels * logits)) / img.shape[0]


def train_speed(
    spec: str, batch: int, steps: int, dtype: str, peak_tflops: float | None, remat: str, scan: bool
) -> None:
    """Times a full training step of `spec` (`SIZE/PATCH@PIXELS`) and prints examples/s."""
    variant, _, pixels = spec.partition("@")
    size, _, patch = variant.partition("/")
    big = size not in ("mu", "Ti")
    cfg = _config(
        size,
        int(patch or 16),
        int(pixels or 224),
        tokens=64 if big else 16,
        vocab=32_000 if big else 1024,
        dtype=dtype,
    )
    cfg.remat_policy, cfg.scan_layers = remat, scan
    model = models.build_model(cfg)
    tx = optax.adamw(1e-4)

    rng = jax.random.key(0)
    params = jax.jit(lambda k: nn.unbox(model.init_params(k)))(rng)
    opt_state = tx.init(params)
    k1, k2, k3 = jax.random.split(rng, 3)
    s = cfg.image.image_size
    images = jax.random.uniform(k1, (batch, s, s, 3), minval=-1, maxval=1)
    texts = jax.random.randint(k2, (batch, cfg.text.max_len), 1, cfg.text.vocab_size)
    concepts = jax.random.randint(k3, (batch, cfg.text.max_len // 4), 1, cfg.text.vocab_size)

    def loss_fn(p):
        out = model.apply(p, images=images, texts=texts, concepts=concepts)
        plain = _sigmoid_loss(out.image_emb, out.text_emb, out.scale, out.bias)
        # A stand-in for the conditional term so the concept batch gets gradients too.
        gated = _sigmoid_loss(
            out.image_emb * out.concept_emb,
            out.text_emb * out.concept_emb,
            out.cond_scale,
            out.cond_bias,
        )
        return plain + gated

    def step(p, o):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, loss

    t0 = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state).compile()
    compile_s = time.perf_counter() - t0
    step_flops = _flops(compiled)
    params, opt_state, loss = compiled(params, opt_state)  # warm-up
    jax.block_until_ready(loss)
    t0 = time.perf_counter()
    for _ in range(steps):
        params, opt_state, loss = compiled(params, opt_state)
    jax.block_until_ready(loss)
    dt = (time.perf_counter() - t0) / steps
    tflops = step_flops / dt / 1e12
    mfu = f" MFU {100 * tflops / peak_tflops:.1f}%" if peak_tflops else ""
    print(
        f"{spec:>12} batch {batch} {dtype} remat={remat} scan={scan}: {batch / dt:,.1f} ex/s, "
        f"{1e3 * dt:.1f} ms/step, {tflops * 1e3:.1f} GFLOP/s achieved{mfu} "
        f"(compile {compile_s:.1f} s, loss {float(loss):.3f}) on {jax.devices()[0].device_kind}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="mu,Ti,S,M,B,L,So400m",
        help="sizes for the parameter/FLOP table ('' to skip)",
    )
    parser.add_argument("--table_batch", type=int, default=2)
    parser.add_argument(
        "--train",
        default="mu/8@32,Ti/8@32,Ti/8@64",
        help="SIZE/PATCH@PIXELS entries to time ('' to skip)",
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--remat", default="none")
    parser.add_argument("--scan", action="store_true")
    parser.add_argument(
        "--peak_tflops",
        type=float,
        default=None,
        help="device peak for MFU, e.g. 989 for an H100 SXM in bf16",
    )
    args = parser.parse_args()
    print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}")
    if args.sizes:
        size_table(args.sizes.split(","), args.table_batch)
    for spec in filter(None, args.train.split(",")):
        train_speed(
            spec, args.batch, args.steps, args.dtype, args.peak_tflops, args.remat, args.scan
        )


if __name__ == "__main__":
    main()
