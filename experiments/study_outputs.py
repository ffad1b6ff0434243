"""A long study's small outputs, committed run by run, and the sweep rebuilt from them.

  python experiments/study_outputs.py export --sweep_dir=runs/study96/runs \
      --out=docs/study/runs
  python experiments/study_outputs.py restore --runs=docs/study/runs \
      --data_root=../shared/data/camus224 --out=runs/study96_restored

A study that spans working sessions keeps what each finished run says, not its checkpoints:
`export` copies every finished run's JSON files, metrics.jsonl and test_metrics.csv, and its
predicted test masks with their case names (`test_pred.npz`: no image and no label, so no
CAMUS data is committed). Runs already exported with the same summary are left as they are.
`restore` rebuilds a sweep folder that `python -m echokld.report` reads: the same files plus
`test_predictions.npz`, whose images and masks are read again from the user's copy of the
data through the run's own config (the same split and preprocessing, checked case by case
against the exported names). Bad input: one line naming the culprit, exit code 2.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil

import ml_collections
import numpy as np

from echokld import cli, registry
from echokld.data import pipeline
from echokld.errors import InputError
from echokld.study import panels

SMALL_FILES = ("summary.json", "config.json", "metrics.jsonl", "test_metrics.csv",
               "split.json", "preprocessing.json", "environment.json")
PRED_FILE = "test_pred.npz"  # cases and pred only.


def copy_small_files(src: str, dst: str, names: tuple[str, ...] = SMALL_FILES) -> None:
  """The files among `names` that `src` has, into `dst` (created)."""
  os.makedirs(dst, exist_ok=True)
  for name in names:
    if os.path.isfile(os.path.join(src, name)):
      shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))


def finished_runs(folder: str) -> list[str]:
  if not os.path.isdir(folder):
    raise InputError(folder, "folder does not exist")
  return sorted(name for name in os.listdir(folder)
                if os.path.isfile(os.path.join(folder, name, "summary.json")))


def export_run(run_dir: str, out_dir: str) -> bool:
  """Copies one run's small outputs; returns False when `out_dir` already holds them."""
  summary = os.path.join(out_dir, "summary.json")
  if os.path.isfile(summary) and filecmp.cmp(summary, os.path.join(run_dir, "summary.json"),
                                             shallow=False):
    return False
  predictions = panels.load_predictions(run_dir)
  if predictions is None:
    raise InputError(run_dir, f"finished run without {panels.PREDICTIONS}")
  copy_small_files(run_dir, out_dir)
  with open(os.path.join(out_dir, PRED_FILE), "wb") as f:
    np.savez_compressed(f, cases=predictions["cases"],
                        pred=predictions["pred"].astype(np.uint8))
  return True


def restore_run(exported: str, data_root: str, out_dir: str) -> None:
  """The exported run as a run folder, its test images and masks re-read from `data_root`."""
  with open(os.path.join(exported, "config.json")) as f:
    config = ml_collections.ConfigDict(registry.upgrade(json.load(f)))
  config.data.root = data_root
  with np.load(os.path.join(exported, PRED_FILE), allow_pickle=False) as saved:
    cases, pred = saved["cases"], saved["pred"]
  test = pipeline.build_splits(config)[0]["test"]
  if list(test.cases) != [str(c) for c in cases] or test.masks.shape != pred.shape:
    raise InputError(data_root, f"its test frames for {os.path.basename(exported)} differ "
                     "from the exported ones (another data folder or split)")
  copy_small_files(exported, out_dir)
  with open(os.path.join(out_dir, panels.PREDICTIONS), "wb") as f:
    np.savez_compressed(f, cases=cases, images=test.images, masks=test.masks, pred=pred)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("action", choices=("export", "restore"))
  parser.add_argument("--sweep_dir", help="export: the sweep's run folders.")
  parser.add_argument("--out", required=True)
  parser.add_argument("--runs", help="restore: the exported runs.")
  parser.add_argument("--data_root", help="restore: the data folder the runs trained on.")
  args = parser.parse_args()
  if args.action == "export":
    if not args.sweep_dir:
      raise InputError("--sweep_dir", "export needs the sweep's run folders")
    names = finished_runs(args.sweep_dir)
    new = [n for n in names
           if export_run(os.path.join(args.sweep_dir, n), os.path.join(args.out, n))]
    print(f"exported {len(new)} new of {len(names)} finished runs to {args.out}")
    return
  if not args.runs or not args.data_root:
    raise InputError("--runs", "restore needs --runs and --data_root")
  names = [n for n in finished_runs(args.runs)
           if os.path.isfile(os.path.join(args.runs, n, PRED_FILE))]
  for name in names:
    restore_run(os.path.join(args.runs, name), args.data_root, os.path.join(args.out, name))
  print(f"restored {len(names)} runs to {args.out}")


if __name__ == "__main__":
  cli.run_script(main)
