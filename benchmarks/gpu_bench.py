"""One-GPU figures for benchmarks/gpu_check.sh: loss timings and B/16 train-step throughput.

Run through the shell script, which gives every call its own time limit and collects the
markdown into one file:

    bash benchmarks/gpu_check.sh            # one NVIDIA GPU, full sizes (about 8 minutes at most)
    bash benchmarks/gpu_check.sh --tiny     # CPU, tiny sizes (a minute or two on 2 cores)

or one piece at a time (each prints markdown to stdout, logs to stderr):

    python benchmarks/gpu_bench.py header [--tiny]
    python benchmarks/gpu_bench.py losses --kind sigmoid --sizes 4096,16384,65536 --dim 768
    python benchmarks/gpu_bench.py losses --kind conditional --k 64 --sizes 4096 --dim 768
    python benchmarks/gpu_bench.py train --config configs/cclip_b16.py:gpu --batches 512,256

`losses`: `jit(value_and_grad)` of `cclip_jax.losses.sigmoid_loss` or
`conditional_sigmoid_loss(..., max_present=R)` on bfloat16 `[B, D]` embeddings (labels from
`loss_bench.make_inputs`: exactly R present concepts per row): median wall time, the compiled
temporary bytes (`memory_analysis`) and the device's `peak_bytes_in_use` (the process's high-water
mark, so the shell script runs each loss in its own process and sizes in ascending order). A size
whose time, extrapolated as B² from the previous size, would pass `--budget` prints `—`.

`train`: the config's jitted train step on ONE device (mesh data=fsdp=tensor=1,
`distributed=False`), built on a tiny curated folder (the demo's synthetic world, curated at
K=64, R=8 as the B/16 curation defaults) because `training.setup.build` checks one; the step
itself is compiled for synthetic on-device batches of the benchmark's size. Reports examples/s,
and MFU: `cost_analysis()['flops']` of the compiled per-device program (counts remat
recomputation) over the step time, against the device's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "benchmarks")]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jaxlib  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402
from loss_bench import make_inputs  # noqa: E402

from cclip_jax import config as config_lib  # noqa: E402
from cclip_jax import data as data_lib  # noqa: E402
from cclip_jax import losses  # noqa: E402
from cclip_jax.curation import demo_data  # noqa: E402
from cclip_jax.training.setup import build  # noqa: E402

MiB = 2**20
R = 8  # max_present of the conditional loss, and present concepts per label row
TRAIN_K, TRAIN_R = 64, 8  # configs/curate.py defaults: what a B/16 curated batch carries
# Dense bf16 peak FLOP/s by device_kind substring (first match wins; H100/H200: SXM figures).
PEAKS = {"H100 PCIe": 756e12, "H200": 989e12, "H100": 989e12, "A100": 312e12}


def md_row(cells: list[str]) -> None:
    print("| " + " | ".join(cells) + " |", flush=True)


def one_line(e: BaseException) -> str:
    """`Type: first line of the message` (at most 160 characters, no table-breaking `|`)."""
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first}"[:160].replace("|", "/")


def peak_bytes() -> int | None:
    """`peak_bytes_in_use` of device 0 (this process's high-water mark), or None (CPU)."""
    try:
        return (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
    except Exception:  # some backends do not implement it
        return None


def fmt(value: float | None, scale: float = MiB, spec: str = ".0f") -> str:
    """`value / scale` formatted (MiB by default), or `n/a`."""
    return "n/a" if value is None else format(value / scale, spec)


def assumed_peak(device: jax.Device) -> tuple[float | None, str]:
    """`(dense bf16 FLOP/s, which)` for a known GPU `device_kind`, else `(None, reason)`."""
    if device.platform != "gpu":
        return None, f"n/a on {device.platform}"
    for key, flops in PEAKS.items():
        if key in device.device_kind:
            return flops, f"{flops / 1e12:.0f} TFLOP/s dense bf16 ({key} entry)"
    return None, f"unknown peak for {device.device_kind!r}"


def time_calls(fn, budget_s: float, reps: int, target_s: float = 3.0) -> tuple[float, int]:
    """Median seconds of `fn()` (blocks on its result) after one warm-up call.

    Runs at least 1 and at most `reps` timed calls, fewer when they would take more than
    `min(target_s, budget_s)`. Returns `(median seconds, calls timed)`.
    """
    start = time.perf_counter()
    jax.block_until_ready(fn())
    warm = time.perf_counter() - start
    n = int(max(1, min(reps, min(target_s, budget_s - warm) / max(warm, 1e-6))))
    times = []
    for _ in range(n):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times)), n


