"""The ``diffopt-ros`` command: one entry point, one sub-command per job.

Each sub-command lives in its own module exposing ``main(argv: list[str] | None) -> int`` with
its own argparse parser (so ``diffopt-ros SUB --help`` documents it); modules are imported only
when their sub-command runs, which keeps ``diffopt-ros --help`` instant.
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

# name -> (module, one-line summary)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    'demo': ('diffopt_ros.nodes.demo', 'closed-loop demo: sim + SLAM + MPC + recorder, learn, relaunch'),
    'sim': ('diffopt_ros.sim.cli', 'drive the 2D simulator with a scripted command sequence'),
    'pgo': ('diffopt_ros.nlls.pgo_cli', 'solve a g2o/TORO pose-graph file (LM/GN, CPU/CUDA)'),
    'learn': ('diffopt_ros.learn.cli', 'learn dynamics, cost or SLAM weights from recorded bags'),
    'bag': ('diffopt_ros.bag.cli', 'inspect or repair rosbag2 runs written by the recorder'),
    'drive': ('diffopt_ros.drive', 'drive goals through a world (sim + SLAM + obstacle-aware MPC), score it'),
}


# Sub-commands whose ``main`` closes everything it opened before it returns and reports the
# errors of its own files itself (pgo: its input, output file and plot), so that an OSError out
# of it is one of stdout or stderr (see entry): their process ends with ``os._exit`` once stdout
# and stderr are flushed, which skips the interpreter's teardown of torch's modules, 0.3-0.6 s of
# CPU in every run on this package's 2-core VM (bench/RESULTS.md, "The pgo command's exit").
_EXIT_AT_ONCE = frozenset({'pgo'})

_ROLE = re.compile(r':[a-z]+:`~?([^`<]*?)\s*(?:<[^`>]*>)?`')


def plain_text(text: str) -> str:
    """Docstring text as a terminal shows it: reStructuredText markup removed.

    ````code```` becomes ``code``, ``:class:`~pkg.mod.Name``` becomes ``Name`` (the last
    component, as Sphinx shows ``~`` references), ``:func:`pkg.f``` becomes ``pkg.f``,
    ``:ref:`text <target>``` becomes ``text`` and a literal-block ``Example::`` becomes
    ``Example:``. Used for every ``--help`` built from a docstring.
    """
    def role(match: re.Match) -> str:
        target = match.group(1)
        return target.rsplit('.', 1)[-1] if '`~' in match.group(0) else target

    text = _ROLE.sub(role, text)
    text = re.sub(r'``(.+?)``', r'\1', text, flags=re.S)
    return re.sub(r'(\S)::$', r'\1:', text, flags=re.M)


def _version() -> str:
    from diffopt_ros import __version__

    return f'diffopt-ros {__version__} (Python {sys.version.split()[0]})'


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='diffopt-ros',
        description='Differentiable MPC and SLAM for ROS 2: demo, learning and tools.',
        epilog='Run "diffopt-ros SUBCOMMAND --help" for the options of one sub-command.')
    parser.add_argument('--version', action='version', version=_version(),
                        help='print the version and exit')
    sub = parser.add_subparsers(dest='command', metavar='SUBCOMMAND')
    for name, (_, summary) in SUBCOMMANDS.items():
        sub.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``diffopt-ros SUBCOMMAND ARGS...`` to the sub-command's module."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    if argv and argv[0] == '--version':
        print(_version())
        return 0
    if not argv or argv[0] in ('-h', '--help') or argv[0] not in SUBCOMMANDS:
        if argv and argv[0] not in ('-h', '--help'):
            parser.print_usage(sys.stderr)
            print(f'diffopt-ros: unknown sub-command {argv[0]!r}; choose from '
                  f'{", ".join(SUBCOMMANDS)}', file=sys.stderr)
            return 2
        parser.print_help()
        return 0
    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


def entry() -> None:
    """Process entry point of ``diffopt-ros`` (the console script, ``python -m diffopt_ros.cli``):
    :func:`main` with ``sys.argv``, then exit with its status. Sub-commands in ``_EXIT_AT_ONCE``
    exit without the interpreter's teardown; their output that cannot be written (the reader of
    a pipe gone, as with ``| head``; a full disk) ends them with status 1 and a line on stderr
    where stderr can take one, never a traceback."""
    command = sys.argv[1] if len(sys.argv) > 1 else ''
    if command not in _EXIT_AT_ONCE:
        sys.exit(main())
    try:
        code = main()
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError as exc:  # the sub-command reports its own files: this is stdout or stderr
        code = 1
        if not isinstance(exc, BrokenPipeError):  # a closed pipe's reader wants nothing more
            try:
                print(f'diffopt-ros {command}: cannot write its output: {exc.strerror or exc}',
                      file=sys.stderr, flush=True)
            except OSError:
                pass
    os._exit(code)


if __name__ == '__main__':
    entry()
