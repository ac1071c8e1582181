"""Benchmark diffopt_ros.nlls against GTSAM (C++ LM) and Theseus on g2o/TORO pose graphs.

Prints one table of seconds, final errors (GTSAM's 0.5 sum ||r||^2_Sigma) and ratios measured in
this run, and with ``--json FILE`` writes one row per case. Cases:

* w100, w10000 (2D) and sphere2500 (3D) from gtsam/Data: Levenberg-Marquardt from the file's
  initial values with a prior on the first pose; time = structure analysis + solve (GTSAM:
  optimizer construction + optimize), best of ``--repeat`` interleaved runs. sphere2500 has no
  vertices: chained odometry, as GTSAM. One row per installed sparse backend (``--lm-only``
  runs just the w10000 and sphere2500 rows).
* w100 x16 forward + backward with learnable per-edge weights (sqrt information diagonals) and
  a loss on the solution, for every backward mode, against Theseus in the same mode.
* peak memory (max RSS increase of a child process) of the w10000 solve.
* ``diffopt-ros pgo FILE`` as a user runs it: a subprocess with default options (start-up,
  imports, reading, solve, output), against GTSAM's load (``load2D``; ``readG2o`` and chained
  odometry for sphere2500) + LM optimize in this process and as a subprocess of
  ``bench/gtsam_pgo.py`` (interpreter start and ``import gtsam`` included), with the CPU time
  of ``import torch`` alone measured in the same run; best of ``--repeat`` interleaved runs;
  and the command's solve time with ``--threads 1`` against ``--threads 2`` (the measurement
  behind its default). ``--command-only`` runs just these rows.
* LM with GTSAM's damping schedule (the command's) and with Nielsen's adaptive update on
  sphere2500, victoria_park and w20000: tries, final error, CPU seconds (``--damping-only``).
* the first N poses of w10000 and sphere2500 with the supernodal, the qdldl and the cholespy
  sparse factorization (build + solve CPU seconds): where ``sparse_backend('auto')`` switches
  (``--crossover-only`` runs just these rows).
* on CUDA: w10000, sphere2500 and w100 x256 on the GPU.

Theseus runs in its own virtual environment (``--theseus-python``; default
``/tmp/theseus_venv/bin/python`` when it exists) as a worker process of this script; without
it its rows are skipped with a message. Run: ``python bench/nlls.py [--json out.json]``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1]))

from bench.gtsam_pgo import data_file, load, optimize  # noqa: E402
from diffopt_ros.lie import SE2  # noqa: E402
from diffopt_ros.nlls import Between, Objective, Optimizer, Prior, Variable  # noqa: E402
from diffopt_ros.nlls.io import read_graph  # noqa: E402
from diffopt_ros.nlls.linear import sparse_backend  # noqa: E402
from diffopt_ros.nlls.pgo_cli import LAMBDA_FACTOR, command_optimizer  # noqa: E402
from diffopt_ros.nlls.pose_graph import objective_from_data  # noqa: E402

DT = torch.float64
MODES = ('implicit', 'unroll', 'truncated', 'dlm')


def build(data, device='cpu', measurements=None, information=None, linear='auto', max_iterations=100,
          backend='auto', lambda_factor=LAMBDA_FACTOR):
    poses = Variable(data.group, data.poses.to(device), name='poses')
    d = data.group.dof
    prior = Prior(poses, [0], data.poses[:1].to(device), 1e6 * torch.eye(d, dtype=DT, device=device))
    meas = data.measurements.to(device) if measurements is None else measurements
    info = data.information.to(device) if information is None else information
    return Optimizer(Objective([prior, Between(poses, data.i, data.j, meas, info)]), linear_solver=linear,
                     max_iterations=max_iterations, sparse_backend=backend, lambda_factor=lambda_factor)


def ours_lm(name: str, device='cpu', backend='auto'):
    """The command's objective and LM (:func:`command_optimizer`) on file ``name``, after reading
    it: wall seconds of structure + solve, final error, iterations (as GTSAM counts them), the
    linear solver (``'dense'`` or ``'sparse (BACKEND)'``), CPU seconds."""
    data = read_graph(data_file(name))
    t0, cpu0 = time.perf_counter(), time.process_time()
    objective, _, _ = objective_from_data(data, device, DT)
    opt = command_optimizer(objective, sparse_backend=backend)
    with torch.no_grad():
        result = opt.solve()
    if device != 'cpu':
        torch.cuda.synchronize()
    linear = opt.linear.kind if opt.linear.kind == 'dense' else f'sparse ({opt.linear.backend})'
    return (time.perf_counter() - t0, float(result.error[0]), int(result.steps[0]), linear,
            time.process_time() - cpu0)


def gtsam_lm(name: str, with_load: bool = False):
    """GTSAM LM wall seconds (optimizer construction + optimize; with ``with_load`` also reading
    the file and building the initial values), final error, iterations, CPU seconds (process
    time, all threads)."""
    import gtsam  # noqa: F401  (imported before the clock starts)
    t_load, cpu0 = time.perf_counter(), time.process_time()
    graph, values = load(name)
    t0 = t_load if with_load else time.perf_counter()
    cpu0 = cpu0 if with_load else time.process_time()
    error, iterations = optimize(graph, values)
    seconds = time.perf_counter() - t0
    return seconds, error, iterations, time.process_time() - cpu0


def _child(cmd: list[str]) -> tuple[float, float, str]:
    """Run ``cmd`` as a subprocess: wall seconds, CPU seconds (user + system), its stdout."""
    import resource
    env = dict(os.environ, PYTHONPATH=str(HERE.parents[1]))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if run.returncode != 0:
        raise RuntimeError(f'{" ".join(cmd)} failed: {run.stderr}')
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, run.stdout


def gtsam_command(name: str) -> tuple[float, float, float]:
    """``python bench/gtsam_pgo.py NAME`` as a subprocess (interpreter start, ``import gtsam``,
    load, optimize): wall seconds, CPU seconds, final error."""
    wall, cpu, out = _child([sys.executable, str(HERE.parent / 'gtsam_pgo.py'), name])
    words = out.split()
    return wall, cpu, float(words[words.index('error') + 1])


def pgo_command(name: str, *options: str) -> tuple[float, float, float, int, float]:
    """``python -m diffopt_ros.cli pgo FILE *options`` as a subprocess: wall seconds, the solve
    seconds and final error it prints, its iterations, its CPU seconds (user + system)."""
    wall, cpu, out = _child([sys.executable, '-m', 'diffopt_ros.cli', 'pgo', data_file(name), *options])
    last = out.strip().splitlines()[-1].split()
    return (wall, float(last[last.index('time') + 1]), float(last[last.index('final') + 2]),
            int(last[last.index('iterations') + 1]), cpu)


def command_rows(row, names, repeat: int, thread_rows: bool = True) -> None:
    """The command (default options) against GTSAM load + optimize in this process and as a
    subprocess (``bench/gtsam_pgo.py``), the CPU time of ``import torch`` alone (a subprocess
    that imports it and ends with ``os._exit``, as the command does, less one that starts the
    interpreter), of the interpreter's teardown of torch that the command skips (the same
    subprocess ending the usual way, less that one), and the thread rows."""
    for name in names:
        runs = {'gtsam': [], 'gtsam_cmd': [], 'cmd': [], 'torch': [], 'torch_teardown': [], 'python': [],
                't1': [], 't2': []}
        for _ in range(repeat):  # interleaved: every variant sees the same load
            runs['gtsam'].append(gtsam_lm(name, with_load=True))
            runs['gtsam_cmd'].append(gtsam_command(name))
            runs['cmd'].append(pgo_command(name))
            runs['torch'].append(_child([sys.executable, '-c', 'import os, torch; os._exit(0)'])[1])
            runs['torch_teardown'].append(_child([sys.executable, '-c', 'import torch'])[1])
            runs['python'].append(_child([sys.executable, '-c', 'pass'])[1])
            if thread_rows:
                runs['t1'].append(pgo_command(name, '--quiet', '--threads', '1'))
                runs['t2'].append(pgo_command(name, '--quiet', '--threads', '2'))
        g_s, g_err, g_it, _ = min(runs['gtsam'])
        g_cpu = min(r[3] for r in runs['gtsam'])
        wall, solve, err, it, _ = min(runs['cmd'])
        cpu = min(r[4] for r in runs['cmd'])
        gc_s, gc_cpu = min(r[0] for r in runs['gtsam_cmd']), min(r[1] for r in runs['gtsam_cmd'])
        python_cpu = min(runs['python'])
        torch_cpu = min(runs['torch']) - python_cpu
        teardown_cpu = min(runs['torch_teardown']) - min(runs['torch'])
        row(case=f'{name} diffopt-ros pgo (subprocess, default options)', device='cpu', ours_s=wall,
            ours_solve_s=solve, ours_cpu_s=cpu, ours_error=err, ours_iterations=it,
            gtsam_load_optimize_s=g_s, gtsam_cpu_s=g_cpu, gtsam_error=g_err, gtsam_iterations=g_it,
            time_ratio_vs_gtsam=wall / g_s, cpu_ratio_vs_gtsam=cpu / g_cpu,
            gtsam_subprocess_s=gc_s, gtsam_subprocess_cpu_s=gc_cpu,
            cpu_ratio_vs_gtsam_subprocess=cpu / gc_cpu,
            interpreter_cpu_s=python_cpu, torch_import_cpu_s=torch_cpu, torch_teardown_cpu_s=teardown_cpu,
            cpu_ratio_without_torch_import=(cpu - torch_cpu) / g_cpu,
            error_rel_diff=(err - g_err) / g_err, load_average=os.getloadavg()[0])
        if not thread_rows:
            continue
        one, two = min(r[1] for r in runs['t1']), min(r[1] for r in runs['t2'])
        row(case=f'{name} pgo solve, --threads 1 vs 2', device='cpu', threads1_solve_s=one,
            threads2_solve_s=two, ratio_2_over_1=two / one, load_average=os.getloadavg()[0])


def crossover_rows(row) -> None:
    """Build + LM solve CPU seconds of the first N poses of w10000 (2D) and sphere2500 (3D)
    with the supernodal factorization and each installed simplicial one (qdldl, cholespy):
    where ``sparse_backend('auto')`` switches (its thresholds in diffopt_ros/nlls/linear.py)."""
    backends = [b for b in ('supernodal', 'qdldl', 'cholespy') if _installed(b)]
    for name, sizes in (('w10000', (100, 300, 1000, 3000, 10000)), ('sphere2500', (100, 300, 1000))):
        data = read_graph(data_file(name))
        for N in sizes:
            keep = (data.i < N) & (data.j < N)
            cpu = {}
            for backend in backends:
                poses = Variable(data.group, data.poses[:N].clone(), name='poses')
                d = data.group.dof
                objective = Objective([Prior(poses, [0], data.poses[:1], 1e6 * torch.eye(d, dtype=DT)),
                                       Between(poses, data.i[keep], data.j[keep], data.measurements[keep],
                                               data.information[keep])])
                t0 = time.process_time()
                opt = Optimizer(objective, linear_solver='sparse', sparse_backend=backend,
                                lambda_factor=LAMBDA_FACTOR)
                with torch.no_grad():
                    result = opt.solve()
                cpu[backend] = time.process_time() - t0
            row(case=f'{name} first {N} poses, build + LM solve', device='cpu', unknowns=objective.dim,
                **{f'{b}_cpu_s': cpu[b] for b in backends}, iterations=int(result.iterations[0]),
                auto=sparse_backend('auto', objective))


def damping_rows(row, max_iterations: int = 100) -> None:
    """LM with GTSAM's damping schedule (divide / multiply by ``LAMBDA_FACTOR``, what the command
    uses) and with Nielsen's adaptive update (``lambda_factor=None``) on the command's objective
    of sphere2500 and of the two gtsam/Data files the command's choice rests on (victoria_park,
    w20000): tries, final error, CPU seconds of structure + solve."""
    import gtsam

    for name in ('sphere2500.txt', 'victoria_park.txt', 'w20000.txt'):
        data = read_graph(gtsam.findExampleDataFile(name))
        for schedule, factor in (('gtsam', LAMBDA_FACTOR), ('nielsen', None)):
            objective, _, _ = objective_from_data(data, 'cpu', DT)
            t0 = time.process_time()
            opt = Optimizer(objective, max_iterations=max_iterations, lambda_factor=factor)
            with torch.no_grad():
                result = opt.solve()
            row(case=f'{name} LM damping {schedule}', device='cpu', cpu_s=time.process_time() - t0,
                error=float(result.error[0]), tries=int(result.iterations[0]), status=result.status[0],
                load_average=os.getloadavg()[0])


# ---------------------------------------------------------------------- differentiable batch
def batch_problem(B: int, seed: int = 0):
    """w100 with B noisy copies of the measurements; the target is the clean solution."""
    data = read_graph(data_file('w100'))
    with torch.no_grad():
        target = build(data).solve().values[0][0]
    g = torch.Generator().manual_seed(seed)
    noise = 0.05 * torch.randn(B, len(data.i), 3, generator=g, dtype=DT)
    meas = SE2.compose(data.measurements.expand(B, -1, -1), SE2.exp(noise))
    return data, meas, target


def ours_layer(B: int, mode: str, device='cpu', reps: int = 3, max_iterations: int = 20):
    data, meas, target = batch_problem(B)
    meas, target = meas.to(device), target.to(device)
    times, err = [], None
    for _ in range(reps):
        sqrt_w = torch.ones(len(data.i), 3, dtype=DT, device=device, requires_grad=True)
        t0 = time.perf_counter()
        opt = build(data, device, meas, torch.diag_embed(sqrt_w ** 2), max_iterations=max_iterations)
        result = opt.solve(backward=mode)
        loss = ((result.values[0][..., :2] - target[:, :2]) ** 2).sum()
        loss.backward()
        if device != 'cpu':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        err = float(result.error.detach().mean())
    return min(times), err


def theseus_worker(spec: dict) -> dict:
    """Runs in the Theseus environment: the same w100 batch problem, forward (+ backward)."""
    import theseus as th
    B, mode = spec['B'], spec['mode']
    data, meas, target = batch_problem(B)
    if spec.get('clean'):  # the file's own measurements (the plain LM comparison)
        meas = data.measurements.expand(B, -1, -1)
    times, err = [], None
    for _ in range(spec.get('reps', 3)):
        sqrt_w = torch.ones(len(data.i), 3, dtype=DT, requires_grad=True)
        t0 = time.perf_counter()
        poses = [th.SE2(x_y_theta=data.poses[k:k + 1].expand(B, 3).clone(), name=f'x{k}')
                 for k in range(len(data.poses))]
        objective = th.Objective(dtype=DT)
        objective.add(th.Difference(poses[0], th.SE2(x_y_theta=data.poses[:1].clone(), name='p0'),
                                    th.ScaleCostWeight(torch.tensor(1e3, dtype=DT)), name='prior'))
        inputs = {}
        for e, (a, b) in enumerate(zip(data.i.tolist(), data.j.tolist())):
            weight = th.DiagonalCostWeight(th.Variable(torch.ones(1, 3, dtype=DT), name=f'w{e}'))
            objective.add(th.Between(poses[a], poses[b], th.SE2(x_y_theta=meas[:, e].clone(), name=f'z{e}'),
                                     weight, name=f'e{e}'))
            inputs[f'w{e}'] = sqrt_w[e:e + 1]
        optimizer = th.LevenbergMarquardt(objective, linear_solver_cls=th.CholmodSparseSolver,
                                          max_iterations=spec.get('max_iterations', 20), vectorize=True)
        layer = th.TheseusLayer(optimizer)
        kwargs = {'backward_mode': mode, 'damping': 1e-3}  # CHOLMOD: no adaptive damping in Theseus
        if mode == 'truncated':
            kwargs['backward_num_iterations'] = 3
        grad = spec['backward']
        with torch.set_grad_enabled(grad):
            sol, _ = layer.forward(inputs, optimizer_kwargs=kwargs)
            xy = torch.stack([sol[f'x{k}'][:, :2] for k in range(len(data.poses))], 1)
            loss = ((xy - target[:, :2]) ** 2).sum()
            if grad:
                loss.backward()
        times.append(time.perf_counter() - t0)
        with torch.no_grad():
            xyt = torch.stack([sol[f'x{k}'] for k in range(len(data.poses))], 1)
            x = torch.cat((xyt[..., :2], torch.atan2(xyt[..., 3], xyt[..., 2])[..., None]), -1)
            err = float(build(data, measurements=meas).objective.error([x]).mean())
    return {'seconds': min(times), 'error': err}


def _installed(backend: str) -> bool:
    try:
        sparse_backend(backend)
    except ImportError:
        return False
    return True


def run_theseus(python: str | None, spec: dict) -> dict | None:
    if python is None:
        return None
    cmd = [python, str(HERE), '--theseus-worker', json.dumps(spec)]
    env = dict(os.environ, PYTHONPATH=str(HERE.parents[1]))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        print(f'  theseus worker failed: {out.stderr.strip().splitlines()[-1:]}', file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_memory_mib(name: str) -> tuple[float, float]:
    """(resident MiB after imports, peak resident MiB after reading and solving ``name``) of a
    child process."""
    root = str(HERE.parents[1])
    code = (f'import resource, sys, torch; sys.path.insert(0, {root!r}); torch.set_num_threads(1); '
            f'from bench.nlls import ours_lm; import gtsam; '
            f'rss = [l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1]; '
            f'ours_lm({name!r}); '
            f'print(int(rss) / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=600)
    base, peak = out.stdout.strip().splitlines()[-1].split()
    return float(base), float(peak)


# ---------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--json', help='write one row per case to this file')
    p.add_argument('--threads', type=int, default=1, help='torch intra-op threads (default 1)')
    p.add_argument('--theseus-python', default='/tmp/theseus_venv/bin/python',
                   help='python of a virtual environment with theseus-ai (skipped if missing)')
    p.add_argument('--quick', action='store_true', help='skip w10000/sphere2500 (smoke run)')
    p.add_argument('--repeat', type=int, default=2, help='runs per LM case; the fastest counts (default 2)')
    p.add_argument('--command-only', action='store_true',
                   help='only the diffopt-ros pgo subprocess and thread rows (w10000, sphere2500)')
    p.add_argument('--no-thread-rows', action='store_true',
                   help='skip the command runs with --threads 1 and 2 (the thread rows)')
    p.add_argument('--crossover-only', action='store_true',
                   help='only the supernodal / cholespy rows on growing subgraphs (the auto threshold)')
    p.add_argument('--lm-only', action='store_true',
                   help='only the w10000 and sphere2500 LM rows (GTSAM and every installed backend)')
    p.add_argument('--damping-only', action='store_true',
                   help="only LM with GTSAM's and Nielsen's damping on sphere2500, victoria_park, w20000")
    p.add_argument('--theseus-worker', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.theseus_worker:
        print(json.dumps(theseus_worker(json.loads(args.theseus_worker))))
        return 0
    theseus_py = args.theseus_python if args.theseus_python and Path(args.theseus_python).exists() else None
    if theseus_py is None:
        print('Theseus rows skipped: no Theseus environment (pass --theseus-python PATH; see module doc)')
    print(f'machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, '
          f'torch {torch.__version__}, {args.threads} thread(s), sparse backends installed: '
          f'{", ".join(b for b in ("cholmod", "supernodal", "qdldl", "cholespy") if _installed(b))}, '
          f'load average {os.getloadavg()[0]:.1f}')
    rows = []

    def row(**kw):
        rows.append(kw)
        cells = '  '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in kw.items())
        print(cells, flush=True)

    if args.damping_only:
        damping_rows(row)
        if args.json:
            Path(args.json).write_text(json.dumps({'machine': platform.platform(), 'rows': rows}, indent=1))
        return 0
    if args.crossover_only:
        crossover_rows(row)
        if args.json:
            Path(args.json).write_text(json.dumps({'machine': platform.platform(), 'rows': rows}, indent=1))
        return 0
    if args.command_only:
        command_rows(row, ['w10000', 'sphere2500'], args.repeat, not args.no_thread_rows)
        if args.json:
            Path(args.json).write_text(json.dumps({'machine': platform.platform(), 'rows': rows}, indent=1))
        return 0
    backends = [b for b in ('cholmod', 'supernodal', 'qdldl', 'cholespy') if _installed(b)]
    cases = ['w100'] if args.quick else ['w100', 'w10000', 'sphere2500']
    for name in (cases[1:] if args.lm_only else cases):
        # best of --repeat runs, GTSAM and ours interleaved, so both see the same machine load
        # w100: the backend sparse_backend('auto') takes for a small 2D graph
        small = [b for b in ('cholmod', 'qdldl', 'cholespy', 'supernodal') if _installed(b)][:1]
        names = backends if name != 'w100' else small
        runs = {b: [] for b in ['gtsam', *names]}
        for _ in range(args.repeat):
            runs['gtsam'].append(gtsam_lm(name))
            for backend in names:
                runs[backend].append(ours_lm(name, backend=backend))
        g_s, g_err, g_it, _ = min(runs['gtsam'])
        g_cpu = min(r[3] for r in runs['gtsam'])
        for backend in names:
            o_s, o_err, o_it, kind, _ = min(runs[backend])
            o_cpu = min(r[4] for r in runs[backend])
            r = dict(case=f'{name} LM', device='cpu', ours_s=o_s, ours_cpu_s=o_cpu, ours_error=o_err,
                     ours_iterations=o_it, linear=kind, gtsam_s=g_s, gtsam_cpu_s=g_cpu,
                     gtsam_error=g_err, gtsam_iterations=g_it, time_ratio_vs_gtsam=o_s / g_s,
                     cpu_ratio_vs_gtsam=o_cpu / g_cpu, error_rel_diff=(o_err - g_err) / g_err)
            if name != 'w100':
                row(**r)
        if name == 'w100':
            t = run_theseus(theseus_py, {'B': 1, 'mode': 'implicit', 'backward': False,
                                         'max_iterations': 100, 'clean': True})
            if t:
                r.update(theseus_s=t['seconds'], theseus_error=t['error'],
                         speedup_vs_theseus=t['seconds'] / o_s)
            row(**r)
    if args.lm_only:
        if args.json:
            Path(args.json).write_text(json.dumps({'machine': platform.platform(), 'rows': rows}, indent=1))
        return 0
    B = 16
    for mode in MODES:
        o_s, o_err = ours_layer(B, mode)
        r = dict(case=f'w100x{B} fwd+bwd {mode}', device='cpu', ours_s=o_s, ours_error=o_err)
        t = run_theseus(theseus_py, {'B': B, 'mode': mode, 'backward': True})
        if t:
            r.update(theseus_s=t['seconds'], theseus_error=t['error'], speedup_vs_theseus=t['seconds'] / o_s)
        row(**r)
    if not args.quick:
        command_rows(row, ['w10000', 'sphere2500'], args.repeat, not args.no_thread_rows)
        crossover_rows(row)
        base, peak = peak_memory_mib('w10000')
        row(case='w10000 peak memory', device='cpu', rss_after_imports_mib=base, peak_rss_mib=peak)
    if torch.cuda.is_available():
        for name in ('w10000', 'sphere2500'):
            o_s, o_err, o_it, kind, _ = ours_lm(name, 'cuda')
            row(case=f'{name} LM', device='cuda', ours_s=o_s, ours_error=o_err, ours_iterations=o_it,
                linear=kind)
        o_s, o_err = ours_layer(256, 'implicit', 'cuda')
        row(case='w100x256 fwd+bwd implicit', device='cuda', ours_s=o_s, ours_error=o_err)
    else:
        print('GPU rows skipped: CUDA not available')
    if args.json:
        Path(args.json).write_text(json.dumps({'machine': platform.platform(), 'threads': args.threads,
                                               'rows': rows}, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
