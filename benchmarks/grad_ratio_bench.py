"""‖∇ conditional‖ / ‖∇ plain‖ at initialisation: does one λ carry across B and K?

    python benchmarks/grad_ratio_bench.py            # B ∈ {64, 512, 4096} × K ∈ {16, 64, 256}
    python benchmarks/grad_ratio_bench.py --quick    # B ∈ {64, 512} × K ∈ {16, 64}, 1 draw

The training loss is `sigmoid_loss + λ · conditional_sigmoid_loss`. If the ratio of the two
terms' gradient norms at initialisation is flat across the batch size B and the number of
concepts K, a λ tuned on the demo (B = 64, K = 16) means the same at B/16 scale. Three tables:

(a) w.r.t. the embeddings: `‖∇_{x,t,c} conditional‖ / ‖∇_{x,t} plain‖`, and its `(x, t)`
    and `c` parts (the plain term has no concept gradient). "tower": embeddings of random
    inputs through freshly initialised demo towers (`configs/demo.py`, D = 32; cheap enough on
    2 cores at every B here). "gauss": i.i.d. Gaussian embeddings with the per-dimension mean
    and full covariance of the towers' outputs (images and captions at B = 64, 256 random
    concepts): the shape-only stand-in, to compare with "tower".
(b) w.r.t. the tower parameters, `img` and `txt` apart (what the optimiser sees), through
    `model.apply` as `cclip_jax.training.objective` does (captions and concepts through the text
    tower).
(c) the gradient norms behind the ratios (towers): plain and "triples", parameters and
    embeddings, to see which of numerator and denominator moves.

Inputs: images uniform in [-1, 1] `[B, 32, 32, 3]`; captions 4-16 random tokens, concepts
1-4 random tokens (ids in [1, vocab), right-padded with 0 to 16). Both loss terms use scale
10 (SigLIP's t' = log 10); the plain bias is `sigmoid_bias_init(B)`, the conditional bias
`conditional_bias_init(triple_sums(labels), unknown_weight=0.5)`; unknown_weight 0.5 as in the
demo. `max_present` is None (dense) when K ≤ 2R, else R.

Labels `[B, K]` int8 mimic curated batches: each row has exactly R = min(8, K/2) present (+1)
concepts, drawn without replacement with Zipf weights `1/(k + 1)` over the K columns, so the
head concepts are shared by many rows (curation puts rows that share concepts together). Of the
other entries, a share `NEG_SHARE = 2417 / (2417 + 53097) ≈ 4.4%` is -1 and the rest 0: the
split of the non-present labels in the demo's curated manifest
(`~/.cache/cclip_jax/curated-834c47fdaf8a/manifest.json`, "batches" → "labels":
+1 10022, -1 2417, 0 53097 over 64 batches of 64 × 16). That manifest has 2.4 present per row
on average, not 8: R here follows the B/16-scale target (R = 8), not the demo's mean.

Each cell is the mean over draws (seeds: labels, inputs, tower init and Gaussian draws) with
the min-max in parentheses; "per draw" spreads compare cells within one draw. `p` is the
positive-triple rate (the weighted share of positives among counted triples), `W/B` the
counted triple weight per row: "batch" = "triples" · W/B.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time
from functools import partial
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cclip_jax import config as config_lib
from cclip_jax import losses, models

ROOT = Path(__file__).resolve().parents[1]
SCALE = 10.0
UNKNOWN_WEIGHT = 0.5
NEG_SHARE = 2417 / (2417 + 53097)
ZIPF_EXPONENT = 1.0
FULL = {"bs": (64, 512, 4096), "ks": (16, 64, 256), "draws": 3}
QUICK = {"bs": (64, 512), "ks": (16, 64), "draws": 1}
TOWER_BS = (64, 512, 4096)  # batch sizes with real towers (embeddings and parameters)
FIT_B, FIT_K = 64, 256  # rows the Gaussian's moments are fitted on


def present_per_row(k: int) -> int:
    """R = min(8, K // 2): the present (+1) concepts of every row."""
    return min(8, k // 2)


def make_labels(rng: np.random.Generator, b: int, k: int) -> np.ndarray:
    """Curated-looking int8 labels `[b, k]`: R Zipf-drawn +1 per row, then -1 / 0 (module doc)."""
    r = present_per_row(k)
    logw = -ZIPF_EXPONENT * np.log1p(np.arange(k))
    keys = logw[None, :] + rng.gumbel(size=(b, k))  # Gumbel top-R: R draws without replacement
    labels = np.where(rng.random((b, k)) < NEG_SHARE, -1, 0).astype(np.int8)
    np.put_along_axis(labels, np.argsort(-keys, axis=1)[:, :r], 1, axis=1)
    return labels


def load_demo_model() -> models.TwoTower:
    """The towers of `configs/demo.py`."""
    return models.build_model(config_lib.load(str(ROOT / "configs" / "demo.py")).model)


def make_inputs(rng: np.random.Generator, model: models.TwoTower, b: int, k: int) -> dict:
    """Random `images [b, S, S, 3]`, `texts [b, L]` (4-16 tokens), `concepts [k, L]` (1-4)."""
    size, length, vocab = model.image["image_size"], model.text["max_len"], model.text["vocab_size"]

    def tokens(n, lo, hi):
        ids = rng.integers(1, vocab, size=(n, length))
        lengths = rng.integers(lo, min(hi, length) + 1, size=(n, 1))
        return np.where(np.arange(length)[None, :] < lengths, ids, 0).astype(np.int32)

    return {
        "images": rng.uniform(-1, 1, (b, size, size, 3)).astype(np.float32),
        "texts": tokens(b, 4, 16),
        "concepts": tokens(k, 1, 4),
    }


def _norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree)))


