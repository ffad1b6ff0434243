"""--protocol and --paper_models of the sweep: the commands each run gets, the runs of each
group, the record in sweep.json, and one-line errors (no run is trained here)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from echokld import registry
from echokld.errors import InputError
from echokld.study import protocol, sweep


def config_flag(command):
  return next(a for a in command if a.startswith("--config="))


def test_paper_protocol_loads_each_config_with_paper(tmp_path):
  spec = registry.get("kld_alpha")
  batch = [("kld_alpha", 0, "Poor")]
  quick = sweep.run_command(batch, str(tmp_path), ["--config.train.max_epochs=2"])
  paper = sweep.run_command(batch, str(tmp_path), ["--config.train.max_epochs=2"],
                            protocol="paper")
  assert config_flag(quick) == f"--config={spec.config_path}"
  assert config_flag(paper) == f"--config={spec.config_path}:paper"
  assert quick[quick.index(config_flag(quick)) + 1:] == paper[paper.index(
      config_flag(paper)) + 1:]  # Nothing else changes.
  group = sweep.run_command([("dice", 0, "Good"), ("dice", 1, "Good")], str(tmp_path), [],
                            protocol="paper")
  assert config_flag(group).endswith("dice.py:paper") and "--seeds=0,1" in group
  # What the run loads: the model's config under the paper's §3.3 protocol.
  config = registry.load_config(config_flag(paper).split("=", 1)[1])
  assert config.model.name == "kld_alpha" and config.data.image_size == 0
  assert config.train.learning_rate == 1e-5 and config.train.batch_size == 2
  with pytest.raises(InputError, match="--protocol"):
    sweep.run_command(batch, str(tmp_path), [], protocol="fast")


def test_paper_models_per_group_follow_the_registry():
  seven = registry.paper_models()
  numbers = {registry.get(m).paper_number: m for m in seven}
  assert sweep.paper_models("Poor") == [m for m in seven if m not in (numbers[3], numbers[7])]
  assert sweep.paper_models("Good") == sweep.paper_models("Medium") == seven
  runs = sweep.choose_runs(None, True, [0, 1], ["Poor", "Good"])
  assert len(runs) == 2 * (len(seven) - 2 + len(seven))
  assert not any(m in (numbers[3], numbers[7]) and g == "Poor" for m, _, g in runs)
  assert runs[:len(seven) - 2] == [(m, 0, "Poor") for m in sweep.paper_models("Poor")]
  assert sweep.choose_runs("dice,vae", False, [0], ["Poor"]) == [("dice", 0, "Poor"),
                                                                ("vae", 0, "Poor")]
  assert sweep.choose_runs(None, False, [0], ["Poor"]) == [(m, 0, "Poor") for m in seven]
  with pytest.raises(InputError, match="replaces --models"):
    sweep.choose_runs("dice", True, [0], ["Poor"])


def test_sweep_json_records_the_protocol_and_refuses_another(tmp_path):
  protocol.record(str(tmp_path / "sweep"), "paper")
  assert json.loads((tmp_path / "sweep" / "sweep.json").read_text()) == {"protocol": "paper"}
  protocol.record(str(tmp_path / "sweep"), "paper")  # A rerun or another shard: fine.
  with pytest.raises(InputError, match="holds a --protocol=paper sweep"):
    protocol.record(str(tmp_path / "sweep"), "quick")


def test_classify_reads_the_protocol_from_config_json():
  paper = json.loads(registry.load_config("vae:paper").to_json())
  quick = json.loads(registry.load_config("vae").to_json())
  assert protocol.classify("vae", paper) == ("paper", {})
  assert protocol.classify("vae", quick) == ("quick", {})
  paper["train"]["max_epochs"] = 2
  assert protocol.classify("vae", paper) == ("paper", {"train.max_epochs": 2})
  assert protocol.classify("vae", {"seed": 0}) == ("unknown", {})
  study = json.loads(registry.load_config("vae:cpu_study").to_json())
  assert protocol.classify("vae", study) == ("cpu_study", {})
  study["train"]["early_stop_patience"] = 30  # The patience-doubling check's runs.
  assert protocol.classify("vae", study) == ("cpu_study", {"train.early_stop_patience": 30})
  best = json.loads(registry.load_config("vae:best").to_json())
  assert protocol.classify("vae", best) == ("best", {})


def test_cpu_study_protocol_loads_the_study_settings(tmp_path):
  command = sweep.run_command([("wdecay", 0, "Good")], str(tmp_path), [],
                              protocol="cpu_study")
  assert config_flag(command).endswith("wdecay.py:cpu_study")
  config = registry.load_config(config_flag(command).split("=", 1)[1])
  assert (config.data.image_size, config.train.batch_size) == (96, 4)
  assert (config.train.plateau_patience, config.train.early_stop_patience) == (5, 15)
  assert config.train.max_epochs == 300 and config.train.optimizer == "adamw"


def test_best_protocol_adds_the_recipe_to_the_models_own_settings(tmp_path):
  command = sweep.run_command([("kld_alpha", 1, "all")], str(tmp_path), [], protocol="best")
  assert config_flag(command).endswith("kld_alpha.py:best")
  config = registry.load_config(config_flag(command).split("=", 1)[1])
  assert config.augment.enabled and (config.augment.flip, config.augment.gamma) == (0.0, 0.0)
  assert (config.data.image_size, config.train.schedule) == (128, "plateau")
  assert config.loss.terms == registry.load_config("kld_alpha").loss.terms


@pytest.mark.parametrize("args, culprit", [
    (["--protocol=fast"], "--protocol"),
    (["--paper_models", "--models=dice"], "--paper_models"),
    (["--models=nope"], "--models"),
])
def test_sweep_cli_rejects_bad_flags_in_one_line(tmp_path, args, culprit):
  out = tmp_path / "out"
  result = subprocess.run([sys.executable, "-m", "echokld.sweep", f"--out={out}", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and culprit in lines[0], lines
  assert not out.exists()


def test_sweep_cli_refuses_a_second_protocol_in_one_folder(tmp_path):
  protocol.record(str(tmp_path), "quick")
  result = subprocess.run([sys.executable, "-m", "echokld.sweep", f"--out={tmp_path}",
                           "--protocol=paper", "--models=dice"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      f"error: {tmp_path / 'sweep.json'}: this folder holds a --protocol=quick sweep; use "
      "another --out for --protocol=paper"]
  assert os.listdir(tmp_path) == ["sweep.json"]
