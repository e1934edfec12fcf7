"""Evaluation: one scoring interface, metrics over similarity matrices, benchmark loaders.

- `scorer.ModelScorer`: a checkpoint (or a SigLIP `.npz`) -> image, caption and concept
  embeddings; similarities are numpy from there on.
- `metrics`: pair accuracy, Winoground scores, retrieval R@k, top-k, precision@k (exact
  expected values under random tie-breaking).
- `datasets` / `images`: SugarCrepe, ARO, Winoground, Karpathy retrieval, image-folder and TFDS
  zero-shot loaders into `task_types`; `tasks` (pairs, groups) and `retrieval` (retrieval,
  zero-shot) run them through a scorer, with what they share in `runner`.
- `synthetic`: the binding suite, retrieval and conditional retrieval on the synthetic world;
  `blind`: the text-only baseline; `suite`: what `config.eval` asks for, written to
  `DIR/eval/step_XXXXXXXX.json` (`python -m cclip_jax.evaluate`).
"""
