"""Per-slice transforms: image decode, resize, light augmentation; SentencePiece tokenization.

`ProcessSlice` turns what `BatchSliceSource` reads (bytes and strings) into arrays. It is a Grain
random map: its numpy Generator is derived by Grain from the pipeline seed and the element
index, so a resumed run augments step `s` exactly as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import io
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import sentencepiece as spm
from PIL import Image

from cclip_jax.curation.shards import TOKENIZER
from cclip_jax.curation.text import MASK
from cclip_jax.data import png
from cclip_jax.data.hard_negatives import swap_hard_negative

if TYPE_CHECKING:
    import ml_collections


def tokenizer_path(tokenizer: str, curated_dir: str) -> str:
    """The SentencePiece model a run tokenizes with: `tokenizer` (`config.data.tokenizer`) when
    set, else the curated folder's own (`tokenizer.model` next to its shards). The one place
    this is decided: the pipeline, the evaluator's scorer and the benchmarks all ask here.

    Raises:
      FileNotFoundError: naming both config fields, when the file does not exist.
    """
    path = tokenizer or os.path.join(curated_dir, TOKENIZER)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"tokenizer {path} (config.data.tokenizer / config.data.curated_dir) is missing"
        )
    return path


def text_options(text: ml_collections.ConfigDict) -> dict[str, Any]:
    """How a text tower's config (`config.model.text`) asks for its texts to be tokenized:
    `{"max_len", "pad_id", "sticky_eos", "lowercase"}`, the one place those fields are read
    (the pipeline's `DataSpec` and the evaluator's `Tokenizer.for_text_tower` both ask here)."""
    # `get`: run configs written before `sticky_eos` and `lowercase` existed lack them.
    return {
        "max_len": int(text.max_len),
        "pad_id": int(text.pad_id),
        "sticky_eos": bool(text.get("sticky_eos", False)),
        "lowercase": bool(text.get("lowercase", False)),
    }


def lower_keeping_mask(text: str) -> str:
    """`text` lower-cased, except the mask token `<M>` of masked concepts."""
    return MASK.join(part.lower() for part in text.split(MASK))


@dataclasses.dataclass
class Tokenizer:
    """SentencePiece ids, right-padded with `pad_id` and cut to `max_len`.

    With `sticky_eos` (SigLIP; `config.model.text.sticky_eos`, set by `siglip_config`) the ids
    follow big_vision's `tokenize(eos="sticky")`: the model's EOS is appended, and a text that
    does not fit keeps its first `max_len - 1` pieces and EOS in the last position, so a tower
    that pools the last position always reads EOS. Without it (this project's own models,
    which mask padding) no EOS is added and a long text keeps its first `max_len` pieces.

    With `lowercase` (SigLIP; `config.model.text.lowercase`, set by `siglip_config`) texts are
    lower-cased before encoding, as big_vision's `lower(key="texts")` does for the SigLIP
    tokenizers, which were trained on lower-cased text; the mask token `<M>` keeps its case.

    The processor is loaded lazily (and dropped when pickled) so Grain workers build their own.
    """

    model_path: str
    max_len: int
    pad_id: int = 0
    sticky_eos: bool = False
    lowercase: bool = False
    _sp: Any = dataclasses.field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_sp": None}

    @classmethod
    def for_text_tower(cls, model_path: str, text: ml_collections.ConfigDict) -> Tokenizer:
        """The tokenizer a text tower's config asks for (`config.model.text`, read by
        `text_options`)."""
        return cls(model_path, **text_options(text))

    @property
    def processor(self) -> spm.SentencePieceProcessor:
        if self._sp is None:
            self._sp = spm.SentencePieceProcessor(model_file=self.model_path)
        return self._sp

    def vocab_size(self) -> int:
        return int(self.processor.get_piece_size())

    def eos_id(self) -> int:
        """The SentencePiece model's EOS id (what `sticky_eos` appends)."""
        eos = int(self.processor.eos_id())
        if eos < 0:
            raise ValueError(f"tokenizer {self.model_path} has no EOS piece; sticky_eos needs one")
        return eos

    def __call__(self, texts: list[str]) -> np.ndarray:
        """`[N]` strings -> int32 `[N, max_len]`; "" gives a row of `pad_id` (with
        `sticky_eos`: EOS, then `pad_id`)."""
        return self.tokenize(texts)[0]

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """`[N]` strings -> (int32 ids `[N, max_len]`, bool `[N]`: some piece of the text did
        not fit and was cut, i.e. more than `max_len` pieces, or with `sticky_eos` more than
        `max_len - 1`)."""
        if self.sticky_eos and self.max_len < 1:
            raise ValueError(f"sticky_eos needs max_len >= 1, got {self.max_len}")
        eos = [self.eos_id()] if self.sticky_eos else []
        out = np.full((len(texts), self.max_len), self.pad_id, np.int32)
        cut = np.zeros(len(texts), bool)
        # One thread: a batch is a few dozen short texts, and SentencePiece's default thread
        # pool costs more to start than the encoding itself.
        texts = [lower_keeping_mask(t) for t in texts] if self.lowercase else list(texts)
        for i, ids in enumerate(self.processor.encode(texts, num_threads=1)):
            ids = ids + eos
            cut[i] = len(ids) > self.max_len
            if cut[i] and eos:
                # big_vision's sticky EOS: `tokens[:max_len - 1] + tokens[-1:]`, the last
                # token being the appended EOS.
                ids = ids[: self.max_len - 1] + eos
            ids = ids[: self.max_len]
            out[i, : len(ids)] = ids
        return out, cut


