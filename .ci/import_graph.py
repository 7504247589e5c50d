"""The import graph of curator and trainer: no cycle, and no import that climbs back up or goes sideways.

Reads every module with `ast` (imports inside functions count too: a lazy
import is still a dependency), resolves relative imports, and checks the
layers below, bottom first. A module may import its own package's modules
(without a cycle) and any lower layer; stages on one layer may not import each
other. docs/architecture.md draws the same picture.

    python .ci/import_graph.py          # prints the problems; exit 1 if any
    python .ci/import_graph.py --dot    # the graph between packages, for Graphviz
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Bottom to top. Each entry: a layer, the packages/modules on it. Packages on one layer are siblings.
LAYERS = [
    ["curator", "curator.errors"],                        # the version and the error every message is
    ["curator.fs"],                                       # files: atomic writes, the one-writer lock, hashes
    ["curator.media", "curator.measure", "curator.outputs"],  # pictures in, measures of a face, output folders
    ["curator.models"],                                   # face models on a runtime
    ["curator.workspace"],                                # the workspace format (one package owns it)
    ["trainer"],                                          # training: below the stages that apply a model
    ["curator.extract", "curator.identify", "curator.curate", "curator.export", "curator.review", "curator.swap"],
    ["curator.reports"],                                  # audit, compare, evaluate: read sets and apply models
    ["curator.target"],                                   # curating for a target video: curate, compare and audit together
    ["curator.api"],                                      # one function per command
    ["curator.cli"],                                      # the command line over it
    ["curator.__main__"],
]


def unit_of(module: str) -> str:
    """The layer entry a module belongs to: the longest listed prefix."""
    best = ""
    for layer in LAYERS:
        for name in layer:
            if (module == name or module.startswith(name + ".")) and len(name) > len(best):
                best = name
    if not best:
        raise SystemExit(f"{module}: not on any layer of .ci/import_graph.py; add it")
    return best


LAYER_OF = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def modules() -> dict[str, Path]:
    found = {}
    for top in ("curator", "trainer"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `module` imports (a `from pkg import name` of a submodule counts as that submodule)."""
    is_pkg = path.name == "__init__.py"
    package = module if is_pkg else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.add(sub if sub in known else target)
    return {m for m in out if m in known and m != module}


def check() -> tuple[list[str], dict[str, set[str]]]:
    mods = modules()
    graph = {m: imports(m, p, set(mods)) for m, p in mods.items()}
    problems = []
    for m, deps in sorted(graph.items()):
        um = unit_of(m)
        for d in sorted(deps):
            ud = unit_of(d)
            if ud == um:
                continue
            if d == um or m == ud:  # a package's __init__ and its own modules
                continue
            if LAYER_OF[ud] > LAYER_OF[um]:
                problems.append(f"{m} imports {d}: climbs from {um} up to {ud}")
            elif LAYER_OF[ud] == LAYER_OF[um]:  # on one layer: siblings (the stages), which share nothing directly
                problems.append(f"{m} imports {d}: sideways between sibling stages {um} and {ud}")
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return problems, graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp) + [sorted(comp)[0]])

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    problems, graph = check()
    if "--dot" in sys.argv:
        edges = {(unit_of(m), unit_of(d)) for m, ds in graph.items() for d in ds if unit_of(m) != unit_of(d)}
        print("digraph curator {\n  rankdir=BT;")
        print("\n".join(f'  "{a}" -> "{b}";' for a, b in sorted(edges)))
        print("}")
    for p in problems:
        print(p)
    if not problems and "--dot" not in sys.argv:
        print(f"import graph ok: {len(graph)} modules, {sum(map(len, graph.values()))} imports, no cycle, no upward or sideways import")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
