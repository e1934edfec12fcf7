"""Concept extraction: word n-grams kept by document-frequency band and stop-word rules.

A concept is an n-gram (1..`max_n` words) of a normalised caption that

  * does not start or end with an edge word (`text.EDGE_WORDS`: "a red" says no more than "red"),
  * is not made only of stop words ("of the"),
  * occurs in at least `min_df` captions (rarer ones are never shared by two captions) and in at
    most `max(min_df, max_df_frac * N)` captions (commoner ones are uninformative).

The rule is written once, in `extract_concepts` (a whole corpus at once, numpy over token ids):
the local runner calls it on the corpus; the Beam runner calls `caption_ngrams` (the same
function with a band that keeps every candidate) on bundles of captions, counts document
frequencies across workers and keeps them by `in_band`, the band `extract_concepts` applies.
`tests/test_curation.py` checks the rule against a plain per-window reference.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Sequence

import numpy as np

from cclip_jax.curation import text


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Tokenised captions in CSR form.

    Attributes:
      vocab: token strings, sorted (so ids are the same whatever the input order).
      tokens: int32 [T], token ids of all captions, concatenated.
      offsets: int64 [N + 1], caption i is `tokens[offsets[i]:offsets[i + 1]]`.
    """

    vocab: list[str]
    tokens: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]


@dataclasses.dataclass(frozen=True)
class Concepts:
    """Kept concepts and, per caption, the concepts it contains (CSR).

    Attributes:
      strings: concept strings, sorted; concept id = position.
      df: int64 [C], number of captions containing each concept.
      offsets: int64 [N + 1]; caption i has concept ids `ids[offsets[i]:offsets[i + 1]]`.
      ids: int32 [nnz], sorted within each caption.
    """

    strings: list[str]
    df: np.ndarray
    offsets: np.ndarray
    ids: np.ndarray

    def row(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]


