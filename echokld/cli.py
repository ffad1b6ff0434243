"""What every command line shares: one-line errors, config names, seed lists.

Bad input ends a command with one line on stderr naming the culprit and exit code 2.
`--config` takes a packaged config by name (`dice`, `dice:paper`), a path to any config
file, or `configs/<name>.py` (the packaged one when no such file exists here), from any
folder.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

from echokld import hostcpu, registry
from echokld.errors import InputError


def one_line(text: Any, limit: int = 300) -> str:
  text = " ".join(str(text).split())
  return text if len(text) <= limit else text[:limit - 3] + "..."


def fail(message: Any, code: int = 2) -> NoReturn:
  print(f"error: {one_line(message)}", file=sys.stderr)
  sys.exit(code)


def use_host_devices(flag_value: int | None, batch_size: int | None = None,
                     split: bool = True) -> int:
  """echokld.hostcpu.use_host_devices for a CLI: a bad --cpu_devices is one line, exit 2."""
  try:
    return hostcpu.use_host_devices(flag_value, batch_size, split)
  except ValueError as exc:
    fail(f"--cpu_devices: {exc}")


def run_script(main: Any) -> None:
  """Runs a script's `main()`; its InputError becomes one line on stderr and exit code 2."""
  try:
    main()
  except InputError as error:
    fail(error, error.exit_code)


def rewrite_config_flag(argv: list[str]) -> list[str]:
  """argv with its --config value resolved (registry.resolve_config); InputError if not."""
  out = list(argv)
  for i, arg in enumerate(out):
    if arg.startswith("--config="):
      out[i] = "--config=" + registry.resolve_config(arg.split("=", 1)[1])
    elif arg == "--config" and i + 1 < len(out):
      out[i + 1] = registry.resolve_config(out[i + 1])
  return out


def config_stem(config_arg: str) -> str:
  """'runs/<stem>' naming: the config file's stem (`dice` for dice, configs/dice.py:paper)."""
  return os.path.splitext(os.path.basename(config_arg.split(":")[0]))[0]


def parse_seeds(spec: str) -> list[int]:
  """'0,1,2' or '0-3' -> distinct ints; InputError otherwise."""
  try:
    if "-" in spec.strip("-") and "," not in spec:
      lo, hi = (int(v) for v in spec.split("-"))
      seeds = list(range(lo, hi + 1))
    else:
      seeds = [int(v) for v in spec.split(",") if v.strip()]
  except ValueError:
    raise InputError("--seeds", f"expected a comma list of integers, got {spec!r}") from None
  if not seeds or len(set(seeds)) != len(seeds):
    raise InputError("--seeds", f"expected distinct seeds, got {spec!r}")
  return seeds


def quiet_unless_verbosity_given() -> None:
  """Logs at WARNING unless the user passed --verbosity (absl's default, INFO, buries the
  console lines under orbax's per-save messages); `--verbosity=0` shows them all."""
  from absl import flags, logging
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
