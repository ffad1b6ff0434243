"""Quality control: disagreement scores and maps, the Youden threshold, predict's qc_flag,
and experiments/qc_flag.py end to end on a tiny folder-source run."""

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from conftest import run_predict, tiny_config
from echokld.data import pipeline, synthetic
from echokld.errors import InputError
from echokld.evaluation import qc_stats
from echokld.infer import qc, segment
from echokld.infer import runs as runs_lib
from echokld.train import loop

import qc_flag

# Patients 1-16 train, 17-20 validate, 21-24 test (2 frames each).
SPLIT_OF = lambda index: "train" if index < 16 else ("val" if index < 20 else "test")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  """A folder source of 24 synthetic 48x48 patients with a train/val/test split column."""
  root = tmp_path_factory.mktemp("folder")
  (root / "images").mkdir()
  (root / "labels").mkdir()
  lines = ["case,patient,view,phase,split,image_quality"]
  for i, r in enumerate(synthetic.make_synthetic(24, 0, (48, 48))):
    Image.fromarray(r["image"]).save(root / "images" / f"{r['case']}.png")
    Image.fromarray(r["label"]).save(root / "labels" / f"{r['case']}.png")
    lines.append(f"{r['case']},{r['patient']},2CH,{r['phase']},{SPLIT_OF(i // 2)},"
                 f"{r['quality']}")
  (root / "metadata.csv").write_text("\n".join(lines) + "\n")
  return root


