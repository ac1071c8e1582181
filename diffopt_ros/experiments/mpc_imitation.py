"""Imitation learning through the MPC (the pendulum / cart-pole experiment of Amos et al., 2018).

An expert MPC with the true model and cost produces trajectories ``(x*, u*)`` from random initial
states; a learner MPC with wrong dynamics parameters (or a wrong cost: state weights and goal) is
trained by back-propagating the imitation loss ``mean |x - x*|^2 + |u - u*|^2`` through its
solution (implicit gradients).

The learner's MPC is warm-started at the expert's controls (``u_init = u*``): the standard
inverse-optimal-control framing. The swing-up problems have several local optima; a cold-started
learner lands in one or another depending on its parameters, and the loss jumps where it
switches. Started at ``u*``, the learner converges to the local optimum of its own problem in the
expert's basin; at the true parameters ``u*`` is a stationary point, so the loss is exactly 0 there
and varies smoothly around it. Only converged expert solves are used as demonstrations (an
unconverged one is no optimum of any cost). The held-out loss is also reported cold-started (the
learned MPC run like the expert, from zero controls).

Cost parameterisation: the control weight and the terminal scale are fixed (the cost's scale is
not identifiable: ``c J`` has the same minimisers as ``J``), the state weights are learned as
logarithms, and the goal through its angle (``(cos th, sin th)`` of the goal is ``th``, not two
free numbers) and its other entries. The default optimiser is L-BFGS: the loss has long, flat,
badly scaled valleys (many swing-ups are saturated and carry little information about the
weights) in which Adam crawls.

An experiment, not library: it reproduces a published result on the paper's toy systems to
check the MPC's gradients end to end; the robot's learning is :mod:`diffopt_ros.learn`. Used by
``test/test_mpc_imitation.py`` (small) and ``bench/mpc_imitation.py`` (the table in
bench/RESULTS.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from diffopt_ros.mpc.costs import TrackingCost
from diffopt_ros.mpc.dynamics import Dynamics
from diffopt_ros.mpc.ilqr import MPC
from diffopt_ros.mpc.models import Cartpole, Pendulum

HORIZON, DT = 20, 0.05


class _Exp(nn.Module):
    """``sqrt_diag = exp(p)``: the state weights ``exp(2 p)`` are learned as logarithms."""

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return p.exp()

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        return value.log()


@dataclass
class Task:
    """An imitation task: true model and cost, bounds, and the learner's wrong starting point.

    ``goal_parameters`` is the goal in learnable coordinates: pendulum ``(th [rad], th_dot)``,
    cart-pole ``(x, x_dot, th [rad], th_dot)``; :meth:`goal_state` maps it to the state's
    ``(..., cos th, sin th, th_dot)`` form.
    """

    name: str
    true_model: Dynamics
    wrong_model: Dynamics
    goal_parameters: torch.Tensor   # (n_g,)
    state_weight: list[float]
    control_weight: float
    bound: float

    @property
    def goal(self) -> torch.Tensor:
        """The true goal state ``(n_x,)``."""
        return self.goal_state(self.goal_parameters)

    @staticmethod
    def goal_state(p: torch.Tensor) -> torch.Tensor:
        """``(..., th, th_dot)`` -> ``(..., cos th, sin th, th_dot)``."""
        th = p[..., -2:-1]
        return torch.cat((p[..., :-2], th.cos(), th.sin(), p[..., -1:]), -1)

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
                         torch.tensor([0.0, 0.0], dtype=torch.float64), [1.0, 1.0, 0.1], 0.001, 2.0),
        'cartpole': Task('cartpole', Cartpole(DT),
                         Cartpole(DT, gravity=7.0, masscart=1.4, masspole=0.15, length=0.7),
                         torch.tensor([0.0, 0.0, 0.0, 0.0], dtype=torch.float64),
                         [0.1, 0.1, 1.0, 1.0, 0.1], 0.001, 100.0),
    }


def make_mpc(task: Task, model: Dynamics, cost: TrackingCost) -> MPC:
    return MPC(model.to(torch.float64), cost, HORIZON, u_lower=-task.bound, u_upper=task.bound,
               tolerance=1e-8, cost_tolerance=1e-14, max_iterations=200)


def expert_data(task: Task, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x0 (n, n_x)``, expert states ``(n, T+1, n_x)`` and controls ``(n, T, n_u)``.

    Only converged expert solves are kept (an unconverged one is no optimum of any cost, so
    inverse optimal control cannot explain it); replacements are drawn from the same generator.
    """
    generator = torch.Generator().manual_seed(seed)
    mpc = make_mpc(task, task.true_model, task.cost())
    kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    missing = n
    for _ in range(20):
        x0 = task.initial_states(missing, generator)
        with torch.no_grad():
            sol = mpc(x0, target=task.goal.expand_as(x0), backward='none')
        ok = sol.converged
        kept.append((x0[ok], sol.states[ok], sol.controls[ok]))
        missing -= int(ok.sum())
        if missing <= 0:
            break
    else:
        raise RuntimeError(f'expert_data: the {task.name} expert converged on fewer than {n} initial states')
    x0, xs, us = (torch.cat(parts)[:n] for parts in zip(*kept))
    return x0, xs, us


