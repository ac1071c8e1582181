"""Same-process A/B of the MPC solve: another checkout's ``diffopt_ros/mpc`` against this one.

The problems of a ground-truth drive are kept as ``bench/solve_replay.py`` keeps them (``--solves``
control ticks: cost with its obstacle field and scan points, initial state, reference, warm
start, previous command). The other checkout's ``diffopt_ros/mpc`` package is loaded beside this
one (as ``base_mpc``; the controller and its costs are rebuilt from its classes, attribute by
attribute, their tensors and arrays copied), and
every problem is solved by both, alternating which goes first, ``--repeats`` times, so both see
the same machine load. Prints each side's total and median of the least thread CPU time per
solve (``time.thread_time``), their ratio, the iLQR iterations, and whether the two give the
same controls, states, costs and iteration counts bit for bit. Run:

    PYTHONPATH=. python bench/solve_ab.py --base /path/to/other/checkout --robot ackermann
"""
from __future__ import annotations

import argparse
import copy
import enum
import importlib
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1]))

BASE = 'base_mpc'


def _module(name: str, path: Path, package: list[str] | None = None):
    """The module at ``path`` under ``name`` (a package when ``package`` lists its folder)."""
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=package)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_base(root: Path) -> None:
    """Import the ``diffopt_ros/mpc`` package of the checkout at ``root`` as ``base_mpc``."""
    folder = root / 'diffopt_ros' / 'mpc'
    if not (folder / '__init__.py').is_file():
        raise SystemExit(f'solve_ab: no diffopt_ros/mpc package under {root}')
    _module(BASE, folder / '__init__.py', [str(folder)])


def _base_of(module: str) -> str | None:
    """The ``base_mpc`` module name for a ``diffopt_ros.mpc`` module name, else None."""
    if module == 'diffopt_ros.mpc' or module.startswith('diffopt_ros.mpc.'):
        return BASE + module[len('diffopt_ros.mpc'):]
    return None


def _base_attribute(obj):
    """The object of the same module path and qualified name in ``base_mpc``."""
    found = importlib.import_module(_base_of(obj.__module__))
    for part in obj.__qualname__.split('.'):
        found = getattr(found, part)
    return found


def to_base(obj, memo: dict | None = None):
    """``obj`` (a controller or cost of this checkout) rebuilt from the other checkout's classes:
    instances of ``diffopt_ros.mpc`` classes get the same attributes (rebuilt the same way),
    containers are rebuilt, anything else (tensors, arrays, numbers) is deep-copied."""
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    cls = type(obj)
    if isinstance(obj, type) or callable(obj) and hasattr(obj, '__qualname__'):
        new = _base_attribute(obj) if _base_of(getattr(obj, '__module__', '') or '') else obj
    elif _base_of(cls.__module__) and isinstance(obj, enum.Enum):
        new = _base_attribute(cls)[obj.name]
    elif _base_of(cls.__module__):
        base_cls = _base_attribute(cls)
        new = memo[id(obj)] = base_cls.__new__(base_cls)
        new.__dict__.update({k: to_base(v, memo) for k, v in vars(obj).items()})
    elif cls in (list, set):
        new = cls(to_base(v, memo) for v in obj)
    elif isinstance(obj, tuple):
        items = [to_base(v, memo) for v in obj]
        new = cls(*items) if hasattr(obj, '_fields') else cls(items)
    elif isinstance(obj, dict):
        new = cls((k, to_base(v, memo)) for k, v in obj.items())
    else:
        new = copy.deepcopy(obj, memo)
    memo[id(obj)] = new
    return new


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--base', required=True, help='root of the other checkout (its diffopt_ros/mpc)')
    parser.add_argument('--world', default='clutter')
    parser.add_argument('--robot', default='ackermann', choices=('diff_drive', 'ackermann', 'unicycle'))
    parser.add_argument('--goal', type=float, nargs=2, default=(10.0, 7.0), help='m, world frame')
    parser.add_argument('--start', type=float, nargs=3, default=(1.0, 1.0, 0.0), help='m, m, rad')
    parser.add_argument('--solves', type=int, default=150, help='problems kept (control ticks)')
    parser.add_argument('--repeats', type=int, default=3, help='solves of each problem by each side')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_base(Path(args.base).resolve())
    replay = _module('bench_solve_replay', HERE.parent / 'solve_replay.py')
    mpc, problems = replay.record(args.world, args.robot, tuple(args.goal), tuple(args.start), args.solves)
    sides = {'this': (mpc, [cost for cost, _, _ in problems]),
             'base': (to_base(mpc), [to_base(cost) for cost, _, _ in problems])}
    least = {side: [float('inf')] * len(problems) for side in sides}
    first = {side: [] for side in sides}
    load = [os.getloadavg()[0]]
    for repeat in range(args.repeats):
        for i, (_, call_args, kwargs) in enumerate(problems):
            for side in (('this', 'base') if (repeat + i) % 2 == 0 else ('base', 'this')):
                solver, costs = sides[side]
                solver.cost = costs[i]
                started = time.thread_time()
                sol = solver(*call_args, **kwargs)
                least[side][i] = min(least[side][i], time.thread_time() - started)
                if repeat == 0:
                    first[side].append((sol.controls, sol.states, sol.costs, sol.iterations))
        load.append(os.getloadavg()[0])
    same = all(torch.equal(a, b) for s, t in zip(first['this'], first['base']) for a, b in zip(s, t))
    iterations = {side: sum(int(s[3].sum()) for s in first[side]) for side in sides}
    print(f'{args.world} {args.robot}: {len(problems)} solves, least thread CPU of {args.repeats} '
          f'(load {min(load):.1f}-{max(load):.1f})')
    for side in sides:
        print(f'  {side}: total {sum(least[side]) * 1e3:.0f} ms, median solve '
              f'{statistics.median(least[side]) * 1e3:.2f} ms, {iterations[side]} iterations, per '
              f'iteration {sum(least[side]) / iterations[side] * 1e3:.3f} ms')
    print(f'  this / base: total {sum(least["this"]) / sum(least["base"]):.3f}, median of per-solve ratios '
          f'{statistics.median(a / b for a, b in zip(least["this"], least["base"])):.3f}; '
          f'bitwise the same solutions: {same}')


if __name__ == '__main__':
    main()