def _three_losses(x, t, c, labels, biases, max_present):
    """`[3]`: plain, conditional ("triples"), conditional ("batch")."""
    plain = losses.sigmoid_loss(x, t, scale=SCALE, bias=biases[0])
    cond = [
        losses.conditional_sigmoid_loss(
            x,
            t,
            c,
            labels,
            scale=SCALE,
            bias=biases[1],
            unknown_weight=UNKNOWN_WEIGHT,
            normalize=mode,
            max_present=max_present,
        )
        for mode in ("triples", "batch")
    ]
    return jnp.stack([plain, *cond])


def _cotangents():
    return [jnp.zeros(3).at[i].set(1.0) for i in range(3)]


@partial(jax.jit, static_argnames="max_present")
def embedding_grad_norms(x, t, c, labels, biases, *, max_present):
    """Gradient norms w.r.t. the embeddings `x, t [B, D]`, `c [K, D]`; `labels [B, K]`,
    `biases [2]` (plain, conditional). Returns `[3, 2]`: rows plain, triples, batch; columns
    the norm over `(x, t)` and over `c` (0 for the plain term, which has no concepts).
    """
    _, vjp = jax.vjp(lambda *e: _three_losses(*e, labels, biases, max_present), x, t, c)
    return jnp.stack([jnp.stack([_norm(g[:2]), _norm(g[2])]) for g in map(vjp, _cotangents())])


def param_grad_norms(model, params, inputs, labels, biases, *, max_present):
    """Gradient norms w.r.t. the `img` and `txt` tower parameters, through `model.apply`.

    `inputs`: `make_inputs`' dict; `labels [B, K]`; `biases [2]`. Returns `[3, 2]`: rows plain,
    triples, batch; columns img, txt.
    """

    def fn(p):
        out = model.apply({"params": p}, **inputs)
        return _three_losses(
            out.image_emb, out.text_emb, out.concept_emb, labels, biases, max_present
        )

    _, vjp = jax.vjp(fn, params)
    rows = []
    for ct in _cotangents():
        (grads,) = vjp(ct)
        rows.append(jnp.stack([_norm(grads["img"]), _norm(grads["txt"])]))
    return jnp.stack(rows)


def encode(model, params, inputs):
    """`(x [B, D], t [B, D], c [K, D])` from `make_inputs`' dict."""
    out = model.apply({"params": params}, **inputs)
    return out.image_emb, out.text_emb, out.concept_emb


def gaussian_like(rng: np.random.Generator, sample: np.ndarray, n: int) -> np.ndarray:
    """`[n, D]` i.i.d. draws with the mean and covariance of `sample [m, D]`."""
    mean = sample.mean(axis=0)
    cov = np.cov(sample, rowvar=False) + 1e-6 * np.eye(sample.shape[1])
    return (mean + rng.standard_normal((n, sample.shape[1])) @ np.linalg.cholesky(cov).T).astype(
        np.float32
    )


