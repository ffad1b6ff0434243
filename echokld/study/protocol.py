"""Which training protocol a sweep ran: `quick` (a config's defaults), `paper` (`:paper`),
`cpu_study` (`:cpu_study`) or `best` (`:best`, the recipe for the best masks).

`--protocol=paper` makes every run of a sweep load `<config>:paper` (configs/base.py
apply_paper_protocol: the paper's §3.3 optimiser settings at native resolution);
`--protocol=cpu_study` loads `<config>:cpu_study` (96x96, trained to early stopping). The
sweep folder records the request in sweep.json, and refuses a second sweep of another protocol
into the same folder (its finished runs would be skipped as if they were the new ones).
Each run's config.json holds the settings it really trained with; `describe` compares them
with the model's own config under each protocol for the report header.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Sequence

from echokld import registry
from echokld.errors import InputError

PROTOCOLS = ("quick", "paper", "cpu_study", "best")
RECORD = "sweep.json"  # In the sweep folder: {"protocol": ...}.


def check(protocol: str) -> str:
  if protocol not in PROTOCOLS:
    raise InputError("--protocol", f"unknown protocol {protocol!r} ({', '.join(PROTOCOLS)})")
  return protocol


def config_value(config_path: str, protocol: str) -> str:
  """The `--config` value of a run: the config file, plus ':<protocol>' unless `quick`."""
  return config_path + ("" if check(protocol) == "quick" else ":" + protocol)


def read_record(sweep_dir: str) -> dict[str, Any] | None:
  path = os.path.join(sweep_dir, RECORD)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      record = json.load(f)
  except (OSError, ValueError) as exc:
    raise InputError(path, f"unreadable JSON ({exc.__class__.__name__})") from None
  if not isinstance(record, dict) or record.get("protocol") not in PROTOCOLS:
    raise InputError(path, f"expected {{\"protocol\": one of {', '.join(PROTOCOLS)}}}")
  return record


def record(sweep_dir: str, protocol: str) -> None:
  """Writes sweep.json, or checks that the folder already holds a sweep of this protocol."""
  check(protocol)
  found = read_record(sweep_dir)
  if found is not None:
    if found["protocol"] != protocol:
      raise InputError(os.path.join(sweep_dir, RECORD), f"this folder holds a "
                       f"--protocol={found['protocol']} sweep; use another --out for "
                       f"--protocol={protocol}")
    return
  try:
    os.makedirs(sweep_dir, exist_ok=True)
    with open(os.path.join(sweep_dir, RECORD), "w") as f:
      json.dump({"protocol": protocol}, f, indent=2)
  except OSError as exc:
    raise InputError(sweep_dir, f"cannot write {RECORD} ({exc.strerror})") from None


@functools.lru_cache(maxsize=None)
def reference_settings(model: str) -> tuple[tuple[str, tuple[Any, ...]], ...]:
  """(key, (its value under each of PROTOCOLS)) of every key on which the protocols differ,
  in the model's config (base's config for a model that is not registered), JSON-typed like
  config.json."""
  spec = registry.get(model)
  name = spec.config_name if spec else "base"
  flat = [registry.flatten(json.loads(registry.load_config(config_value(name, p)).to_json()))
          for p in PROTOCOLS]
  keys = sorted(set().union(*flat))
  return tuple((k, tuple(f.get(k) for f in flat)) for k in keys
               if len({json.dumps(f.get(k)) for f in flat}) > 1)


def classify(model: str, config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
  """(protocol, {key: value differing from it}) of a run's config.json.

  The protocol is the one whose values of the protocol keys the run shares most (the first
  of PROTOCOLS on a tie); ('unknown', {}) when config.json records none of those keys (older
  or foreign runs).
  """
  flat = registry.flatten(config)
  keys = reference_settings(model)
  if not any(k in flat for k, _ in keys):
    return "unknown", {}
  differs = [{k: flat.get(k) for k, values in keys if flat.get(k) != values[i]}
             for i in range(len(PROTOCOLS))]
  best = min(range(len(PROTOCOLS)), key=lambda i: len(differs[i]))
  return PROTOCOLS[best], differs[best]


def _value(key: str, value: Any) -> str:
  if key == "data.image_size" and value == 0:
    return "native"
  return json.dumps(value)


def describe(sweep_dir: str, runs: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
  """Report lines naming the requested protocol and what the runs' config.json files hold.

  `runs`: (model, config.json contents) of every run the report uses.
  """
  lines = []
  found = read_record(sweep_dir) if os.path.isdir(sweep_dir) else None
  if found:
    lines.append(f"Protocol requested: `--protocol={found['protocol']}` ({RECORD}).")
  kinds: dict[tuple, list[str]] = {}
  for model, config in runs:
    kind, differs = classify(model, config)
    kinds.setdefault((kind, tuple(sorted((k, _value(k, v)) for k, v in differs.items()))),
                     []).append(model)
  for (kind, differs), models in sorted(kinds.items()):
    count = f"{len(models)} run{'s' if len(models) > 1 else ''}"
    if kind == "unknown":
      lines.append(f"Protocol of {count}: not recorded in config.json.")
      continue
    index = PROTOCOLS.index(kind)
    own = ", ".join(f"{k} = {_value(k, values[index])}"
                    for k, values in reference_settings(models[0]))
    text = f"Protocol of {count} (config.json): {kind} ({own})"
    if differs:
      text += ", except " + ", ".join(f"{k} = {v}" for k, v in differs)
    lines.append(text + ".")
  return lines
