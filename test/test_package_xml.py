"""package.xml, requirements and LICENSE agree with what the code imports and uses."""
import ast
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = [*(ROOT / 'diffopt_ros').rglob('*.py'), *(ROOT / 'launch').glob('*.py')]
# Python packages: import name -> (rosdep key or None, pip requirement name).
PYTHON = {
    'torch': ('python3-torch', 'torch'), 'numpy': ('python3-numpy', 'numpy'),
    'scipy': ('python3-scipy', 'scipy'), 'yaml': ('python3-yaml', 'PyYAML'),
    'tqdm': ('python3-tqdm', 'tqdm'), 'matplotlib': ('python3-matplotlib', 'matplotlib'),
    'rosbags': ('python3-rosbags-pip', 'rosbags'),
    'skimage': ('python3-skimage', 'scikit-image'),
    'threadpoolctl': ('python3-threadpoolctl', 'threadpoolctl'),   # Debian/Ubuntu package name
    'cholespy': (None, 'cholespy'),    # no rosdep key; the package's supernodal Cholesky without it
    'qdldl': (None, 'qdldl'),          # no rosdep key; cholespy without it
}
# Imported only when present, and not required: scikit-sparse needs SuiteSparse headers to build.
OPTIONAL = {'sksparse'}
# ROS packages used without a Python import (the reason is the comment in package.xml).
USED_WITHOUT_IMPORT = {'lifecycle_msgs', 'ros2launch'}


def _imports() -> dict[str, set[str]]:
    """Top-level modules imported by the package and its launch files -> files importing them."""
    found: dict[str, set[str]] = {}
    for path in CODE:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split('.')[0], set()).add(str(path.relative_to(ROOT)))
    return found


def _launched_packages() -> set[str]:
    """``package='...'`` of the launch files' ``Node(...)`` actions."""
    packages = set()
    for path in CODE:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == 'package' \
                    and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                packages.add(node.value.value)
    return packages - {'diffopt_ros'}


def _declared() -> set[str]:
    root = ET.parse(ROOT / 'package.xml').getroot()
    return {e.text.strip() for tag in ('depend', 'exec_depend') for e in root.iter(tag)}


def _third_party() -> dict[str, set[str]]:
    return {name: files for name, files in _imports().items()
            if name not in sys.stdlib_module_names and name not in ('diffopt_ros', '__future__')
            and name not in OPTIONAL}


def test_package_xml_declares_every_imported_ros_package_and_python_key():
    declared = _declared()
    missing = []
    for name, files in sorted(_third_party().items()):
        key = PYTHON[name][0] if name in PYTHON else name    # anything else is a ROS package
        if key is not None and key not in declared:
            missing.append(f'{key} (imported as {name} by {", ".join(sorted(files))})')
    missing += [f'{p} (launched by a launch file)' for p in sorted(_launched_packages() - declared)]
    assert not missing, 'package.xml lacks: ' + '; '.join(missing)


def test_package_xml_declares_nothing_unused():
    used = ({PYTHON[n][0] if n in PYTHON else n for n in _third_party()} | _launched_packages()
            | USED_WITHOUT_IMPORT)
    unused = sorted(_declared() - used)
    assert not unused, f'package.xml declares packages the code does not use: {unused}'


def test_python_imports_are_pinned_in_runtime_requirements():
    pinned = {line.split('==')[0] for line in (ROOT / 'requirements' / 'runtime.txt').read_text().splitlines()
              if line and not line.startswith('#')}
    needed = {PYTHON[name][1] for name in _third_party() if name in PYTHON}
    assert needed <= pinned, f'requirements/runtime.txt lacks {sorted(needed - pinned)}'


def test_license_file_is_the_apache_2_license_package_xml_names():
    assert ET.parse(ROOT / 'package.xml').getroot().findtext('license') == 'Apache-2.0'
    text = (ROOT / 'LICENSE').read_text()
    assert text.lstrip().startswith('Apache License') and 'Version 2.0, January 2004' in text
    assert 'END OF TERMS AND CONDITIONS' in text and len(text) > 10_000


def test_nothing_points_outside_the_repository():
    """Docs, requirements and code stand alone: no ``../shared`` (only CI may look there)."""
    skip = {'.git', '.ci', '.venv', 'build', 'install', 'log', 'runs', '__pycache__'}
    offenders = []
    for folder, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in skip and not d.endswith('.egg-info')]
        for name in filenames:
            path = Path(folder) / name
            if path.suffix not in ('.md', '.txt', '.py', '.yaml', '.xml', '.cfg', '.toml') \
                    and name != 'Makefile' or path == Path(__file__).resolve():
                continue
            if '../shared' in path.read_text(errors='replace'):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f'references to ../shared in {offenders}'
