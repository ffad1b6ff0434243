"""Every config value checked before any work: one line naming the field, exit code 2."""

import json
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from conftest import ROOT, tiny_config
from echokld import cli, config_check, registry
from echokld.errors import InputError


@pytest.mark.parametrize("name", registry.names())
@pytest.mark.parametrize("arg", ["", "paper", "cpu_study", "best"])
def test_every_packaged_config_passes(name, arg):
  config_check.check(registry.load_config(f"{name}:{arg}" if arg else name))


@pytest.mark.parametrize("key, value, fragment", [
    ("train.optimizer", "sgd", "'sgd' is not one of 'adam', 'adamw'"),
    ("train.batch_size", 0, "0 is not an integer >= 1"),
    ("train.learning_rate", -1.0, "-1.0 is not a number in (0, 10]"),
    ("train.learning_rate", float("nan"), "nan is not a number"),
    ("data.val_fraction", 1.0, "1.0 is not a number in [0, 1)"),
    ("data.image_size", 8, "8 is not 0 (native size)"),
    ("data.qualities", ("Good", "Bad"), "is not a list without repeats of 'Good'"),
    ("loss.terms", ("dice", "nope"), "is not a list without repeats of"),
    ("model.heads", ("vae", "vae"), "is not a list without repeats"),
    ("profile_steps", "5,2", "'' or 'a,b' with a <= b"),
    ("model.align_source", "bottleneck", "is not one of 'none', 'prediction', 'latent'"),
    ("model.batch_source", "labels", "is not one of 'ground_truth', 'prediction'"),
    ("model.inject_via", "film", "is not one of 'broadcast', 'flat_latent'"),
    ("model.flat_latent", 0, "0 is not an integer >= 1"),
    ("loss.family", "gamma", "'gamma' is not one of 'alpha', 'pearson3'"),
    ("loss.kld_estimator", "alpha", "'alpha' is not one of 'fit', 'kde'"),
    ("loss.soft_threshold_cut", 1.0, "1.0 is not a number in [0, 1)"),
    ("augment.speckle", 0.5, "0 (off) or a gamma shape >= 1"),
    ("augment.flip", 1.5, "1.5 is not a number in [0, 1]"),
])
def test_bad_values_name_the_field(key, value, fragment):
  config = tiny_config(**{"model.name": "custom", key: value})
  with pytest.raises(InputError, match=None) as info:
    config_check.check(config)
  assert str(info.value).startswith(f"config.{key}: ")
  assert fragment in str(info.value)


def test_an_align_source_needs_the_dist_align_term_and_back():
  with pytest.raises(InputError, match="config.model.align_source: 'latent' with loss terms"):
    config_check.check(tiny_config("dice", **{"model.name": "custom",
                                              "model.align_source": "latent"}))
  with pytest.raises(InputError, match="config.model.align_source: 'none' with loss terms"):
    config_check.check(tiny_config("rd_vae", **{"model.name": "custom",
                                                "model.align_source": "none"}))


def test_groups_must_divide_the_first_level_filters():
  with pytest.raises(InputError, match="config.model.num_groups: 3 groups do not divide"):
    config_check.check(tiny_config(**{"model.num_groups": 3}))


def test_a_model_name_with_another_models_switches_is_refused():
  config = tiny_config("dice", **{"model.name": "kld_alpha"})
  with pytest.raises(InputError, match=r"config.loss.terms: \('dice',\) does not match model "
                                       r"'kld_alpha' \(KLD-alpha\)"):
    config_check.check(config)


def test_kld_alpha_with_pearson3_is_refused_and_old_runs_upgrade_to_pearson3():
  config = tiny_config("kld_alpha", **{"loss.family": "pearson3"})
  with pytest.raises(InputError, match=r"config.loss.family: 'pearson3' does not match model "
                                       r"'kld_alpha'"):
    config_check.check(config)
  # A config.json written before loss.family: kld_estimator 'alpha' meant Pearson III.
  old = {"model": {"name": "kld_alpha", "heads": []},
         "loss": {"terms": ["dice", "kld"], "kld_estimator": "alpha"}}
  new = registry.upgrade(old)
  assert new["loss"]["kld_estimator"] == "fit" and new["loss"]["family"] == "pearson3"
  assert new["loss"]["soft_threshold_cut"] == 0.0  # No cut then.
  # A dice run does not read them: the defaults, so it stays resumable.
  dice = registry.upgrade({"model": {"name": "dice", "heads": []},
                           "loss": {"terms": ["dice"], "kld_estimator": "alpha"}})
  assert dice["loss"]["family"] == "alpha" and dice["loss"]["soft_threshold_cut"] == 0.01


