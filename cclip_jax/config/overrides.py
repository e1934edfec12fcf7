"""The one dotted-path setter (`"a.b.c" -> value`) and the variants built on it.

A variant is a named set of overrides; a config file with an argument keeps a table of them,

    VARIANTS = {"gpu": {"batch_size": 4096, "mesh.fsdp": 8}, "tpu": {"batch_size": 32_768}}

    def get_config(arg=None):
        return variant(base_config(), VARIANTS, arg)

and the experiment's arms are one such table (cclip_jax.experiment.runner.ARMS).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

Config = TypeVar("Config")


def override(config: Config, overrides: Mapping[str, Any]) -> Config:
    """Sets every `"a.b.c": value` of `overrides` in `config`, in place; returns `config`.

    `config` is an `ml_collections.ConfigDict` or nested dicts (a config read back from JSON).
    Every section on a path must exist; the last name may be a new field (a locked ConfigDict
    refuses that, as it refuses `--config.new_field=...`).

    Raises:
      ValueError: naming the path, for a section that does not exist and for a value the
        config refuses (a new field of a locked config, a value of another type).
    """
    for path, value in overrides.items():
        *sections, leaf = path.split(".")
        node: Any = config
        for depth in range(len(sections) + 1):  # each section on the path, then the leaf's
            where = ".".join(["config", *sections[:depth]])
            if not hasattr(node, "keys"):
                raise ValueError(
                    f"config.{path}: {where} is not a section ({type(node).__name__} {node!r})"
                )
            if depth < len(sections):
                name = sections[depth]
                if name not in node:
                    raise ValueError(
                        f"config.{path}: {where} has no section {name!r} (it has "
                        f"{', '.join(sorted(node.keys()))})"
                    )
                node = node[name]
        try:
            node[leaf] = value
        except (KeyError, AttributeError, TypeError) as e:
            reason = " ".join(str(e.args[0] if e.args else e).split())
            raise ValueError(f"config.{path}={value!r}: {reason}") from e
    return config


def variant(
    config: Config,
    table: Mapping[str, Mapping[str, Any]],
    name: str | None,
    *,
    kind: str = "variant",
) -> Config:
    """`override(config, table[name])`: the named variant of `config`, in place; returns it.

    `name=None` (a config file given without `:arg`) leaves `config` as it is. `kind` names
    what the table holds in the error ('variant', 'arm', ...).

    Raises:
      ValueError: one line listing the known names, for a name not in `table`.
    """
    if name is None:
        return config
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(table)}")
    return override(config, table[name])
