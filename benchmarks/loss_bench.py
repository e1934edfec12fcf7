"""Memory and speed of `cclip_jax.losses` (loss + gradient), printed as a markdown table.

    python benchmarks/loss_bench.py            # the README table (several minutes on 2 cores)
    python benchmarks/loss_bench.py --quick    # B=256 and 1024 only

For each B ∈ {256, 1024, 4096} and K ∈ {128, 1024, 4096} at D = 256 it reports, for
`sigmoid_loss`, the dense conditional loss and the conditional loss with `max_present=8`:
the compiled temporary memory of `jit(value_and_grad)` and its median wall time, and, for the
conditional paths, the fraction of this machine's measured f32 matmul rate achieved when useful
work is counted as `12 · nnz(+1) · B · D` FLOPs (forward and backward of the two entry matmuls);
the rate is the larger of the one measured at the start and one measured beside each timing.
Labels have exactly `min(8, K)` present concepts per row; the rest is -1 or 0 at random.
Timings whose estimated cost exceeds `--max_seconds` are skipped and shown as `—`. The losses
run with their defaults (`normalize="triples"`, `unknown_weight = cross_positive_weight = 1`).

Last, the support ratio: loss+grad time of `max_present=4` at K = 2048 over K = 128 (B = 1024,
D = 128), from `max(--reps, 5)` interleaved pairs of runs (median of the pairs' ratios, so that a
shared machine's drift hits both sides). With B·R = 4096 entries, matmul work grows by
`K / (B·R)` of the entry products' (the `[K, 2c]` norm tables) up to K = B·R and is flat
beyond; docs/losses.md has the figures.
"""

from __future__ import annotations

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from cclip_jax import losses

D = 256
R = 8
MiB = 2**20


def matmul_rate(n: int = 2048, reps: int = 5) -> float:
    """Measured f32 matmul FLOP/s of this machine (median of `reps` `[n, n] @ [n, n]`)."""
    a = jnp.ones((n, n), jnp.float32)
    return 2 * n**3 / _median_time(jax.jit(lambda a: a @ a), (a,), reps)


def _median_time(fn, args, reps: int) -> float:
    jax.block_until_ready(fn(*args))  # compile and warm up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def make_inputs(b: int, k: int, d: int, r: int, seed: int = 0):
    """`x, t [b, d]`, `c [k, d]`, labels int8 `[b, k]` with exactly `min(r, k)` +1 per row."""
    rng = np.random.default_rng(seed)
    x, t, c = (rng.normal(size=s).astype(np.float32) for s in [(b, d), (b, d), (k, d)])
    labels = np.where(rng.random((b, k)) < 0.5, -1, 0).astype(np.int8)
    cols = np.argsort(rng.random((b, k)), axis=1)[:, : min(r, k)]
    np.put_along_axis(labels, cols, 1, axis=1)
    return x, t, c, labels


def loss_fn(kind: str, max_present: int | None = None):
    def f(x, t, c, labels):
        if kind == "sigmoid":
            return losses.sigmoid_loss(x, t, scale=10.0, bias=-10.0)
        return losses.conditional_sigmoid_loss(
            x, t, c, labels, scale=10.0, bias=-10.0, max_present=max_present
        )

    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))


def estimated_flops(kind: str, b: int, k: int, r: int) -> float:
    """Rough loss+grad matmul FLOPs (forward, remat recomputation, backward: 4 passes)."""
    if kind == "sigmoid":
        return 4 * 2 * b * b * D
    if kind == "dense":
        return 4 * 2 * b * b * k * D
    entries = b * min(r, k)  # the entry products, and the tiles' norms (table or per entry)
    return 12 * (entries + min(k, entries)) * b * D


def run_case(kind, b, k, rate, args) -> dict:
    max_present = R if kind == "sparse" else None
    fn = loss_fn("conditional" if kind != "sigmoid" else "sigmoid", max_present)
    inputs = make_inputs(b, k, D, R)
    temp = fn.lower(*inputs).compile().memory_analysis().temp_size_in_bytes
    row = {"kind": kind, "B": b, "K": k, "temp_mib": temp / MiB, "seconds": None, "eff": None}
    if estimated_flops(kind, b, k, R) / rate > args.max_seconds:
        return row
    row["seconds"] = _median_time(fn, inputs, args.reps)
    if kind != "sigmoid":
        # The rate is measured again beside each timing: on a shared machine it drifts.
        useful = 12 * int((inputs[3] == 1).sum()) * b * D
        row["eff"] = useful / row["seconds"] / max(rate, matmul_rate())
    return row


def support_ratio(reps: int) -> float:
    """Loss+grad time at K=2048 over K=128 (B=1024, D=128, R=4): the cost-follows-support goal.

    The two are timed in `max(reps, 5)` interleaved pairs (after a warm-up each); the median of the
    pairs' ratios is returned.
    """
    fns = {}
    for k in (128, 2048):
        inputs = make_inputs(1024, k, 128, 4)
        fn = jax.jit(
            jax.value_and_grad(
                lambda x, t, c, labels: losses.conditional_sigmoid_loss(
                    x, t, c, labels, scale=10.0, bias=-10.0, max_present=4
                ),
                argnums=(0, 1, 2),
            )
        )
        jax.block_until_ready(fn(*inputs))
        fns[k] = (fn, inputs)
    ratios = []
    for _ in range(max(reps, 5)):
        times = {}
        for k, (fn, inputs) in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*inputs))
            times[k] = time.perf_counter() - start
        ratios.append(times[2048] / times[128])
    return float(np.median(ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="B = 256 and 1024 only")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max_seconds", type=float, default=15.0, help="skip longer timings")
    args = parser.parse_args()

    rate = matmul_rate()
    print(
        f"# {platform.processor() or platform.machine()}, {jax.device_count()} JAX device(s) "
        f"({jax.devices()[0].platform}), jax {jax.__version__}"
    )
    print(f"# measured f32 matmul rate: {rate / 1e9:.1f} GFLOP/s\n")
    print("| loss | B | K | temp MiB | loss+grad s | % of matmul rate |")
    print("|---|---:|---:|---:|---:|---:|")
    for b in (256, 1024) if args.quick else (256, 1024, 4096):
        for k in (128, 1024, 4096):
            for kind in ("sigmoid", "dense", "sparse"):
                if kind == "sigmoid" and k != 128:
                    continue  # independent of K
                row = run_case(kind, b, k, rate, args)
                seconds = "—" if row["seconds"] is None else f"{row['seconds']:.3f}"
                eff = "" if row["eff"] is None else f"{100 * row['eff']:.0f}%"
                name = {"sigmoid": "sigmoid", "dense": "conditional, dense",
                        "sparse": f"conditional, max_present={R}"}[kind]  # fmt: skip
                k_cell = "any" if kind == "sigmoid" else k
                print(f"| {name} | {b} | {k_cell} | {row['temp_mib']:.1f} | {seconds} | {eff} |",
                      flush=True)  # fmt: skip
    print(f"\nK=2048 / K=128 loss+grad time (B=1024, D=128, R=4): {support_ratio(args.reps):.2f}x")


if __name__ == "__main__":
    main()
