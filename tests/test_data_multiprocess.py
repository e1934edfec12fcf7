"""Two JAX processes on one machine (jax.distributed over loopback, gloo collectives on CPU):
each reads only its slice of a batch, and the assembled global arrays equal the whole batch."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from demo_smoke import smoke_config

from cclip_jax import data as data_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = textwrap.dedent("""
    import dataclasses, json, sys
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    port, pid, curated = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=pid)
    from demo_smoke import smoke_config
    from cclip_jax import data as data_lib
    from cclip_jax.training import sharding
    mesh = sharding.make_mesh({"data": -1})  # 4 devices, 2 per process
    spec = data_lib.DataSpec.from_config(smoke_config("", curated))
    spec = dataclasses.replace(spec, seed=3, max_shift=0, brightness=0.0)
    ds = data_lib.build_dataset(spec, process_index=jax.process_index(),
                                process_count=jax.process_count())
    local = next(iter(ds))
    batch = data_lib.make_global_batch(local, sharding.batch_split(mesh, sharding.get_rules()).rows)

    def weighted(b):  # row-weighted sums: equal only if every row is in its global place
        out = {}
        for k, v in b.items():
            w = jax.numpy.arange(1, v.shape[0] + 1).reshape((-1,) + (1,) * (v.ndim - 1))
            out[k] = (v.astype("float32") * w).sum()
        return out

    sums = jax.jit(weighted)(batch)
    print(json.dumps({"rows": int(local["labels"].shape[0]), "batch": int(local["batch"]),
                      "shape": list(batch["text"].shape),
                      **{k: float(v) for k, v in sums.items()}}))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_each_read_their_slice(tmp_path, smoke_curated):
    curated = smoke_curated
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = _free_port()
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(port), str(p), curated],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(2)
    ]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert outs[0]["rows"] == outs[1]["rows"] == 8  # each process read half of the rows
    assert outs[0]["shape"] == [16, 16]
    spec = dataclasses.replace(
        data_lib.DataSpec.from_config(smoke_config("", curated)),
        seed=3,
        max_shift=0,
        brightness=0.0,
    )
    whole = next(iter(data_lib.build_dataset(spec)))
    assert outs[0]["batch"] == outs[1]["batch"] == int(whole["batch"])
    for field in data_lib.ARRAY_FIELDS:
        v = whole[field].astype(np.float32)
        w = np.arange(1, v.shape[0] + 1).reshape((-1,) + (1,) * (v.ndim - 1))
        expected = float((v * w).sum())
        for out in outs:
            assert out[field] == pytest.approx(expected, rel=1e-5), field
