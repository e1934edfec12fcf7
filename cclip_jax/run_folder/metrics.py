"""Training metrics: `workdir/metrics.jsonl`, TensorBoard event files, a console progress line.

Only process 0 writes. On resume, `metrics.jsonl` is cut back to the restored step, so after a
kill and restart the file reads exactly like the one of an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping

import jax
from tensorboardX import SummaryWriter

from cclip_jax import run_folder

METRICS_FILE = run_folder.METRICS


def truncate_jsonl(path: str, last_step: int) -> None:
    """Drops lines of `path` whose `step` is greater than `last_step` (atomic rewrite)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        keep = [line for line in f if line.strip() and json.loads(line)["step"] <= last_step]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(keep)
    os.replace(tmp, path)


def read_jsonl(path: str) -> list[dict]:
    """All records of a metrics file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


class MetricsWriter:
    """Writes one record per logged step.

    Args:
      workdir: run folder (`metrics.jsonl` and `tensorboard/` go there).
      total_steps: for the ETA.
      start_step: the step training resumes from (metrics after it are dropped).
      console: print a progress line per record.
    """

    def __init__(self, workdir: str, total_steps: int, start_step: int = 0, console: bool = True):
        self.enabled = jax.process_index() == 0
        self.total_steps, self.console = total_steps, console
        self.path = os.path.join(workdir, METRICS_FILE)
        self._tb: SummaryWriter | None = None
        if self.enabled:
            os.makedirs(workdir, exist_ok=True)
            truncate_jsonl(self.path, start_step)
            self._tb = SummaryWriter(run_folder.path(workdir, run_folder.TENSORBOARD))
        self._t0, self._s0 = time.perf_counter(), start_step
        self._last: tuple[int, float] | None = None  # (step, time) of the previous line

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        """Appends `{"step": step, **metrics}` (floats at full precision) and logs it."""
        if not self.enabled:
            return
        record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        assert self._tb is not None
        for key, value in record.items():
            if key != "step" and math.isfinite(value):
                self._tb.add_scalar(key, value, step)
        if self.console:
            print(self._progress(step, record, time.perf_counter()), file=sys.stderr, flush=True)

    def _progress(self, step: int, record: Mapping[str, float], now: float) -> str:
        """The console line. Its rate is over the last logging interval, and the first
        interval (which holds the compilation) gets no rate: an average since the start would
        carry the compile time for the whole run (0.54 steps/s for a run at 40)."""
        shown = " ".join(
            f"{k}={record[k]:.4g}" for k in ("loss", "loss_sig", "loss_cond", "lr") if k in record
        )
        head = f"step {step}/{self.total_steps} {shown}"
        last, self._last = self._last, (step, now)
        if last is None:
            return (
                f"{head} (first {step - self._s0} steps with compilation: {now - self._t0:.1f} s)"
            )
        rate = (step - last[0]) / (now - last[1]) if now > last[1] else float("nan")
        eta = (self.total_steps - step) / rate if rate > 0 else float("nan")
        return f"{head} {rate:.2f} steps/s ETA {_fmt_time(eta)}"

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
