"""Training: the trainer, its step, state, optimizer, sharding rules and diagnostics.

The modules, in the order a run goes through them (import the one you need; this file imports
none, so `import cclip_jax.training.sharding` does not pull in the trainer):

  checks       validate_config, check_data: the config, then the data against it
  sharding     mesh, logical-axis rules, `batch_split` (the batch's layout, worked out once),
               parameter and optimizer-state shardings
  biases       the initial logit biases from the curated data's manifest
  optim        AdamW with warmup + cosine, clipping, per-tower learning-rate multipliers
  objective    `Objective` (the config's loss fields) and `make_loss_fn` (the sharded loss)
  diagnostics  what the step logs about the conditional term
  state        `TrainState`, its init, and `initial_state` (resume, `init_from`, or scratch)
  step         `make_train_step`: gradients, the optax update, the metrics
  setup        `build(config) -> Setup`: mesh, data, model, shapes, shardings, jitted step
  trainer      `train_and_evaluate(config, workdir)`: the loop, checkpoints, evaluations

    from cclip_jax.training import trainer
    trainer.train_and_evaluate(config, workdir)
"""
