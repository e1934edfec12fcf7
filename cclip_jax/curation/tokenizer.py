"""SentencePiece tokenizer for captions and concepts, with `<M>` as one reserved piece."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterable

import sentencepiece as spm

from cclip_jax.curation import text

MODEL_TYPES = ("bpe", "unigram")
_SPACE = "\u2581"  # SentencePiece's word-boundary mark


def train(sentences: Iterable[str], path: str, *, vocab_size: int, model_type: str = "bpe") -> str:
    """Trains a SentencePiece model with `<M>` as a user-defined symbol.

    `<M>` after a space is one piece too (`▁<M>`): otherwise every gap costs two (`▁`, `<M>`),
    and masked captions, the longest concepts, would need 40% more of the concept length.

    Args:
      sentences: training text (normalised captions); the caller bounds how many.
      path: where to write the `.model` file.
      vocab_size: target size; small corpora get fewer pieces rather than an error.
      model_type: `bpe` or `unigram`. On a corpus with a small vocabulary (the synthetic
        world) unigram stops at a few dozen pieces and splits words into letters (so 16
        tokens hold 3 words); BPE keeps every frequent word whole.

    Returns:
      `path`.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"tokenizer_type={model_type!r} is not one of {MODEL_TYPES}")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        user_defined_symbols=[text.MASK, _SPACE + text.MASK],
        hard_vocab_limit=False,  # tiny corpora (tests) cannot reach the requested size
        character_coverage=1.0,
        # Case-folding NFKC: stored captions keep their casing, concepts are lower case; both
        # must map to the same pieces.
        normalization_rule_name="nmt_nfkc_cf",
        num_threads=1,  # one thread keeps the model byte-identical across runs
        minloglevel=2,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
    )
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(model.getvalue())
    os.replace(tmp, path)
    return path


def install(source: str, path: str) -> str:
    """Copies a given SentencePiece model next to the shards, checking it has `<M>`."""
    proc = spm.SentencePieceProcessor(model_file=source)
    if proc.piece_to_id(text.MASK) == proc.unk_id():
        raise ValueError(f"tokenizer {source} has no {text.MASK} piece; train one instead")
    shutil.copyfile(source, path)
    return path
