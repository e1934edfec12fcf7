"""Label quality against the synthetic world's oracle (skipped without cclip_jax.synthetic)."""

import pytest

synthetic = pytest.importorskip("cclip_jax.synthetic")

from cclip_jax.curation import quality, settings  # noqa: E402


@pytest.mark.slow
def test_label_quality_on_synthetic_world(tmp_path):
    synthetic.write_world(
        tmp_path / "world",
        160,
        preset="natural",
        seed=0,
        num_eval=1,
        csv=False,
        progress=False,
        workers=1,
    )
    c = settings.default_config("small")
    c.batch_size, c.progress = 16, False
    result = quality.report(str(tmp_path / "world" / "train"), c, str(tmp_path))
    none, complete, attribute = result["none"], result["complete"], result["attribute"]
    # +1 is n-gram containment in a true caption: the oracle agrees (masked captions match
    # within a caption of the grammar, which is how the oracle reads them too).
    assert none["+1"]["n"] > 0 and none["+1"]["precision"] >= 0.95
    assert none["-1"]["n"] == 0
    # "natural" captions are incomplete, so the complete-caption rule mislabels true concepts;
    # attribute contradictions are far more precise.
    assert complete["-1"]["n"] > attribute["-1"]["n"] > 0
    assert attribute["-1"]["precision"] > complete["-1"]["precision"]
    assert complete["-1"]["false_negative_rate"] > 0
