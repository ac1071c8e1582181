"""The parameter tables of the docs, generated from the node schemas.

``python -m diffopt_ros.params.docs`` rewrites ``docs/nodes.md`` and the generated tables of
``README.md`` (between ``<!-- params:NODE -->`` and ``<!-- /params -->``); ``--check`` only
reports (exit status 1) a file that differs from what the schemas give.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from diffopt_ros.params import NODE_MODULES, schema_for

ROOT = Path(__file__).resolve().parents[2]
_MARKED = re.compile(r'(<!-- params:(\w+) -->\n)(.*?)(<!-- /params -->)', re.S)

HEADER = """# Node parameters

Generated from the node schemas (`diffopt_ros/params/<node>.py`) by
`python -m diffopt_ros.params.docs`; a test fails when this file and the schemas disagree.

Every node checks its parameters at start-up (a params file value of the wrong type, e.g. a
string where a number belongs, or out of range stops it with exit status 2 and a message naming
file, line, node and parameter; an unknown parameter or a node entry that matches no node is
warned about) and at run time (`ros2 param set`: a rejected change keeps the old value and
returns the reason). *dynamic* parameters may change at run time; *learned* names the group
that `diffopt-ros learn` writes into a learned params file (`learned_params_file`). Units are
SI; ranges are inclusive. `<node> --help` prints the same table without starting ROS.
"""


def node_section(node: str) -> str:
    """The ``##`` section of one node: its summary and table."""
    schema = schema_for(node)
    text = f'## `{node}`: {schema.summary}\n\n{schema.markdown_table()}\n'
    if schema.combination is not None:
        text += f'\nTogether: {schema.combination_rule().replace("``", "`")}\n'
    return text


def nodes_markdown() -> str:
    """The whole text of ``docs/nodes.md``."""
    return HEADER + ''.join('\n' + node_section(node) for node in NODE_MODULES)


def fill_marked(text: str) -> str:
    """``text`` with each ``<!-- params:NODE -->`` ... ``<!-- /params -->`` block regenerated."""
    return _MARKED.sub(lambda m: m.group(1) + schema_for(m.group(2)).markdown_table() + '\n'
                       + m.group(4), text)


def generated_files(root: Path = ROOT) -> dict[Path, str]:
    """``{path: text the schemas give}`` for ``docs/nodes.md`` and ``README.md``."""
    readme = root / 'README.md'
    return {root / 'docs' / 'nodes.md': nodes_markdown(),
            readme: fill_marked(readme.read_text(encoding='utf-8'))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m diffopt_ros.params.docs',
                                     description=__doc__.split('\n\n')[1])
    parser.add_argument('--check', action='store_true',
                        help='only report files that differ (exit status 1)')
    args = parser.parse_args(argv)
    stale = []
    for path, text in generated_files().items():
        if path.exists() and path.read_text(encoding='utf-8') == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text, encoding='utf-8')
    for path in stale:
        print(f'{path}: {"differs from the schemas" if args.check else "rewritten"}')
    return 1 if args.check and stale else 0


if __name__ == '__main__':
    sys.exit(main())
