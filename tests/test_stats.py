"""echokld.stats against scipy and hand-computed examples."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from echokld.study import stats
from echokld.errors import InputError


@pytest.mark.parametrize("n", [12, 60])  # Exact null distribution, then the normal approx.
def test_wilcoxon_p_values_equal_scipy(n):
  rng = np.random.default_rng(n)
  scores = {m: rng.uniform(0.6, 0.95, n) + shift for m, shift in
            (("a", 0.0), ("b", 0.03), ("c", -0.02))}
  table = stats.pairwise_table(scores)
  for i, a in enumerate(scores):
    for j, b in enumerate(scores):
      if i != j:
        expected = sps.wilcoxon(scores[a], scores[b]).pvalue
        assert table.p[i, j] == pytest.approx(expected, rel=1e-12)
        assert table.n[i, j] == n
  assert np.isnan(np.diag(table.p)).all()


def test_median_differences_hand_checked():
  # medians: a 0.8, b 0.75; paired differences a - b: 0.3, -0.05, -0.05 -> median -0.05.
  table = stats.pairwise_table({"a": np.array([0.9, 0.8, 0.7]),
                                "b": np.array([0.6, 0.85, 0.75])})
  assert table.median_diff[0, 1] == pytest.approx(0.05)
  assert table.median_diff[1, 0] == pytest.approx(-0.05)
  assert table.median_of_diffs[0, 1] == pytest.approx(-0.05)
  assert table.median_of_diffs[1, 0] == pytest.approx(0.05)
  cells = table.cells()
  assert cells[0] == ["", "a", "b"]
  assert cells[1][1] == "–" and cells[2][2] == "–"
  assert cells[1][2] == f"{sps.wilcoxon([0.9, 0.8, 0.7], [0.6, 0.85, 0.75]).pvalue:.4f}"
  assert cells[2][1] == "-0.0500"  # Lower triangle: median(row b) - median(column a).
  row = table.long_rows()[0]
  assert row["model_a"] == "a" and row["median_a_minus_median_b"] == pytest.approx(0.05)


def test_all_zero_differences_give_p_one_and_nans_are_dropped_per_pair():
  same = np.array([0.5, 0.6, 0.7, 0.8])
  other = np.array([0.4, np.nan, 0.9, 0.1])
  table = stats.pairwise_table({"a": same, "b": same.copy(), "c": other}, "mhd_px")
  assert table.p[0, 1] == 1.0
  assert table.n[0, 2] == 3
  assert table.p[0, 2] == pytest.approx(sps.wilcoxon(same[[0, 2, 3]], other[[0, 2, 3]]).pvalue)
  with pytest.raises(ValueError, match="paired"):
    stats.pairwise_table({"a": same, "b": same[:3]})


def test_holm_hand_computed():
  # Sorted 0.01, 0.03, 0.04, 0.2 times 4, 3, 2, 1 = 0.04, 0.09, 0.08, 0.2; cummax 0.09.
  assert stats.holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
  assert stats.holm([0.5, 0.4]) == pytest.approx([0.8, 0.8])
  assert stats.holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # Clipped to 1.
  out = stats.holm([0.01, np.nan, 0.02])  # NaN is not a test: m = 2.
  assert out[0] == pytest.approx(0.02) and np.isnan(out[1]) and out[2] == pytest.approx(0.02)


def test_table_holm_runs_over_the_upper_triangle():
  rng = np.random.default_rng(3)
  scores = {m: rng.normal(0.8, 0.05, 15) + 0.02 * i for i, m in enumerate("abcd")}
  table = stats.pairwise_table(scores)
  upper = np.triu_indices(4, 1)
  assert table.p_holm[upper] == pytest.approx(stats.holm(table.p[upper]))
  assert np.allclose(table.p_holm, table.p_holm.T, equal_nan=True)


def test_rank_distribution_hand_checked_with_a_tie():
  scores = {"A": np.array([0.9, 0.8, 0.7, 0.6]),
            "B": np.array([0.8, 0.8, 0.9, 0.5]),
            "C": np.array([0.7, 0.6, 0.8, 0.7])}
  # Image 1: A B C; image 2: A = B (both 1st, method='min') then C 3rd; image 3: B C A;
  # image 4: C A B.
  counts = stats.rank_distribution(scores)
  assert counts["A"].tolist() == [2, 1, 1]
  assert counts["B"].tolist() == [2, 1, 1]
  assert counts["C"].tolist() == [1, 1, 2]
  # Lower is better (MHD): every order reverses, the tie is now for 2nd.
  low = stats.rank_distribution(scores, higher_is_better=False)
  assert low["A"].tolist() == [1, 2, 1]
  assert low["B"].tolist() == [1, 2, 1]
  assert low["C"].tolist() == [2, 1, 1]


def test_rank_distribution_puts_nan_last():
  counts = stats.rank_distribution({"a": np.array([np.nan]), "b": np.array([3.0])},
                                   higher_is_better=False)
  assert counts["a"].tolist() == [0, 1] and counts["b"].tolist() == [1, 0]


def test_seed_summary():
  assert stats.seed_summary([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
  mean, std = stats.seed_summary([0.8])
  assert mean == 0.8 and math.isnan(std)


def test_bootstrap_ci():
  values = np.random.default_rng(0).normal(0.85, 0.03, 10)
  lo, hi = stats.bootstrap_ci(values, n=4000, seed=1)
  assert lo < values.mean() < hi
  assert stats.bootstrap_ci(values, n=4000, seed=1) == (lo, hi)  # Reproducible.
  assert stats.bootstrap_ci(values, n=4000, seed=2) != (lo, hi)
  # Narrows with more values (sample size); more resamples only cut Monte Carlo noise.
  more = np.random.default_rng(0).normal(0.85, 0.03, 160)
  lo2, hi2 = stats.bootstrap_ci(more, n=4000, seed=1)
  assert hi2 - lo2 < (hi - lo) / 2
  wide = stats.bootstrap_ci(values, n=20000, seed=5)
  assert wide == pytest.approx((lo, hi), abs=0.003)
  assert stats.bootstrap_ci([0.7]) == (0.7, 0.7)


def test_load_sweep_bad_input(tmp_path):
  with pytest.raises(InputError, match="does not exist"):
    stats.load_sweep(str(tmp_path / "missing"))
  (tmp_path / "dice_seed0").mkdir()  # Unfinished: no summary.json.
  with pytest.raises(InputError, match="no finished runs"):
    stats.load_sweep(str(tmp_path))


def test_runs_are_known_by_their_config_not_their_folder_name(tmp_path):
  """`runs/kld_alpha` (the main job's default workdir) and any other name count."""
  import json
  summary = json.dumps({"num_params": 1, "epochs": 1, "train_images_per_second": 1.0,
                        "val": {"best_dice": 0.5}, "test": {"dice": 0.5}})
  csv_text = "case,quality,dice,recall,precision,mhd_px,mhd_mm,hd95_px\np1,Good,1,1,1,0,0,0\n"

  def run(name, model, seed, qualities=("Good", "Medium", "Poor"), unknown=True):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "summary.json").write_text(summary)
    (folder / "test_metrics.csv").write_text(csv_text)
    (folder / "config.json").write_text(json.dumps({
        "seed": seed, "model": {"name": model},
        "data": {"qualities": list(qualities), "keep_unknown_quality": unknown}}))
  run("kld_alpha", "kld_alpha", 0)
  run("my first try", "dice", 3)
  run("poor_only", "dice", 3, qualities=("Poor",), unknown=False)
  run("poor_plus_unknown", "vae", 1, qualities=("Poor",), unknown=True)
  (tmp_path / "dice_seed7").mkdir()  # No config.json: read by its name.
  (tmp_path / "dice_seed7" / "summary.json").write_text(summary)
  (tmp_path / "dice_seed7" / "test_metrics.csv").write_text(csv_text)
  groups = stats.load_sweep_groups(str(tmp_path))
  assert sorted(groups) == ["Poor", "all"]
  assert sorted(groups["all"]) == [("dice", 3), ("dice", 7), ("kld_alpha", 0), ("vae", 1)]
  assert groups["all"][("dice", 3)]["path"].endswith("my first try")
  assert list(groups["Poor"]) == [("dice", 3)]
  run("dice_again", "dice", 3)  # A second folder for the same run would hide one of them.
  with pytest.raises(InputError, match="same model 'dice', group 'all' and seed 3"):
    stats.load_sweep_groups(str(tmp_path))


