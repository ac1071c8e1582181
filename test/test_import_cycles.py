"""No import cycles between diffopt_ros modules, counting imports inside functions (lazy ones)
too: a lazy import only hides a cycle. Package ``__init__`` re-exports are left out."""
import ast
from pathlib import Path

import diffopt_ros

ROOT = Path(diffopt_ros.__file__).parent


def _modules() -> dict[str, Path]:
    mods = {}
    for f in ROOT.rglob('*.py'):
        parts = f.relative_to(ROOT.parent).with_suffix('').parts
        mods['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = f
    return mods


def _run_nodes(node):
    """Every node below ``node`` except ``if TYPE_CHECKING:`` bodies (typing-only imports)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and 'TYPE_CHECKING' in ast.unparse(child.test):
            yield from (n for c in child.orelse for n in (c, *_run_nodes(c)))
            continue
        yield child
        yield from _run_nodes(child)


def _imports(name: str, path: Path, mods: dict) -> set[str]:
    package = name if path.name == '__init__.py' else name.rsplit('.', 1)[0]
    found = set()
    for node in _run_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = package.split('.')[:len(package.split('.')) - node.level + 1]
                base = '.'.join(parts + ([node.module] if node.module else []))
            found.add(base)
            found.update(f'{base}.{a.name}' for a in node.names)
    # an import of a package runs its __init__ (re-exports), not a cycle between the modules
    return {m for m in found if m in mods and m != name and mods[m].name != '__init__.py'}


def _cycles() -> list[list[str]]:
    mods = _modules()
    graph = {m: _imports(m, p, mods) for m, p in mods.items()}
    state, stack, cycles = {}, [], []

    def visit(u):
        state[u] = 'open'
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 'open':
                cycles.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 'done'

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return cycles


def test_no_import_cycles():
    assert _cycles() == []
