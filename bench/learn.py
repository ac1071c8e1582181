"""End-to-end dynamics learning through the MPC: epochs per second against mpc.pytorch, and
data-parallel scaling from 1 to 2 processes (torchrun, gloo).

Part 1 learns DiffDriveLag's gains and lags from expert demonstrations (the node's MPC with the
true model tracking timed paths, diffopt_ros.experiments.simulated_runs.expert_runs) by first-control
imitation through the MPC, in three loops over the same windows with the same loss, optimizer
(Adam, lr 0.1, betas 0.5/0.9) and iteration limits (50 iterations, tolerance 1e-7, warm start
from the previous epoch): diffopt_ros.learn (implicit and unrolled gradients) and the same loop
written with mpc.pytorch (``mpc.MPC``, QuadCost tracking the same references, AUTO_DIFF
linearization, its LQR-based backward). mpc.pytorch has no cost on the state after the last
control, so its problem lacks our terminal term; both start from the nominal model (gains 1,
lags 0.05 s). Prints epochs/s (1 / median epoch time, best of interleaved rounds), ratios, and each loop's
largest parameter error after the epochs run.

Part 2 runs ``diffopt-ros learn dynamics --method e2e`` on the same runs written as bags under
``torchrun --nproc_per_node 1`` and ``2`` and compares epochs/s (per-epoch wall time from
metrics.csv, so process start-up is excluded).

    .venv/bin/python bench/learn.py [--epochs 10] [--episodes 4] [--seconds 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import yaml

from diffopt_ros.experiments.simulated_runs import expert_runs
from diffopt_ros.learn.controller import mpc_params, node_mpc
from diffopt_ros.learn.datasets import save_bag
from diffopt_ros.learn.objectives import ImitationObjective
from diffopt_ros.learn.trainer import TrainConfig, train
from diffopt_ros.learn.windows import control_windows
from diffopt_ros.mpc import DiffDriveLag
from diffopt_ros.sim import RobotParams

# bench/mpc.py would shadow the mpc.pytorch package: keep this folder off the import path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != os.path.dirname(os.path.abspath(__file__))]

TRUE = {'model.gain_v': 0.8, 'model.gain_omega': 0.7, 'model.tau_v': 0.25, 'model.tau_omega': 0.2}
NAMES = ('gain_v', 'gain_omega', 'tau_v', 'tau_omega')


def _error(values: dict[str, float]) -> float:
    """Largest relative error (%) of the learned model parameters."""
    return 100 * max(abs(values[f'model.{n}'] - TRUE[f'model.{n}']) / TRUE[f'model.{n}'] for n in NAMES)


def ours(windows, params, backward, epochs):
    mpc = node_mpc(params, backward=backward, max_iterations=50, tolerance=1e-7)
    for p in mpc.dynamics.parameters():
        p.requires_grad_(True)
    objective = ImitationObjective(mpc, len(windows))
    result = train(objective, windows.items(), None,
                   TrainConfig(epochs=epochs, lr=0.1, progress=False, plots=False))
    seconds = [row['seconds'] for row in result.history[2:]]   # after a warm-up epoch
    return 1.0 / statistics.median(seconds), _error(result.params)


def mpc_pytorch(windows, params, epochs):
    """The same imitation loop written with mpc.pytorch."""
    from mpc import mpc as mpt  # mpc.pytorch

    settings = node_mpc(params, backward='none').cost
    q = settings.state_weight.diagonal().detach()
    r = settings.control_weight.diagonal().detach()
    T, B = windows.reference.shape[1], len(windows)
    model = DiffDriveLag(params['dt'], gain_v=1.0, gain_omega=1.0, tau_v=0.05, tau_omega=0.05
                         ).double()
    weights = torch.cat((q, r)).expand(T, B, 7).clone()
    weights[-1, :, :5] *= float(settings.terminal_scale)   # the last state it has
    C = torch.diag_embed(weights)
    # references x_1..x_T for steps 0..T-1 (mpc.pytorch costs x_0..x_{T-1})
    tau_ref = torch.cat((torch.cat((windows.x0[None], windows.reference.transpose(0, 1)[:-1])),
                         torch.zeros(T, B, 2, dtype=torch.float64)), -1)
    c = -(C @ tau_ref.unsqueeze(-1)).squeeze(-1)
    lower = torch.tensor([params['bounds.v_min'], -params['bounds.omega_max']], dtype=torch.float64)
    upper = torch.tensor([params['bounds.v_max'], params['bounds.omega_max']], dtype=torch.float64)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, betas=(0.5, 0.9))
    warm = torch.zeros(T, B, 2, dtype=torch.float64)
    times = []
    for _ in range(epochs):
        began = time.perf_counter()
        solver = mpt.MPC(5, 2, T, u_lower=lower.expand(T, B, 2), u_upper=upper.expand(T, B, 2),
                         u_init=warm, lqr_iter=50, eps=1e-7, grad_method=mpt.GradMethods.AUTO_DIFF,
                         exit_unconverged=False, detach_unconverged=False, verbose=-1)
        _, u, _ = solver(windows.x0, mpt.QuadCost(C, c), model)
        warm = u.detach()
        loss = ((u[0] - windows.u[:, 0]) / 0.1).square().sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - began)
    values = {f'model.{k}': v for k, v in model.parameter_values().items()}
    return 1.0 / statistics.median(times[1:]), _error(values)


def scaling(runs, params_file: Path, epochs: int, procs: list[int], folder: Path) -> dict[int, float]:
    bags = [str(save_bag(run, folder / 'runs')) for run in runs]
    torchrun = Path(sys.executable).with_name('torchrun')
    rates = {}
    for n in procs:
        out = folder / f'procs{n}'
        subprocess.run([str(torchrun), '--standalone', '--nproc_per_node', str(n), '-m',
                        'diffopt_ros.learn.cli', 'dynamics', *bags, '--method', 'e2e',
                        '--epochs', str(epochs), '--val-fraction', '0', '--params-file',
                        str(params_file), '--out', str(out), '--no-progress', '--no-plots'],
                       check=True, env={**os.environ, 'OMP_NUM_THREADS': '1'}, capture_output=True)
        with open(out / 'metrics.csv') as f:
            seconds = [float(row['seconds']) for row in csv.DictReader(f)][2:]
        rates[n] = len(seconds) / sum(seconds)
    return rates


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--epochs', type=int, default=10)
    parser.add_argument('--episodes', type=int, default=4, help='expert episodes (runs)')
    parser.add_argument('--seconds', type=float, default=5.0, help='length of each episode (s)')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--rounds', type=int, default=2, help='interleaved repetitions (best kept)')
    parser.add_argument('--procs', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--scale-episodes', type=int, default=12,
                        help='expert episodes for the scaling part (more windows per process)')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings('ignore')
    params = mpc_params()
    params.update({'bounds.v_max': 1.2, 'bounds.v_min': -0.5, 'bounds.omega_max': 3.0,
                   'weights.rate': 0.0})      # mpc.pytorch has no rate term for our form
    runs = expert_runs(RobotParams(), {**params, **TRUE}, episodes=args.episodes,
                       seconds=args.seconds)
    windows = control_windows(runs, params['dt'], 1, ref_horizon=params['horizon'],
                              ref_dt=params['dt']).with_reference()
    print(f'# end-to-end dynamics learning through the MPC: {platform.processor() or platform.machine()}, '
          f'torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} cores')
    print(f'# {len(windows)} windows, horizon {params["horizon"]} x {params["dt"]} s, '
          f'{args.epochs} epochs; epochs/s = 1 / median epoch time (first excluded), best of '
          f'{args.rounds} interleaved rounds\n')
    print('| loop | epochs/s | vs mpc.pytorch | parameter error at the end |')
    print('|---|---|---|---|')
    loops = {'diffopt_ros implicit': lambda: ours(windows, params, 'implicit', args.epochs),
             'diffopt_ros unroll': lambda: ours(windows, params, 'unroll', args.epochs),
             'mpc.pytorch': lambda: mpc_pytorch(windows, params, args.epochs)}
    best = {}
    for _ in range(args.rounds):     # interleaved rounds, best kept: the machine is shared
        for name, run in loops.items():
            rate, err = run()
            best[name] = max(best.get(name, (0.0, err)), (rate, err))
    base = best['mpc.pytorch'][0]
    for name, (rate, err) in best.items():
        print(f'| {name} | {rate:.2f} | {rate / base:.2f}x | {err:.1f} % |', flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        params_file = Path(tmp) / 'mpc.yaml'
        params_file.write_text(yaml.safe_dump({'mpc_node': {'ros__parameters': params}}))
        more = expert_runs(RobotParams(), {**params, **TRUE}, episodes=args.scale_episodes,
                           seconds=args.seconds, seed=1)
        rates = scaling(more, params_file, args.epochs, args.procs, Path(tmp))
    print(f'\n# {args.scale_episodes} runs of {args.seconds} s, diffopt-ros learn dynamics --method e2e')
    print('| processes (torchrun, gloo) | epochs/s | speed-up |')
    print('|---|---|---|')
    for n, rate in rates.items():
        print(f'| {n} | {rate:.2f} | {rate / rates[args.procs[0]]:.2f}x |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
