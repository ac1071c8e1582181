"""ament_python / pip set-up for diffopt_ros.

Builds with ``colcon build`` in a ROS 2 workspace (executables in ``lib/diffopt_ros``, data in
``share/diffopt_ros``) and with ``pip install .`` in a plain virtual environment.
"""
import re
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = 'diffopt_ros'
HERE = Path(__file__).parent


def _tree(folder):
    """data_files entries that install every file under ``folder`` into share/<pkg>/<folder>."""
    entries = {}
    for path in sorted((HERE / folder).rglob('*')):
        if path.is_file() and '__pycache__' not in path.parts:
            rel = path.relative_to(HERE)
            entries.setdefault(str(Path('share', PACKAGE, rel.parent)), []).append(str(rel))
    return sorted(entries.items())


def _version():
    """``__version__`` of diffopt_ros/__init__.py (package.xml carries the same number)."""
    text = (HERE / PACKAGE / '__init__.py').read_text()
    return re.search(r"^__version__ = '([^']+)'", text, re.M).group(1)


def _requirements(name):
    """Pinned requirement lines of requirements/<name>.txt (comments dropped)."""
    lines = (HERE / 'requirements' / f'{name}.txt').read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith('#')]


setup(
    name=PACKAGE,
    version=_version(),
    packages=find_packages(exclude=['test', 'test.*', 'bench']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml', 'LICENSE']),
        *_tree('launch'),
        *_tree('config'),
    ],
    python_requires='>=3.10',
    install_requires=_requirements('runtime'),
    extras_require={'ros': _requirements('ros'), 'test': _requirements('test')},
    zip_safe=True,
    maintainer='diffopt_ros developers',
    maintainer_email='diffopt-ros@example.org',
    description='Differentiable MPC and differentiable SLAM back-end for ROS 2, with offline learning.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'diffopt-ros = diffopt_ros.cli:entry',
            'sim_node = diffopt_ros.nodes.sim_node:main',
            'mpc_node = diffopt_ros.nodes.mpc_node:main',
            'slam_node = diffopt_ros.nodes.slam_node:main',
            'recorder_node = diffopt_ros.nodes.recorder_node:main',
        ],
    },
)
