"""The one scoring interface: a trained model -> image, caption and concept embeddings.

Everything an evaluator computes is a numpy metric over similarity matrices built from these
embeddings (`cclip_jax.evaluation.metrics`), so evaluators are testable without a model.

    scorer = ModelScorer.from_workdir("/tmp/run")              # latest checkpoint of a run
    scorer = ModelScorer.from_siglip_npz(npz, config, tokenizer_path)
    x = scorer.embed_images(images)                            # [N, D]
    t, cut = scorer.embed_texts(captions)                      # [M, D], bool [M]
    s = scorer.similarity(x, t)                                # [N, M] cosine
    g = scorer.gated_similarity(x, x, c)                       # cos(x_i ⊙ c, x_j ⊙ c)

Embedding runs on one device, in chunks of `batch_size` (one compiled shape, bounded memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cclip_jax import models, run_folder
from cclip_jax.data import transforms
from cclip_jax.data.transforms import Tokenizer
from cclip_jax.losses import EPS

CONFIG_FILE = run_folder.CONFIG  # the resolved config a training run writes into its workdir
_OUTPUT = {"images": "image_emb", "texts": "text_emb", "concepts": "concept_emb"}


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (`[N, D]`); zero rows stay zero (as `max(‖x‖, ε)` does)."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), EPS)


class ModelScorer:
    """Embeds with a `TwoTower` and its parameters.

    Args:
      model: the towers (`cclip_jax.models.build_model(config.model)`).
      params: the unboxed `params` tree (host or device arrays).
      tokenizer: SentencePiece ids at the text tower's `max_len`.
      batch_size: largest chunk embedded at once.
    """

    def __init__(self, model: nn.Module, params: Any, tokenizer: Tokenizer, batch_size: int = 256):
        self.model = model
        self.set_params(params)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.image_size = int(model.image["image_size"])
        self.max_len = int(model.text["max_len"])
        self._apply = jax.jit(self._embed, static_argnames="field")

    def set_params(self, params: Any) -> None:
        """Scores with other parameters of the same model (keeps the compiled functions)."""
        self.params = jax.device_put(params, jax.local_devices()[0])

    def _embed(self, params: Any, x: jax.Array, *, field: str) -> jax.Array:
        return self.model.apply({"params": params}, **{field: x})[_OUTPUT[field]]

    def _chunked(self, field: str, x: np.ndarray) -> np.ndarray:
        n = len(x)
        if n == 0:
            raise ValueError(f"nothing to embed ({field} is empty)")
        # Every chunk is padded to batch_size: one compiled shape per field, whatever the
        # sizes of the sets evaluated (compiling costs far more than padded rows on CPU).
        size = self.batch_size
        out = []
        for start in range(0, n, size):
            chunk = x[start : start + size]
            pad = size - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            out.append(np.asarray(self._apply(self.params, jnp.asarray(chunk), field=field)))
        return np.concatenate(out)[:n]

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """float32 `[N, S, S, 3]` in [-1, 1] -> float32 `[N, D]` (not normalised)."""
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or images.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(
                f"images must be [N, {self.image_size}, {self.image_size}, 3], got {images.shape}"
            )
        return self._chunked("images", images)

    def embed_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """`[M]` captions -> (float32 `[M, D]`, bool `[M]`: longer than `max_len`, cut)."""
        ids, cut = self.tokenizer.tokenize(list(texts))
        return self._chunked("texts", ids), cut

    def embed_concepts(self, concepts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """`[K]` concepts (n-grams, masked captions) -> (gates `[K, D]`, bool `[K]` cut)."""
        ids, cut = self.tokenizer.tokenize(list(concepts))
        return self._chunked("concepts", ids), cut

    @staticmethod
    def similarity(image_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
        """Cosine similarity `[N, D] x [M, D] -> [N, M]` (the logits up to scale and bias)."""
        return normalize(image_emb) @ normalize(text_emb).T

    @staticmethod
    def gated_similarity(a: np.ndarray, b: np.ndarray, gate: np.ndarray) -> np.ndarray:
        """`cos(a_i ⊙ g, b_j ⊙ g)`: `[N, D] x [M, D]` with one gate `[D]` -> `[N, M]`."""
        g = np.asarray(gate, np.float32)[None]
        return normalize(a * g) @ normalize(b * g).T

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_workdir(
        cls, workdir: str, step: int | None = None, *, batch_size: int = 256
    ) -> tuple[ModelScorer, int]:
        """The scorer of a training run's checkpoint `step` (default: the latest complete one)
        and that step. Reads the run's `config.json` for the model and the tokenizer."""
        from cclip_jax.run_folder.checkpoints import Checkpointer  # orbax only where read

        config = load_run_config(workdir)
        ckpt = Checkpointer(run_folder.path(workdir, run_folder.CHECKPOINTS), async_save=False)
        try:
            step = ckpt.latest_step() if step is None else step
            if step is None:
                raise FileNotFoundError(f"{workdir}/checkpoints holds no complete checkpoint")
            model = models.build_model(config.model)
            params = ckpt.restore_params(step, single_device_abstract(model))
        finally:
            ckpt.close()
        return cls(model, params, tokenizer_for(config), batch_size), step

    @classmethod
    def from_siglip_npz(
        cls,
        npz_path: str,
        config: ml_collections.ConfigDict,
        tokenizer_path: str,
        *,
        batch_size: int = 256,
    ) -> ModelScorer:
        """A scorer of a big_vision SigLIP `.npz` (towers described by `config.model`)."""
        model = models.build_model(config.model)
        template = jax.device_get(nn.unbox(model.init_params(jax.random.key(0)))["params"])
        params = models.load_siglip_npz(npz_path, template)
        return cls(model, params, tokenizer_for(config, tokenizer_path), batch_size)


def single_device_abstract(model: nn.Module) -> Any:
    """`ShapeDtypeStruct`s of the model's params on the first local device (restore target)."""
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding),
        nn.unbox(model.abstract_params())["params"],
    )


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a training run wrote to `workdir/config.json`."""
    config = run_folder.read_config(workdir)  # `workdir` may be a URL
    if config is None:
        path = run_folder.path(workdir, CONFIG_FILE)
        raise FileNotFoundError(f"{path} is missing: is {workdir} a training run's workdir?")
    return ml_collections.ConfigDict(config)


def tokenizer_for(config: ml_collections.ConfigDict, path: str | None = None) -> Tokenizer:
    """The tokenizer of a run's config at its text tower's `max_len`, pad id, EOS and case: the
    SentencePiece model `path`, else the one `transforms.tokenizer_path` picks
    (`data.tokenizer`, else the curated folder's own)."""
    text = config.model.text
    path = path or transforms.tokenizer_path(config.data.tokenizer, config.data.curated_dir)
    return Tokenizer.for_text_tower(path, text)
