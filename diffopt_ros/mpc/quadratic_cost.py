"""A general stage-wise quadratic trajectory cost (the mpc.pytorch ``QuadCost`` form), exact expansion."""
from __future__ import annotations

import torch
from torch import nn

from .costs import Cost, CostExpansion


class QuadraticCost(Cost):
    """General stage-wise quadratic cost in ``tau_t = (x_t, u_t)`` (mpc.pytorch ``QuadCost`` form).

    ``J = sum_{t<T} 0.5 tau_t^T C_t tau_t + c_t^T tau_t + 0.5 x_T^T C_T x_T + c_T^T x_T``.
    ``target`` is ignored. Tensors given as ``nn.Parameter`` are learnable.

    Args:
        C: ``(n_x + n_u, n_x + n_u)``, ``(T, ...)`` or ``(B, T, ...)`` symmetric stage Hessians.
        c: ``(n_x + n_u,)``, ``(T, ...)`` or ``(B, T, ...)`` stage gradients.
        C_final: ``(n_x, n_x)`` or ``(B, n_x, n_x)`` terminal Hessian (default: zero).
        c_final: ``(n_x,)`` or ``(B, n_x)`` terminal gradient (default: zero).
        n_x: state dimension (splits ``tau``).
    """

    def __init__(self, C: torch.Tensor, c: torch.Tensor, n_x: int, C_final: torch.Tensor | None = None,
                 c_final: torch.Tensor | None = None):
        super().__init__()
        self.n_x, self.n_u = n_x, C.shape[-1] - n_x
        if C.shape[-1] != C.shape[-2] or c.shape[-1] != C.shape[-1] or self.n_u < 1:
            raise ValueError(f'QuadraticCost: C {tuple(C.shape)} and c {tuple(c.shape)} do not fit n_x={n_x}')
        self.quadratic = True
        C_final = C_final if C_final is not None else torch.zeros(n_x, n_x, dtype=C.dtype, device=C.device)
        c_final = c_final if c_final is not None else torch.zeros(n_x, dtype=C.dtype, device=C.device)
        for name, t in (('C', C), ('c', c), ('C_final', C_final), ('c_final', c_final)):
            if isinstance(t, nn.Parameter):
                setattr(self, name, t)                      # learnable
            else:                                           # converted with the module (.to, .double)
                self.register_buffer(name, t, persistent=False)

    def check(self, batch: int, horizon: int, dtype: torch.dtype) -> None:
        """Shapes ``C (n, n) | (T, n, n) | (B, T, n, n)``, ``c (n,) | (T, n) | (B, T, n)``,
        ``C_final (n_x, n_x) | (B, n_x, n_x)``, ``c_final (n_x,) | (B, n_x)``, dtype, finite values and
        positive semi-definite ``C_t``, ``C_final`` (the problem is convex); checked again only when
        the batch, horizon, dtype or a tensor (by identity and version) changes."""
        tensors = (self.C, self.c, self.C_final, self.c_final)
        key = (batch, horizon, dtype, *((id(t), t._version) for t in tensors))
        if getattr(self, '_checked', None) == key:
            return
        n, n_x, T = self.n_x + self.n_u, self.n_x, horizon
        specs = (('C', self.C, ((n, n), (T, n, n), (batch, T, n, n))),
                 ('c', self.c, ((n,), (T, n), (batch, T, n))),
                 ('C_final', self.C_final, ((n_x, n_x), (batch, n_x, n_x))),
                 ('c_final', self.c_final, ((n_x,), (batch, n_x))))
        for name, t, shapes in specs:
            if tuple(t.shape) not in shapes:
                raise ValueError(f'QuadraticCost: {name} has shape {tuple(t.shape)}, a problem of B={batch} '
                                 f'samples and T={T} steps needs one of {list(shapes)} (n_x={n_x}, '
                                 f'n_u={self.n_u})')
            if t.dtype != dtype:
                raise ValueError(f'QuadraticCost: {name} has dtype {t.dtype}, x_init {dtype}; convert one '
                                 f'of them')
        for name, t in (('C', self.C), ('C_final', self.C_final)):
            with torch.no_grad():
                sym = 0.5 * (t + t.mT)
                if not bool(torch.isfinite(sym).all()):
                    raise ValueError(f'QuadraticCost: {name} (shape {tuple(t.shape)}) contains NaN or inf')
                eig = torch.linalg.eigvalsh(sym)
                low = eig[..., 0]
                tol = 1e3 * torch.finfo(eig.dtype).eps * eig.abs().amax(-1).clamp_min(1.0)
                if bool((low < -tol).any()):
                    index = tuple((low < -tol).nonzero()[0].tolist())
                    raise ValueError(f'QuadraticCost: {name}{list(index) if index else ""} is not positive '
                                     f'semi-definite (smallest eigenvalue {float(low[index]):.3g}): the '
                                     f'problem is not convex and its minimum may not exist')
        self._checked = key           # the tensors are kept by the cost: their ids are not reused

    @property
    def batched(self) -> bool:
        return self.C.ndim == 4 or self.c.ndim == 3 or self.C_final.ndim == 3 or self.c_final.ndim == 2

    def take(self, rows: torch.Tensor) -> QuadraticCost:
        if not self.batched:
            return self
        sub = QuadraticCost.__new__(QuadraticCost)
        Cost.__init__(sub)
        sub.n_x, sub.n_u, sub.quadratic = self.n_x, self.n_u, True
        sub.C = self.C[rows] if self.C.ndim == 4 else self.C
        sub.c = self.c[rows] if self.c.ndim == 3 else self.c
        sub.C_final = self.C_final[rows] if self.C_final.ndim == 3 else self.C_final
        sub.c_final = self.c_final[rows] if self.c_final.ndim == 2 else self.c_final
        return sub

    def _stages(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The symmetric part of ``C`` and ``c`` as given (broadcastable against ``(B, T, ...)``)."""
        return 0.5 * (self.C + self.C.mT), self.c                  # only the symmetric part matters

    @staticmethod
    def _product(C: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """``C_t tau_t`` for ``tau (B, T, n)`` (or ``C tau`` for ``tau (B, n)``): one ``(B T, n) x (n, n)``
        product when ``C`` is shared."""
        if C.ndim == 2:
            return tau @ C                                           # C symmetric
        return (C @ tau.unsqueeze(-1)).squeeze(-1)

    def total(self, x, u, target=None, u_prev=None):
        C, c = self._stages()
        tau = torch.cat((x[:, :-1], u), -1)
        stage = (0.5 * self._product(C, tau) + c) * tau
        xT = x[:, -1]
        C_final = self.C_final.to(x)
        CxT = xT @ C_final if C_final.ndim == 2 else (xT.unsqueeze(-2) @ C_final).squeeze(-2)   # x_T^T C_T
        final = (0.5 * CxT + self.c_final.to(x)) * xT
        return stage.sum((-1, -2)) + final.sum(-1)

    def expand(self, x, u, target=None, u_prev=None, exact=False):
        batch, T, n_x, n_u = x.shape[0], u.shape[1], self.n_x, self.n_u
        C, c = self._stages()
        tau = torch.cat((x[:, :-1], u), -1)
        grad = self._product(C, tau) + c
        CT = (0.5 * (self.C_final + self.C_final.mT)).to(x)
        gT = self._product(CT, x[:, -1]) + self.c_final.to(x)
        CT = CT.expand(batch, n_x, n_x)
        lxx = torch.cat((C[..., :n_x, :n_x].expand(batch, T, n_x, n_x), CT.unsqueeze(1)), 1)
        lx = torch.cat((grad[..., :n_x], gT.unsqueeze(1)), 1)
        return CostExpansion(lxx, lx, C[..., n_x:, n_x:].expand(batch, T, n_u, n_u), grad[..., n_x:],
                             C[..., n_x:, :n_x].expand(batch, T, n_u, n_x))
