"""Concept kinds: which of a batch's concepts a run keeps (`config.concept_kinds`).

Every batch concept is one of

  * `unigram`: an n-gram of one word ("red", "circle");
  * `attribute_noun`: a bigram whose first word is an attribute adjective (`text.ATTRIBUTE_WORDS`:
    colour, size, shape, material, pattern) and whose second is a noun, approximated as an
    alphabetic content word that is not itself an attribute word ("red circle", "wooden table";
    not "small red", "circle left", "red 2");
  * `other`: any other n-gram ("left of", "red circle left", "circle left");
  * `masked`: a masked caption (contains `<M>`).

`config.concept_kinds` keeps all of them (`all`, the default: the output is the same as before
the setting existed) or one kind: `unigram`, `attribute_noun` or `masked`. The filter runs
inside `batches.assemble_pool`, the per-pool function both runners call, after the batch's
members are chosen: every kind curates the same batches (members, order, sharing), and only the
concept columns and their labels differ, so an experiment comparing kinds compares concepts and
nothing else. A batch may end up with no concept of the kind; it is then written with K = 0 real
columns (all labels 0) and counted in the manifest's `batches.concepts_per_batch["0"]`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cclip_jax.curation import text

KINDS = ("all", "unigram", "attribute_noun", "masked")


def _is_noun(word: str) -> bool:
    return (
        text.is_content_word(word)
        and word not in text.ATTRIBUTE_WORDS
        and word.replace("'", "").isalpha()
    )


def concept_kind(concept: str) -> str:
    """The kind of one concept string: `masked`, `unigram`, `attribute_noun` or `other`."""
    if text.MASK in concept:
        return "masked"
    words = concept.split(" ")
    if len(words) == 1:
        return "unigram"
    if len(words) == 2 and words[0] in text.ATTRIBUTE_WORDS and _is_noun(words[1]):
        return "attribute_noun"
    return "other"


def keeps_masked(setting: str) -> bool:
    """True when the setting keeps masked captions."""
    return setting in ("all", "masked")


def ngram_mask(strings: Sequence[str], setting: str) -> np.ndarray | None:
    """bool [C]: which n-gram concepts the setting keeps; None for `all` (keep every one)."""
    if setting == "all":
        return None
    return np.fromiter(
        (concept_kind(s) == setting for s in strings), dtype=bool, count=len(strings)
    )


def count_kinds(strings: Sequence[str]) -> dict[str, int]:
    """Kept corpus concepts (n-grams after the document-frequency band) by kind, for the
    manifest's `counts.concepts_by_kind` (the same in both runners: the same strings)."""
    out = {"attribute_noun": 0, "other": 0, "unigram": 0}
    for s in strings:
        out[concept_kind(s)] += 1
    return out
