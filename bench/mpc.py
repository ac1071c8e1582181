"""Speed and memory of diffopt_ros.mpc against mpc.pytorch (PyPI ``mpc``), same process, same problems.

Cases (horizon ``T`` = control steps; mpc.pytorch gets ``T+1`` knots, i.e. the same problem):

* ``diffdrive`` - the robot model ``DiffDriveLag`` T=30 with control bounds, batch 1: cold start to
  convergence, and a warm-started receding-horizon step (shifted previous solution; median over a
  closed-loop run) - the 50 Hz control-loop numbers. ``diffdrive+rate`` adds the control-rate
  penalty the node uses (ours only: mpc.pytorch has no per-sample previous control).
* ``closedloop`` - the ``diffdrive`` closed loop solved by ours in float32 and float64 (default
  ``cost_tolerance``, and 2e-4: float32's floor) and by CasADi (PyPI ``casadi``: IPOPT, and its SQP
  method with the qrqp QP solver, exact Hessian, multiple shooting), each warm-started from its own
  previous solution on the same sequence of states; the optimum gap is each solution's cost (our
  model and cost, float64) relative to the best solver's on the same step (largest over the loop).
* ``pendulum``, ``cartpole`` (mpc.pytorch's ``env_dx``, T=20) and ``lti`` (n_x=8, n_u=4, T=30, bounds):
  forward and forward+backward at batch 1, 16, 256 (and up to 4096 on a GPU), plus peak memory.

    .venv/bin/python bench/mpc.py [--quick] [--threads 1] [--device cpu|cuda] [--json FILE]
                                  [--problems diffdrive,pendulum,cartpole,lti,closedloop] [--batches 1,16,256]
                                  [--clock cpu|wall]

Prints a Markdown table; ``--json`` writes one row per case (problem, T, batch, mode, seconds of
ours and of the peer, ratio, iterations, converged, peak memory). Times are medians of the
process's CPU time on a CPU with one torch thread (what a single-threaded solve costs, whatever
else the machine runs), wall time otherwise (``--clock wall`` forces it).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from diffopt_ros.mpc import (
    MPC,
    Cartpole,
    DiffDriveLag,
    LinearDynamics,
    Pendulum,
    QuadraticCost,
    TrackingCost,
    rollout,
    shift_one_step,
)

# this file is bench/mpc.py: keep its folder off the path so that `import mpc` finds the peer package
sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != os.path.dirname(os.path.abspath(__file__))]
try:
    from mpc import mpc as peer_mpc
    from mpc import util as peer_util
    from mpc.env_dx.cartpole import CartpoleDx
    from mpc.env_dx.pendulum import PendulumDx
except ImportError:                                  # the peer is a bench/test dependency only
    peer_mpc = None
else:
    # mpc.pytorch 0.0.6's util.bdiag indexes with a uint8 mask, which current torch rejects (its
    # backward with active bounds raised "masked_fill_ only supports boolean masks"); the same
    # batched diagonal matrix, built the way current torch allows
    peer_util.bdiag = torch.diag_embed

TOL, ITERS = 1e-4, 50


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def quiet(fn):
    """Run ``fn`` with stdout silenced (mpc.pytorch prints pnqp warnings)."""
    with open(os.devnull, 'w') as null, contextlib.redirect_stdout(null):
        return fn()


# the clock of every timing: the process's CPU time by default on a CPU with one torch thread (on a
# shared machine other jobs stretch wall time, not a single-threaded process's CPU time), else wall
clock = time.perf_counter


def timed(fns: list, device, budget: float, max_reps: list[int]) -> list[tuple[float, object]]:
    """Median time (:data:`clock`) and last result of each function in ``fns``, called in
    ``min(max_reps)`` interleaved rounds, each function ``max_reps / rounds`` times a round (so that
    the repetitions of a fast function spread over the slow one's, and a change in the machine's
    load hits both alike); a function stops after ``max_reps`` calls or ``budget`` seconds (at least
    one call)."""
    rounds = min(max_reps)
    times, outs = [[] for _ in fns], [None] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            for _ in range(math.ceil(max_reps[i] / rounds)):
                if times[i] and (len(times[i]) >= max_reps[i] or sum(times[i]) >= budget):
                    break
                sync(device)
                start = clock()
                outs[i] = fn()
                sync(device)
                times[i].append(clock() - start)
    return [(statistics.median(t), out) for t, out in zip(times, outs)]


class _LiveTensorBytes(TorchDispatchMode):
    """Bytes of the tensor storages that operations create and that are still alive, and their peak.

    Every output of every operation (the backward's too) is looked at once per storage; a
    finalizer on the storage (torch keeps one Python object per live storage) takes its bytes off
    when it is freed. Constant memory, unlike the profiler's event log (which needs 15+ GB for
    mpc.pytorch's nonlinear solves at batch 256).
    """

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        self._seen.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == 'cpu':
                storage = t.untyped_storage()
                key = id(storage)
                if key not in self._seen:
                    self._seen.add(key)
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, key, storage.nbytes())
        return out


def peak_memory(which: str, problem: Problem, batch: int) -> int | None:
    """Peak memory (bytes) of one forward+backward solve by ``which`` ('ours' or 'peer'), after a warm-up.

    CUDA: the allocator's peak. CPU: the peak of the bytes held by tensors that the solve's
    operations create (:class:`_LiveTensorBytes`); the same method for both solvers.
    """
    fn = make_forward_backward(which, problem, batch)
    quiet(fn)
    if problem.device.type == 'cuda':
        torch.cuda.synchronize(problem.device)
        torch.cuda.reset_peak_memory_stats(problem.device)
        base = torch.cuda.memory_allocated(problem.device)
        quiet(fn)
        torch.cuda.synchronize(problem.device)
        return torch.cuda.max_memory_allocated(problem.device) - base
    with _LiveTensorBytes() as tracker:
        quiet(fn)
    return tracker.peak


def make_forward_backward(which: str, problem: Problem, batch: int):
    """A closure running one forward+backward solve of ``problem`` at ``batch`` by ``which``."""
    x0 = problem.initial_states(batch)
    mpc = problem.ours(batch, 'implicit')

    def run():
        x = x0.clone().requires_grad_(True)
        if which == 'ours':
            sol = mpc(x)
            loss_of(sol.states, sol.controls).backward()
        else:
            loss_of(*problem.peer(x, grad=True)).backward()
    return run


class Problem:
    """One benchmark problem for both solvers: model, cost, bounds, initial states."""

    def __init__(self, name: str, T: int, device: torch.device, dtype: torch.dtype):
        self.name, self.T, self.device, self.dtype = name, T, device, dtype
        like = dict(device=device, dtype=dtype)
        g = torch.Generator().manual_seed(0)
        if name in ('pendulum', 'cartpole'):
            env = PendulumDx() if name == 'pendulum' else CartpoleDx()
            env.params = env.params.to(**like)
            q, p = (t.to(**like) for t in env.get_true_obj())
            self.model = (Pendulum() if name == 'pendulum' else Cartpole()).to(**like)
            self.peer_dx, self.lower, self.upper = env, env.lower, env.upper
        elif name == 'lti':
            n, m = 8, 4
            A = torch.eye(n) + 0.1 * torch.randn(n, n, generator=g)
            A = A / torch.linalg.eigvals(A).abs().max() * 1.02
            Bm = torch.randn(n, m, generator=g) * 0.5
            self.model = LinearDynamics(A, Bm).to(**like)
            self.peer_dx = peer_mpc.LinDx(torch.cat((A, Bm), 1).to(**like)) if peer_mpc else None
            q = torch.cat((torch.ones(n), 0.1 * torch.ones(m))).to(**like)
            p = torch.zeros(n + m, **like)
            self.lower, self.upper = -1.0, 1.0
        else:                                                    # diffdrive: goal tracking
            self.model = DiffDriveLag(dt=0.05).to(**like)
            self.peer_dx = self.model
            w = torch.tensor([10., 10., 1., 0.1, 0.1, 0.1, 0.1], **like)
            self.goal = torch.tensor([2.0, 1.0, 0.0, 0.0, 0.0], **like)
            q, p = w, torch.cat((-w[:5] * self.goal, torch.zeros(2, **like)))
            self.lower = torch.tensor([-0.5, -1.5], **like)
            self.upper = torch.tensor([1.0, 1.5], **like)
        n_x = self.model.n_x
        self.q, self.p = q, p
        self.cost = QuadraticCost(torch.diag(q), p, n_x=n_x, C_final=torch.diag(q[:n_x]), c_final=p[:n_x])
        if name != 'diffdrive':
            # forward+backward differentiates w.r.t. the same quantities on both sides: x_init and the
            # cost (mpc.pytorch: q, p; ours: the QuadraticCost's C, c, C_final, c_final), with the
            # dynamics fixed as mpc.pytorch's env_dx / LinDx keep them
            self.model.requires_grad_(False)
            self.cost = QuadraticCost(*(torch.nn.Parameter(t) for t in (torch.diag(q), p)), n_x=n_x,
                                      C_final=torch.nn.Parameter(torch.diag(q[:n_x])),
                                      c_final=torch.nn.Parameter(p[:n_x].clone()))

    def initial_states(self, batch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(batch)
        like = dict(device=self.device, dtype=self.dtype)
        if self.name == 'pendulum':
            th = (torch.rand(batch, generator=g) * 2 - 1) * math.pi
            return torch.stack((th.cos(), th.sin(), 0.5 * torch.randn(batch, generator=g)), -1).to(**like)
        if self.name == 'cartpole':
            th = 0.5 * torch.randn(batch, generator=g)
            r = 0.3 * torch.randn(batch, 3, generator=g)
            return torch.stack((r[:, 0], r[:, 1], th.cos(), th.sin(), r[:, 2]), -1).to(**like)
        if self.name == 'lti':
            return (2 * torch.randn(batch, 8, generator=g)).to(**like)
        return (0.2 * torch.randn(batch, 5, generator=g) * torch.tensor([1, 1, 1, 0, 0])).to(**like)

    def ours(self, batch: int, backward: str = 'none', cost=None) -> MPC:
        return MPC(self.model, self.cost if cost is None else cost, self.T, u_lower=self.lower,
                   u_upper=self.upper, tolerance=TOL, max_iterations=ITERS, backward=backward)

    def peer(self, x0: torch.Tensor, u_init: torch.Tensor | None = None, grad: bool = False):
        """mpc.pytorch on the same problem; returns states ``(B, T+1, n_x)``, controls ``(B, T, n_u)``."""
        with torch.enable_grad():                                # its Jacobians use autograd
            return quiet(lambda: self._peer(x0, u_init, grad))

    def _peer(self, x0, u_init, grad):
        batch, n = x0.shape[0], self.q.shape[0]
        T = self.T + 1
        q, p = self.q, self.p
        if grad:
            q, p = q.clone().requires_grad_(), p.clone().requires_grad_()
        C, c = torch.diag_embed(q).expand(T, batch, n, n), p.expand(T, batch, n)
        dx = self.peer_dx
        if self.name == 'lti':
            dx = peer_mpc.LinDx(dx.F.expand(T - 1, batch, *dx.F.shape[-2:]))

        def bound(b):
            return b if isinstance(b, float) else b.expand(T, batch, b.shape[-1])

        solver = peer_mpc.MPC(self.model.n_x, self.model.n_u, T, u_lower=bound(self.lower),
                              u_upper=bound(self.upper), lqr_iter=ITERS, verbose=-1, eps=TOL, n_batch=batch,
                              exit_unconverged=False, detach_unconverged=False, backprop=grad,
                              u_init=None if u_init is None else u_init.transpose(0, 1),
                              grad_method=peer_mpc.GradMethods.AUTO_DIFF)
        x, u, _ = solver(x0, peer_mpc.QuadCost(C, c), dx)
        return x.transpose(0, 1), u.transpose(0, 1)[:, :-1]


def loss_of(states: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
    return states.square().sum() + controls.square().sum()


def row(problem, batch, mode, ours_s, peer_s, iterations, converged, mem=None, peer_mem=None):
    return dict(problem=problem.name if isinstance(problem, Problem) else problem,
                T=problem.T if isinstance(problem, Problem) else 30, batch=batch, mode=mode,
                device=str(problem.device) if isinstance(problem, Problem) else 'cpu',
                seconds_ours=ours_s, seconds_peer=peer_s,
                ratio=None if peer_s is None else peer_s / ours_s, iterations=iterations,
                converged=converged, peak_bytes_ours=mem, peak_bytes_peer=peer_mem)


def bench_batch(problem: Problem, batch: int, args, with_peer: bool) -> list[dict]:
    rows = []
    x0 = problem.initial_states(batch)
    budget, reps = (0.5, 3) if args.quick else (2.0, 20)
    peer_reps = 1 if args.quick or batch >= 256 else 5
    for mode in ('forward', 'forward+backward'):
        grad = mode != 'forward'
        mpc = problem.ours(batch, 'implicit' if grad else 'none')

        def run_ours(mpc=mpc, grad=grad):
            x = x0.clone().requires_grad_(grad)
            sol = mpc(x)
            if grad:
                loss_of(sol.states, sol.controls).backward()
            return sol

        def run_peer(grad=grad):
            x = x0.clone().requires_grad_(grad)
            xs, us = problem.peer(x, grad=grad)
            if grad:
                loss_of(xs, us).backward()

        run_ours()                                              # warm-up (first-call costs)
        t_peer = mem = peer_mem = None
        peer_ok = with_peer
        if peer_ok:
            try:
                run_peer()                                      # warm-up, and does the peer run?
            except (RuntimeError, AssertionError) as e:            # the peer fails on some cases
                print(f'<!-- mpc.pytorch failed on {problem.name} batch {batch} {mode}: {str(e)[:80]} -->')
                peer_ok = False
        fns, max_reps = ([run_ours, run_peer], [reps, peer_reps]) if peer_ok else ([run_ours], [reps])
        times = timed(fns, problem.device, budget, max_reps)
        (t_ours, sol), t_peer = times[0], times[1][0] if peer_ok else None
        if grad and batch == 256 and not args.quick:
            mem = peak_memory('ours', problem, batch)
            peer_mem = peak_memory('peer', problem, batch) if peer_ok else None
        rows.append(row(problem, batch, mode, t_ours, t_peer, float(sol.iterations.float().mean()),
                        float(sol.converged.float().mean()), mem, peer_mem))
    return rows


def bench_control_loop(args, device, dtype, with_peer: bool) -> list[dict]:
    """diffdrive T=30, batch 1: cold solve and warm-started closed-loop steps."""
    problem = Problem('diffdrive', 30, device, dtype)
    mpc = problem.ours(1)
    rate_cost = TrackingCost([10., 10., 1., 0.1, 0.1], [0.1, 0.1], terminal_scale=1., rate_weight=[0.5, 0.5],
                             angle_indices=(2,)).to(device=device, dtype=dtype)
    mpc_rate = problem.ours(1, cost=rate_cost)
    x0 = problem.initial_states(1)
    goal = problem.goal.expand(1, 5)
    steps = 10 if args.quick else 40
    rows = []
    with torch.no_grad():
        for name, solver, kw in (('diffdrive', mpc, {}), ('diffdrive+rate', mpc_rate, {'target': goal})):
            solver(x0, **kw)                                    # warm-up (first-call costs)
            fns, reps = [lambda s=solver, k=kw: s(x0, **k)], [10]
            if with_peer and name == 'diffdrive':
                fns, reps = fns + [lambda: problem.peer(x0)], reps + [1 if args.quick else 2]
            times = timed(fns, device, 1.0, reps)
            (t_cold, sol), t_peer = times[0], times[1][0] if len(times) > 1 else None
            rows.append(row(Problem(name, 30, device, dtype) if name == 'diffdrive' else problem, 1, 'cold',
                            t_cold, t_peer, float(sol.iterations[0]), bool(sol.converged[0])))
            rows[-1]['problem'] = name
            # closed loop: apply u_0 to the model, shift, warm start
            x, times, iters, conv = x0, [], [], []
            for _ in range(steps):
                kwargs = dict(kw, u_init=shift_one_step(sol.controls))
                if name == 'diffdrive+rate':
                    kwargs['u_prev'] = sol.controls[:, 0]
                x = rollout(problem.model, x, sol.controls[:, :1])[:, 1]
                sync(device)
                start = clock()
                sol = solver(x, **kwargs)
                sync(device)
                times.append(clock() - start)
                iters.append(float(sol.iterations[0]))
                conv.append(bool(sol.converged[0]))
            t_peer = None
            if with_peer and name == 'diffdrive':
                xp, up = problem.peer(x0)
                peer_times = []
                for _ in range(3 if args.quick else 5):
                    xn = rollout(problem.model, xp[:, 0], up[:, :1])[:, 1]
                    start = clock()
                    xp, up = problem.peer(xn, u_init=torch.cat((shift_one_step(up), up[:, -1:]), 1))
                    peer_times.append(clock() - start)
                t_peer = statistics.median(peer_times)
            rows.append(row(problem, 1, 'warm step', statistics.median(times), t_peer,
                            statistics.mean(iters), all(conv)))
            rows[-1]['problem'] = name
    return rows


def casadi_solver(model: DiffDriveLag, q: torch.Tensor, p: torch.Tensor, T: int, lower, upper, method: str):
    """The diff-drive problem of :class:`Problem` as a CasADi NLP in multiple-shooting form (states
    and controls as variables, the dynamics as equality constraints), solved by IPOPT or by CasADi's
    SQP method with its qrqp QP solver (exact Hessian). Returns ``solve(x0 (5,), guess) -> (x, u,
    guess, iterations)`` with ``x (T+1, 5)``, ``u (T, 2)`` float64 numpy arrays and ``guess`` the
    warm start of the next call (the solution shifted by one step, and its multipliers)."""
    import casadi as ca
    import numpy as np

    keep, drive = (t.detach().double().numpy() for t in model._coefficients())
    dt = model.dt
    n_x, n_u = 5, 2

    def step(x, u):
        v_next = keep[0] * x[3] + drive[0] * u[0]
        w_next = keep[1] * x[4] + drive[1] * u[1]
        v_m, w_m = 0.5 * (x[3] + v_next), 0.5 * (x[4] + w_next)
        heading = x[2] + 0.5 * dt * w_m
        return ca.vertcat(x[0] + dt * v_m * ca.cos(heading), x[1] + dt * v_m * ca.sin(heading),
                          x[2] + dt * w_m, v_next, w_next)

    q, p = q.double().numpy(), p.double().numpy()
    X, U, x0 = ca.SX.sym('x', n_x, T + 1), ca.SX.sym('u', n_u, T), ca.SX.sym('x0', n_x)
    J, g = 0, [X[:, 0] - x0]
    for t in range(T):
        tau = ca.vertcat(X[:, t], U[:, t])
        J += 0.5 * ca.dot(q * tau, tau) + ca.dot(p, tau)
        g.append(X[:, t + 1] - step(X[:, t], U[:, t]))
    J += 0.5 * ca.dot(q[:n_x] * X[:, T], X[:, T]) + ca.dot(p[:n_x], X[:, T])
    nlp = {'x': ca.vertcat(ca.vec(X), ca.vec(U)), 'p': x0, 'f': J, 'g': ca.vertcat(*g)}
    if method == 'ipopt':
        options = {'print_time': False, 'ipopt.print_level': 0, 'ipopt.sb': 'yes', 'ipopt.tol': 1e-9,
                   'ipopt.warm_start_init_point': 'yes', 'ipopt.linear_solver': 'mumps'}
        solver = ca.nlpsol('ipopt', 'ipopt', nlp, options)
    else:
        options = {'qpsol': 'qrqp', 'print_time': False, 'print_header': False, 'print_iteration': False,
                   'print_status': False, 'tol_pr': 1e-9, 'tol_du': 1e-9, 'max_iter': 100,
                   'qpsol_options': {'print_iter': False, 'print_header': False, 'print_info': False,
                                     'error_on_fail': False}}
        solver = ca.nlpsol('sqp', 'sqpmethod', nlp, options)
    n_vars = n_x * (T + 1) + n_u * T
    lbx, ubx = np.full(n_vars, -np.inf), np.full(n_vars, np.inf)
    lbx[n_x * (T + 1):] = np.tile(np.asarray(lower, dtype=float), T)
    ubx[n_x * (T + 1):] = np.tile(np.asarray(upper, dtype=float), T)

    def solve(state, guess):
        start = guess or {'x0': np.concatenate((np.tile(state, T + 1), np.zeros(n_u * T)))}
        res = solver(p=state, lbx=lbx, ubx=ubx, lbg=0.0, ubg=0.0, **start)
        z = np.asarray(res['x']).ravel()
        x = z[:n_x * (T + 1)].reshape(T + 1, n_x)
        u = z[n_x * (T + 1):].reshape(T, n_u)
        shifted = np.concatenate((x[1:], x[-1:]), 0).ravel(), np.concatenate((u[1:], u[-1:]), 0).ravel()
        nxt = {'x0': np.concatenate(shifted), 'lam_x0': np.asarray(res['lam_x']).ravel(),
               'lam_g0': np.asarray(res['lam_g']).ravel()}
        return x, u, nxt, int(solver.stats().get('iter_count', -1))

    return solve


def bench_closed_loop_peers(args) -> list[dict]:
    """The diff-drive closed loop (T=30, batch 1) solved by ours in float32 and float64 and by CasADi
    (IPOPT; SQP with qrqp), each warm-started from its own previous solution, on the same sequence of
    states (the closed loop of our float64 solve). Each solution's cost is evaluated with our model
    and cost in float64 and compared with the best of all solvers on that step (the optimum gap)."""
    import numpy as np

    steps = 10 if args.quick else 40
    ref = Problem('diffdrive', 30, torch.device('cpu'), torch.float64)
    ref_mpc = ref.ours(1)
    ref_mpc.tolerance, ref_mpc.cost_tolerance = 1e-10, 1e-14
    x = ref.initial_states(1)
    sol = ref_mpc.plan(x)
    states = []
    with torch.no_grad():
        for _ in range(steps):
            x = rollout(ref.model, x, sol.controls[:, :1])[:, 1]
            sol = ref_mpc.plan(x, u_init=shift_one_step(sol.controls))
            states.append(x[0])

    @torch.no_grad()
    def true_cost(u: np.ndarray, x0: torch.Tensor) -> float:
        controls = torch.as_tensor(u, dtype=torch.float64)[None]
        return float(ref.cost.total(rollout(ref.model, x0[None], controls), controls))

    solvers = {}
    for dtype, cost_tolerance in ((torch.float32, 1e-10), (torch.float64, 1e-10), (torch.float64, 2e-4)):
        problem = Problem('diffdrive', 30, torch.device('cpu'), dtype)
        mpc = problem.ours(1)
        mpc.cost_tolerance = cost_tolerance
        name = f'ours {str(dtype)[6:]}'
        if cost_tolerance != 1e-10:
            name += f', cost_tolerance {cost_tolerance:g}'

        def ours(state, guess, mpc=mpc, dtype=dtype):
            s = mpc.plan(state.to(dtype)[None], u_init=guess)
            return None, s.controls[0].double().numpy(), shift_one_step(s.controls), float(s.iterations[0])

        solvers[name] = ours
    casadi_ok = True
    try:
        for method, label in (('ipopt', 'CasADi IPOPT'), ('sqp', 'CasADi SQP + qrqp')):
            solve = casadi_solver(ref.model, ref.q, ref.p, 30, ref.lower.numpy(), ref.upper.numpy(), method)

            def peer(state, guess, solve=solve):
                _, u, nxt, iterations = solve(state.numpy(), guess)
                return None, u, nxt, float(iterations)

            solvers[label] = peer
    except ImportError:
        casadi_ok = False
    results = {name: {'times': [], 'iters': [], 'costs': []} for name in solvers}
    for rnd in range(1 if args.quick else 3):
        guesses = dict.fromkeys(solvers)
        for i, state in enumerate(states):
            for name, fn in solvers.items():
                start = clock()
                _, u, guesses[name], iterations = fn(state, guesses[name])
                elapsed = clock() - start
                if rnd == 0:
                    results[name]['iters'].append(iterations)
                    results[name]['costs'].append(true_cost(u, state))
                if i > 0:                                  # the first solve is a cold start
                    results[name]['times'].append(elapsed)
    best = np.min(np.array([r['costs'] for r in results.values()]), 0)
    rows = []
    for name, r in results.items():
        gap = np.max((np.array(r['costs']) - best) / np.abs(best))
        rows.append(dict(problem='diffdrive closed loop', T=30, batch=1, mode='warm step', solver=name,
                         seconds=statistics.median(r['times']), iterations=statistics.mean(r['iters'][1:]),
                         optimum_gap=float(gap), steps=steps, casadi=casadi_ok))
    return rows


def fmt_s(s: float | None) -> str:
    if s is None:
        return '-'
    return f'{s * 1e3:.2f} ms' if s < 1 else f'{s:.2f} s'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description='diffopt_ros.mpc vs mpc.pytorch: speed and memory')
    parser.add_argument('--threads', type=int, default=1, help='torch intra-op threads (default 1)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--dtype', default='float32', choices=('float32', 'float64'))
    parser.add_argument('--quick', action='store_true', help='fewer repetitions and batches (smoke test)')
    parser.add_argument('--no-peer', action='store_true', help='skip mpc.pytorch')
    parser.add_argument('--json', help='also write one JSON row per case to this file')
    parser.add_argument('--problems', default='diffdrive,pendulum,cartpole,lti',
                        help='comma-separated subset of diffdrive,pendulum,cartpole,lti,closedloop (run in '
                             'parts; closedloop: ours float32/float64 and CasADi IPOPT and SQP+qrqp on the '
                             'diff-drive closed loop, CPU)')
    parser.add_argument('--batches', help='comma-separated batch sizes (default 1,16,256; 1024,4096 on CUDA)')
    parser.add_argument('--clock', choices=('cpu', 'wall'),
                        help='what is timed: the process CPU time (default on a CPU with --threads 1) or '
                             'wall time (default otherwise; always on CUDA)')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    global clock
    cpu_clock = args.clock == 'cpu' or (args.clock is None and args.device == 'cpu' and args.threads == 1)
    clock = time.process_time if cpu_clock and args.device == 'cpu' else time.perf_counter
    warnings.filterwarnings('ignore')
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    with_peer = peer_mpc is not None and not args.no_peer
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else (platform.processor()
                                                                             or platform.machine())
    print(f'# diffopt_ros.mpc vs mpc.pytorch - {name}, torch {torch.__version__}, {args.dtype}, '
          f'{torch.get_num_threads()} thread(s), '
          f"{'process CPU' if clock is time.process_time else 'wall'} time, medians\n")
    print('| problem | T | batch | mode | ours | mpc.pytorch | speed-up | iterations | converged '
          '| peak memory ours / peer |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    rows = []

    def emit(new_rows):
        for r in new_rows:
            mem = '-' if r['peak_bytes_ours'] is None else (
                f"{r['peak_bytes_ours'] / 2**20:.1f} / "
                + ('-' if r['peak_bytes_peer'] is None else f"{r['peak_bytes_peer'] / 2**20:.1f}") + ' MiB')
            ratio = '-' if r['ratio'] is None else f"{r['ratio']:.1f}x"
            print(f"| {r['problem']} | {r['T']} | {r['batch']} | {r['mode']} | {fmt_s(r['seconds_ours'])} "
                  f"| {fmt_s(r['seconds_peer'])} | {ratio} | {r['iterations']:.1f} | {r['converged']} "
                  f"| {mem} |", flush=True)
        rows.extend(new_rows)

    problems = args.problems.split(',')
    if 'diffdrive' in problems:
        emit(bench_control_loop(args, device, dtype, with_peer))
    if 'closedloop' in problems:
        peers = bench_closed_loop_peers(args)
        print('\n| solver (diff-drive T=30 closed loop, batch 1) | warm step | iterations | optimum gap |')
        print('|---|---|---|---|')
        for r in peers:
            print(f"| {r['solver']} | {fmt_s(r['seconds'])} | {r['iterations']:.2f} "
                  f"| {r['optimum_gap']:.1e} |", flush=True)
        rows.extend(peers)
    batches = [1, 16, 256] + ([1024, 4096] if device.type == 'cuda' else [])
    if args.quick:
        batches = [1, 16]
    if args.batches:
        batches = [int(b) for b in args.batches.split(',')]
    for problem_name, T in (('pendulum', 20), ('cartpole', 20), ('lti', 30)):
        if problem_name not in problems or (problem_name != 'lti' and peer_mpc is None):
            continue
        problem = Problem(problem_name, T, device, dtype)
        for batch in batches:
            emit(bench_batch(problem, batch, args, with_peer and batch <= 1024))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