def run(bs, ks, draws: int) -> dict:
    """All measurements: `{(level, source, b, k): [draws] ...}` of ratios and `p`, `W/B`."""
    model = load_demo_model()
    encode_fn = jax.jit(partial(encode, model))
    param_fn = jax.jit(partial(param_grad_norms, model), static_argnames="max_present")
    res: dict = {}
    for seed in range(draws):
        params = nn.unbox(model.init_params(jax.random.key(seed)))["params"]
        rng = np.random.default_rng(1000 + seed)
        fit = encode_fn(params, make_inputs(rng, model, FIT_B, FIT_K))
        fit = [np.asarray(a) for a in fit]
        for b in bs:
            gx, gt = (gaussian_like(rng, a, b) for a in fit[:2])
            for k in ks:
                labels = make_labels(rng, b, k)
                r = present_per_row(k)
                mp = None if k <= 2 * r else r
                sums = losses.triple_sums(labels)
                p = losses.positive_triple_rate(sums, unknown_weight=UNKNOWN_WEIGHT)
                w = float(
                    losses.triple_weight_sum(jnp.asarray(labels), unknown_weight=UNKNOWN_WEIGHT)
                )
                biases = jnp.array(
                    [
                        losses.sigmoid_bias_init(b),
                        losses.conditional_bias_init(sums, unknown_weight=UNKNOWN_WEIGHT),
                    ],
                    jnp.float32,
                )
                res.setdefault(("p", b, k), []).append(p)
                res.setdefault(("W/B", b, k), []).append(w / b)
                lab = jnp.asarray(labels)
                sources = {"gauss": (gx, gt, gaussian_like(rng, fit[2], k))}
                if b in TOWER_BS:
                    inputs = make_inputs(rng, model, b, k)
                    sources["tower"] = encode_fn(params, inputs)
                    n = np.asarray(param_fn(params, inputs, lab, biases, max_present=mp))
                    for i, mode in ((1, "triples"), (2, "batch")):
                        for j, tower in enumerate(("img", "txt")):
                            res.setdefault(("param", mode, tower, b, k), []).append(
                                n[i, j] / n[0, j]
                            )
                    for i, mode in ((0, "plain"), (1, "triples")):
                        for j, tower in enumerate(("img", "txt")):
                            res.setdefault(("abs", mode, tower, b, k), []).append(n[i, j])
                for src, (x, t, c) in sources.items():
                    n = np.asarray(embedding_grad_norms(x, t, c, lab, biases, max_present=mp))
                    if src == "tower":
                        for key, value in (
                            (("plain", "xt"), n[0, 0]),
                            (("triples", "xt"), n[1, 0]),
                            (("triples", "c"), n[1, 1]),
                        ):
                            res.setdefault(("abs", *key, b, k), []).append(value)
                    for i, mode in ((1, "triples"), (2, "batch")):
                        parts = {"xtc": np.hypot(*n[i]), "xt": n[i, 0], "c": n[i, 1]}
                        for part, value in parts.items():
                            res.setdefault(("emb", mode, part, src, b, k), []).append(
                                value / n[0, 0]
                            )
    return res


def cell(values) -> str:
    """`mean (min–max)` of a list of positive numbers, or `—` if there are none."""
    if not values:
        return "—"
    v = np.asarray(values, np.float64)
    return f"{v.mean():.4g} ({v.min():.4g}–{v.max():.4g})"


def spread(res: dict, key_prefix: tuple, bs, ks) -> str:
    """Over the table's `(b, k)` cells under `key_prefix`: max / min of the means, and the
    largest max / min within one draw (the draws share a tower init across cells)."""
    cells = [
        np.asarray(res[(*key_prefix, b, k)]) for b in bs for k in ks if (*key_prefix, b, k) in res
    ]
    if not cells:
        return "—"
    means = [v.mean() for v in cells]
    per_draw = np.stack(cells)  # [cells, draws]
    worst = np.max(per_draw.max(axis=0) / per_draw.min(axis=0))
    return f"{max(means) / min(means):.3g} (per draw ≤ {worst:.3g})"


EMB_COLUMNS = (("triples", "xtc"), ("triples", "xt"), ("triples", "c"), ("batch", "xtc"))
PARAM_COLUMNS = (("triples", "img"), ("triples", "txt"), ("batch", "img"), ("batch", "txt"))
ABS_COLUMNS = (
    ("plain", "img"),
    ("plain", "txt"),
    ("triples", "img"),
    ("triples", "txt"),
    ("plain", "xt"),
    ("triples", "xt"),
    ("triples", "c"),
)  # img/txt: params; xt/c: emb


