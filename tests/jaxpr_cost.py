"""Exact matmul FLOP counts from a jaxpr, loops included.

XLA's compiled cost analysis counts a while-loop body once; this walks the jaxpr instead and
multiplies each `scan` body by its trip count, so the count is a deterministic measure of the
work a function does (for tests of how work scales, with no wall-clock involved).
"""

import math

import jax
from jax.extend import core


def _sub_jaxprs(params: dict):
    for value in params.values():
        items = value if isinstance(value, tuple | list) else (value,)
        for item in items:
            if isinstance(item, core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, core.Jaxpr):
                yield item


def matmul_flops(jaxpr: core.Jaxpr) -> int:
    """`2·M·N·K` summed over every `dot_general`, loop bodies times their trip counts."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            out = eqn.outvars[0].aval.shape
            total += 2 * math.prod(out) * math.prod(lhs[d] for d in lhs_contract)
            continue
        trips = eqn.params["length"] if eqn.primitive.name == "scan" else 1
        if eqn.primitive.name == "cond":  # count the costliest branch
            total += max(matmul_flops(b.jaxpr) for b in eqn.params["branches"])
            continue
        total += trips * sum(matmul_flops(sub) for sub in _sub_jaxprs(eqn.params))
    return total


def grad_matmul_flops(f, *args, argnums=(0, 1, 2)) -> int:
    """Matmul FLOPs of `jax.value_and_grad(f)` (forward, remat recomputation and backward)."""
    closed = jax.make_jaxpr(jax.value_and_grad(f, argnums=argnums))(*args)
    return matmul_flops(closed.jaxpr)