def nvidia_smi_name() -> str:
    cmd = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return ", ".join(line.strip() for line in out.splitlines() if line.strip())


def cmd_header(args) -> int:
    devices = jax.devices()
    kind = devices[0].device_kind
    smi = nvidia_smi_name()
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = kind + (f" (nvidia-smi: {smi})" if smi else "")
    mode = "TINY sizes (CPU check of the script)" if args.tiny else "full sizes"
    where = os.environ.get("JAX_PLATFORMS", "")
    print(f"# gpu_check: {machine}, host {platform.node()}, {os.cpu_count()} CPUs, {date}, "
          f"jax {jax.__version__} / jaxlib {jaxlib.__version__}, {mode}\n\n"
          f"jax.devices() = {devices} (jax.device_count()={jax.device_count()}, "
          f"JAX_PLATFORMS={where!r})\n")  # fmt: skip
    if not args.tiny and devices[0].platform != "gpu":
        fix = f"pip install 'jax[cuda12]=={jax.__version__}'"
        print(f"ERROR: no GPU visible to JAX (jax.devices() = {devices}); install the CUDA jax "
              f"plugin ({fix}) and check nvidia-smi")  # fmt: skip
        return 2
    return 0


# Section A: losses


def loss_step(kind: str):
    """`jit(value_and_grad)` of the loss in the embeddings (and concept embeddings).

    `kind="sigmoid"`: `f(x [B, D], t [B, D])`; `kind="conditional"`:
    `f(x [B, D], t [B, D], c [K, D], labels int8 [B, K])` with `max_present=R`.
    """
    if kind == "sigmoid":
        f = lambda x, t: losses.sigmoid_loss(x, t, scale=10.0, bias=-10.0)
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))
    f = lambda x, t, c, labels: losses.conditional_sigmoid_loss(
        x, t, c, labels, scale=10.0, bias=-10.0, max_present=R
    )
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))


def loss_inputs(kind: str, b: int, d: int, k: int) -> tuple:
    """bfloat16 `x, t [b, d]` (and `c [k, d]`, int8 labels `[b, k]` with R `+1` per row),
    made on the default device; labels from `loss_bench.make_inputs`."""
    kx, kt, kc = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (b, d), jnp.bfloat16)
    t = jax.random.normal(kt, (b, d), jnp.bfloat16)
    if kind == "sigmoid":
        return x, t
    labels = jnp.asarray(make_inputs(b, k, 1, R)[3])  # d=1: only the labels are wanted
    return x, t, jax.random.normal(kc, (k, d), jnp.bfloat16), labels


LOSS_HEADER = (
    "| loss | B | D | K | R | fwd+bwd ms (median) | timed calls | compile s "
    "| temp MiB (memory_analysis) | peak MiB (peak_bytes_in_use) | note |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
)


def cmd_losses(args) -> int:
    deadline = time.perf_counter() + args.budget
    sizes = sorted(int(s) for s in args.sizes.split(","))
    if args.table_header:
        print(LOSS_HEADER, flush=True)
    name = "sigmoid_loss" if args.kind == "sigmoid" else f"conditional, max_present={R}"
    k_cell, r_cell = ("—", "—") if args.kind == "sigmoid" else (str(args.k), str(R))
    fn = loss_step(args.kind)
    prev = None  # (B, seconds per call, compile seconds) of the previous measured size
    for b in sizes:
        cells = [name, str(b), str(args.dim), k_cell, r_cell]
        left = deadline - time.perf_counter()
        est = None if prev is None else prev[2] + 4 * prev[1] * (b / prev[0]) ** 2
        if est is not None and est > left:
            note = f"skipped: est. {est:.0f} s > {max(left, 0):.0f} s left of the budget"
            md_row([*cells, *["—"] * 5, note])
            continue
        try:
            inputs = loss_inputs(args.kind, b, args.dim, args.k)
            start = time.perf_counter()
            compiled = fn.lower(*inputs).compile()
            compile_s = time.perf_counter() - start
            temp = compiled.memory_analysis().temp_size_in_bytes
            seconds, n = time_calls(
                lambda c=compiled, i=inputs: c(*i), deadline - time.perf_counter(), args.reps
            )
            prev = (b, seconds, compile_s)
            row = [f"{1e3 * seconds:.2f}", str(n), f"{compile_s:.1f}", fmt(temp), fmt(peak_bytes())]
            row.append("")
            del inputs, compiled
        except Exception as e:
            row = [*["—"] * 5, "error: " + one_line(e)]
        md_row([*cells, *row])
        if args.kind == "sigmoid" and b == sizes[-1]:  # the reported anchor, beside B = 65536
            note = "anchor, not measured here" + ("" if b == 65536 else " (B=65,536)")
            mem = "1.4 GB (640 MB at its smallest chunk)"
            md_row(
                [
                    "siglip-kernel (fused Triton), reported on H100",
                    "65536",
                    "768",
                    "—",
                    "—",
                    "48.8",
                    "—",
                    "—",
                    mem,
                    "—",
                    note,
                ]
            )
    return 0


