"""``diffopt-ros bag``: inspect and repair the runs written by the recorder."""
from __future__ import annotations

import argparse
import sys

from diffopt_ros.bag.errors import BagError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='diffopt-ros bag',
        description='Inspect or repair rosbag2 runs (folders under runs/) written by '
                    'recorder_node.')
    sub = parser.add_subparsers(dest='action', metavar='ACTION', required=True)
    info = sub.add_parser('info', help='topics, types, message counts and duration of a run',
                          description='Print the topics, types, message counts, rates and '
                                      'duration of a run (folder or .mcap/.db3 file).')
    info.add_argument('run', metavar='RUN', help='run folder, e.g. runs/run_2026_11_28-22_05_13')
    repair = sub.add_parser(
        'repair', help='rebuild metadata.yaml and salvage truncated files after a crash',
        description='After the recorder was killed (SIGKILL, power loss): move or salvage the '
                    'open MCAP file (every complete chunk is kept; the damaged original stays '
                    'as *.mcap.truncated) and rebuild metadata.yaml. Safe to run twice.')
    repair.add_argument('run', metavar='RUN', help='run folder')
    return parser


def _info(path: str) -> None:
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


def _repair(path: str) -> None:
    from diffopt_ros.bag.repair import repair_run

    report = repair_run(path)
    for action in report.files:
        total = sum(action.counts.values())
        note = f' ({action.note})' if action.note else ''
        print(f'{action.path:<32} {action.status:<9} {total:>8} messages{note}')
    print(f'metadata.yaml rewritten: {len(report.summaries)} files')
    for topic, n in sorted(report.counts.items()):
        print(f'  {topic:<28} {n:>8}')


def main(argv: list[str] | None = None) -> int:
    """Run ``diffopt-ros bag ACTION RUN``; returns the exit status (1 for a bag error)."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.action == 'info':
            _info(args.run)
        else:
            _repair(args.run)
    except BagError as exc:
        print(f'diffopt-ros bag {args.action}: {exc}', file=sys.stderr)
        return 1
    return 0