def decode_pixels(data: bytes, size: int, key: str = "?") -> np.ndarray:
    """Encoded image bytes -> uint8 `[size, size, 3]` (resized bilinearly if needed)."""
    pixels = png.decode_unfiltered(data)
    if pixels is not None and pixels.shape[:2] == (size, size):
        return pixels
    try:
        img = Image.open(io.BytesIO(data)).convert("RGB")
    except Exception as e:  # any decoder failure: name the example
        raise ValueError(f"example {key!r}: cannot decode image ({e})") from e
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img)


def to_model_range(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels (any shape) -> float32 in [-1, 1] (SigLIP's input range)."""
    return pixels.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def decode_image(data: bytes, size: int, key: str = "?") -> np.ndarray:
    """Encoded image bytes -> float32 `[size, size, 3]` in [-1, 1] (SigLIP's input range)."""
    return to_model_range(decode_pixels(data, size, key))


def shift_crop(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Random translation of each image by up to `max_shift` px: `[N, S, S, C]` -> same shape
    (edge padding of the whole batch at once, then one crop per image).

    No flips and no aggressive crops: captions name left/right relations and objects, which a
    mirror would falsify and a tight crop could cut out.
    """
    if max_shift <= 0:
        return images
    m, s = max_shift, images.shape[1]
    padded = np.pad(images, ((0, 0), (m, m), (m, m), (0, 0)), mode="edge")
    offsets = rng.integers(0, 2 * m + 1, size=(len(images), 2))
    return np.stack(
        [p[dy : dy + s, dx : dx + s] for p, (dy, dx) in zip(padded, offsets, strict=True)]
    )


@dataclasses.dataclass
class ProcessSlice:
    """Grain random map: a raw batch slice -> arrays.

    Output: `images` float32 `[b, S, S, 3]`, `text` int32 `[b, L]`, `concepts` int32 `[k, L]`
    (this process's `k = K / P` concept rows: concepts are split over devices like captions),
    `labels` int8 `[b, K]`, `text_cut` int8 `[b]` and `concepts_cut` int8 `[k]` (1: the text
    had more than `L` pieces and was cut), `batch` int32 `[]` (the global batch index read).
    With `hard_negatives` also `hard_text` int32 `[b, L]` (each caption's NegCLIP hard negative,
    `hard_negatives.swap_hard_negative`, tokenized; the caption's own tokens where it cannot be
    swapped) and `hard_ok` int8 `[b]` (1: swapped; 0: not, the row's `hard_text` is a copy of
    `text` and must be ignored).
    """

    tokenizer: Tokenizer
    image_size: int
    max_shift: int
    brightness: float
    process_index: int
    process_count: int
    hard_negatives: bool = False

    def __call__(self, raw: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
        if "corrupt" in raw:  # the source's marker for a corrupt batch goes on as it is
            return raw
        images = to_model_range(
            np.stack(
                [  # one float conversion for the whole slice
                    decode_pixels(data, self.image_size, key)
                    for data, key in zip(raw["image"], raw["key"], strict=True)
                ]
            )
        )
        if self.max_shift or self.brightness:
            images = shift_crop(images, self.max_shift, rng)
            images += rng.uniform(-self.brightness, self.brightness, (len(images), 1, 1, 1))
            np.clip(images, -1.0, 1.0, out=images)
        concepts = raw["concepts"]
        k = len(concepts) // self.process_count
        mine = concepts[self.process_index * k : (self.process_index + 1) * k]
        text, text_cut = self.tokenizer.tokenize(raw["caption"])
        concepts, concepts_cut = self.tokenizer.tokenize(mine)
        out = {
            "images": images.astype(np.float32),
            "text": text,
            "concepts": concepts,
            "labels": np.asarray(raw["labels"], np.int8),
            "text_cut": text_cut.astype(np.int8),
            "concepts_cut": concepts_cut.astype(np.int8),
            "batch": np.int32(raw["batch"]),
        }
        if self.hard_negatives:
            swapped = [swap_hard_negative(c) for c in raw["caption"]]
            out["hard_ok"] = np.array([h is not None for h in swapped], np.int8)
            # Unswappable rows reuse the caption's tokens rather than tokenizing it again.
            todo = [i for i, h in enumerate(swapped) if h is not None]
            hard = text.copy()
            if todo:
                hard[todo] = self.tokenizer([swapped[i] for i in todo])
            out["hard_text"] = hard
        return out