# Section B: train steps


def curated_folder(cache_dir: str) -> str:
    """A tiny curated folder (the demo's smoke world, batch 16, K=64, R=8) under `cache_dir`."""
    demo = config_lib.load(os.path.join(ROOT, "configs", "demo.py:smoke"))
    demo.data.cache_dir = cache_dir
    demo.data.curation.max_concepts = TRAIN_K
    demo.data.curation.max_present = TRAIN_R
    return demo_data.ensure_demo_data(demo)


def one_device_setup(config_spec: str, cache_dir: str):
    """`training.setup.build` of the config on device 0 alone; returns `(config, setup)`."""
    c = config_lib.load(config_spec)
    c.data.curated_dir = curated_folder(cache_dir)
    c.batch_size = 16  # what the tiny folder was curated at (build checks it); the step is
    c.distributed = False  # compiled below for the benchmark's own batch size
    c.mesh.update({"data": 1, "fsdp": 1, "tensor": 1})
    c.compilation_cache_dir = ""
    return c, build(c, devices=jax.devices()[:1])


def synthetic_batch(setup, b: int, k: int, seed: int = 0) -> dict[str, jax.Array]:
    """A random batch on the setup's mesh: `images` float32 `[b, S, S, 3]` in [-1, 1],
    `text` int32 `[b, L]`, `concepts` int32 `[k, L]`, `labels` int8 `[b, k]` (R `+1` per row),
    `text_cut` int8 `[b]`, `concepts_cut` int8 `[k]` (zeros)."""
    cfg = setup.config.model
    size, length, vocab = cfg.image.image_size, cfg.text.max_len, cfg.text.vocab_size
    ki, kt, kc = jax.random.split(jax.random.key(seed), 3)
    host = {
        "images": jax.random.uniform(ki, (b, size, size, 3), jnp.float32, -1.0, 1.0),
        "text": jax.random.randint(kt, (b, length), 1, vocab, jnp.int32),
        "concepts": jax.random.randint(kc, (k, length), 1, vocab, jnp.int32),
        "labels": jnp.asarray(make_inputs(b, k, 1, TRAIN_R, seed)[3]),
        "text_cut": jnp.zeros((b,), jnp.int8),
        "concepts_cut": jnp.zeros((k,), jnp.int8),
    }
    rows = setup.batch.rows
    return {f: jax.device_put(host[f], rows) for f in data_lib.ARRAY_FIELDS}


def step_flops(compiled) -> float | None:
    """`cost_analysis()['flops']` of a compiled program (per device), or None."""
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def time_step(setup, b: int, steps: int, deadline: float) -> dict:
    """Compiles the step for batch `b` and times `steps` calls (after one warm-up)."""
    batch = synthetic_batch(setup, b, TRAIN_K)
    state = setup.init_state(jax.random.key(0))
    start = time.perf_counter()
    compiled = setup.step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    box = [state]

    def one():
        box[0], metrics = compiled(box[0], batch)  # the state is donated
        return metrics["loss"]

    seconds, n = time_calls(one, deadline - time.perf_counter(), steps, target_s=10.0)
    loss = float(one())
    mem = compiled.memory_analysis().temp_size_in_bytes
    flops = step_flops(compiled)
    return dict(seconds=seconds, steps=n, compile_s=compile_s, flops=flops, temp=mem, loss=loss)


TRAIN_HEADER = (
    "| step | towers | batch | K | step ms (median) | timed steps | examples/s "
    "| compile s | {u}FLOP/step (cost_analysis, per device) | achieved {u}FLOP/s | MFU "
    "| temp MiB | peak MiB | note |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
)


