"""The blind baseline: a scorer that never looks at the image.

`BigramScorer` scores a caption by its log-likelihood under a word bigram model of the training
captions (add-one smoothing), whatever the image. On an item set that cannot be solved from the
text alone (the swap kinds and groups of the synthetic world, whose two captions use the same
words), it must sit at chance; a blind model above chance means the items leak their answer
through the wording (the flaw SugarCrepe found in earlier benchmarks).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

_BOS, _EOS = "<s>", "</s>"


def _words(text: str) -> list[str]:
    return [_BOS, *text.lower().split(), _EOS]


class BigramScorer:
    """Satisfies the evaluation `Scorer` protocol; `similarity` ignores the image entirely.

    Args:
      captions: the training captions the language model is counted from.
      image_size: side of the images the runners load (they are loaded, then ignored).
    """

    def __init__(self, captions: Iterable[str], image_size: int = 32):
        self.image_size = image_size
        self.unigrams: Counter[str] = Counter()
        self.bigrams: Counter[tuple[str, str]] = Counter()
        for caption in captions:
            w = _words(caption)
            self.unigrams.update(w[:-1])
            self.bigrams.update(itertools.pairwise(w))
        if not self.unigrams:
            raise ValueError("BigramScorer needs at least one training caption")
        self.vocab = len(self.unigrams) + 1  # + </s>

    def log_prob(self, text: str) -> float:
        """Add-one smoothed bigram log-likelihood of `text`."""
        w = _words(text)
        return float(
            sum(
                np.log((self.bigrams[a, b] + 1) / (self.unigrams[a] + self.vocab))
                for a, b in itertools.pairwise(w)
            )
        )

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """`[N, S, S, 3]` -> ones `[N, 1]`: every image looks the same to a blind model."""
        return np.ones((len(images), 1), np.float32)

    def embed_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """`[M]` captions -> their log-likelihoods `[M, 1]`, nothing truncated."""
        lp = np.array([[self.log_prob(t)] for t in texts], np.float64)
        return lp, np.zeros(len(texts), bool)

    @staticmethod
    def similarity(image_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
        """`[N, 1] x [M, 1] -> [N, M]`: each caption's log-likelihood, for every image."""
        return image_emb @ text_emb.T
