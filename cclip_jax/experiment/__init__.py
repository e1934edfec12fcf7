"""The experiment that tests the CCLIP hypothesis on the synthetic world (see `runner`).

python -m cclip_jax.experiment --config=configs/experiment_binding.py --workdir=DIR
"""
