"""Experiments with known answers: simulated data and a paper's experiment, not library.

- :mod:`.simulated_runs`: runs of the simulated robot whose true parameters (gains, lags, the
  expert's cost) are known, so that learning can be measured against them: the tests and
  benchmarks of :mod:`diffopt_ros.learn`, and a way to try learning without a robot or ROS.
- :mod:`.mpc_imitation`: the pendulum / cart-pole imitation experiment of the Differentiable MPC
  paper (Amos et al., 2018), run by ``test/test_mpc_imitation.py`` and ``bench/mpc_imitation.py``.

They live in the installed package (not under ``test/`` or ``bench/``) because tests, benchmarks
and users share them; nothing in the library imports them (``test/test_experiments.py``).
"""
