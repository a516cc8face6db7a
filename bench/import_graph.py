"""The import graph of sptrader/ (every import, TYPE_CHECKING ones and those inside
functions included), as issue 13 measured it:

- module-level import cycles (strongly connected groups of modules, and the modules in
  them) and package-level ones (sptrader.X <-> sptrader.Y);
- the layer contracts of pyproject.toml ([tool.importlinter]): kept or broken, and how
  many import chains break each;
- what a remote client and a screen load: whether importing them pulls in DuckDB, the
  engine or Textual, and how long the import takes in a fresh interpreter.

    .venv/bin/python bench/import_graph.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's groups of mutually reachable nodes, those of more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def main() -> None:
    sys.path.insert(0, str(ROOT))  # this checkout's sptrader, whichever is installed
    graph = grimp.build_graph("sptrader", exclude_type_checking_imports=False)
    modules: dict[str, set[str]] = defaultdict(set)
    packages: dict[str, set[str]] = defaultdict(set)
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if not imported.startswith("sptrader"):
                continue
            if imported != module and not module.startswith(imported + "."):
                modules[module].add(imported)  # a module importing its own package: not a cycle
            mine, theirs = module.split(".")[:2], imported.split(".")[:2]
            if len(mine) > 1 and len(theirs) > 1 and mine != theirs:
                packages[".".join(mine)].add(".".join(theirs))
    module_cycles = strongly_connected(modules)
    package_cycles = strongly_connected(packages)
    print(f"modules: {len(graph.modules)}")
    print(
        f"module-level import cycles: {len(module_cycles)}"
        f" ({sum(map(len, module_cycles))} modules in them)"
    )
    for group in module_cycles:
        print("   ", " <-> ".join(name.removeprefix("sptrader.") for name in group))
    print(f"package-level import cycles: {len(package_cycles)}")
    for group in package_cycles:
        print("   ", " <-> ".join(name.removeprefix("sptrader.") for name in group))

    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    contracts = re.findall(r"^(.+?) (KEPT|BROKEN)", result.stdout, re.M)
    broken_section = (
        result.stdout.split("Broken contracts", 1)[-1] if "BROKEN" in result.stdout else ""
    )
    chains = len(re.findall(r"^-   ", broken_section, re.M))
    print(
        f"layer contracts: {sum(state == 'KEPT' for _, state in contracts)} kept,"
        f" {sum(state == 'BROKEN' for _, state in contracts)} broken,"
        f" {chains} violating import chains"
    )
    for name, state in contracts:
        print(f"    {state:6} {name}")

    probe = (
        "import sys, time; t = time.perf_counter(); import {module};"
        " ms = (time.perf_counter() - t) * 1000;"
        " print(f'{{ms:.0f}} ms', *[name for name in ('duckdb', 'sptrader.engine', 'textual')"
        " if name in sys.modules])"
    )
    for module in ("sptrader.client.remote", "sptrader.client.protocol", "sptrader.screens.chart"):
        loaded = subprocess.run(
            [sys.executable, "-c", probe.format(module=module)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        print(f"import {module}: {loaded.stdout.strip() or loaded.stderr.strip()[-200:]}")


if __name__ == "__main__":
    main()
