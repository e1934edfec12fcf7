"""Sharding rules: layouts per rule set, and sharded == single-device embeddings on 8 CPUs."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from model_inputs import make_inputs, random_variables

from cclip_jax import models
from cclip_jax.training import sharding


@pytest.fixture(scope="module")
def mu():
    model = models.build_model(models.get_default_model_config("mu"))
    return model, model.abstract_params()


def _block(tree, tower="img"):
    enc = "Transformer" if tower == "img" else "Encoder_0"
    return tree["params"][tower][enc]["encoderblock_0"]


def test_make_mesh_shapes_and_errors():
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    assert dict(sharding.make_mesh({"fsdp": -1, "tensor": 2}).shape) == {
        "data": 1,
        "fsdp": 4,
        "tensor": 2,
    }
    assert dict(sharding.make_mesh().shape) == {"data": 8, "fsdp": 1, "tensor": 1}
    with pytest.raises(ValueError, match="needs 12 devices, have 8"):
        sharding.make_mesh({"data": 3, "fsdp": 4})
    with pytest.raises(ValueError, match="Unknown mesh axes"):
        sharding.make_mesh({"model": 2})
    with pytest.raises(ValueError, match="known: dp, fsdp, tp, fsdp_tp"):
        sharding.get_rules("zero3")


@pytest.mark.parametrize(
    ("rules", "mlp_kernel", "query_kernel", "embedding", "batch"),
    [
        ("dp", P(None, None), P(None, None, None), P(None, None), P(("data", "fsdp", "tensor"))),
        (
            "fsdp",
            P("fsdp", None),
            P("fsdp", None, None),
            P(None, "fsdp"),
            P(("data", "fsdp", "tensor")),
        ),
        ("tp", P(None, "tensor"), P(None, "tensor", None), P("tensor", None), P(("data", "fsdp"))),
        (
            "fsdp_tp",
            P("fsdp", "tensor"),
            P("fsdp", "tensor", None),
            P("tensor", "fsdp"),
            P(("data", "fsdp")),
        ),
    ],
)
def test_rule_sets_give_the_documented_layouts(
    mu, rules, mlp_kernel, query_kernel, embedding, batch
):
    _, abstract = mu
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    shardings = sharding.param_shardings(abstract, mesh, sharding.get_rules(rules))
    block = _block(shardings)
    assert block["MlpBlock_0"]["Dense_0"]["kernel"].spec == mlp_kernel
    assert block["MultiHeadDotProductAttention_0"]["query"]["kernel"].spec == query_kernel
    assert shardings["params"]["txt"]["Embed_0"]["embedding"].spec == embedding
    assert shardings["params"]["t"].spec == P()
    assert sharding.batch_sharding(mesh, sharding.get_rules(rules), 2).spec == P(*batch, None)


def test_indivisible_dimensions_fall_back_to_replication():
    # Ti has 3 heads: the heads axis cannot be split two ways, so it is replicated.
    cfg = models.get_default_model_config("Ti")
    cfg.scan_layers = True  # traces one block per tower instead of twelve
    abstract = models.build_model(cfg).abstract_params()
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    shardings = sharding.param_shardings(abstract, mesh, sharding.get_rules("fsdp_tp"))
    block = shardings["params"]["img"]["Transformer"]["encoderblock"]
    attn = block["MultiHeadDotProductAttention_0"]
    assert attn["query"]["kernel"].spec == P(None, "fsdp", None, None)
    assert block["MlpBlock_0"]["Dense_0"]["kernel"].spec == P(None, "fsdp", "tensor")


def test_scanned_layers_axis_is_not_split():
    cfg = models.get_default_model_config("mu")
    cfg.scan_layers = True
    abstract = models.build_model(cfg).abstract_params()
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    shardings = sharding.param_shardings(abstract, mesh, sharding.get_rules("fsdp_tp"))
    mlp = shardings["params"]["img"]["Transformer"]["encoderblock"]["MlpBlock_0"]["Dense_0"]
    assert mlp["kernel"].spec == P(None, "fsdp", "tensor")


def test_sharded_init_lowers_with_param_shardings(mu):
    # What a trainer does: shape-only init, then a jitted init that writes sharded parameters.
    model, abstract = mu
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    rules = sharding.get_rules("fsdp_tp")
    shardings = sharding.param_shardings(abstract, mesh, rules)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        init = jax.jit(lambda k: nn.unbox(model.init_params(k)), out_shardings=shardings)
        lowered = init.lower(jax.random.key(0))
    out = jax.tree.leaves(lowered.out_info)
    assert len(out) == len(jax.tree.leaves(shardings))


def test_sharded_embeddings_equal_single_device(mu):
    model, abstract = mu
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    rules = sharding.get_rules("fsdp_tp")
    variables = random_variables(model, seed=5)
    x = make_inputs(model, seed=6, batch=8, concepts=4)

    apply = jax.jit(lambda v, x: model.apply(v, **x))
    reference = apply(jax.device_put(variables, jax.devices()[0]), x)

    shardings = sharding.param_shardings(abstract, mesh, rules)
    sharded_vars = jax.device_put(variables, shardings)
    mlp = _block(sharded_vars)["MlpBlock_0"]["Dense_0"]["kernel"]
    assert len(mlp.addressable_shards) == 8 and mlp.addressable_shards[0].data.shape == (16, 64)
    sharded_x = {
        k: jax.device_put(v, sharding.batch_sharding(mesh, rules, v.ndim)) for k, v in x.items()
    }
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        out = jax.jit(lambda v, x: model.apply(v, **x))(sharded_vars, sharded_x)

    for name in ("image_emb", "text_emb", "concept_emb"):
        assert out[name].sharding.spec[0] == ("data", "fsdp"), out[name].sharding
        np.testing.assert_allclose(out[name], reference[name], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.scale, reference.scale)


@pytest.mark.slow
def test_sharded_gradients_equal_single_device_with_scan_and_remat():
    cfg = models.get_default_model_config("mu")
    cfg.image.depth = cfg.text.depth = 2
    cfg.scan_layers, cfg.remat_policy = True, "full"
    model = models.build_model(cfg)
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    rules = sharding.get_rules("fsdp_tp")
    variables = random_variables(model, seed=7)
    x = make_inputs(model, seed=8, batch=8, concepts=4)

    def loss(v, x):
        out = model.apply(v, **x)
        return jnp.sum(out.image_emb * out.text_emb) + out.scale * jnp.mean(out.concept_emb**2)

    reference = jax.jit(jax.grad(loss))(variables, x)
    shardings = sharding.param_shardings(model.abstract_params(), mesh, rules)
    sharded_x = {
        k: jax.device_put(v, sharding.batch_sharding(mesh, rules, v.ndim)) for k, v in x.items()
    }
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        grads = jax.jit(jax.grad(loss), out_shardings=shardings)(
            jax.device_put(variables, shardings), sharded_x
        )
    kernel = grads["params"]["img"]["Transformer"]["encoderblock"]["MlpBlock_0"]["Dense_0"][
        "kernel"
    ]
    assert kernel.sharding.spec == P(None, "fsdp", "tensor")
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-4), grads, reference
    )
