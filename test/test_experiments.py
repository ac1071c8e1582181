"""``diffopt_ros.experiments`` is not library: no module outside it imports it."""
import ast
from pathlib import Path

import diffopt_ros

ROOT = Path(diffopt_ros.__file__).parent


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f'{node.module}.{alias.name}' for alias in node.names)
    return names


def test_library_never_imports_experiments():
    users = {}
    for f in ROOT.rglob('*.py'):
        if 'experiments' not in f.relative_to(ROOT).parts:
            names = sorted(n for n in _imported(f) if n.startswith('diffopt_ros.experiments'))
            if names:
                users[str(f.relative_to(ROOT))] = names
    assert users == {}


def test_the_check_sees_the_experiments_and_their_imports():
    """The package exists under its name and an import of it is seen (else the test above
    could not fail)."""
    assert {f.name for f in (ROOT / 'experiments').glob('*.py')} >= {
        '__init__.py', 'simulated_runs.py', 'mpc_imitation.py'}
    assert 'diffopt_ros.experiments.simulated_runs' in _imported(Path(__file__).parent / 'test_learn.py')
