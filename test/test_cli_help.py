"""``--help`` and ``--version`` of the ``diffopt-ros`` commands: every option documented, no
reStructuredText markup in the terminal, task-specific wording, one version number."""
import argparse
import importlib
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import diffopt_ros
from diffopt_ros import cli

ROOT = Path(__file__).resolve().parents[1]
MARKUP = re.compile(r'``|:(class|func|meth|mod|attr|ref|data|obj):`')
# pgo's options are documented by diffopt_ros/nlls/pgo_cli.py's own tests.
MODULES = {'': 'diffopt_ros.cli', 'demo': 'diffopt_ros.demo.phases', 'sim': 'diffopt_ros.sim.cli',
           'learn': 'diffopt_ros.learn.cli', 'bag': 'diffopt_ros.bag.cli',
           'pgo': 'diffopt_ros.nlls.pgo_cli'}


def _parsers(parser, name):
    """``(name, parser)`` of a parser and of all its sub-command parsers."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f'{name} {sub_name}'.strip())


def _all_parsers():
    for name, module in MODULES.items():
        yield from _parsers(importlib.import_module(module)._parser(), name)


@pytest.mark.parametrize('name, parser', list(_all_parsers()), ids=lambda x: x if isinstance(x, str) else '')
def test_every_option_has_help_and_no_markup(name, parser):
    if name:   # the top-level parser's sub-commands are placeholders for the modules' parsers
        undocumented = [a.option_strings or [a.dest] for a in parser._actions
                        if (not a.help or a.help == argparse.SUPPRESS)
                        and not isinstance(a, argparse._SubParsersAction)]   # choices have help
        assert not undocumented, f'diffopt-ros {name}: options without help: {undocumented}'
    text = parser.format_help()
    assert not MARKUP.search(text), f'diffopt-ros {name} --help shows markup:\n{text}'


@pytest.mark.parametrize('task', ['cost', 'slam'])
def test_learn_cost_and_slam_help_speak_of_their_own_task(task):
    text = dict(_parsers(importlib.import_module('diffopt_ros.learn.cli')._parser(), 'learn'))[
        f'learn {task}'].format_help()
    assert 'sysid' not in text and 'e2e' not in text, text


def test_plain_text_removes_markup():
    assert cli.plain_text('``mpc_node`` uses :class:`~diffopt_ros.mpc.DiffDriveLag` and '
                          ':func:`diffopt_ros.bag.find_runs` (:ref:`the notes <notes>`). '
                          'Example::') == ('mpc_node uses DiffDriveLag and diffopt_ros.bag.find_runs '
                                           '(the notes). Example:')


def test_version_is_printed_and_agrees_with_package_xml():
    proc = subprocess.run([sys.executable, '-m', 'diffopt_ros.cli', '--version'],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f'diffopt-ros {diffopt_ros.__version__} ')
    assert ET.parse(ROOT / 'package.xml').getroot().findtext('version') == diffopt_ros.__version__
    setup = subprocess.run([sys.executable, 'setup.py', '--version'], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
    assert setup.stdout.strip().splitlines()[-1] == diffopt_ros.__version__


@pytest.mark.parametrize('node', ['sim_node', 'mpc_node', 'slam_node', 'recorder_node'])
def test_node_help_is_plain_text(node):
    proc = subprocess.run([str(Path(sys.executable).parent / node), '--help'], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert 'usage:' in proc.stdout and not MARKUP.search(proc.stdout), proc.stdout
