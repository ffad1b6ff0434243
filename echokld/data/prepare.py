"""Writes the CAMUS TFDS dataset once, so training runs read one array_record file.

  python -m echokld.data.prepare --camus_dir=/path/to/CAMUS --data_dir=OUT [--view=2CH]

Then train with --config.data.source=camus_tfds --config.data.root=OUT.
"""

from __future__ import annotations

import sys
from typing import Sequence

from absl import app
from absl import flags

from echokld.errors import InputError

_CAMUS_DIR = flags.DEFINE_string(
    "camus_dir", None, "CAMUS copy: folder holding database_nifti/ or training/ + testing/.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Output folder of the TFDS dataset.")
_VIEW = flags.DEFINE_enum("view", "2CH", ["2CH", "4CH"], "Apical view to prepare.")


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  # Imported here so that --help and flag errors do not pay for importing TFDS.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from echokld.data import camus_tfds  # pylint: disable=g-import-not-at-top

  tfds.disable_progress_bar()  # ours counts frames against a known total.
  try:
    path = camus_tfds.prepare(_CAMUS_DIR.value, _DATA_DIR.value, view=_VIEW.value,
                              show_progress=True)
  except InputError as e:
    print(f"error: {e}", file=sys.stderr)
    return InputError.exit_code
  print(f"CAMUS {_VIEW.value} dataset ready in {path}")
  return 0


def run() -> None:
  flags.mark_flags_as_required(["camus_dir", "data_dir"])
  app.run(main)


if __name__ == "__main__":
  run()
