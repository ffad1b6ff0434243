"""Run folders written by older echokld stay resumable and readable."""

import json

from conftest import tiny_config
from echokld import registry
from echokld.infer import runs as runs_lib
from echokld.train import loop

NEWER_FIELDS = {"augment": None, "train": ("schedule", "warmup_epochs", "ema_decay")}


def test_a_run_written_before_newer_fields_resumes_and_predicts(tmp_path):
  loop.train_and_evaluate(tiny_config(**{"train.max_epochs": 1}), str(tmp_path))
  path = tmp_path / "config.json"
  old = json.loads(path.read_text())
  del old["augment"]
  for key in NEWER_FIELDS["train"]:
    del old["train"][key]
  path.write_text(json.dumps(old))
  upgraded = registry.upgrade(old)
  assert upgraded["augment"]["enabled"] is False and upgraded["train"]["schedule"] == "plateau"
  assert upgraded["train"]["ema_decay"] == 0.0 and upgraded["train"]["batch_size"] == 4
  summary = loop.train_and_evaluate(tiny_config(**{"train.max_epochs": 2}), str(tmp_path))
  assert summary["epochs"] == 2
  run = runs_lib.load_run(str(tmp_path))
  assert run.config.train.schedule == "plateau"


def test_a_pre_switch_config_gets_heads_terms_and_injection():
  old = {"model": {"name": "bd_vae", "vae_head": False, "dist_head": True,
                   "inject_dist": True},
         "loss": {"kld_estimator": "none"}}
  new = registry.upgrade(old)
  assert new["model"]["heads"] == ["dist"] and new["model"]["dist_injection"] == "batch"
  assert new["loss"]["terms"] == ["dice", "dist_align"]
  assert new["model"]["display_name"] == registry.get("bd_vae").display_name
  assert new["train"]["schedule"] == "plateau"  # And the later fields at their defaults.
