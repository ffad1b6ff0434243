"""Segments new echocardiograms with trained runs: one run, an ensemble, or quality gating.

  python -m echokld.predict --workdir=RUN [--workdir=RUN2 ...] --input=PATH --output=DIR \
      [--tta=affine] [--postprocess=largest] [--qc_threshold=X | --qc_calibration=FILE]

Writes a mask per frame in the input's format and geometry, a contour overlay and
areas.csv (echokld.infer); with several members (runs x test-time views) an uncertainty
map per frame, disagreement scores and, given a threshold, a qc_flag (echokld.infer.qc).
Bad files are reported one line each and skipped; the exit code is 2 if any failed.
Details: docs/PREDICT.md.
"""

from __future__ import annotations

import sys

from absl import app, flags

from echokld import cli
from echokld.errors import InputError
from echokld.data.augment import TTA_MODES
from echokld.infer import io, loops, qc, segment
from echokld.infer import runs as runs_lib
from echokld.infer.runs import DEFAULT_BATCH_SIZE, GATINGS, POSTPROCESSING

FLAGS = flags.FLAGS


def define_flags() -> None:
  """CLI flags, defined only when run as a program (importing the API defines none)."""
  flags.DEFINE_multi_string("workdir", None, "Run directory; repeat for an ensemble.")
  flags.DEFINE_string("input", None, "A frame (.nii.gz, .nii, .mhd, .dcm, .png, .jpg, ...), "
                      "a cine loop, a CAMUS patient folder or a folder of frames (walked "
                      "recursively).")
  flags.DEFINE_string("output", None, "Folder for masks, overlays and areas.csv.")
  flags.DEFINE_integer("batch_size", DEFAULT_BATCH_SIZE, "Frames per device call.",
                       lower_bound=1)
  flags.DEFINE_enum("gating", "mean", GATINGS, "How ensemble members are combined: mean, "
                    "or weighted per image by each member's Dice on the image's quality.")
  flags.DEFINE_bool("overwrite", False, "Replace masks, overlays and areas.csv already in "
                    "--output (never symlinks). Without it, existing files are refused.")
  flags.DEFINE_enum("tta", None, TTA_MODES, "Test-time views, replacing each run's own "
                    "config.augment.tta: none, flip (2 views) or affine (5). Each view is a "
                    "member for the uncertainty map and scores.")
  flags.DEFINE_enum("postprocess", "none", POSTPROCESSING, "Mask post-processing: none, or "
                    "largest (keep the largest connected LV region, holes filled, as the "
                    "volume measurements do).")
  flags.DEFINE_float("qc_threshold", None, "Adds qc_flag to areas.csv: 1 where the "
                     "--qc_score of a frame is above this (needs 2+ members).")
  flags.DEFINE_string("qc_calibration", None, "JSON of experiments/qc_flag.py giving the "
                      "score and threshold of qc_flag (instead of --qc_threshold).")
  flags.DEFINE_enum("qc_score", qc.DEFAULT_SCORE, qc.SCORES, "Score qc_flag thresholds.")
  flags.DEFINE_integer("cpu_devices", None, "On a CPU: JAX devices to split the host into "
                       "(1 = off; default one per core dividing --batch_size).")
  flags.mark_flags_as_required(["workdir", "input", "output"])


def parse_flags(argv: list[str]) -> list[str]:
  try:
    return FLAGS(argv)
  except flags.Error as exc:
    cli.fail(str(exc).splitlines()[0] if str(exc) else repr(exc))
  return []


def qc_settings() -> qc.Settings | None:
  """The flag's score and threshold from --qc_threshold or --qc_calibration, if given."""
  if FLAGS.qc_threshold is not None and FLAGS.qc_calibration is not None:
    raise InputError("--qc_calibration", "give --qc_threshold or --qc_calibration, not both")
  if FLAGS.qc_calibration is not None:
    settings = qc.read_calibration(FLAGS.qc_calibration)
    if FLAGS["qc_score"].present and FLAGS.qc_score != settings.score:
      raise InputError("--qc_score", f"{FLAGS.qc_score} differs from the score "
                       f"{settings.score} calibrated in {FLAGS.qc_calibration}")
    return settings
  if FLAGS.qc_threshold is not None:
    return qc.Settings(FLAGS.qc_score, FLAGS.qc_threshold)
  return None


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  cli.quiet_unless_verbosity_given()
  cli.use_host_devices(FLAGS.cpu_devices, FLAGS.batch_size)
  try:
    settings = qc_settings()
    inputs = io.find_inputs(FLAGS.input, exclude=FLAGS.output)
    runs = [runs_lib.load_run(workdir, FLAGS.batch_size, FLAGS.tta)
            for workdir in FLAGS.workdir]
    runs_lib.check_compatible(runs)
    members = qc.count_members(runs)
    if settings is not None and members < 2:
      raise InputError("--qc_threshold" if FLAGS.qc_threshold is not None else
                       "--qc_calibration", "a quality flag needs 2+ members: several "
                       "--workdir runs or --tta=flip|affine")
    if settings is not None and settings.members not in (None, members):
      print(f"warning: {FLAGS.qc_calibration}: calibrated with {settings.members} members, "
            f"used with {members}; its threshold may not fit", file=sys.stderr, flush=True)
    is_loop = len(inputs) == 1 and loops.is_loop(inputs[0][0])
    if is_loop and settings is not None:
      raise InputError(inputs[0][0], "quality flags are for frames; a loop gets none "
                       "(drop --qc_threshold/--qc_calibration)")
    if is_loop:
      loop = loops.segment_loop(runs, inputs[0][0], FLAGS.output, FLAGS.batch_size,
                                FLAGS.overwrite, FLAGS.postprocess)
      ef = {r["method"]: r["ef_px_percent"] for r in loop["volumes"]}
      print(f"segmented a loop of {loop['frames']} frames into {FLAGS.output}: ED frame "
            f"{loop['ed_frame']}, ES frame {loop['es_frame']}, EF {ef['disks']:.1f}% (disks), "
            f"{ef['area_length']:.1f}% (area-length)", flush=True)
      return
    rows, failures = segment.segment_files(runs, inputs, FLAGS.output, FLAGS.gating,
                                           FLAGS.batch_size, FLAGS.overwrite, settings,
                                           FLAGS.postprocess)
  except InputError as exc:
    cli.fail(exc)
  flagged = sum(row.get(qc.FLAG_COLUMN) == "1" for row in rows)
  print(f"segmented {len(rows)} of {len(inputs)} frames into {FLAGS.output} "
        f"({failures} failed)" + (f"; {flagged} flagged by quality control"
                                  if settings is not None else ""), flush=True)
  if failures:
    sys.exit(2)


def run() -> None:
  define_flags()
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
