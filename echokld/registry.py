"""The model registry: every packaged model, read from its config file in echokld/configs.

A model is one config file (`get_config`) whose `model` block names it (`name`,
`display_name`, `paper_number`) and whose switches say what it is: `model.heads`,
`model.dist_injection`, `loss.terms` (with `loss.kld_estimator` for the kld term and
`loss.family` wherever a distribution is fitted) and the optimizer. A config with a
`model.variant` is another reading of paper model `paper_number`, outside the paper's seven. The sweep, the report and the config checks read this registry; adding a model
means adding a config file (plus a registered head or loss term if it needs a new one).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import json
import os
import pkgutil
from typing import Any

from echokld import configs as configs_pkg
from echokld.errors import InputError

CONFIG_DIR = os.path.dirname(os.path.abspath(configs_pkg.__file__))
NOT_MODELS = ("base",)  # Config modules that hold shared defaults, not a model.


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """What the registry knows of one model."""

  name: str
  display_name: str
  paper_number: int  # 0: not one of the paper's seven.
  config_name: str  # Module in echokld/configs (`--config=<config_name>`).
  variant: str  # Non-empty: another reading of model paper_number (not one of the seven).
  switches: tuple[tuple[str, Any], ...]  # (config key, value) pairs that define the model.

  @property
  def config_path(self) -> str:
    return os.path.join(CONFIG_DIR, self.config_name + ".py")


def switches(config: Any) -> tuple[tuple[str, Any], ...]:
  """The config values that make a model what it is (never its name)."""
  terms = tuple(config.loss.terms)
  out = [("model.heads", tuple(config.model.heads)),
         ("model.dist_injection", config.model.dist_injection),
         ("loss.terms", terms),
         ("train.optimizer", config.train.optimizer)]
  if "kld" in terms:
    out.append(("loss.kld_estimator", config.loss.kld_estimator))
  fitted = ("kld" in terms and config.loss.kld_estimator == "fit") or "dist_align" in terms \
      or config.model.dist_injection != "none"
  if fitted:
    out.append(("loss.family", config.loss.family))
  return tuple(out)


def load_config_module(name: str) -> Any:
  return importlib.import_module(f"{configs_pkg.__name__}.{name}")


@functools.lru_cache(maxsize=None)
def _specs() -> tuple[ModelSpec, ...]:
  found = []
  for info in pkgutil.iter_modules([CONFIG_DIR]):
    if info.name in NOT_MODELS or info.name.startswith("_"):
      continue
    config = load_config_module(info.name).get_config()
    found.append(ModelSpec(config.model.name, config.model.display_name,
                           int(config.model.paper_number), info.name,
                           str(config.model.get("variant", "")), switches(config)))
  return tuple(sorted(found, key=lambda s: (s.paper_number or 1000, s.name)))


def models() -> list[ModelSpec]:
  """Every packaged model, the paper's seven first, in the paper's order."""
  return list(_specs())


def names() -> list[str]:
  return [spec.name for spec in _specs()]


def paper_models() -> list[str]:
  """The paper's seven, in its order (Model 1 to 7)."""
  return [spec.name for spec in _specs() if spec.paper_number and not spec.variant]


def get(name: str) -> ModelSpec | None:
  return next((spec for spec in _specs() if spec.name == name), None)


def display_name(name: str) -> str:
  spec = get(name)
  return spec.display_name if spec else name


def resolve_config(value: str) -> str:
  """`--config` value -> 'path[:arg]' of an existing config file.

  A bare name, `<name>.py` or `.../configs/<name>.py` that is not a file here is the packaged
  config of that name (echokld/configs/<name>.py).
  """
  path, sep, arg = value.partition(":")
  if os.path.isfile(path):
    return value
  stem, ext = os.path.splitext(os.path.basename(path))
  folder = os.path.basename(os.path.dirname(path))
  packaged = os.path.join(CONFIG_DIR, stem + ".py")
  if (ext in ("", ".py") and folder in ("", "configs") and stem and
      os.path.isfile(packaged)):
    return packaged + sep + arg
  known = ", ".join(names())
  raise InputError(path or "--config", f"no such config file, and no packaged config of that "
                   f"name (packaged: base, {known})")


