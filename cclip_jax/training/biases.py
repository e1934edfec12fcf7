"""The initial logit biases of a run, from its config and its curated data's manifest."""

from __future__ import annotations

from typing import Any

import ml_collections
from absl import logging

from cclip_jax import losses


def initial_biases(
    config: ml_collections.ConfigDict, manifest: dict[str, Any], where: str
) -> dict[str, float]:
    """`bias_init` and `cond_bias_init` where the config leaves them None (the default): the
    logits of the plain term's positive rate (`1 / B`) and of the curated data's weighted
    positive-triple rate (manifest `batches.triple_sums`; for the `tags` classifier, its +1
    rate), so that every term starts balanced at any batch size (`cclip_jax.losses.init`)."""
    out = {}
    if config.model.bias_init is None:
        out["bias_init"] = losses.sigmoid_bias_init(config.batch_size)
    if config.model.cond_bias_init is None:
        out["cond_bias_init"] = out.get("bias_init", config.model.bias_init)
        if config.loss == "sigmoid" and config.cond_weight != 0:
            sums = _triple_sums(manifest, where)
            if config.labels == "positive_only":  # every -1 is read as 0
                sums = {**sums, "pn": 0, "pu": sums["pu"] + sums["pn"]}
            out["cond_bias_init"] = losses.conditional_bias_init(
                sums,
                unknown_weight=config.unknown_weight,
                cross_positive_weight=config.cross_positive_weight,
            )
        elif config.tags_weight:  # the classifier's rate: +1 among the counted labels
            counts = manifest["batches"]["labels"]
            pos = counts.get("+1", 0)
            negative = counts.get("-1", 0) + config.unknown_weight * counts.get("0", 0)
            out["cond_bias_init"] = losses.init.logit(pos / (pos + negative))
    return out


def _triple_sums(manifest: dict[str, Any], where: str) -> dict[str, float]:
    stats = manifest["batches"]
    if "triple_sums" in stats:
        return stats["triple_sums"]
    # Curated before the manifest counted them: estimate from the label totals, as if every
    # concept column of every batch held the same counts.
    columns = sum(int(k) * n for k, n in stats["concepts_per_batch"].items())
    p, n, u = (stats["labels"].get(key, 0) / max(columns, 1) for key in ("+1", "-1", "0"))
    logging.warning(
        "%s/manifest.json has no batches.triple_sums (curated by an older "
        "version): the conditional bias starts from an estimate",
        where,
    )
    return {"pp": columns * p * p, "p": columns * p, "pn": columns * p * n, "pu": columns * p * u}
