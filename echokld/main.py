"""Trains a model: python -m echokld.main --config=kld_alpha [--workdir=DIR].

`--config` takes a packaged config (`dice`, `kld_alpha:paper`, configs/<name>.py) or any
config file; `--config.<key>=value` overrides a field. `--seeds=0-3
--workdir='runs/dice_seed{seed}'` trains the seeds as one replica group (one program, each
seed its own run folder). Bad input (an unknown config key, a missing config file, bad data,
an unwritable workdir) ends with one line on stderr naming the culprit and exit code 2.
"""

from __future__ import annotations

import os
import re

from absl import app, flags
from ml_collections import config_flags

from echokld import cli
from echokld.errors import InputError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config: a packaged name (dice, dice:paper) "
                                "or a config file path.", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory (default runs/<config name>); with "
                    "several --seeds it must contain {seed}.")
flags.DEFINE_string("seeds", None, "Train these seeds as one replica group: '0,1,2' or '0-3' "
                    "(default: config.seed alone).")
flags.DEFINE_enum("replica_mode", "unroll", ("unroll", "hybrid", "vmap", "devices"),
                  "How one step runs over a group's replicas (BENCHMARKS.md); devices: "
                  "the seeds spread over the devices instead of each batch.")
flags.DEFINE_bool("distributed", False, "Multi-process run: jax.distributed.initialize() before "
                  "any device use (auto-detected on SLURM, Open MPI, Kubernetes, Cloud TPU).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (implies "
                    "--distributed; default $JAX_COORDINATOR_ADDRESS or auto-detected).")
flags.DEFINE_integer("num_processes", None, "Processes of the run (implies --distributed).")
flags.DEFINE_integer("process_id", None, "This process's index (implies --distributed).")
flags.DEFINE_integer("cpu_devices", None, "On a CPU: JAX devices to split the host into (1 = "
                     "off; default one per core dividing the batch; echokld.hostcpu).")


def _unknown_key(exc: Exception, argv: list[str]) -> str:
  """'unknown config key ...' for ml_collections' KeyError/AttributeError on an override."""
  text = str(exc.args[0]) if exc.args else ""
  name = re.findall(r"[\w.]+", text)[0] if re.findall(r"[\w.]+", text) else "?"
  key = next((a.split("=", 1)[0][len("--config."):] for a in argv
              if a.startswith("--config.") and name in a.split("=", 1)[0].split(".")), name)
  hint = re.search(r'Did you mean "([^"]+)"', text)
  return f"unknown config key {key!r}" + (f" (did you mean {hint[1]!r}?)" if hint else "")


def _flag_error(exc: Exception, config_arg: str) -> str:
  """One line of an absl flag error; for a config file that raised, its own last line."""
  text = str(exc)
  if "Traceback" in text:
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return f"--config={config_arg}: {lines[-1]}"
  return text.splitlines()[0] if text else repr(exc)


def parse_flags(argv: list[str]) -> list[str]:
  """Parses flags, turning absl/ml_collections errors into one line and exit code 2."""
  given = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "")
  try:
    argv = cli.rewrite_config_flag(argv)
  except InputError as exc:
    cli.fail(exc)
  try:
    rest = FLAGS(argv)
    config = FLAGS.config  # Loads the file now, so its errors surface here.
  except flags.Error as exc:
    cli.fail(_flag_error(exc, given))
  except (KeyError, AttributeError) as exc:
    cli.fail(_unknown_key(exc.args[0] if exc.args and isinstance(exc.args[0], Exception)
                          else exc, argv))
  except (ValueError, TypeError, OSError, SyntaxError) as exc:
    cli.fail(f"--config: {exc.__class__.__name__}: {str(exc).splitlines()[0]}")
  if config is None:
    cli.fail("--config is required, e.g. --config=dice")
  return rest


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
    cli.fail(f"--distributed: jax.distributed.initialize failed: {str(exc).splitlines()[0]}")


def workdirs(seeds: list[int] | None) -> list[str]:
  """The run folder of each seed (one folder when no --seeds are given)."""
  stem = os.path.join("runs", cli.config_stem(FLAGS["config"].config_filename))
  if seeds is None:
    return [FLAGS.workdir or stem]
  template = FLAGS.workdir or stem + "_seed{seed}"
  if "{seed}" not in template:
    if len(seeds) > 1:
      raise InputError("--workdir", "must contain {seed} with several --seeds, e.g. "
                       "runs/dice_seed{seed}")
    return [template]
  return [template.format(seed=s) for s in seeds]


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  cli.use_host_devices(FLAGS.cpu_devices, FLAGS.config.train.batch_size,
                       FLAGS.config.train.data_parallel)
  init_distributed()
  from echokld.errors import TrainingDiverged
  from echokld.train import loop  # Imported after flag parsing: it pulls in JAX.
  cli.quiet_unless_verbosity_given()
  try:
    seeds = cli.parse_seeds(FLAGS.seeds) if FLAGS.seeds else None
    loop.train(FLAGS.config, workdirs(seeds), seeds, FLAGS.replica_mode)
  except InputError as exc:
    cli.fail(exc, InputError.exit_code)
  except TrainingDiverged as exc:
    cli.fail(exc, TrainingDiverged.exit_code)


def run() -> None:
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
