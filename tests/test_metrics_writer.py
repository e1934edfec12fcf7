"""The metrics writer's console line: the rate of the last interval, no compile in it."""

from __future__ import annotations

from cclip_jax.run_folder.metrics import MetricsWriter, read_jsonl


def test_console_rate_is_the_last_interval_and_skips_the_compile(tmp_path):
    w = MetricsWriter(str(tmp_path), total_steps=100, console=False)
    w._t0 = 0.0  # the run started at t = 0 and compiled until t = 80
    first = w._progress(10, {"loss": 5.0}, now=80.0)
    assert "steps/s" not in first and "first 10 steps with compilation: 80.0 s" in first
    # 10 more steps in 0.25 s: 40 steps/s, 80 steps left -> 2 s (an average since the start
    # would say 20 / 80.25 = 0.25 steps/s and an ETA of over 5 minutes).
    second = w._progress(20, {"loss": 4.0}, now=80.25)
    assert "40.00 steps/s ETA 0:00:02" in second
    w.write(30, {"loss": 3.0})
    assert [r["step"] for r in read_jsonl(str(tmp_path / "metrics.jsonl"))] == [30]
    w.close()
