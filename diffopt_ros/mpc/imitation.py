"""Imitation learning through the MPC (the pendulum / cart-pole experiment of Amos et al., 2018).

An expert MPC with the true model and cost produces trajectories from random initial states; a
learner MPC with wrong dynamics parameters (or wrong cost weights and goal) is trained by
back-propagating the imitation loss ``mean |x - x*|^2 + |u - u*|^2`` through its solution
(implicit gradients). Used by ``test/test_mpc_imitation.py`` (small) and
``bench/mpc_imitation.py`` (the table in the README).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .costs import TrackingCost
from .dynamics import Dynamics
from .ilqr import MPC
from .models import Cartpole, Pendulum

HORIZON, DT = 20, 0.05


@dataclass
class Task:
    """An imitation task: true model and cost, bounds, and the learner's wrong starting point."""

    name: str
    true_model: Dynamics
    wrong_model: Dynamics
    goal: torch.Tensor              # (n_x,)
    state_weight: list[float]
    control_weight: float
    bound: float

    def cost(self, state_weight=None, dtype=torch.float64) -> TrackingCost:
        return TrackingCost(self.state_weight if state_weight is None else state_weight,
                            [self.control_weight]).to(dtype)

    def initial_states(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``(n, n_x)`` random initial states."""
        th = (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * math.pi
        rate = torch.randn(n, generator=generator, dtype=torch.float64) * 0.5
        if self.name == 'pendulum':
            return torch.stack((th.cos(), th.sin(), rate), -1)
        th = th * 0.3
        pos, vel = (torch.randn(n, generator=generator, dtype=torch.float64) * 0.3 for _ in range(2))
        return torch.stack((pos, vel, th.cos(), th.sin(), rate), -1)


def tasks() -> dict[str, Task]:
    """The two systems of the paper with mpc.pytorch's costs (goal-tracking form)."""
    return {
        'pendulum': Task('pendulum', Pendulum(DT), Pendulum(DT, gravity=7.0, mass=1.5, length=1.3),
                         torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), [1.0, 1.0, 0.1], 0.001, 2.0),
        'cartpole': Task('cartpole', Cartpole(DT),
                         Cartpole(DT, gravity=7.0, masscart=1.4, masspole=0.15, length=0.7),
                         torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0], dtype=torch.float64),
                         [0.1, 0.1, 1.0, 1.0, 0.1], 0.001, 100.0),
    }


def make_mpc(task: Task, model: Dynamics, cost: TrackingCost) -> MPC:
    return MPC(model.to(torch.float64), cost, HORIZON, u_lower=-task.bound, u_upper=task.bound,
               tolerance=1e-8, cost_tolerance=1e-14, max_iterations=200)


def expert_data(task: Task, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x0 (n, n_x)``, expert states ``(n, T+1, n_x)`` and controls ``(n, T, n_u)``."""
    x0 = task.initial_states(n, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        mpc = make_mpc(task, task.true_model, task.cost())
        sol = mpc(x0, target=task.goal.expand_as(x0), grad_mode='none')
    return x0, sol.states, sol.controls


def identifiable(task: Task, model: Dynamics) -> torch.Tensor:
    """Parameter combinations the trajectories determine: pendulum ``(g / l, m l^2)``; cart-pole all four."""
    if task.name == 'pendulum':
        return torch.stack((model.gravity / model.length, model.mass * model.length ** 2)).detach()
    return torch.stack((model.gravity, model.masscart, model.masspole, model.length)).detach()


def train(task: Task, n: int, learn: str, steps: int = 100, lr: float = 0.05, final_lr: float = 0.01,
          seed: int = 0) -> dict[str, float]:
    """Learn the dynamics parameters (``learn='dynamics'``) or the cost weights and goal (``'cost'``).

    Adam with learning rate ``lr`` decaying exponentially to ``final_lr * lr``. Returns the initial
    and final imitation loss (on the training trajectories and on 100 held-out
    ones) and the final relative parameter error (identifiable combinations for the dynamics; the
    state weights, normalised by the fixed control weight, and the goal for the cost).
    """
    torch.manual_seed(seed)
    x0, xs, us = expert_data(task, n, seed)
    x0_test, xs_test, us_test = expert_data(task, 100, seed + 1)
    if learn == 'dynamics':
        model = type(task.wrong_model)(DT, **task.wrong_model.parameter_values()).to(torch.float64)
        cost, goal = task.cost(), task.goal.clone()
        params = list(model.parameters())
    elif learn == 'cost':
        model = task.true_model
        wrong = torch.rand(len(task.state_weight), generator=torch.Generator().manual_seed(seed)) * 2 + 0.2
        cost = task.cost((wrong * torch.tensor(task.state_weight)).tolist())
        cost.control_weight.sqrt_diag.requires_grad_(False)           # fixes the scale of the cost
        cost.sqrt_terminal_scale.requires_grad_(False)
        goal = (task.goal + 0.2 * torch.randn(task.goal.shape, dtype=torch.float64)).requires_grad_()
        params = [cost.state_weight.sqrt_diag, goal]
    else:
        raise ValueError(f"train: learn must be 'dynamics' or 'cost', got {learn!r}")
    mpc = make_mpc(task, model, cost)
    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=final_lr ** (1.0 / steps))

    def loss_on(x0_, xs_, us_, grad=False):
        # cold start like the expert: a warm start would keep the learner on a stale local optimum
        with torch.set_grad_enabled(grad):
            sol = mpc(x0_, target=goal.expand_as(x0_), grad_mode='implicit' if grad else 'none')
            return (sol.states - xs_).square().mean() + (sol.controls - us_).square().mean()

    first_train, first_test = float(loss_on(x0, xs, us)), float(loss_on(x0_test, xs_test, us_test))
    for _ in range(steps):
        optimizer.zero_grad()
        loss_on(x0, xs, us, grad=True).backward()
        optimizer.step()
        schedule.step()
    result = dict(loss_train_initial=first_train, loss_train_final=float(loss_on(x0, xs, us)),
                  loss_test_initial=first_test, loss_test_final=float(loss_on(x0_test, xs_test, us_test)))
    if learn == 'dynamics':
        true, got = identifiable(task, task.true_model), identifiable(task, model)
    else:
        true = torch.cat((torch.tensor(task.state_weight, dtype=torch.float64), task.goal))
        got = torch.cat((cost.state_weight.diagonal().detach(), goal.detach()))
    result['parameter_error'] = float((got - true).norm() / true.norm())
    return result