def test_common_seeds_and_per_image_average():
  row = lambda case, dice: {"case": case, "quality": "Good", "dice": dice}
  runs = {("a", 0): {"rows": [row("x", 0.8), row("y", 0.6)]},
          ("a", 1): {"rows": [row("x", 0.9), row("z", 0.5)]},
          ("b", 0): {"rows": [row("x", 0.7), row("y", np.nan)]},
          ("b", 1): {"rows": [row("x", 0.6), row("z", 0.4)]},
          ("b", 2): {"rows": [row("x", 0.1)]}}
  seeds, dropped = stats.common_seeds(runs)
  assert seeds == [0, 1] and dropped == [("b", 2)]
  cases, scores = stats.per_image_scores(runs, ["a", "b"], seeds, "dice")
  assert cases == ["x", "y", "z"]
  assert scores["a"] == pytest.approx([0.85, 0.6, 0.5])
  assert scores["b"][0] == pytest.approx(0.65) and np.isnan(scores["b"][1])


def test_load_sweep_names_a_broken_summary(tmp_path):
  run = tmp_path / "dice_seed0"
  run.mkdir()
  (run / "summary.json").write_text('{"model": "dice", "test": {}}')
  with pytest.raises(InputError, match="summary.json.*num_params"):
    stats.load_sweep(str(tmp_path))
  (run / "summary.json").write_text("{not json")
  with pytest.raises(InputError, match="unreadable JSON"):
    stats.load_sweep(str(tmp_path))