def encode_chunk(token_lists: Sequence[Sequence[str]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """One chunk of `encode`: (sorted chunk vocabulary, int32 [T] ids into it, int64 [n]
    lengths). Chunks can be encoded in parallel and combined with `merge`."""
    local = sorted(set(itertools.chain.from_iterable(token_lists)))
    index = dict(zip(local, range(len(local)), strict=True))
    lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
    ids = np.fromiter(
        map(index.__getitem__, itertools.chain.from_iterable(token_lists)),
        dtype=np.int32,
        count=int(lengths.sum()),
    )
    return local, ids, lengths


def merge(parts: Sequence[tuple[list[str], np.ndarray, np.ndarray]]) -> Corpus:
    """Combines encoded chunks (in order) into one `Corpus` with a sorted vocabulary."""
    vocab = sorted(set(itertools.chain.from_iterable(p[0] for p in parts)))
    index = dict(zip(vocab, range(len(vocab)), strict=True))
    pieces = [
        np.fromiter(map(index.__getitem__, local), np.int32, count=len(local))[ids]
        for local, ids, _ in parts
    ]
    lengths = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
    return Corpus(vocab, tokens.astype(np.int32, copy=False), offsets)


def encode(token_lists: Iterable[Sequence[str]], chunk: int = 65536) -> Corpus:
    """Maps token lists to a `Corpus` with a sorted vocabulary.

    Streams in chunks (each with its own sorted vocabulary, merged at the end), so memory holds
    one chunk of token strings at a time; per-token work runs in C (set, `map` over a dict).

    Args:
      token_lists: N lists of tokens (any iterable).
      chunk: captions per chunk.

    Returns:
      The corpus; `vocab[tokens[j]]` is the j-th token.
    """
    it = iter(token_lists)
    parts = []
    while lists := list(itertools.islice(it, chunk)):
        parts.append(encode_chunk(lists))
    return merge(parts)


def subset(corpus: Corpus, rows: np.ndarray) -> Corpus:
    """The captions `rows` (int [P]) as a corpus with their own sorted vocabulary.

    Equal to `encode` of those captions' tokens, because the parent vocabulary is sorted.
    """
    starts, stops = corpus.offsets[rows], corpus.offsets[rows + 1]
    lengths = stops - starts
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    idx = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
    used, local = np.unique(corpus.tokens[idx], return_inverse=True)
    return Corpus([corpus.vocab[t] for t in used.tolist()], local.astype(np.int32), offsets)


def max_df(num_captions: int, min_df: int, max_df_frac: float) -> int:
    """The upper document-frequency bound of the band (never below `min_df`)."""
    return max(min_df, int(max_df_frac * num_captions))


def in_band(
    df: int | np.ndarray, num_captions: int, min_df: int, max_df_frac: float
) -> bool | np.ndarray:
    """Whether document frequencies (an int, or int [C]) lie in the kept band."""
    return (df >= min_df) & (df <= max_df(num_captions, min_df, max_df_frac))


def caption_ngrams(token_lists: Sequence[Sequence[str]], max_n: int) -> list[list[str]]:
    """Each caption's candidate n-grams (stop-word rules applied, before the band).

    Args:
      token_lists: N captions' tokens.
      max_n: longest n-gram, in words.

    Returns:
      N lists: each caption's distinct candidate n-grams, sorted, words joined by single spaces.
    """
    # min_df 1 and max_df_frac 1 make the band [1, N], which keeps every candidate.
    con = extract_concepts(encode(token_lists), max_n=max_n, min_df=1, max_df_frac=1.0)
    return [[con.strings[j] for j in con.row(i).tolist()] for i in range(len(token_lists))]


def extract_concepts(corpus: Corpus, *, max_n: int, min_df: int, max_df_frac: float) -> Concepts:
    """Finds the concepts of a whole corpus and each caption's concept list.

    Vectorised over the flat token array: n-grams of order n get exact dense ids from those of
    order n - 1 (`id_n = unique(id_{n-1} * V + next token)`), so no hashing and no collisions.

    Args:
      corpus: the tokenised captions (N captions, T tokens).
      max_n: longest n-gram in words.
      min_df: smallest document frequency kept.
      max_df_frac: largest document frequency kept, as a fraction of N.

    Returns:
      The kept concepts with per-caption lists.
    """
    n_docs, n_tok = len(corpus), len(corpus.tokens)
    vocab_size = max(len(corpus.vocab), 1)
    tok = corpus.tokens.astype(np.int64)
    lengths = np.diff(corpus.offsets)
    doc_of = np.repeat(np.arange(n_docs, dtype=np.int64), lengths)
    end_of = corpus.offsets[1:][doc_of]
    is_edge = np.array([t in text.EDGE_WORDS for t in corpus.vocab], dtype=bool)[tok]
    stop_cum = np.zeros(n_tok + 1, dtype=np.int64)
    stop_flags = np.array([t in text.STOP_WORDS for t in corpus.vocab], dtype=np.int64)
    np.cumsum(stop_flags[tok] if n_tok else stop_flags[:0], out=stop_cum[1:])

    pos = np.arange(n_tok, dtype=np.int64)
    prev = tok.copy()  # id of the n-gram of order n - 1 starting at each position
    docs, gids, first_pos, first_n = [], [], [], []
    offset = 0
    # Small vocabularies (V^max_n < 2^62): the key `sum tok_i * V^i` of an n-gram is exact, so
    # only candidate positions need sorting; otherwise keys are re-indexed densely per order.
    direct = vocab_size**max_n < 2**62
    for n in range(1, max_n + 1):
        pos = pos[pos + n <= end_of[pos]]
        key = tok[pos] if n == 1 else prev[pos] * vocab_size + tok[pos + n - 1]
        keep = ~is_edge[pos] & ~is_edge[pos + n - 1] & (stop_cum[pos + n] - stop_cum[pos] < n)
        prev = np.full(n_tok, -1, dtype=np.int64)
        if direct:
            prev[pos] = key
            at = pos[keep]
            uniq, first, inv = np.unique(key[keep], return_index=True, return_inverse=True)
            starts = at[first]
        else:
            uniq, first, inv = np.unique(key, return_index=True, return_inverse=True)
            prev[pos] = inv
            at, inv, starts = pos[keep], inv[keep], pos[first]
        docs.append(doc_of[at])
        gids.append(inv + offset)
        first_pos.append(starts)
        first_n.append(np.full(len(uniq), n, dtype=np.int64))
        offset += len(uniq)

    doc = np.concatenate(docs) if docs else np.zeros(0, np.int64)
    gid = np.concatenate(gids) if gids else np.zeros(0, np.int64)
    pairs = np.sort(doc * max(offset, 1) + gid)  # one (caption, n-gram) pair per caption
    pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])] if len(pairs) else pairs
    doc, gid = pairs // max(offset, 1), pairs % max(offset, 1)
    df = np.bincount(gid, minlength=offset)
    kept = np.flatnonzero(in_band(df, n_docs, min_df, max_df_frac))

    starts = np.concatenate(first_pos)[kept] if first_pos else kept
    ns = np.concatenate(first_n)[kept] if first_n else kept
    strings = [
        " ".join(corpus.vocab[t] for t in corpus.tokens[s : s + n])
        for s, n in zip(starts.tolist(), ns.tolist(), strict=True)
    ]
    order = np.argsort(np.array(strings, dtype=object), kind="stable")
    cid_of = np.full(offset, -1, dtype=np.int64)
    cid_of[kept[order]] = np.arange(len(kept))
    cid = cid_of[gid]
    sel = cid >= 0
    doc, cid = doc[sel], cid[sel]
    ordering = np.lexsort((cid, doc))
    doc, cid = doc[ordering], cid[ordering]
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(np.bincount(doc, minlength=n_docs), out=offsets[1:])
    return Concepts(
        strings=[strings[i] for i in order],
        df=df[kept[order]].astype(np.int64),
        offsets=offsets,
        ids=cid.astype(np.int32),
    )
