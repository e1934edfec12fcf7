"""The import graph of cclip_jax between its units (subpackages and top-level modules).

    python tools/import_graph.py            # one line per unit: what it imports
    python tools/import_graph.py --mermaid  # the same graph as a Mermaid block for docs

Reads the source with `ast` (nothing is imported, so it runs without the training stack).
Every `import` counts, lazy ones inside functions included: a function-level import is still
an arrow. `tests/test_import_graph.py` checks the graph against `LAYERS`.
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import sys

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "cclip_jax"

# Lowest first. A unit may import units of lower layers only (and itself); units of one layer
# do not import each other.
# A package's `__main__` is an entry point of its own (`report.__main__`), above everything.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("losses", "cli"),
    ("models", "run_folder", "synthetic"),
    ("config",),  # the base configs build the model section
    ("curation",),
    ("data", "report"),
    ("evaluation",),
    ("training",),
    ("experiment",),
    ("main", "evaluate", "curate", "experiment.__main__", "report.__main__", "synthetic.__main__"),
)


def unit_of(module: str) -> str | None:
    """`cclip_jax.a.b` -> `a` (the unit), `cclip_jax.a.__main__` -> `a.__main__`, else None."""
    parts = module.split(".")
    if parts[0] != "cclip_jax" or len(parts) < 2:
        return None
    if parts[-1] == "__main__":
        return ".".join(parts[1:])
    return parts[1]


def _imports(path: pathlib.Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                root = ".".join(base + ([node.module] if node.module else []))
            else:
                root = node.module or ""
            found.add(root)
            # `from cclip_jax import train` names a unit in the alias, not in the module.
            if root == "cclip_jax":
                found.update(f"cclip_jax.{a.name}" for a in node.names)
    return found


def graph(package: pathlib.Path = PACKAGE) -> dict[str, set[str]]:
    """{unit: the other units it imports}, over every .py file under `package`."""
    edges: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        unit = unit_of(module)
        if unit is None:
            continue
        edges.setdefault(unit, set())
        for imported in _imports(path, module):
            other = unit_of(imported)
            if other is not None and other != unit:
                edges[unit].add(other)
    return edges


def layer_of(unit: str) -> int:
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise KeyError(f"unit {unit!r} is in no layer of tools/import_graph.py LAYERS")


def violations(edges: dict[str, set[str]]) -> list[str]:
    """Every arrow that does not point strictly down the layers."""
    bad = []
    for unit, targets in sorted(edges.items()):
        for target in sorted(targets):
            if layer_of(target) >= layer_of(unit):
                bad.append(
                    f"{unit} (layer {layer_of(unit)}) imports {target} (layer {layer_of(target)})"
                )
    return bad


def mermaid(edges: dict[str, set[str]]) -> str:
    lines = ["```mermaid", "graph TD"]
    for unit, targets in sorted(edges.items()):
        lines += [f"  {unit} --> {t}" for t in sorted(targets)]
    lines.append("```")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mermaid", action="store_true")
    args = parser.parse_args()
    edges = graph()
    if args.mermaid:
        print(mermaid(edges))
    else:
        for unit in sorted(edges, key=lambda u: (layer_of(u), u)):
            print(f"{layer_of(unit)} {unit:12s} -> {', '.join(sorted(edges[unit])) or '-'}")
    bad = violations(edges)
    for line in bad:
        print("upward:", line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
