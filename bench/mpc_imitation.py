"""Imitation learning through the differentiable MPC (Amos et al. 2018, pendulum and cart-pole).

For each system, learn the dynamics parameters (true cost) or the cost (state weights and goal;
true dynamics) from 10/50/100 expert trajectories (T=20, dt=0.05) by back-propagating the
imitation loss through the MPC (implicit gradients). Prints a Markdown table.

    .venv/bin/python bench/mpc_imitation.py [--steps 100] [--sizes 10 50 100] [--json FILE]
"""
import argparse
import json
import platform
import sys
import time
import warnings

import torch

from diffopt_ros.mpc.imitation import tasks, train


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=100, help='Adam steps per run')
    parser.add_argument('--sizes', type=int, nargs='+', default=[10, 50, 100],
                        help='numbers of expert trajectories')
    parser.add_argument('--systems', nargs='+', default=['pendulum', 'cartpole'])
    parser.add_argument('--learn', nargs='+', default=['dynamics', 'cost'])
    parser.add_argument('--lr', type=float, default=0.05, help='Adam learning rate')
    parser.add_argument('--final-lr', type=float, default=0.01, help='final learning rate, fraction of --lr')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--json', help='also write one JSON row per run to this file')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings('ignore', category=RuntimeWarning)
    print(f'# imitation learning through the MPC: {platform.processor() or platform.machine()}, '
          f'torch {torch.__version__}, {args.threads} thread(s), {args.steps} Adam steps, '
          f'lr {args.lr} -> {args.lr * args.final_lr:g}\n')
    print('| system | learn | trajectories | train loss start -> end | held-out loss start -> end '
          '| parameter error | seconds |')
    print('|---|---|---|---|---|---|---|')
    rows = []
    for system in args.systems:
        for learn in args.learn:
            for n in args.sizes:
                start = time.perf_counter()
                r = train(tasks()[system], n, learn, steps=args.steps, lr=args.lr, final_lr=args.final_lr)
                r.update(system=system, learn=learn, trajectories=n, seconds=time.perf_counter() - start)
                rows.append(r)
                print(f"| {system} | {learn} | {n} "
                      f"| {r['loss_train_initial']:.2e} -> {r['loss_train_final']:.2e} "
                      f"| {r['loss_test_initial']:.2e} -> {r['loss_test_final']:.2e} "
                      f"| {100 * r['parameter_error']:.2f} % | {r['seconds']:.0f} |", flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
