"""Demo-data building says what it builds and where, once; a cached build says nothing."""

from __future__ import annotations

import os

from demo_smoke import smoke_config

from cclip_jax.curation import demo_data


def test_each_stage_prints_a_line_with_its_folder(tmp_path, capsys):
    config = smoke_config(tmp_path)  # a cache of its own: both stages run
    curated = demo_data.ensure_demo_data(config)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("demo data:")]
    assert len(lines) == 2
    assert lines[0].startswith("demo data: building the synthetic world (128 pairs, natural")
    assert lines[0].endswith(str(tmp_path / os.path.basename(lines[0].split(" in ")[-1])))
    assert lines[1] == f"demo data: curating it into batches of 16 in {curated}"
    assert demo_data.ensure_demo_data(config) == curated
    assert "demo data:" not in capsys.readouterr().err
