"""Imitation learning through the differentiable MPC (Amos et al. 2018, pendulum and cart-pole).

For each system, learn the dynamics parameters (true cost) or the cost (log state weights and
goal, control weight fixed; true dynamics) from 10/50/100 expert trajectories (T=20, dt=0.05) by
back-propagating the imitation loss through the MPC (implicit gradients), the learner's MPC
warm-started at the expert's controls (inverse optimal control; --cold: cold-started), training
on the plain loss (--robust c: a per-trajectory robust loss; the table reports the plain loss).
Prints a Markdown table.

    .venv/bin/python bench/mpc_imitation.py [--steps 100] [--optimizer lbfgs] [--sizes 10 50 100] [--json F]
"""
import argparse
import json
import platform
import sys
import time
import warnings

import torch

from diffopt_ros.experiments.mpc_imitation import tasks, train


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=100,
                        help='loss-and-gradient evaluations (L-BFGS) or steps (Adam) per run')
    parser.add_argument('--optimizer', choices=('lbfgs', 'adam'), default='lbfgs')
    parser.add_argument('--sizes', type=int, nargs='+', default=[10, 50, 100],
                        help='numbers of expert trajectories')
    parser.add_argument('--systems', nargs='+', default=['pendulum', 'cartpole'])
    parser.add_argument('--learn', nargs='+', default=['dynamics', 'cost'])
    parser.add_argument('--lr', type=float, default=None, help='learning rate (L-BFGS 1, Adam 0.05)')
    parser.add_argument('--final-lr', type=float, default=0.01,
                        help='Adam: final learning rate, fraction of --lr')
    parser.add_argument('--cold', action='store_true', help="cold-start the learner's MPC (no warm start)")
    parser.add_argument('--robust', type=float, default=0.0,
                        help='scale c of a robust training loss, c log(1 + l_i / c) per trajectory (0: off)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--json', help='also write one JSON row per run to this file (F)')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings('ignore', category=RuntimeWarning)
    print(f'# imitation learning through the MPC: {platform.processor() or platform.machine()}, '
          f'torch {torch.__version__}, {args.threads} thread(s), {args.optimizer} {args.steps} steps, '
          f"{'cold' if args.cold else 'warm'} start, robust {args.robust:g}, seed {args.seed}\n")
    print('| system | learn | trajectories | evaluations | train loss start → end '
          '| held-out loss start → end | held-out, cold start | parameter error start → end | seconds |')
    print('|---|---|---|---|---|---|---|---|---|')
    rows = []
    for system in args.systems:
        for learn in args.learn:
            for n in args.sizes:
                start = time.perf_counter()
                r = train(tasks()[system], n, learn, steps=args.steps, optimizer=args.optimizer, lr=args.lr,
                          final_lr=args.final_lr, seed=args.seed, warm=not args.cold,
                          robust=args.robust or None)
                r.update(system=system, learn=learn, trajectories=n, seconds=time.perf_counter() - start)
                rows.append(r)
                print(f"| {system} | {learn} | {n} | {r['evaluations']} "
                      f"| {r['loss_train_initial']:.2g} → {r['loss_train_final']:.1e} "
                      f"| {r['loss_test_initial']:.2g} → {r['loss_test_final']:.1e} "
                      f"| {r['loss_test_cold_initial']:.2g} → {r['loss_test_cold_final']:.1e} "
                      f"| {100 * r['parameter_error_initial']:.0f} % → {100 * r['parameter_error']:.1e} % "
                      f"| {r['seconds']:.0f} |", flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
