"""cclip_jax: Conditional Contrastive Language-Image Pre-training in JAX/Flax.

The loss library is `cclip_jax.losses`; importing this package imports nothing heavy so that
`import cclip_jax.losses` stays standalone.
"""

__version__ = "0.1.0"
