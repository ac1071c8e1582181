"""Load a script of ``bench/`` as a module, from its file.

Not through ``sys.path``: the scripts are named after what they measure (``bench/mpc.py``), and
``bench/`` on the path would shadow the packages of those names (mpc.pytorch's ``mpc``) for
every later test of the session.
"""
import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / 'bench'


def load(name: str):
    """The module of ``bench/<name>.py`` (registered as ``bench_<name>``)."""
    spec = importlib.util.spec_from_file_location(f'bench_{name}', BENCH / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
