"""Training metrics: `workdir/metrics.jsonl`, TensorBoard event files, a console progress line.

Only process 0 writes. On resume, `metrics.jsonl` is cut back to the restored step, so after a
kill and restart the file reads exactly like the one of an uninterrupted run.

TensorBoard's events of a URL run folder (`gs://...`) are written by tensorboardX into a local
temporary folder and copied up through `run_folder.paths` at `flush`, at `close`, and at a
logged step when the last copy is `UPLOAD_EVERY_S` old. tensorboardX's own gs:// writer
(google-cloud-storage) would bypass that layer and talk to the bucket when built and again
when garbage-collected; registering a writer factory of ours would change tensorboardX's one
process-wide entry per scheme, and each of its flushes would rewrite the object whole all the
same. Staged, tensorboardX's writer thread does local I/O only, and an upload runs (and
fails) in the caller, at known points.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping

import jax
from tensorboardX import SummaryWriter

from cclip_jax import run_folder
from cclip_jax.run_folder import paths

METRICS_FILE = run_folder.METRICS
UPLOAD_EVERY_S = 120.0  # tensorboardX's own flush period: events reach the bucket as often


def _records(text: str) -> list[str]:
    return [line + "\n" for line in text.splitlines() if line.strip()]


def truncate_jsonl(path: str, last_step: int) -> None:
    """Drops lines of `path` whose `step` is greater than `last_step` (atomic rewrite)."""
    if not paths.exists(path):
        return
    lines = _records(paths.read_text(path))
    keep = [line for line in lines if json.loads(line)["step"] <= last_step]
    paths.write_atomic(path, "".join(keep))


def read_jsonl(path: str) -> list[dict]:
    """All records of a metrics file."""
    return [json.loads(line) for line in _records(paths.read_text(path))]


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
        self.path = run_folder.path(workdir, METRICS_FILE)
        self.events_dir = run_folder.path(workdir, run_folder.TENSORBOARD)
        self._tb: SummaryWriter | None = None
        self._staging: str | None = None  # the local folder of a URL run's event files
        # A URL run's metrics lines not yet written: an object store has no append, so each
        # write rewrites the whole object, and one per logged step would upload a growing file
        # every few steps; they go up with the event files instead (and before each checkpoint).
        self._lines: list[str] = []
        self._uploaded = time.monotonic()
        if self.enabled:
            paths.makedirs(workdir)
            truncate_jsonl(self.path, start_step)
            if paths.is_url(self.events_dir):
                self._staging = tempfile.mkdtemp(prefix="cclip-tensorboard-")
            self._tb = SummaryWriter(self._staging or self.events_dir)
        self._t0, self._s0 = time.perf_counter(), start_step
        self._last: tuple[int, float] | None = None  # (step, time) of the previous line

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        """Appends `{"step": step, **metrics}` (floats at full precision) and logs it."""
        if not self.enabled:
            return
        record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        line = json.dumps(record) + "\n"
        if self._staging:
            self._lines.append(line)
        else:
            paths.append_text(self.path, line)
        assert self._tb is not None
        for key, value in record.items():
            if key != "step" and math.isfinite(value):
                self._tb.add_scalar(key, value, step)
        if self._staging and time.monotonic() - self._uploaded >= UPLOAD_EVERY_S:
            self.flush()
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
        """Writes the pending TensorBoard events and, for a URL run folder, the pending
        metrics lines, and copies the events up (the trainer calls this before each
        checkpoint, so that the metrics of every saved step are in the folder)."""
        if self._tb is not None:
            self._tb.flush()
            self._upload()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
            try:
                self._upload()
            finally:
                if self._staging:
                    shutil.rmtree(self._staging, ignore_errors=True)
                    self._staging = None

    def _upload(self) -> None:
        """Copies the staged event files, whole (object stores have no append), to the run
        folder's `tensorboard/`; those of earlier starts stay there, as in a local folder."""
        if self._staging:
            if self._lines:
                paths.append_text(self.path, "".join(self._lines))
                self._lines.clear()
            paths.copy_files(self._staging, self.events_dir)
            self._uploaded = time.monotonic()
