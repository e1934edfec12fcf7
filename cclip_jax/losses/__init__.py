"""Sigmoid (SigLIP), conditional sigmoid (CCLIP) and softmax (CLIP) losses: exact and sharded.

SigLIP (Zhai et al., 2023, "Sigmoid Loss for Language Image Pre-Training") scores every image
against every caption with an independent sigmoid. CCLIP (the proposal this project implements,
"Conditional Contrastive Language-Image Pre-training") adds a concept axis: a concept embedding
`c_k` gates the image and caption embeddings element-wise and the pair is scored by
`cos(x_i ⊙ c_k, t_j ⊙ c_k)`, so an image and another image's caption can be a conditional
positive when both have the concept.

This package is pure `jax.numpy`; it imports nothing else from `cclip_jax` (nor flax, grain,
...) so that other projects can use it as it is.

How it is computed. No path materialises the logit tensor (`[B, B]` or `[B, B, K]`): the batch
is visited in tiles of rows, so peak temporaries are one tile. The gradient of a scalar loss is
linear in its cotangent, so each tile computes its gradient contributions on the way forward
and the backward pass only scales them: nothing is recomputed and no activation is kept beyond
one tile (a custom VJP; a plain evaluation computes no gradients). With `axis_name`, the batch
is split over a mesh axis and blocks of rows travel once round a ring of `ppermute`s, each
block's gradient travelling with it back home. A device holds its own block and one visiting
block, so its memory does not grow with the number of devices, as it would if autodiff kept
every visiting block.

The conditional loss rests on `cos(x ⊙ g, t ⊙ g) = (x ⊙ g²)·t / (‖x ⊙ g‖ ‖t ⊙ g‖)` with
`‖x ⊙ g‖² = (x ⊙ x)·(g ⊙ g)`: the gated norms of a tile are one matmul, the logits of one concept
are one matmul. With `max_present=R`, only triples with a `+1` side count, and they are enumerated
from the (at most `R`) present concepts of each row: work is `O(B·R·B·D)` instead of `O(B·B·K·D)`.

The modules: `sigmoid` and `conditional` define the losses as tile functions (the
conditional loss's label weights in `_weights`, its `max_present` path in `_sparse`; `ranking`
and `pooled` are its other forms), `_engine` sums tile functions over the batch (tiles, the
ring and their custom VJPs), `softmax` is CLIP's
loss (all-gathered, not tiled: its softmax needs every logit of a row), `tags` an image × concept
classifier over the same labels (a control), and `init` gives bias initial values from the
batch's statistics.
"""

from cclip_jax.losses._engine import EPS
from cclip_jax.losses.conditional import NORMALIZE, conditional_sigmoid_loss, triple_weight_sum
from cclip_jax.losses.init import (
    conditional_bias_init,
    positive_triple_rate,
    sigmoid_bias_init,
    triple_sums,
)
from cclip_jax.losses.pooled import pooled_conditional_sigmoid_loss
from cclip_jax.losses.ranking import conditional_ranking_loss
from cclip_jax.losses.sigmoid import pair_ids_from_tokens, sigmoid_loss
from cclip_jax.losses.softmax import softmax_loss
from cclip_jax.losses.tags import concept_sigmoid_loss

__all__ = [
    "EPS",
    "NORMALIZE",
    "concept_sigmoid_loss",
    "conditional_bias_init",
    "conditional_ranking_loss",
    "conditional_sigmoid_loss",
    "pair_ids_from_tokens",
    "pooled_conditional_sigmoid_loss",
    "positive_triple_rate",
    "sigmoid_bias_init",
    "sigmoid_loss",
    "softmax_loss",
    "triple_sums",
    "triple_weight_sum",
]
