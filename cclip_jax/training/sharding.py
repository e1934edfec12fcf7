"""Logical-axis sharding rules and mesh helpers.

The towers name every parameter axis (`embed`, `mlp`, `heads`, `kv`, `vocab`, `proj`, `layers`)
and every large activation axis (`batch`, `act_seq`, `act_embed`, `act_mlp`, `act_heads`,
`act_kv`). A rule set maps those names onto the mesh axes `data`, `fsdp`, `tensor`; the model
code never names a mesh axis, so switching layouts is switching the rule set:

=========  ==========================  ==========================================================
name       batch split over            parameters
=========  ==========================  ==========================================================
`dp`       data × fsdp × tensor        replicated
`fsdp`     data × fsdp × tensor        `embed` axis split over `fsdp` (ZeRO-3 style)
`tp`       data × fsdp                 `mlp`, `heads`, `vocab` split over `tensor` (Megatron)
`fsdp_tp`  data × fsdp                 both: `embed` over `fsdp`, `mlp`/`heads`/`vocab` over
                                       `tensor` (the default; on a mesh whose fsdp and tensor
                                       axes have size 1 it is plain data parallelism)
=========  ==========================  ==========================================================

Typical use in a trainer::

    mesh = make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    rules = get_rules("fsdp_tp")
    abstract = jax.eval_shape(model.init_params, rng)          # boxed with logical names
    shardings = param_shardings(abstract, mesh, rules)          # NamedSharding per parameter
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):      # activations follow the rules
        params = jax.jit(lambda r: nn.unbox(model.init_params(r)), out_shardings=shardings)(rng)
        out = jax.jit(model.apply)(params, images=..., texts=...)
    batch = batch_split(mesh, rules)       # the batch's mesh axes, device count, row sharding

`batch_split` is the one place the batch's layout is worked out: the data checks, the loss's
`shard_map` and the global-batch assembly (`data.make_global_batch(local, batch.rows)`) all
take it from there.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

LogicalRules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

# Names that are never split: listed so every logical name the model uses appears in every
# rule set (a missing name would silently mean "replicated" too, but explicit reads better).
_REPLICATED = ("act_seq", "act_embed", "act_kv", "kv", "proj", "layers")

_TENSOR = (
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
)

RULES: dict[str, LogicalRules] = {
    "dp": (("batch", ("data", "fsdp", "tensor")),),
    "fsdp": (("batch", ("data", "fsdp", "tensor")), ("embed", "fsdp")),
    "tp": (("batch", ("data", "fsdp")), *_TENSOR),
    "fsdp_tp": (("batch", ("data", "fsdp")), ("embed", "fsdp"), *_TENSOR),
}


def get_rules(name: str = "fsdp_tp") -> LogicalRules:
    """The logical-axis rules called `name` (one of `RULES`), for `nn.logical_axis_rules`."""
    if name not in RULES:
        raise ValueError(f"Unknown sharding rules {name!r}; known: {', '.join(RULES)}")
    taken = {logical for logical, _ in RULES[name]}
    extra = tuple(
        (n, None)
        for n in (*_REPLICATED, "embed", "mlp", "heads", "vocab", "act_mlp", "act_heads")
        if n not in taken
    )
    return RULES[name] + extra


def make_mesh(
    shape: Mapping[str, int] | None = None, devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """A `(data, fsdp, tensor)` mesh with Auto axis types (what logical rules expect).

    Args:
      shape: sizes per axis, e.g. `{"data": 2, "fsdp": 2, "tensor": 2}` (a ConfigDict works);
        missing axes are 1 and at most one axis may be -1, meaning "all remaining devices".
        Default: every device on `data`.
      devices: defaults to `jax.devices()`.
    """
    devices = list(devices if devices is not None else jax.devices())
    shape = dict(shape or {"data": -1})
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"Unknown mesh axes {sorted(unknown)}; known: {MESH_AXES}")
    sizes = [int(shape.get(axis, 1)) for axis in MESH_AXES]
    if sizes.count(-1) > 1:
        raise ValueError(f"At most one mesh axis may be -1, got {shape}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices do not divide into mesh {shape}")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(
            f"Mesh {dict(zip(MESH_AXES, sizes, strict=True))} needs {math.prod(sizes)} devices, "
            f"have {len(devices)}"
        )
    return jax.make_mesh(
        tuple(sizes),
        MESH_AXES,
        axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
        devices=devices,
    )


def _fit(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """Drops the split of any dimension the mesh axes do not divide (it is then replicated)."""
    out = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)), strict=True):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        ways = math.prod(mesh.shape[a] for a in names)
        out.append(axes if names and dim % ways == 0 else None)
    return PartitionSpec(*out)


def logical_to_sharding(
    logical_spec: PartitionSpec | Sequence[str | None],
    mesh: Mesh,
    rules: LogicalRules,
    shape: Sequence[int] | None = None,
) -> NamedSharding:
    """One logical spec (e.g. `("batch", None)`) -> `NamedSharding` on `mesh`.

    With `shape`, a dimension the assigned mesh axes do not divide is replicated instead.
    """
    spec = nn.logical_to_mesh_axes(tuple(logical_spec), rules)
    if shape is not None:
        spec = _fit(spec, shape, mesh)
    return NamedSharding(mesh, spec)


def param_shardings(abstract_variables: Any, mesh: Mesh, rules: LogicalRules) -> Any:
    """`NamedSharding` for every leaf of a boxed variable tree (from `init`/`eval_shape`).

    The result has the structure of `nn.unbox(abstract_variables)`, so it can be passed as
    `out_shardings` of a jitted init or `jax.device_put` of the unboxed parameters.
    """
    specs = nn.get_partition_spec(abstract_variables)
    shapes = nn.unbox(abstract_variables)
    return jax.tree.map(
        lambda spec, leaf: logical_to_sharding(spec, mesh, rules, leaf.shape),
        specs,
        shapes,
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


def batch_sharding(mesh: Mesh, rules: LogicalRules, ndim: int = 1) -> NamedSharding:
    """Sharding of an input batch `[B, ...]` of rank `ndim`: `B` split as the rules say."""
    return logical_to_sharding(("batch",) + (None,) * (ndim - 1), mesh, rules)


@dataclasses.dataclass(frozen=True)
class BatchSplit:
    """How a batch `[B, ...]` lies on the mesh: its first axis split over `axes`.

    Attributes:
      axes: the mesh axes the batch rows are split over (as the rules' `batch` name says).
      ways: the number of devices along them (B must divide into `ways` row blocks).
      rows: `NamedSharding` of an array whose first axis is the batch (or the concept rows).
    """

    axes: tuple[str, ...]
    ways: int
    rows: NamedSharding

    @property
    def mesh(self) -> Mesh:
        return self.rows.mesh


def batch_split(mesh: Mesh, rules: LogicalRules) -> BatchSplit:
    """The `BatchSplit` of `mesh` under `rules` (the mapping of the logical `batch` name)."""
    spec = batch_sharding(mesh, rules).spec[0]
    axes = (spec,) if isinstance(spec, str) else tuple(spec or ())
    return BatchSplit(
        axes, math.prod(mesh.shape[a] for a in axes), NamedSharding(mesh, PartitionSpec(axes))
    )


def opt_state_shardings(
    abstract_opt_state: Any, params: Any, param_shardings: Any, replicated: jax.sharding.Sharding
) -> Any:
    """A sharding for every optimizer-state leaf: a leaf whose tree path ends with a
    parameter's path and has its shape (Adam moments) gets that parameter's sharding, anything
    else (counts, scalars) is replicated.

    Matching by path suffix works through `multi_transform`/`masked` wrappers, where
    `optax.tree_map_params` cannot follow a callable label function; and unlike a plain
    `jax.jit(tx.init)` the result never silently drops the parameters' sharding.
    """
    by_path = {}
    flat_p = jax.tree_util.tree_flatten_with_path(params)[0]
    flat_s = jax.tree.leaves(param_shardings)
    for (path, leaf), sharding in zip(flat_p, flat_s, strict=True):
        by_path[tuple(str(k) for k in path)] = (tuple(leaf.shape), sharding)

    def pick(path, leaf):
        keys = tuple(str(k) for k in path)
        for start in range(len(keys)):
            hit = by_path.get(keys[start:])
            if hit is not None and hit[0] == tuple(leaf.shape):
                return hit[1]
        return replicated

    return jax.tree_util.tree_map_with_path(pick, abstract_opt_state)
