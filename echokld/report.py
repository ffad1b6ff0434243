"""Sweep report: python -m echokld.report --sweep_dir=runs/sweep [--out=DIR].

Reads every finished run of a sweep (echokld.study.sweep) and writes report.md, one CSV per
table and PNG figures: the analogues of the paper's Tables 1-8 and Figures 5-14. A sweep
with quality-group runs gets one such report per training group in OUT/<group>/ and an
overview OUT/report.md (echokld.study.overview). Bad input ends with one line on stderr and
exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from echokld.errors import InputError
from echokld.study import overview, report, stats


class _Parser(argparse.ArgumentParser):
  def error(self, message: str) -> None:  # One line instead of usage + message.
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: Sequence[str] | None = None) -> int:
  parser = _Parser(description=__doc__.splitlines()[0])
  parser.add_argument("--sweep_dir", required=True,
                      help="Folder of <model>[_<group>]_seed<N> runs.")
  parser.add_argument("--out", default=None, help="Output folder (default SWEEP/report).")
  args = parser.parse_args(argv)
  out = args.out or os.path.join(args.sweep_dir, "report")
  try:
    groups = stats.load_sweep_groups(args.sweep_dir)
    if set(groups) == {stats.ALL}:
      path = report.Report(args.sweep_dir, out, runs=groups[stats.ALL]).write()
    else:  # Quality-group runs: one report per training group and an overview.
      path = overview.Study(args.sweep_dir, out, groups).write()
  except InputError as exc:
    print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
    return InputError.exit_code
  print(path)
  return 0


def run() -> None:
  sys.exit(main())


if __name__ == "__main__":
  run()
