"""Training end to end on CAMUS trees of both releases, and on the TFDS-prepared copy."""

import json

import camus_fixtures
from conftest import tiny_config
from echokld.train import loop
from echokld.data import camus_tfds


def camus_config(root, source="camus", split="official", **overrides):
  return tiny_config(**{"data.source": source, "data.root": str(root), "data.split": split,
                        "train.max_epochs": 2, "train.batch_size": 2, **overrides})


def test_trains_on_the_nifti_release_with_official_subgroups(tmp_path):
  root = camus_fixtures.write_nifti_release(tmp_path / "CAMUS")
  summary = loop.train_and_evaluate(camus_config(root), str(tmp_path / "run"))
  split = json.load(open(tmp_path / "run" / "split.json"))
  assert split["test"] == ["patient0004_2CH_ED", "patient0004_2CH_ES"]
  assert summary["frames"] == {"train": 4, "val": 2, "test": 2}
  assert summary["epochs"] == 2 and summary["test"]["mhd_mm"] is not None


def test_trains_on_the_2019_release_and_on_its_tfds_copy(tmp_path):
  patients = tuple(f"patient{i:04d}" for i in range(1, 9))
  root = camus_fixtures.write_2019_release(tmp_path / "CAMUS", train=patients)
  # Good: patients 1 and 4-8; one to test, one of the other five to validation.
  overrides = {"data.test_frames": {"Good": 2, "Medium": 0, "Poor": 0, "Unknown": 0}}
  raw = loop.train_and_evaluate(camus_config(root, split="paper", **overrides),
                                 str(tmp_path / "raw"))
  camus_tfds.prepare(root, tmp_path / "tfds")
  prepared = loop.train_and_evaluate(
      camus_config(tmp_path / "tfds", source="camus_tfds", split="paper", **overrides),
      str(tmp_path / "prepared"))
  assert raw["frames"] == prepared["frames"] == {"train": 12, "val": 2, "test": 2}
  assert json.load(open(tmp_path / "raw" / "split.json")) == \
      json.load(open(tmp_path / "prepared" / "split.json"))
  assert raw["test"] == prepared["test"] and raw["val"] == prepared["val"]
