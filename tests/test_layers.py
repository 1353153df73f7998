"""The package's floors (docs/architecture.md): every import between its own modules points down, and no two
subpackages import each other. Every import is read from the source (the AST), those inside functions too."""
import ast
import re
from pathlib import Path
from typing import Dict, List, Tuple

from conftest import REPO

PACKAGE = REPO / "interrogator"
# lowest first; a subpackage may import its own modules and those of lower floors only
FLOORS = (("core",), ("models",), ("tools", "workspace"), ("learn",), ("runner",), ("engines",), ("app", "draw"), ("commands",))
FLOOR = {name: level for level, names in enumerate(FLOORS) for name in names}
TOP = len(FLOORS)  # interrogator/__init__.py, __main__.py, _aliases.py: the package's own entry


def subpackage(module: str) -> str:
    """``interrogator.runner.stages`` -> ``runner``; the package's top modules -> ``<top>``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in FLOOR) else "<top>"


def floor(module: str) -> int:
    return FLOOR.get(subpackage(module), TOP)


def imports(package: Path) -> List[Tuple[str, str, int]]:
    """(importer, imported module, line) for every import of the package's own modules, at any depth."""
    name = package.name
    found = []
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_init else parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [(module, a.name, node.lineno) for a in node.names if a.name.split(".")[0] == name]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".") if is_init else module.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != name:
                    continue
                for alias in node.names:  # ``from . import x`` imports the module x
                    sub = f"{target}.{alias.name}"
                    is_module = (package.parent / Path(*sub.split("."))).with_suffix(".py").exists() or \
                        (package.parent / Path(*sub.split("."))).is_dir()
                    found.append((module, sub if is_module else target, node.lineno))
    return found


def upward(package: Path) -> List[str]:
    """Every import that points up a floor, or across to another subpackage of the same floor."""
    bad = []
    for importer, imported, line in imports(package):
        a, b = subpackage(importer), subpackage(imported)
        if a != b and (floor(imported) > floor(importer) or (floor(imported) == floor(importer) and a != "<top>")):
            bad.append(f"{importer}:{line} imports {imported} ({a} -> {b})")
    return bad


def cycles(package: Path) -> List[List[str]]:
    """Cycles in the graph of subpackages (an edge where any module of one imports a module of the other)."""
    graph: Dict[str, set] = {}
    for importer, imported, _ in imports(package):
        a, b = subpackage(importer), subpackage(imported)
        if a != b:
            graph.setdefault(a, set()).add(b)
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"
    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_every_import_points_down_a_floor():
    assert upward(PACKAGE) == []


def test_no_cycle_between_subpackages():
    assert cycles(PACKAGE) == []


def test_every_subpackage_has_a_floor_and_the_document_agrees():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages - {"model_configs"} == set(FLOOR)
    table = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    documented = re.findall(r"^\| (\d) \| ([^|]+) \|", table, flags=re.M)
    assert [(int(level), set(re.findall(r"`(\w+)/`", names))) for level, names in documented] == \
        [(level, set(names)) for level, names in enumerate(FLOORS)]


def test_the_checker_finds_an_upward_import_and_a_cycle(tmp_path):
    """The checks above can fail: a copy of the layout where core imports the runner."""
    fake = tmp_path / "interrogator"
    for name in ("core", "runner"):
        (fake / name).mkdir(parents=True)
        (fake / name / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "core" / "config.py").write_text("def f():\n    from ..runner.stages import x\n")
    (fake / "runner" / "stages.py").write_text("from ..core.config import f\nx = 1\n")
    assert upward(fake) == ["interrogator.core.config:2 imports interrogator.runner.stages (core -> runner)"]
    assert cycles(fake) == [["core", "runner", "core"]]
