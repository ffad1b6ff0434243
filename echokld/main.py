"""Command line: python -m echokld.main --config=configs/<model>.py [--workdir=DIR].

Bad input (an unknown config key, a missing config file, bad data, an unwritable workdir)
ends with one line on stderr naming the culprit and exit code 2.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/dice.py[:paper].",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory (default runs/<config file stem>).")
flags.DEFINE_bool("distributed", False, "Multi-process run: jax.distributed.initialize() before "
                  "any device use (auto-detected on SLURM, Open MPI, Kubernetes, Cloud TPU).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (implies "
                    "--distributed; default $JAX_COORDINATOR_ADDRESS or auto-detected).")
flags.DEFINE_integer("num_processes", None, "Processes of the run (implies --distributed).")
flags.DEFINE_integer("process_id", None, "This process's index (implies --distributed).")


def fail(message: str, code: int = 2) -> None:
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(code)


def _config_arg(argv: list[str]) -> str:
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return ""


def _override_naming(name: str, argv: list[str]) -> str:
  """The --config.<key> argument whose key contains `name` (to say which one is unknown)."""
  for arg in argv:
    if arg.startswith("--config.") and name in arg.split("=", 1)[0].split("."):
      return arg.split("=", 1)[0][len("--config."):]
  return name


def parse_flags(argv: list[str]) -> list[str]:
  """Parses flags, turning absl/ml_collections errors into one line and exit code 2."""
  config_file = _config_arg(argv).split(":")[0]
  if config_file and not os.path.isfile(config_file):
    fail(f"{config_file}: config file does not exist")
  try:
    rest = FLAGS(argv)
    config = FLAGS.config  # Loads the file now, so its errors surface here.
  except flags.Error as exc:
    fail(str(exc).splitlines()[0] if str(exc) else repr(exc))
  except (KeyError, AttributeError) as exc:
    name = str(exc.args[0]).strip("'\"") if exc.args else ""
    key = _override_naming(name, argv)
    fail(f"{config_file}: unknown config key {key!r}")
  except (ValueError, TypeError, OSError, SyntaxError) as exc:
    fail(f"{config_file}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}")
  if config is None:
    fail("--config is required, e.g. --config=configs/dice.py")
  return rest


def default_workdir(config_arg: str) -> str:
  stem = os.path.splitext(os.path.basename(config_arg.split(":")[0]))[0]
  return os.path.join("runs", stem)


def init_distributed() -> None:
  """Joins a multi-process run when asked; must precede any device use (so any JAX import
  that touches devices). Each process then sees every device; training shards over all."""
  if not (FLAGS.distributed or FLAGS.coordinator_address or FLAGS.num_processes is not None
          or FLAGS.process_id is not None):
    return
  import jax
  try:
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id)
  except (RuntimeError, ValueError, TypeError) as exc:
    fail(f"--distributed: jax.distributed.initialize failed: {str(exc).splitlines()[0]}")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  init_distributed()
  from echokld import train  # Imported after flag parsing: it pulls in JAX.
  from echokld.errors import InputError, TrainingDiverged
  logging.set_verbosity(logging.WARNING)
  workdir = FLAGS.workdir or default_workdir(flags.FLAGS["config"].config_filename)
  try:
    train.train_and_evaluate(FLAGS.config, workdir)
  except InputError as exc:
    fail(str(exc), InputError.exit_code)
  except TrainingDiverged as exc:
    fail(str(exc), TrainingDiverged.exit_code)


def run() -> None:
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