def run_main(*args):
  return subprocess.run([sys.executable, "-m", "echokld.main", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, line", [
    (["--config=dice", "--config.train.optimizer=sgd"],
     "error: config.train.optimizer: 'sgd' is not one of 'adam', 'adamw'"),
    (["--config=dice:papr"],
     "error: --config=dice:papr: ValueError: unknown config argument 'papr' (expected '', "
     "'paper', 'cpu_study' or 'best')"),
    (["--config=dice", "--config.train.max_epoch=3"],
     "error: unknown config key 'train.max_epoch' (did you mean 'max_epochs'?)"),
    (["--config=dice", "--config.model.name=vae"],
     "error: config.model.heads: () does not match model 'vae' (VAE), which has ('vae',); "
     "set --config.model.name to a new name for another model"),
    (["--config=nosuchmodel"],
     "error: nosuchmodel: no such config file, and no packaged config of that name "
     f"(packaged: base, {', '.join(registry.names())})"),
])
def test_cli_rejects_in_one_line_with_exit_2_and_writes_nothing(args, line, tmp_path):
  done = run_main(*args, f"--workdir={tmp_path / 'run'}")
  assert done.returncode == 2, done.stderr
  assert done.stderr.strip().splitlines() == [line]
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag, fragment", [
    ("--shard=abc", "--shard: expected i/n"), ("--shard=2/2", "--shard: expected 0 <= i < n"),
    ("--models=dcie", "--models: unknown model 'dcie'"), ("--seeds=1,1", "--seeds: expected"),
    ("--groups=Bad", "--groups: unknown group 'Bad'"),
])
def test_sweep_flags_are_checked_before_any_run(flag, fragment, tmp_path):
  done = subprocess.run([sys.executable, "-m", "echokld.sweep", f"--out={tmp_path / 's'}",
                         flag], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert done.returncode == 2, done.stderr
  lines = done.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines
  assert not (tmp_path / "s").exists()


def parsed_row(row, monkeypatch):
  """The config `echokld.main` builds for an ablation row, through ml_collections' own
  override parser (it reads the overrides from sys.argv)."""
  import ablate_recipe  # experiments/ (conftest puts it on the path).

  arg, overrides = ablate_recipe.ROWS[row]
  argv = cli.rewrite_config_flag(["main", "--config=dice" + (f":{arg}" if arg else ""),
                                  "--config.data.image_size=128", *overrides])
  monkeypatch.setattr(sys, "argv", argv)
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=values)
  values(argv)
  return values.config


def test_best_is_the_ablations_geometry_row(monkeypatch):
  """docs/RESULTS.md reports `:best` by the ablation's geometry row: the two must agree."""
  import ablate_recipe

  assert ablate_recipe.ROWS["geometry"][0] == ""
  assert (json.loads(parsed_row("geometry", monkeypatch).to_json())
          == json.loads(registry.load_config("dice:best").to_json()))


def test_ablation_rows_beyond_the_pieces_parse_to_what_they_say(monkeypatch):
  geometry = parsed_row("geometry", monkeypatch)
  for row, changed in [("geometry_160", {("data", "image_size"): 160,
                                         ("train", "max_epochs"): 45}),
                       ("geometry_bce", {("loss", "terms"): ("dice", "bce"),
                                         ("model", "name"): "dice_bce",
                                         ("model", "display_name"): "Dice+BCE",
                                         ("model", "paper_number"): 0}),
                       ("geometry_image_dice", {("loss", "dice_reduction"): "image"}),
                       ("geometry_w24", {("model", "init_features"): 24,
                                         ("train", "max_epochs"): 38}),
                       ("geometry_w32", {("model", "init_features"): 32,
                                         ("train", "max_epochs"): 25})]:
    config = parsed_row(row, monkeypatch)
    config_check.check(config)
    for (group, key), value in changed.items():
      assert config[group][key] == value, (row, key)
      config[group][key] = geometry[group][key]
    assert json.loads(config.to_json()) == json.loads(geometry.to_json()), row
