"""Draw docs/demo_before_after.png from a demo run: its ``before.png`` and ``after_dynamics.png``
side by side (the demo's goals before learning and with the learned dynamics).

Run: ``.venv/bin/python docs/demo_figure.py runs/demo_<date>-<time>`` (matplotlib only).
"""
import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

OUT = Path(__file__).with_name('demo_before_after.png')
PANELS = (('before.png', 'before learning'), ('after_dynamics.png', 'learned dynamics'))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('run', type=Path, help='output folder of diffopt-ros demo')
    parser.add_argument('--out', type=Path, default=OUT, help='image to write')
    args = parser.parse_args(argv)
    missing = [name for name, _ in PANELS if not (args.run / name).is_file()]
    if missing:
        print(f'{args.run}: no {", ".join(missing)} (a demo run with learning writes them)',
              file=sys.stderr)
        return 2
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.2))
    for ax, (name, title) in zip(axes, PANELS):
        ax.imshow(mpimg.imread(args.run / name))
        ax.set_title(title)
        ax.axis('off')
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
