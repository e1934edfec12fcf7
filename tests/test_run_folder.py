"""The run folder's resume check: a changed config stops a resume, naming each field."""

from __future__ import annotations

import json

import pytest

from cclip_jax import run_folder
from cclip_jax.config import override

OLD = {
    "seed": 0,
    "total_steps": 300,
    "cond_weight": 1.0,
    "model": {"embed_dim": 32},
    "eval": {"every_steps": 0},
    "data": {"curated_dir": "/data/a", "num_workers": 1},
    "splits": ["iid", "compositional"],
}


def _with(**changes):
    """A copy of OLD with `section__field=value` changes (`__` for the dots of a path)."""
    return override(
        json.loads(json.dumps(OLD)),
        {path.replace("__", "."): value for path, value in changes.items()},
    )


def test_fields_that_may_change_on_resume_pass():
    new = _with(total_steps=600, eval__every_steps=100)
    assert run_folder.config_changes(OLD, new) == []
    # JSON has no tuples: a tuple in the new config equals the stored list.
    assert run_folder.config_changes(OLD, _with(splits=("iid", "compositional"))) == []


def test_changed_fields_are_named_with_old_and_new_values():
    new = _with(cond_weight=0.5, model__embed_dim=64, data__curated_dir="/data/b")
    assert run_folder.config_changes(OLD, new) == [
        ("cond_weight", 1.0, 0.5),
        ("data.curated_dir", "/data/a", "/data/b"),
        ("model.embed_dim", 32, 64),
    ]
    extra = _with()
    extra["model"]["gate"] = "ones"
    assert run_folder.config_changes(OLD, extra) == [("model.gate", "<absent>", "ones")]


def test_a_field_added_since_the_run_reads_as_its_old_behaviour():
    """A config.json written before `model.text.lowercase` existed resumes under a config
    that holds its old-behaviour value, and is refused under any other value."""
    new = _with(data__skip_corrupt_batches=True)
    new["model"]["text"] = {"lowercase": False}
    assert run_folder.config_changes(OLD, new) == []
    new["model"]["text"] = {"lowercase": True}
    assert run_folder.config_changes(OLD, new) == [("model.text.lowercase", False, True)]


def test_a_folder_of_the_old_max_present_spelling_is_refused_by_name(tmp_path):
    """config.json of runs from before 'manifest' / 'dense' holds -1 / 0: a resume says which
    field changed (and --force_config_change resumes with the new spelling)."""
    run_folder.write_config(str(tmp_path), _with(max_present=-1))
    with pytest.raises(run_folder.ConfigChangedError, match=r"\(max_present: -1 -> 'manifest'\)"):
        run_folder.check_resume(str(tmp_path), _with(max_present="manifest"))


def test_check_resume_refuses_then_records_a_forced_change(tmp_path):
    workdir = str(tmp_path)
    assert run_folder.check_resume(workdir, OLD) == []  # a new folder: nothing to compare
    run_folder.write_config(workdir, OLD)
    assert run_folder.check_resume(workdir, _with(total_steps=900)) == []
    new = _with(cond_weight=0.5)
    with pytest.raises(
        run_folder.ConfigChangedError, match=r"cond_weight: 1\.0 -> 0\.5.*--force_config_change"
    ):
        run_folder.check_resume(workdir, new)
    assert not (tmp_path / run_folder.HISTORY).exists()  # a refused resume writes nothing
    assert run_folder.read_config(workdir) == OLD
    changes = run_folder.check_resume(workdir, new, force=True)
    assert changes == [("cond_weight", 1.0, 0.5)]
    assert not (tmp_path / run_folder.HISTORY).exists()  # the trainer records it after restore
    run_folder.record_forced_change(workdir, changes)
    (line,) = (tmp_path / run_folder.HISTORY).read_text().splitlines()
    event = json.loads(line)
    assert event["event"] == "forced_config_change"
    assert event["changes"] == [{"field": "cond_weight", "old": 1.0, "new": 0.5}]