def load_config(value: str) -> Any:
  """The config a `--config` value names ('dice', 'dice:paper', a file path[:arg])."""
  path, _, arg = resolve_config(value).partition(":")
  spec = importlib.util.spec_from_file_location(f"_echokld_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def check_consistent(config: Any) -> None:
  """A config that keeps a registered model's name must keep that model's switches.

  Raises InputError naming the first switch that differs, so that a run is never recorded
  under the name of a model it is not.
  """
  spec = get(config.model.name)
  if spec is None:
    return
  mine = dict(switches(config))
  for key, value in spec.switches:
    if mine.get(key) != value:
      raise InputError(f"config.{key}", f"{mine.get(key)!r} does not match model "
                       f"{spec.name!r} ({spec.display_name}), which has {value!r}; set "
                       f"--config.model.name to a new name for another model")


def upgrade(config: dict[str, Any]) -> dict[str, Any]:
  """A config.json written by an older echokld, in today's form.

  Runs from before models had explicit switches chose behaviour from `model.vae_head`,
  `model.inject_dist`, `model.dist_head`, `loss.kld_estimator = none` and the name `bd_vae`;
  runs from before `loss.family` fitted Pearson III without a soft-threshold cut; fields
  added since (augmentation, schedules, ...) get their defaults. Their folders stay
  readable by prediction and resumable (a `kld_alpha` run from before `loss.family` is a
  Pearson III run: resuming it under that name is refused by check_consistent).
  """
  return _with_defaults(_explicit_switches(config))


def _with_defaults(config: dict[str, Any]) -> dict[str, Any]:
  """Fields added since the run was written, at their defaults (which keep the behaviour
  the run had: new features are off by default)."""
  from echokld.configs import base
  defaults = json.loads(base.get_config().to_json())

  def merged(saved: dict[str, Any], default: dict[str, Any]) -> dict[str, Any]:
    out = dict(saved)
    for key, value in default.items():
      if key not in out:
        out[key] = value
      elif isinstance(value, dict) and isinstance(out[key], dict):
        out[key] = merged(out[key], value)
    return out

  return merged(config, defaults)


def _explicit_switches(config: dict[str, Any]) -> dict[str, Any]:
  model, loss = dict(config.get("model", {})), dict(config.get("loss", {}))
  if "heads" not in model and "vae_head" in model:
    vae, dist_head = model.pop("vae_head"), model.pop("dist_head", False)
    inject = model.pop("inject_dist", False)
    model["heads"] = ["vae"] if vae else []
    model["align_source"] = "head" if dist_head else "none"
    model.update(inject_via="broadcast", batch_source="ground_truth", flat_latent=512)
    model["dist_injection"] = ("none" if not inject else
                               "batch" if model.get("name") == "bd_vae" else "reference")
    spec = get(model.get("name", ""))
    model.setdefault("display_name", spec.display_name if spec else model.get("name", ""))
    model.setdefault("paper_number", spec.paper_number if spec else 0)
    estimator = loss.get("kld_estimator", "none")
    loss["terms"] = (["dice"] + (["kld"] if estimator != "none" else []) +
                     (["recon", "vae_kl"] if vae else []) + (["dist_align"] if dist_head else []))
    if estimator == "none":
      loss["kld_estimator"] = "alpha"
    config = {**config, "model": model, "loss": loss}
  elif "heads" in model and "align_source" not in model:
    # Before issue 14 items 4-5: Models 6-7 aligned a regression head ("dist" in heads),
    # injected by broadcast. The head now follows from align_source.
    heads = list(model["heads"])
    model["align_source"] = "head" if "dist" in heads else "none"
    model["heads"] = [h for h in heads if h != "dist"]
    model.setdefault("inject_via", "broadcast")
    model.setdefault("batch_source", "ground_truth")
    model.setdefault("flat_latent", 512)
    config = {**config, "model": model}
  return upgrade_family(config)


def upgrade_family(config: dict[str, Any]) -> dict[str, Any]:
  """Before `loss.family`, every fit was Pearson III and `kld_estimator = alpha` named it;
  before `loss.soft_threshold_cut` the pseudo output had none. Set explicitly for the runs
  that use them, since the defaults (alpha, cut 0.01) would change such a run's behaviour;
  other runs get the defaults, which they do not read (so they stay resumable)."""
  loss = dict(config.get("loss", {}))
  terms = loss.get("terms", ())
  fitted = ("kld" in terms or "dist_align" in terms
            or config.get("model", {}).get("dist_injection", "none") != "none")
  if loss.get("kld_estimator") == "alpha":
    loss["kld_estimator"] = "fit"
  if "family" not in loss and fitted:
    loss["family"] = "pearson3"
  if "soft_threshold_cut" not in loss and "kld" in terms:
    loss["soft_threshold_cut"] = 0.0
  return {**config, "loss": loss}


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
  """A nested config dict as {"train.batch_size": 8, ...} (how configs are compared)."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out
