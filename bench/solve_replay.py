"""The navigation solves of a drive, replayed: the solver's CPU time per solve and per iteration.

Drives ``--solves`` control ticks of a ground-truth drive (no SLAM, deterministic) on a world,
keeping each tick's MPC problem (the cost with its obstacle field and scan points as it was, the
initial state, reference, warm start and previous command), then solves every kept problem
``--repeats`` times and takes each solve's least thread CPU time (``time.thread_time``): what a
solve costs without the other jobs of a loaded machine. Prints the total, the median solve and the
CPU time per iLQR iteration; ``--save`` writes the solutions' controls, states, costs and
iteration counts (``torch.save``, tensors only) to compare two checkouts' iterates.

``--cost-tolerances`` solves every kept problem once per relative cost tolerance (the stopping
test of ``MPC(cost_tolerance=...)``, at the navigator's iteration cap) and once at
``--reference-iterations`` with the cost test off, and prints per tolerance the iteration
histogram, the CPU time per solve, the cost above the reference's (relative) and how far the first
command (the one sent to the robot) lies from the reference's.

    PYTHONPATH=. python bench/solve_replay.py --robot ackermann --solves 150 --repeats 3
    PYTHONPATH=. python bench/solve_replay.py --solves 200 --cost-tolerances 1e-10 1e-5 1e-4
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
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


def _solve_all(mpc: MPC, problems: list, max_iterations: int, cost_tolerance: float):
    """Each problem solved once: costs ``(N,)``, first commands ``(N, n_u)``, iterations ``(N,)``,
    thread CPU seconds in all."""
    mpc.max_iterations, mpc.cost_tolerance = max_iterations, cost_tolerance
    costs, firsts, iterations = [], [], []
    started = time.thread_time()
    for cost, call_args, kwargs in problems:
        mpc.cost = cost
        sol = mpc(*call_args, **kwargs)
        costs.append(float(sol.costs.sum()))
        firsts.append(sol.controls[0, 0].numpy().copy())
        iterations.append(int(sol.iterations.sum()))
    return np.array(costs), np.array(firsts), np.array(iterations), time.thread_time() - started


def compare_tolerances(mpc: MPC, problems: list, tolerances: list[float], reference_iterations: int) -> None:
    """Print, per relative cost tolerance, what the kept problems' solves cost and how far they end
    from a ``reference_iterations`` solve with the cost test off (see the module doc); leaves the
    solver's iteration cap and cost tolerance as they were."""
    cap, kept_tolerance = mpc.max_iterations, mpc.cost_tolerance
    ref_costs, ref_firsts, _, _ = _solve_all(mpc, problems, reference_iterations, 0.0)
    print(f'reference: {reference_iterations} iterations at most, cost test off; cap {cap}')
    for tolerance in tolerances:
        costs, firsts, iterations, seconds = _solve_all(mpc, problems, cap, tolerance)
        above = (costs - ref_costs) / np.abs(ref_costs)
        moved = np.abs(firsts - ref_firsts)
        histogram = np.bincount(iterations, minlength=cap + 1)[1:].tolist()
        print(f'cost_tolerance {tolerance:.0e}: iterations 1..{cap} {histogram}, mean '
              f'{iterations.mean():.2f}, {np.mean(iterations >= cap) * 100:.1f} % at the cap; CPU '
              f'{seconds / len(problems) * 1e3:.1f} ms per solve; cost above the reference p50/p90/max '
              f'{np.median(above):.1e}/{np.quantile(above, 0.9):.1e}/{above.max():.1e}; first command '
              f'from the reference p99/max: ' + ', '.join(
                  f'u{i} {np.quantile(moved[:, i], 0.99):.3f}/{moved[:, i].max():.3f}'
                  for i in range(moved.shape[1])))
    mpc.max_iterations, mpc.cost_tolerance = cap, kept_tolerance


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--world', default='clutter')
    parser.add_argument('--robot', default='ackermann', choices=('diff_drive', 'ackermann', 'unicycle'))
    parser.add_argument('--goal', type=float, nargs=2, default=(10.0, 7.0), help='m, world frame')
    parser.add_argument('--start', type=float, nargs=3, default=(1.0, 1.0, 0.0), help='m, m, rad')
    parser.add_argument('--solves', type=int, default=150, help='problems kept (control ticks)')
    parser.add_argument('--repeats', type=int, default=3, help='solves of each problem (least time)')
    parser.add_argument('--save', help='write the solutions here (torch.save of tensors)')
    parser.add_argument('--cost-tolerances', type=float, nargs='+', metavar='TOL',
                        help='compare these relative cost tolerances instead (see above)')
    parser.add_argument('--reference-iterations', type=int, default=40,
                        help='iteration cap of the reference solve of --cost-tolerances')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    mpc, problems = record(args.world, args.robot, tuple(args.goal), tuple(args.start), args.solves)
    if args.cost_tolerances:
        compare_tolerances(mpc, problems, args.cost_tolerances, args.reference_iterations)
        return
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
