"""The navigation solves of a drive, replayed: the solver's CPU time per solve and per iteration.

Drives ``--solves`` control ticks of a ground-truth drive (no SLAM, deterministic) on a world,
keeping each tick's MPC problem (the cost with its obstacle field and scan points as it was, the
initial state, reference, warm start and previous command), then solves every kept problem
``--repeats`` times and takes each solve's least thread CPU time (``time.thread_time``): what a
solve costs without the other jobs of a loaded machine. Prints the total, the median solve and the
CPU time per iLQR iteration; ``--save`` writes the solutions' controls, states, costs and
iteration counts (``torch.save``, tensors only) to compare two checkouts' iterates.

    PYTHONPATH=. python bench/solve_replay.py --robot ackermann --solves 150 --repeats 3
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from diffopt_ros.drive import drive
from diffopt_ros.mpc.ilqr import MPC


class _EnoughError(Exception):
    """Raised by the recording solve once enough problems are kept."""


def record(world: str, robot: str, goal, start, solves: int) -> tuple[MPC, list]:
    """The navigator's MPC and its first ``solves`` problems ``(cost, args, kwargs)`` of the drive."""
    kept, module = [], []
    forward = MPC.forward

    def keep(self, *args, **kwargs):
        module[:] = [self]
        kept.append((copy.deepcopy(self.cost), copy.deepcopy(args), dict(kwargs)))
        if len(kept) >= solves:
            raise _EnoughError
        return forward(self, *args, **kwargs)

    MPC.forward = keep
    try:
        drive(world, [goal], robot=robot, start=start, slam=False)
    except _EnoughError:
        pass
    finally:
        MPC.forward = forward
    if not module:
        raise SystemExit('solve_replay: the drive made no solve')
    return module[0], kept


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--world', default='clutter')
    parser.add_argument('--robot', default='ackermann', choices=('diff_drive', 'ackermann', 'unicycle'))
    parser.add_argument('--goal', type=float, nargs=2, default=(10.0, 7.0), help='m, world frame')
    parser.add_argument('--start', type=float, nargs=3, default=(1.0, 1.0, 0.0), help='m, m, rad')
    parser.add_argument('--solves', type=int, default=150, help='problems kept (control ticks)')
    parser.add_argument('--repeats', type=int, default=3, help='solves of each problem (least time)')
    parser.add_argument('--save', help='write the solutions here (torch.save of tensors)')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    mpc, problems = record(args.world, args.robot, tuple(args.goal), tuple(args.start), args.solves)
    least = [float('inf')] * len(problems)
    solutions = []
    for repeat in range(args.repeats):
        for i, (cost, call_args, kwargs) in enumerate(problems):
            mpc.cost = cost
            started = time.thread_time()
            sol = mpc(*call_args, **kwargs)
            least[i] = min(least[i], time.thread_time() - started)
            if repeat == 0:
                solutions.append([sol.controls, sol.states, sol.costs, sol.iterations])
    iterations = sum(int(s[3].sum()) for s in solutions)
    print(f'{args.world} {args.robot}: {len(problems)} solves, {iterations} iterations; least CPU of '
          f'{args.repeats}: total {sum(least) * 1e3:.0f} ms, median solve '
          f'{statistics.median(least) * 1e3:.2f} ms, per iteration {sum(least) / iterations * 1e3:.3f} ms')
    if args.save:
        torch.save(solutions, args.save)


if __name__ == '__main__':
    main()
