"""The library's modules import each other without a cycle, lazy imports inside functions included.

A cycle forces an import inside a function or a module-level `__getattr__` to break it at run time, and
means two files that cannot be read apart. Imports are read from the source (not executed), each edge going
to the module named: `from kernels._head import run_head` depends on kernels/_head.py (the package
`__init__` that Python also runs first does not count, or every package would be a cycle).
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("kernels", "model", "train")


def modules() -> dict[str, str]:
    """{dotted module name: path} of every module in the packages."""
    out = {}
    for package in PACKAGES:
        for name in sorted(os.listdir(os.path.join(ROOT, package))):
            if name.endswith(".py"):
                stem = name[:-3]
                out[package if stem == "__init__" else f"{package}.{stem}"] = os.path.join(ROOT, package, name)
    return out


def imports(path: str, known: set[str]) -> set[str]:
    """The project modules `path` imports anywhere in its source."""
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & known  # `from train import objectives`
            out |= subs or ({node.module} & known)
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_no_import_cycle():
    mods = modules()
    graph = {m: imports(path, set(mods)) - {m} for m, path in mods.items()}
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph))


def test_a_cycle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
