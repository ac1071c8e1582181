"""``diffopt-ros bag``: inspect and repair the runs written by the recorder."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diffopt_ros.bag.errors import BagError, CorruptBagError, EmptyBagError, MissingTopicError

DATA_ERRORS = (CorruptBagError, EmptyBagError, MissingTopicError)


def exit_status(exc: BagError) -> int:
    """1 for a run whose data is damaged or empty, 2 for input that is no run at all (no such
    path, no bag files, a folder of runs where one run is needed)."""
    return 1 if isinstance(exc, DATA_ERRORS) else 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='diffopt-ros bag',
        description='Inspect or repair rosbag2 runs (folders under runs/) written by '
                    'recorder_node. RUN may also be a folder of runs (such as the demo\'s '
                    'runs/demo_<date>-<time>/ with before/, after_dynamics/, after/): every run '
                    'found in it, at any depth, is listed or repaired in turn.',
        epilog='Exit status: 0; 1 when a run is damaged or empty; 2 when RUN is no run (no such '
               'path, no bag files).')
    sub = parser.add_subparsers(dest='action', metavar='ACTION', required=True)
    info = sub.add_parser('info', help='topics, types, message counts and duration of a run',
                          description='Print the topics, types, message counts, rates and '
                                      'duration of a run (folder or .mcap/.db3 file), or of '
                                      'every run in a folder of runs.')
    info.add_argument('run', metavar='RUN',
                      help='run folder, .mcap/.db3 file or folder of runs, e.g. '
                           'runs/run_2026_11_28-22_05_13 or runs/demo_20261128-220513')
    repair = sub.add_parser(
        'repair', help='rebuild metadata.yaml and salvage truncated files after a crash',
        description='After the recorder was killed (SIGKILL, power loss): move or salvage the '
                    'open MCAP file (every complete chunk is kept; the damaged original stays '
                    'as *.mcap.truncated) and rebuild metadata.yaml. Safe to run twice. A '
                    'folder without any MCAP file is refused (nothing is written); a folder of '
                    'runs has each of its runs repaired.')
    repair.add_argument('run', metavar='RUN', help='run folder or folder of runs')
    return parser


def _info(path: Path) -> None:
    from diffopt_ros.bag.reader import Run

    with Run(path) as run:
        print(f'run:       {run.path}')
        print(f'files:     {len(run.files)} ({", ".join(f.name for f in run.files[:3])}'
              f'{", ..." if len(run.files) > 3 else ""})')
        print(f'duration:  {run.duration:.3f} s (bag time {run.start_ns * 1e-9:.3f} .. '
              f'{run.end_ns * 1e-9:.3f} s)')
        print(f'messages:  {run.message_count}')
        topics = sorted(run.topics.values(), key=lambda t: t.name)
        width = max(len(t.name) for t in topics)
        type_width = max(len(t.msgtype) for t in topics)
        for t in topics:
            rate = t.count / run.duration if run.duration > 0 else float('nan')
            print(f'  {t.name:<{width}}  {t.msgtype:<{type_width}}  {t.count:>8}  {rate:8.2f} Hz')


def _repair(path: Path) -> None:
    from diffopt_ros.bag.repair import repair_run

    report = repair_run(path)
    print(f'run:       {report.run_dir}')
    for action in report.files:
        total = sum(action.counts.values())
        note = f' ({action.note})' if action.note else ''
        print(f'{action.path:<32} {action.status:<9} {total:>8} messages{note}')
    if report.metadata is None:
        raise EmptyBagError(f'{path}: no file holds a complete message; metadata.yaml not '
                            'written (the damaged originals are kept as *.mcap.truncated)')
    print(f'metadata.yaml rewritten: {len(report.summaries)} files')
    for topic, n in sorted(report.counts.items()):
        print(f'  {topic:<28} {n:>8}')


def main(argv: list[str] | None = None) -> int:
    """Run ``diffopt-ros bag ACTION RUN``; returns the exit status: 0, 1 when a run is damaged
    or empty, 2 when the input is no run (see :func:`exit_status`). In a folder of runs every
    run is still listed or repaired; the status is the worst one."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    from diffopt_ros.bag.reader import find_runs

    act = _info if args.action == 'info' else _repair
    root = Path(args.run)
    try:
        runs = find_runs(root)
    except BagError as exc:
        print(f'diffopt-ros bag {args.action}: {exc}', file=sys.stderr)
        return exit_status(exc)
    nested = runs != [root]
    if nested:
        print(f'{root}: a folder of {len(runs)} run{"s" if len(runs) > 1 else ""}: '
              f'{", ".join(str(r.relative_to(root)) for r in runs)}')
    status = 0
    for run in runs:
        if nested:
            print()
        try:
            act(run)
        except BagError as exc:
            print(f'diffopt-ros bag {args.action}: {exc}', file=sys.stderr)
            status = max(status, exit_status(exc))
    return status