def towers_name(model) -> str:
    """E.g. `ViT-B/16 224px + text B (L=64), bfloat16`; depths shown when overridden."""
    img, txt = model.image, model.text
    depth = lambda tower: f" depth {tower.depth}" if tower.get("depth") else ""
    return (
        f"ViT-{img.variant}{depth(img)} {img.image_size}px + text {txt.variant}{depth(txt)} "
        f"(L={txt.max_len}), {model.dtype}"
    )


def cmd_train(args) -> int:
    flags.FLAGS.mark_as_parsed()
    deadline = time.perf_counter() + args.budget
    device = jax.devices()[0]
    peak, peak_note = assumed_peak(device)
    unit, scale = ("T", 1e12) if device.platform == "gpu" else ("G", 1e9)
    if args.table_header:
        print(
            f"MFU = cost_analysis flops of the compiled one-device step (the whole step here; "
            f"includes remat recomputation) / step time / peak; peak assumed: {peak_note}. "
            f"Synthetic on-device batches, K={TRAIN_K} concepts, R={TRAIN_R} present per row."
            f"\n\n{TRAIN_HEADER.format(u=unit)}",
            flush=True,
        )
    cache = args.cache_dir or tempfile.mkdtemp(prefix="gpu_check_cache_")
    config, setup = one_device_setup(args.config, cache)
    lam = config.cond_weight
    name = "SigLIP (λ=0)" if lam == 0 else f"CCLIP (λ={lam:g})"
    towers = towers_name(config.model)
    notes = []
    spent = 0.0  # seconds of the last attempt that ran out of memory
    for b in (int(s) for s in args.batches.split(",")):
        cells = [name, towers, str(b), str(TRAIN_K)]
        if spent and deadline - time.perf_counter() < spent:
            notes.append(f"batch {b}: skipped, {spent:.0f} s needed, budget spent")
            break
        start = time.perf_counter()
        try:
            r = time_step(setup, b, args.steps, deadline)
        except Exception as e:
            if "resource_exhausted" in str(e).lower() or "out of memory" in str(e).lower():
                notes.append(f"batch {b}: out of memory")
                spent = time.perf_counter() - start
                continue  # the next (smaller) batch
            md_row([*cells, *["—"] * 9, "; ".join([*notes, "error: " + one_line(e)])])
            return 0
        achieved = None if r["flops"] is None else r["flops"] / r["seconds"]
        mfu = "n/a" if achieved is None or peak is None else f"{100 * achieved / peak:.1f}%"
        notes.append(f"final loss {r['loss']:.3f}")
        times = [f"{1e3 * r['seconds']:.1f}", str(r["steps"]), f"{b / r['seconds']:.1f}"]
        flops = [fmt(r["flops"], scale, ".4g"), fmt(achieved, scale, ".4g"), mfu]
        memory = [fmt(r["temp"]), fmt(peak_bytes()), "; ".join(notes)]
        md_row([*cells, *times, f"{r['compile_s']:.1f}", *flops, *memory])
        return 0
    md_row([name, towers, args.batches, str(TRAIN_K), *["—"] * 9, "; ".join(notes)])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("header", help="the header; exit 2 if no GPU (unless --tiny)")
    p.add_argument("--tiny", action="store_true")
    lp = sub.add_parser("losses", help="Section A rows for one loss")
    tp = sub.add_parser("train", help="Section B row for one config")
    for p, budget in ((lp, 60.0), (tp, 120.0)):
        p.add_argument("--budget", type=float, default=budget, help="seconds for the call")
        p.add_argument("--table_header", action="store_true", help="print the table's header")
    lp.add_argument("--kind", choices=("sigmoid", "conditional"), required=True)
    lp.add_argument("--sizes", default="4096,16384,65536", help="batch sizes B")
    lp.add_argument("--dim", type=int, default=768, help="embedding width D")
    lp.add_argument("--k", type=int, default=64, help="concepts K (conditional)")
    lp.add_argument("--reps", type=int, default=10, help="timed calls at most")
    tp.add_argument("--config", required=True, help="config file[:arg], as cclip_jax.main's")
    tp.add_argument("--batches", default="512,256", help="tried in order; the next on OOM")
    tp.add_argument("--steps", type=int, default=10, help="timed steps at most")
    tp.add_argument("--cache_dir", default="", help="for the tiny curated folder")
    args = parser.parse_args()
    return {"header": cmd_header, "losses": cmd_losses, "train": cmd_train}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
