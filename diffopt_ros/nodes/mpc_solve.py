"""The MPC solve of ``mpc_node``'s control tick: on a worker thread, within a wall-time budget.

:class:`PlanKeeper` holds the current plan (a :class:`~diffopt_ros.mpc.receding.ControlStep`)
and runs each solve on a :class:`SolveWorker` thread, warm-started from the plan shifted to now.
A solve that has not ended by its deadline is left running: the tick commands the previous plan
shifted to now (:meth:`PlanKeeper.fallback`; zero once it runs out or its state is older than
``state_timeout``), and the late result becomes the plan (the next warm start) if it is still for
the same solver and target. The next tick waits for that solve up to its own deadline (not
less): every tick's command goes out by its deadline, so the commands keep the control rate's
spacing while solves overrun (a tick that fell back at once would send its command a budget
earlier than the tick before it). A failed solve or non-finite controls also fall back. Times:
node clock for plan times and stamps (s), ``time.perf_counter()`` for deadlines.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future, wait

import numpy as np

from diffopt_ros.mpc.receding import ControlStep, RecedingHorizonSolver, advance_plan


class PlanKeeper:
    """The plan of the last solve, the solve in flight, and the fallback command.

    Attributes:
        plan: the last adopted solve, or None (then the fallback is zero).
        plan_time: node time (s) of the tick that started the plan's solve.
        plan_stamp: stamp (s) of the state the plan starts from.
    """

    def __init__(self):
        self.plan: ControlStep | None = None
        self.plan_time = 0.0
        self.plan_stamp = 0.0
        self._pending = None     # (future, solver, tick time, state stamp, target seq) overrunning
        self._worker = SolveWorker()

    def forget(self) -> None:
        """Drop the plan and any solve in flight (the node clock jumped back)."""
        self.plan = self._pending = None

    def stop(self) -> None:
        """End the worker thread (see :meth:`SolveWorker.stop`)."""
        self._worker.stop()

    def fallback(self, now: float, state_timeout: float, dt: float) -> tuple[float, float]:
        """The plan's command (its ``commands``, as sent on cmd_vel) at node time ``now`` (s): the
        plan shifted to now while it lasts and its state is not older than ``state_timeout`` (s),
        else zero; ``dt`` its step (s)."""
        plan = self.plan
        if plan is None or now - self.plan_stamp > state_timeout:
            return (0.0, 0.0)
        shifted = advance_plan(plan.commands, now - self.plan_time, dt, hold_last=False)
        return (float(shifted[0, 0]), float(shifted[0, 1]))

    def solve(self, solver: RecedingHorizonSolver, state: np.ndarray, reference: np.ndarray,
              last_cmd: np.ndarray, now: float, stamp: float, seq: int, deadline: float,
              stats, logger, state_timeout: float):
        """One tick's command (a row of :attr:`ControlStep.commands`: ``(v_cmd, omega_cmd)``, or a
        car's ``(v_cmd, steering angle)``) and its new solution (None when it fell back).

        Args:
            solver: the node's current solver.
            state: ``(5,)`` measured state.
            reference: ``(T, 5)`` reference.
            last_cmd: ``(2,)`` command sent last (the solver turns it into the rate term's
                previous control).
            now: node time of the tick (s).
            stamp: stamp of ``state`` (s).
            seq: the node's target counter: a late solve for an older target is dropped.
            deadline: ``time.perf_counter()`` by which the solve must end.
            stats: the node's :class:`~diffopt_ros.nodes.mpc_stats.MpcStats` (counts of
                overruns, failures, solves; mode and the solve's numbers), updated here.
            logger: the node's logger (throttled warnings).
            state_timeout: oldest state a fallback command may come from (s).
        """
        dt = solver.settings.dt
        if self._pending is not None:
            future, pending_solver, tick_time, plan_stamp, pending_seq = self._pending
            wait((future,), timeout=max(0.0, deadline - time.perf_counter()))
            if not future.done():
                stats.counts['overruns'] += 1
                stats.mode = 'overrun'
                return self.fallback(now, state_timeout, dt), None
            self._pending = None
            late = None if future.exception() is not None else future.result()
            if late is not None:
                stats.solve_time, stats.iterations = late.solve_time, late.iterations
                stats.converged = late.converged
            if (late is not None and pending_solver is solver and pending_seq == seq
                    and np.all(np.isfinite(late.controls))):
                self.plan, self.plan_time, self.plan_stamp = late, tick_time, plan_stamp
        warm = None
        if self.plan is not None:
            warm = advance_plan(self.plan.controls, now - self.plan_time, dt)
        future = self._worker.submit(solver.solve, state, reference, warm, last_cmd.copy(), deadline)
        try:
            solution = future.result(timeout=max(0.0, deadline - time.perf_counter()))
        except TimeoutError:
            self._pending = (future, solver, now, stamp, seq)
            stats.counts['overruns'] += 1
            stats.mode = 'overrun'
            logger.warning('MPC solve overran its budget (solve_budget): previous plan shifted to '
                           'now, then zero', throttle_duration_sec=2.0)
            return self.fallback(now, state_timeout, dt), None
        except (FloatingPointError, RuntimeError, ValueError) as exc:
            stats.counts['failures'] += 1
            stats.mode = 'fallback'
            logger.warning(f'MPC solve failed ({exc}): previous plan shifted, then zero',
                           throttle_duration_sec=2.0)
            return self.fallback(now, state_timeout, dt), None
        stats.solve_time, stats.iterations = solution.solve_time, solution.iterations
        stats.converged = solution.converged
        stats.counts['solves'] += 1
        if not np.all(np.isfinite(solution.controls)):
            stats.counts['failures'] += 1
            stats.mode = 'fallback'
            logger.warning('MPC solve gave non-finite controls: previous plan shifted, then zero',
                           throttle_duration_sec=2.0)
            return self.fallback(now, state_timeout, dt), None
        self.plan, self.plan_time, self.plan_stamp = solution, now, stamp
        return (float(solution.commands[0, 0]), float(solution.commands[0, 1])), solution


class SolveWorker:
    """One daemon thread that runs solves handed to it, one at a time, so that the control
    loop can wait for a solve with a timeout and publish on time when it overruns. (A daemon
    thread: a solve still running when the process ends does not hold the exit up.)"""

    def __init__(self):
        self._jobs: list = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def submit(self, fn, *args) -> Future:
        """Run ``fn(*args)`` on the worker thread (after the jobs before it)."""
        future = Future()
        with self._wake:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name='mpc-solve', daemon=True)
                self._thread.start()
            self._jobs.append((future, fn, args))
            self._wake.notify()
        return future

    def _run(self):
        while True:
            with self._wake:
                while not self._jobs and not self._stopped:
                    self._wake.wait()
                if self._stopped:
                    return
                future, fn, args = self._jobs.pop(0)
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the waiting tick
                future.set_exception(exc)

    def stop(self, timeout: float = 5.0):
        """End the thread after the solve in progress (which ends at its deadline) and wait
        for it up to ``timeout`` s (torch must not be running when the interpreter exits)."""
        with self._wake:
            self._stopped = True
            for future, _, _ in self._jobs:
                future.cancel()
            self._jobs.clear()
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
