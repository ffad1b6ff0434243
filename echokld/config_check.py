"""Every config value checked before any work: one InputError naming the field.

Training would otherwise fail minutes later with a traceback deep in JAX or optax (an
unknown optimizer, a zero batch, a learning rate of -1). `check(config)` runs when a run
starts (train.loop.train) and so from every command line; the first bad field ends it.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from echokld import registry
from echokld.errors import InputError

QUALITIES = ("Good", "Medium", "Poor")


def _get(config: Any, key: str) -> Any:
  node = config
  for part in key.split("."):
    node = node[part]
  return node


def _is_int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
  return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def one_of(*choices: str) -> tuple[Callable[[Any], bool], str]:
  return (lambda v: v in choices), "one of " + ", ".join(repr(c) for c in choices)


def int_at_least(low: int) -> tuple[Callable[[Any], bool], str]:
  return (lambda v: _is_int(v) and v >= low), f"an integer >= {low}"


def number_in(low: float, high: float, low_open: bool = False,
              high_open: bool = False) -> tuple[Callable[[Any], bool], str]:
  def ok(v):
    return (_is_number(v) and (v > low if low_open else v >= low) and
            (v < high if high_open else v <= high))
  left, right = "(" if low_open else "[", ")" if high_open else "]"
  return ok, f"a number in {left}{low:g}, {high:g}{right}"


def boolean() -> tuple[Callable[[Any], bool], str]:
  return (lambda v: isinstance(v, bool)), "True or False"


def subset_of(choices: Sequence[str], allow_empty: bool = True
              ) -> tuple[Callable[[Any], bool], str]:
  def ok(v):
    return (isinstance(v, (tuple, list)) and all(x in choices for x in v) and
            len(set(v)) == len(v) and (allow_empty or len(v) > 0))
  return ok, ("a list without repeats of " + ", ".join(repr(c) for c in choices) +
              ("" if allow_empty else " (at least one)"))


def _image_size(v: Any) -> bool:
  if _is_int(v):
    return v == 0 or v >= 16
  return (isinstance(v, (tuple, list)) and len(v) == 2 and
          all(_is_int(x) and x >= 16 for x in v))


def _shape_or_empty(v: Any) -> bool:
  return (isinstance(v, (tuple, list)) and (len(v) == 0 or
                                            (len(v) == 2 and all(_is_int(x) and x >= 16
                                                                 for x in v))))


def _profile_steps(v: Any) -> bool:
  if v == "":
    return True
  parts = str(v).split(",")
  return (len(parts) == 2 and all(p.strip().isdigit() for p in parts) and
          int(parts[0]) <= int(parts[1]))


def _test_frames(v: Any) -> bool:
  items = dict(v).items() if hasattr(v, "items") else None
  return items is not None and all(_is_int(n) and n >= 0 for _, n in items)


def rules() -> list[tuple[str, Callable[[Any], bool], str]]:
  """(dotted key, predicate, what is expected) for every checked field."""
  from echokld.nn import heads  # Registries of heads and loss terms, read when checked.
  from echokld.nn import model as model_lib
  from echokld.objectives import conditioning, terms
  table = [
      ("seed", *int_at_least(0)),
      ("model.name", lambda v: isinstance(v, str) and v.strip() != "" and "/" not in v,
       "a non-empty name without '/'"),
      ("model.paper_number", *int_at_least(0)),
      ("model.variant", lambda v: isinstance(v, str), "a string ('' for the paper's reading)"),
      ("model.init_features", *int_at_least(1)),
      ("model.blocks_down", lambda v: isinstance(v, (tuple, list)) and len(v) >= 2 and
       all(_is_int(b) and b >= 1 for b in v), "a list of >= 2 positive block counts"),
      ("model.num_groups", *int_at_least(1)),
      ("model.heads", *subset_of(heads.head_names())),
      ("model.dist_injection", *one_of(*conditioning.SOURCES)),
      ("model.inject_via", *one_of(*model_lib.INJECTIONS)),
      ("model.batch_source", *one_of(*conditioning.BATCH_SOURCES)),
      ("model.align_source", *one_of(*model_lib.ALIGN_HEADS)),
      ("model.vae_latent", *int_at_least(1)),
      ("model.flat_latent", *int_at_least(1)),
      ("model.dist_hidden", *int_at_least(1)),
      ("data.source", *one_of("synthetic", "folder", "camus", "camus_tfds")),
      ("data.view", *one_of("2CH", "4CH")),
      ("data.qualities", *subset_of(QUALITIES, allow_empty=False)),
      ("data.keep_unknown_quality", *boolean()),
      ("data.split", *one_of("paper", "official")),
      ("data.test_frames", _test_frames, "a mapping of quality to a count >= 0"),
      ("data.val_fraction", *number_in(0.0, 1.0, high_open=True)),
      ("data.image_size", _image_size, "0 (native size), a side >= 16 or (rows, cols) >= 16"),
      ("data.native_shape", _shape_or_empty, "() or (rows, cols) >= 16"),
      ("data.synthetic_patients", *int_at_least(4)),
      ("data.synthetic_shape", lambda v: _shape_or_empty(v) and len(v) == 2,
       "(rows, cols) >= 16"),
      ("train.batch_size", *int_at_least(1)),
      ("train.learning_rate", *number_in(0.0, 10.0, low_open=True)),
      ("train.optimizer", *one_of("adam", "adamw")),
      ("train.weight_decay", *number_in(0.0, 1.0)),
      ("train.max_epochs", *int_at_least(0)),
      ("train.schedule", *one_of("plateau", "cosine", "onecycle")),
      ("train.warmup_epochs", *int_at_least(0)),
      ("train.ema_decay", *number_in(0.0, 1.0, high_open=True)),
      ("train.plateau_patience", *int_at_least(1)),
      ("train.plateau_factor", *number_in(0.0, 1.0, low_open=True)),
      ("train.early_stop_patience", *int_at_least(1)),
      ("train.min_delta", *number_in(0.0, 1.0)),
      ("train.steps_per_call", *int_at_least(1)),
      ("train.eval_batch_size", *int_at_least(1)),
      ("train.data_parallel", *boolean()),
      ("train.compute_dtype", *one_of("float32", "bfloat16")),
      ("loss.terms", *subset_of(terms.term_names(), allow_empty=False)),
      ("loss.dice_eps", *number_in(0.0, 1.0, low_open=True)),
      ("loss.dice_reduction", *one_of("batch", "image")),
      ("loss.bce_weight", *number_in(0.0, 1e3)),
      ("loss.kld_weight", *number_in(0.0, 1e3)),
      ("loss.kld_estimator", *one_of("fit", "kde")),
      ("loss.family", *one_of("alpha", "pearson3")),
      ("loss.kld_direction", *one_of("pred_gt", "gt_pred")),
      ("loss.kld_pooling", *one_of("batch", "image")),
      ("loss.soft_threshold_temperature", *number_in(0.0, 10.0, low_open=True)),
      ("loss.soft_threshold_cut", *number_in(0.0, 1.0, high_open=True)),
      ("loss.kde_bandwidth", *number_in(0.0, 1.0)),
      ("loss.num_bins", *int_at_least(2)),
      ("loss.vae_recon_weight", *number_in(0.0, 1e3)),
      ("loss.vae_kl_weight", *number_in(0.0, 1e3)),
      ("augment.enabled", *boolean()),
      ("augment.rotation_deg", *number_in(0.0, 180.0)),
      ("augment.scale", *number_in(0.0, 1.0, high_open=True)),
      ("augment.translate", *number_in(0.0, 1.0)),
      ("augment.gamma", *number_in(0.0, 3.0)),
      ("augment.contrast", *number_in(0.0, 1.0)),
      ("augment.brightness", *number_in(0.0, 1.0)),
      ("augment.speckle", lambda v: _is_number(v) and (v == 0 or v >= 1),
       "0 (off) or a gamma shape >= 1"),
      ("augment.blur", *number_in(0.0, 1.0)),
      ("augment.flip", *number_in(0.0, 1.0)),
      ("augment.tta", *one_of("none", "flip", "affine")),
      ("log.progress", *boolean()),
      ("log.tensorboard", *boolean()),
      ("profile_steps", _profile_steps, "'' or 'a,b' with a <= b"),
  ]
  return table


def check(config: Any) -> None:
  """Raises InputError on the first field that is missing or has a bad value."""
  for key, ok, expected in rules():
    try:
      value = _get(config, key)
    except (KeyError, AttributeError):
      raise InputError(f"config.{key}", "missing (start from echokld/configs/base.py)") from None
    if not ok(value):
      raise InputError(f"config.{key}", f"{value!r} is not {expected}")
  model = config.model
  if model.init_features % model.num_groups:
    raise InputError("config.model.num_groups", f"{model.num_groups} groups do not divide "
                     f"the {model.init_features} filters of the first level")
  aligned = "dist_align" in config.loss.terms
  if aligned != (model.align_source != "none"):
    raise InputError("config.model.align_source", f"{model.align_source!r} with loss terms "
                     f"{tuple(config.loss.terms)}: the dist_align term and an align_source "
                     "other than 'none' go together")
  for name in config.loss.terms:
    weight = _term_weight(name)
    if weight is not None and weight not in config.loss:
      raise InputError(f"config.loss.{weight}", f"missing: loss term {name!r} is weighted by it")
  registry.check_consistent(config)


def _term_weight(name: str) -> str | None:
  from echokld.objectives import terms
  return terms.get_term(name).weight