def tables(res: dict, bs, ks) -> str:
    """The markdown tables (embeddings level, parameter level, norms) and their spreads."""
    names = {"xtc": "(x,t,c)", "xt": "(x,t)", "c": "(c)"}
    lines = [
        "## (a) w.r.t. the embeddings: ‖∇ cond‖ over (x,t,c), (x,t) or (c) / ‖∇_{x,t} plain‖",
        "",
        "| B | K | R | p | W/B | emb | "
        + " | ".join(f"ratio {m} {names[part]}" for m, part in EMB_COLUMNS)
        + " |",
        "|---:|---:|---:|---:|---:|:---|" + "---:|" * len(EMB_COLUMNS),
    ]
    sources = ("tower", "gauss")
    for b in bs:
        for k in ks:
            for src in sources:
                if ("emb", "triples", "xtc", src, b, k) not in res:
                    continue
                row = [
                    str(b),
                    str(k),
                    str(present_per_row(k)),
                    f"{np.mean(res[('p', b, k)]):.4f}",
                    f"{np.mean(res[('W/B', b, k)]):.4g}",
                    src,
                ]
                row += [cell(res[("emb", m, part, src, b, k)]) for m, part in EMB_COLUMNS]
                lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Spread over the table (max/min of the means):"]
    lines += [
        f"- {m} {names[part]} {src}: {spread(res, ('emb', m, part, src), bs, ks)}"
        for m, part in EMB_COLUMNS
        for src in sources
    ]
    pbs = [b for b in bs if b in TOWER_BS]
    lines += [
        "",
        "## (b) w.r.t. the tower parameters: ‖∇ cond‖ / ‖∇ plain‖ per tower",
        "",
        "| B | K | p | " + " | ".join(f"ratio {m} {tw}" for m, tw in PARAM_COLUMNS) + " |",
        "|---:|---:|---:|" + "---:|" * len(PARAM_COLUMNS),
    ]
    for b in pbs:
        for k in ks:
            row = [str(b), str(k), f"{np.mean(res[('p', b, k)]):.4f}"]
            row += [cell(res[("param", m, tw, b, k)]) for m, tw in PARAM_COLUMNS]
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Spread over the table (max/min of the means):"]
    lines += [f"- {m} {tw}: {spread(res, ('param', m, tw), pbs, ks)}" for m, tw in PARAM_COLUMNS]
    labels = {"img": "params img", "txt": "params txt", "xt": "emb (x,t)", "c": "emb (c)"}
    lines += [
        "",
        "## (c) the norms themselves (towers): which term moves the ratios",
        "",
        "| B | K | " + " | ".join(f"{m} {labels[part]}" for m, part in ABS_COLUMNS) + " |",
        "|---:|---:|" + "---:|" * len(ABS_COLUMNS),
    ]
    for b in pbs:
        for k in ks:
            row = [str(b), str(k)] + [cell(res[("abs", m, part, b, k)]) for m, part in ABS_COLUMNS]
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Spread over the table (max/min of the means):"]
    lines += [f"- {m} {part}: {spread(res, ('abs', m, part), pbs, ks)}" for m, part in ABS_COLUMNS]
    return "\n".join(lines)


def header() -> str:
    """Machine (lscpu model name, else platform.processor), UTC date, jax version."""
    machine = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        machine = (
            next(
                line.split(":", 1)[1].strip()
                for line in lscpu.splitlines()
                if line.startswith("Model name")
            )
            or machine
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    try:
        date = subprocess.run(
            ["date", "-u", "+%F"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        date = time.strftime("%Y-%m-%d", time.gmtime())
    return (
        f"# grad_ratio_bench — machine: {machine}; date: {date}; jax {jax.__version__}; "
        f"backend {jax.default_backend()}"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="B ∈ {64, 512}, K ∈ {16, 64}, 1 draw")
    args = parser.parse_args(argv)
    setup = QUICK if args.quick else FULL
    print(header())
    print(
        f"scale {SCALE}, unknown_weight {UNKNOWN_WEIGHT}, -1 share of non-present "
        f"{NEG_SHARE:.4f}, Zipf exponent {ZIPF_EXPONENT}, draws {setup['draws']}\n"
    )
    start = time.perf_counter()
    res = run(setup["bs"], setup["ks"], setup["draws"])
    print(tables(res, setup["bs"], setup["ks"]))
    print(f"\nwall time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