@pytest.fixture(scope="module")
def workdir(data_root, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  config = tiny_config("dice", **{"train.max_epochs": 1, "data.source": "folder",
                                  "data.root": str(data_root), "data.split": "official"})
  loop.train_and_evaluate(config, workdir)
  return workdir


def read_areas(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def test_youden_threshold_by_hand():
  # Poor (Dice < 0.85): the frames scored 0.2, 0.4, 0.5; good: 0.1, 0.3. Flag = score > t:
  # t=0.15: sens 3/3 spec 1/2 (J 1/2); t=0.25: 2/3, 1/2 (1/6); t=0.35: 2/3, 2/2 (2/3);
  # t=0.45: 1/3, 2/2 (1/3). Best: 0.35.
  scores, dice = [0.5, 0.1, 0.4, 0.3, 0.2], [0.8, 0.9, 0.7, 0.9, 0.8]
  threshold, j = qc_stats.youden_threshold(scores, dice)
  assert threshold == pytest.approx(0.35) and j == pytest.approx(2 / 3)
  # The cut is a parameter: below 0.75 only the 0.4 frame is poor. t=0.15: sens 1, spec
  # 1/4; t=0.25: 1, 2/4; t=0.35: 1, 3/4 (J 3/4); t=0.45: 0, 3/4.
  threshold, j = qc_stats.youden_threshold(scores, dice, dice_cut=0.75)
  assert threshold == pytest.approx(0.35) and j == pytest.approx(0.75)
  # A frame exactly at the cut is not poor.
  with pytest.raises(ValueError, match="both sides"):
    qc_stats.youden_threshold([0.1, 0.2], [0.85, 0.9])
  # Equal J, the higher threshold (fewer flags): poor 0.3 and 0.7, good 0.1 and 0.5.
  threshold, _ = qc_stats.youden_threshold([0.1, 0.3, 0.5, 0.7], [0.9, 0.5, 0.9, 0.5])
  assert threshold == pytest.approx(0.6)  # t=0.2 and t=0.6 both give J 1/2.


def test_wilson_auc_and_detection_against_references():
  # Wilson 8/10 by hand: p=0.8, z^2=3.841459; centre (0.8 + 0.192073) / 1.384146 = 0.716740,
  # half 1.959964 / 1.384146 * sqrt(0.016 + 0.009604) = 0.226578.
  low, high = qc_stats.wilson_interval(8, 10)
  assert (low, high) == (pytest.approx(0.490162, abs=1e-5), pytest.approx(0.943318, abs=1e-5))
  assert qc_stats.wilson_interval(0, 5)[0] == 0.0 and math.isnan(qc_stats.wilson_interval(0, 0)[0])
  rng = np.random.default_rng(0)
  scores = np.round(rng.random(40), 1)  # Ties, counted half.
  dice = rng.random(40)
  poor = dice < 0.85
  pairs = [(a > b) + 0.5 * (a == b) for a in scores[poor] for b in scores[~poor]]
  assert qc_stats.auc(scores, dice) == pytest.approx(np.mean(pairs))
  got = qc_stats.detection(scores, dice, 0.45)
  flagged = scores > 0.45
  assert (got["tp"], got["fn"]) == ((flagged & poor).sum(), (~flagged & poor).sum())
  assert (got["tn"], got["fp"]) == ((~flagged & ~poor).sum(), (flagged & ~poor).sum())
  assert got["sensitivity"] == pytest.approx(got["tp"] / poor.sum())
  assert got["specificity_ci"] == qc_stats.wilson_interval(got["tn"], (~poor).sum())


def test_scores_and_map_of_known_members():
  a = np.zeros((6, 6), np.float32)
  a[1:3, 1:3] = 1.0  # 4 pixels.
  b = np.zeros((6, 6), np.float32)
  b[1:3, 1] = 1.0  # 2 pixels, inside a.
  identical = np.stack([a, a, a])[None]
  assert qc.mask_disagreement(identical)[0] == 0.0
  assert qc.frame_scores(identical)["disagreement"][0] == 0.0
  assert not qc.uncertainty_map(identical).any()
  pair = np.stack([a, b])[None]
  # Dice = 2 * 2 / (4 + 2) = 2/3; std of (1, 0) is 0.5 on 2 of the 4 union pixels.
  assert qc.mask_disagreement(pair)[0] == pytest.approx(1 / 3)
  assert qc.frame_scores(pair)["disagreement"][0] == pytest.approx(0.25)
  expected = np.zeros((6, 6), np.uint8)
  expected[1:3, 2] = 255  # std 0.5 -> 255.
  np.testing.assert_array_equal(qc.uncertainty_map(pair)[0], expected)
  # Three members: pairs (a, b) 2/3, (a, empty) 0, (b, empty) 0: 1 - 2/9. Two empties: 0.
  trio = np.stack([a, b, np.zeros_like(a)])[None]
  assert qc.mask_disagreement(trio)[0] == pytest.approx(1 - 2 / 9)
  assert qc.mask_disagreement(np.zeros((1, 2, 6, 6)))[0] == 0.0
  assert np.isnan(qc.mask_disagreement(a[None, None])[0])


def test_calibration_round_trip_and_bad_files(tmp_path):
  path = tmp_path / "cal.json"
  qc.write_calibration(str(path), "disagreement", 0.125, members=2, dice_cut=0.85)
  settings = qc.read_calibration(str(path))
  assert (settings.score, settings.threshold, settings.members) == ("disagreement", 0.125, 2)
  for text, fragment in (("{", "unreadable"), ('{"score": "x", "threshold": 1}', "unknown"),
                         ('{"score": "disagreement", "threshold": "1"}', "not a finite"),
                         ("[1]", "needs a JSON object")):
    path.write_text(text)
    with pytest.raises(InputError, match=fragment):
      qc.read_calibration(str(path))


def test_tta_views_average_to_the_runs_probabilities(workdir):
  run = runs_lib.load_run(workdir, batch_size=4, tta="flip")
  images = np.random.default_rng(1).integers(0, 255, (5, 32, 32), dtype=np.uint8)
  mean, views = run.predict_views(images)
  assert views.shape == (5, 2, 32, 32)
  np.testing.assert_array_equal(mean, run.predict_probs(images))
  np.testing.assert_allclose(views.mean(axis=1), mean, atol=1e-6)
  plain = runs_lib.load_run(workdir, batch_size=4)  # The run's own tta: none.
  np.testing.assert_allclose(views[:, 0], plain.predict_probs(images), atol=1e-6)
  flipped = plain.predict_probs(images[:, :, ::-1].copy())[:, :, ::-1]
  np.testing.assert_allclose(views[:, 1], flipped, atol=1e-6)


def test_predict_tta_scores_map_and_qc_flag(workdir, data_root, tmp_path):
  src = tmp_path / "in"
  src.mkdir()
  cases = ["patient0021_2CH_ED", "patient0021_2CH_ES", "patient0022_2CH_ED"]
  for case in cases:
    (src / f"{case}.png").write_bytes((data_root / "images" / f"{case}.png").read_bytes())
  # A single run with --tta=flip: 2 members, so scores and maps; the flag at a threshold.
  out = tmp_path / "out"
  result = run_predict(f"--workdir={workdir}", f"--input={src}", f"--output={out}", "--tta=flip",
                   "--qc_threshold=0.02", "--qc_score=mask_disagreement")
  assert result.returncode == 0, result.stderr
  rows = read_areas(out / "areas.csv")
  assert [r["frame"] for r in rows] == cases
  run = runs_lib.load_run(workdir, tta="flip")
  images = np.stack([np.asarray(Image.open(src / f"{c}.png")) for c in cases])
  prepared = [runs_lib.prepare(im, (32, 32), True) for im in images]
  _, members = qc.member_views([run], np.stack([canvas for canvas, _ in prepared]))
  want = qc.frame_scores(members)
  for i, row in enumerate(rows):
    assert float(row["mask_disagreement"]) == pytest.approx(want["mask_disagreement"][i],
                                                            abs=1e-4)
    assert float(row["disagreement"]) == pytest.approx(want["disagreement"][i], abs=1e-4)
    assert row["qc_flag"] == str(int(float(row["mask_disagreement"]) > 0.02))
    spread = np.asarray(Image.open(out / f"{cases[i]}_uncertainty.png"))
    assert spread.shape == (48, 48) and spread.dtype == np.uint8
    # The 32x32 map resized back (nearest) to the frame, as the mask is.
    np.testing.assert_array_equal(
        spread, pipeline.undo_geometry(qc.uncertainty_map(members)[i], prepared[i][1]))
  assert f"{sum(r['qc_flag'] == '1' for r in rows)} flagged" in result.stdout
  # The same run twice: identical members, so every score is 0 and nothing is flagged.
  plain = runs_lib.load_run(workdir, batch_size=4)
  inputs = [(str(src / f"{case}.png"), "") for case in cases]
  out2 = tmp_path / "out2"
  rows, failures = segment.segment_files([plain, plain], inputs, str(out2), batch_size=4,
                                         qc_settings=qc.Settings(threshold=0.0))
  assert failures == 0 and [r["frame"] for r in read_areas(out2 / "areas.csv")] == cases
  for row in rows:
    assert (row["mask_disagreement"], row["disagreement"], row["qc_flag"]) == \
        ("0.0000", "0.0000", "0")
  # The score and threshold of a calibration file (experiments/qc_flag.py writes them).
  calibration = tmp_path / "qc_threshold.json"
  qc.write_calibration(str(calibration), "disagreement", 0.01, members=2)
  out4 = tmp_path / "out4"
  result = run_predict(f"--workdir={workdir}", f"--input={src}", f"--output={out4}", "--tta=flip",
                   f"--qc_calibration={calibration}")
  assert result.returncode == 0 and "warning" not in result.stderr, result.stderr
  for row in read_areas(out4 / "areas.csv"):
    assert row["qc_flag"] == str(int(float(row["disagreement"]) > 0.01))
  # One run without TTA has one member: no score, and a flag is refused before any work.
  out3 = tmp_path / "out3"
  result = run_predict(f"--workdir={workdir}", f"--input={src}", f"--output={out3}",
                   "--qc_threshold=0.1")
  assert result.returncode == 2 and not out3.exists()
  assert result.stderr.strip().splitlines()[-1].startswith("error: --qc_threshold: ")


def test_qc_flag_experiment_end_to_end(workdir, data_root, tmp_path):
  split = json.loads(open(f"{workdir}/split.json").read())
  assert len(split["val"]) == len(split["test"]) == 8
  run = runs_lib.load_run(workdir, tta="flip")
  val = qc_flag.frame_table([run], str(data_root), split["val"])
  test = qc_flag.frame_table([run], str(data_root), split["test"])
  # A cut with poor and good validation frames on both sides, whatever the tiny model does.
  cut = float(np.median([r["dice"] for r in val])) + 1e-9
  out, tables = tmp_path / "qc", tmp_path / "tables"
  qc_flag.main([f"--workdir={workdir}", f"--data_root={data_root}", f"--out={out}",
                "--tta=flip", f"--dice_cut={cut}", f"--csv_dir={tables}",
                "--score=disagreement"])
  calibration = json.loads((out / "qc_threshold.json").read_text())
  threshold, j = qc_stats.youden_threshold([r["disagreement"] for r in val],
                                           [r["dice"] for r in val], cut)
  assert calibration["score"] == "disagreement" and calibration["members"] == 2
  assert calibration["threshold"] == pytest.approx(threshold)
  assert calibration["youden_j"] == pytest.approx(j)
  assert calibration["split"] == f"{workdir}/split.json"
  with open(tables / "qc_frames_test.csv") as f:
    written = list(csv.DictReader(f))
  assert [r["case"] for r in written] == split["test"]
  for got, want in zip(written, test):
    assert float(got["dice"]) == pytest.approx(want["dice"])
  # The report's test AUC is the Mann-Whitney U of the test scores.
  scores = np.array([r["disagreement"] for r in test])
  poor = np.array([r["dice"] for r in test]) < cut
  report = (out / "qc_flag.md").read_text()
  if poor.any() and not poor.all():
    u = stats.mannwhitneyu(scores[poor], scores[~poor]).statistic
    assert f"| {u / poor.sum() / (~poor).sum():.3f} |" in report
  assert "| disagreement |" in report and "| mask_disagreement |" in report
  assert (out / "figures" / "qc_score_vs_dice.png").read_bytes()[:4] == b"\x89PNG"
  # A val/test frame the run trained on is refused.
  val_list, test_list = tmp_path / "val.txt", tmp_path / "test.txt"
  val_list.write_text(split["train"][0] + "\n")
  test_list.write_text(split["test"][0] + "\n")
  with pytest.raises(InputError, match=f"trained on {split['train'][0]}"):
    qc_flag.choose_split([workdir], str(data_root), str(val_list), str(test_list))
