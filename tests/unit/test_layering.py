"""The import graph is the one docs/architecture.md draws: no more arrows, and no fewer.

The doc's `layering` block lists, per box (a folder or a top-level module of `mcp_gateway`),
the boxes it may import. Every import in `src/` (lazy and `TYPE_CHECKING` ones included) is
checked against it, and every arrow of the doc must still be used, so neither can drift.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "mcp_gateway"
DOC = REPO / "docs" / "architecture.md"
# Free for everyone: the package root (its __version__) and logging (but see NO_LOGS).
FREE = {"", "logs"}
# Boxes that import nothing of ours at all, logs included.
NO_LOGS = {"protocol", "samples"}


def documented_rules(text: str) -> dict[str, set[str]]:
    block = re.search(r"```layering\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md has no ```layering block"
    rules: dict[str, set[str]] = {}
    for line in block.group(1).splitlines():
        box, arrow, uses = line.partition("->")
        assert arrow, f"not a rule: {line!r}"
        rules[box.strip()] = {name.strip() for name in uses.split(",") if name.strip()}
    return rules


def box_of(module: str) -> str | None:
    """`mcp_gateway.broker.http` → "broker"; the package root → ""; not ours → None."""
    parts = module.split(".")
    if parts[0] != "mcp_gateway":
        return None
    return parts[1] if len(parts) > 1 else ""


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, package_dir: Path = PACKAGE) -> Iterator[tuple[str, int]]:
    """Every module `path` imports (absolute name) with its line, at any depth of the file."""
    module = module_name(path, package_dir)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                yield ".".join([*base, *([node.module] if node.module else [])]), node.lineno
            else:
                yield node.module or "", node.lineno


def actual_edges(package: Path = PACKAGE) -> dict[tuple[str, str], list[str]]:
    """(from box, to box) → where, for every import that crosses boxes."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(package.rglob("*.py")):
        source = box_of(module_name(path, package))
        assert source is not None
        for imported, line in imports_of(path, package):
            target = box_of(imported)
            if target is None or target == source:
                continue
            where = f"{path.relative_to(package.parent.parent)}:{line}"
            edges.setdefault((source, target), []).append(where)
    return edges


RULES = documented_rules(DOC.read_text())
EDGES = actual_edges()


def test_every_box_of_the_package_has_a_rule() -> None:
    boxes = {box_of(module_name(path)) for path in PACKAGE.rglob("*.py")} - {""}
    assert boxes <= set(RULES), f"boxes without a rule in docs/architecture.md: {sorted(boxes - set(RULES))}"


@pytest.mark.parametrize(("source", "target"), sorted(EDGES))
def test_each_import_is_an_arrow_of_the_doc(source: str, target: str) -> None:
    if target in FREE and not (source in NO_LOGS and target == "logs"):
        return
    assert target in RULES.get(source, set()), (
        f"{source} imports {target} ({', '.join(EDGES[source, target])}), which "
        f"docs/architecture.md does not allow"
    )


def test_each_arrow_of_the_doc_is_still_used() -> None:
    unused = sorted(
        f"{source} -> {target}" for source, targets in RULES.items() for target in targets
        if (source, target) not in EDGES
    )
    assert not unused, f"arrows in docs/architecture.md no module uses: {unused}"


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The checker itself, on a package of two files: a router module importing the broker (they
    never import each other) lazily, inside a function, and relatively, is found."""
    package = tmp_path / "src" / "mcp_gateway"
    (package / "router").mkdir(parents=True)
    (package / "router" / "__init__.py").write_text("")
    (package / "router" / "probe.py").write_text(
        "def f():\n    from mcp_gateway.broker import core\n    from ..broker import http\n    return core, http\n"
    )
    edges = actual_edges(package)
    assert edges == {("router", "broker"): ["src/mcp_gateway/router/probe.py:2", "src/mcp_gateway/router/probe.py:3"]}
    assert "broker" not in RULES["router"]