def identifiable(task: Task, model: Dynamics) -> torch.Tensor:
    """Parameter combinations the trajectories determine: pendulum ``(g / l, m l^2)``; cart-pole all four."""
    if task.name == 'pendulum':
        return torch.stack((model.gravity / model.length, model.mass * model.length ** 2)).detach()
    return torch.stack((model.gravity, model.masscart, model.masspole, model.length)).detach()


class Learner(nn.Module):
    """The learner's MPC with its learnable parameters (dynamics, or log state weights and goal)."""

    def __init__(self, task: Task, learn: str, seed: int = 0, perturbation: float = 1.0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        if learn == 'dynamics':
            model = type(task.wrong_model)(DT, **task.wrong_model.parameter_values()).to(torch.float64)
            cost = task.cost().requires_grad_(False)
            self.goal_parameters = nn.Parameter(task.goal_parameters.clone(), requires_grad=False)
        elif learn == 'cost':
            model = type(task.true_model)(DT, **task.true_model.parameter_values()).to(torch.float64)
            model.requires_grad_(False)
            n_w = len(task.state_weight)
            factor = torch.exp(perturbation * (torch.rand(n_w, generator=gen, dtype=torch.float64) * 2 - 1))
            cost = task.cost((factor * torch.tensor(task.state_weight, dtype=torch.float64)).tolist())
            parametrize.register_parametrization(cost.state_weight, 'sqrt_diag', _Exp())
            cost.control_weight.requires_grad_(False)                 # fixes the scale of the cost
            cost.sqrt_terminal_scale.requires_grad_(False)
            offset = 0.3 * perturbation * torch.randn(task.goal_parameters.shape, generator=gen,
                                                      dtype=torch.float64)
            self.goal_parameters = nn.Parameter(task.goal_parameters + offset)
        else:
            raise ValueError(f"train: learn must be 'dynamics' or 'cost', got {learn!r}")
        self.task, self.learn = task, learn
        self.mpc = make_mpc(task, model, cost)

    def forward(self, x0: torch.Tensor, u_init: torch.Tensor | None, grad: bool = True):
        goal = self.task.goal_state(self.goal_parameters)
        return self.mpc(x0, target=goal.expand_as(x0), u_init=u_init,
                        backward='implicit' if grad else 'none')

    def loss(self, x0, xs, us, warm: bool = True, grad: bool = False,
             robust: float | None = None) -> torch.Tensor:
        """Imitation loss ``mean |x - x*|^2 + mean |u - u*|^2``, warm-started at ``u*`` (or cold).

        ``robust = c``: the mean over trajectories of ``c log(1 + l_i / c)`` instead, ``l_i`` the
        loss of trajectory ``i``: the same as the plain loss where every ``l_i << c`` (and 0 at
        the true parameters), but a trajectory whose solution jumped to another local optimum
        (far from the truth the warm start does not keep every one in the expert's basin) pulls
        with a bounded force instead of dominating the gradient.
        """
        with torch.set_grad_enabled(grad):
            sol = self(x0, us if warm else None, grad)
            per = (sol.states - xs).square().mean((1, 2)) + (sol.controls - us).square().mean((1, 2))
            if robust is None:
                return per.mean()
            return (robust * torch.log1p(per / robust)).mean()

    def parameter_error(self) -> float:
        """Relative error of the identifiable parameters (dynamics combinations; state weights,
        relative to the fixed control weight, and goal coordinates)."""
        task = self.task
        if self.learn == 'dynamics':
            true, got = identifiable(task, task.true_model), identifiable(task, self.mpc.dynamics)
        else:
            true = torch.cat((torch.tensor(task.state_weight, dtype=torch.float64), task.goal_parameters))
            got = torch.cat((self.mpc.cost.state_weight.diagonal().detach(), self.goal_parameters.detach()))
        return float((got - true).norm() / true.norm())

    def weights(self) -> dict[str, list[float]]:
        cost = self.mpc.cost
        return dict(state_weight=cost.state_weight.diagonal().detach().tolist(),
                    goal=self.goal_parameters.detach().tolist())


def train(task: Task, n: int, learn: str, steps: int = 100, optimizer: str = 'lbfgs', lr: float | None = None,
          final_lr: float = 0.01, seed: int = 0, warm: bool = True, perturbation: float = 1.0,
          n_test: int = 100, robust: float | None = None) -> dict:
    """Learn the dynamics parameters (``learn='dynamics'``) or the cost weights and goal (``'cost'``).

    Minimises the imitation loss, warm-started at the expert's controls (``warm=False``:
    cold-started), with ``optimizer='lbfgs'`` (L-BFGS with a strong-Wolfe line search, at most
    ``steps`` loss-and-gradient evaluations; ``lr`` default 1) or ``'adam'`` (``steps`` steps,
    learning rate ``lr``, default 0.05, decaying exponentially to ``final_lr * lr``). The learner
    starts from :class:`Learner`'s wrong parameters (``perturbation`` scales the cost's). The
    training objective is the per-trajectory robust loss of :meth:`Learner.loss` with scale
    ``robust`` (``None``: the plain mean); the reported losses are the plain mean.

    Returns the initial and final imitation loss on the ``n`` training trajectories and on
    ``n_test`` held-out ones (``loss_test_*`` warm-started, ``loss_test_cold_*`` cold-started like the
    expert), the relative parameter error before and after (identifiable combinations for the
    dynamics; the state weights, with the control weight fixed, and the goal coordinates for the
    cost), ``evaluations`` and, for the cost, the learned ``state_weight`` and ``goal``.
    """
    torch.manual_seed(seed)
    x0, xs, us = expert_data(task, n, seed)
    x0_test, xs_test, us_test = expert_data(task, n_test, seed + 1)
    learner = Learner(task, learn, seed, perturbation)
    params = [p for p in learner.parameters() if p.requires_grad]
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        evaluations += 1
        opt.zero_grad()
        loss = learner.loss(x0, xs, us, warm, grad=True, robust=robust)
        loss.backward()
        return loss

    def evaluate() -> tuple[float, float, float, float]:
        return (float(learner.loss(x0, xs, us, warm)), float(learner.loss(x0_test, xs_test, us_test, warm)),
                float(learner.loss(x0_test, xs_test, us_test, False)), learner.parameter_error())

    first = evaluate()
    if optimizer == 'lbfgs':
        opt = torch.optim.LBFGS(params, lr=1.0 if lr is None else lr, max_iter=steps, max_eval=steps,
                                history_size=20, tolerance_grad=1e-14, tolerance_change=1e-16,
                                line_search_fn='strong_wolfe')
        opt.step(closure)
    elif optimizer == 'adam':
        opt = torch.optim.Adam(params, lr=0.05 if lr is None else lr)
        schedule = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=final_lr ** (1.0 / max(steps, 1)))
        for _ in range(steps):
            opt.step(closure)
            schedule.step()
    else:
        raise ValueError(f"train: optimizer must be 'lbfgs' or 'adam', got {optimizer!r}")
    last = evaluate()
    result: dict = {}
    for key, a, b in zip(('loss_train', 'loss_test', 'loss_test_cold', 'parameter_error'), first, last):
        result[key + '_initial'], result[key + '_final'] = a, b
    result['parameter_error'] = last[3]
    result['evaluations'] = evaluations
    if learn == 'cost':
        result.update(learner.weights())
    return result
