"""The claims table of the study report (echokld/study/claims.py, issue #15), checked against
references computed here by hand with numpy and scipy."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from test_report import MODELS, SEEDS, read_csv, run_report, write_run
from test_study_report import group_rows
from echokld.study import claims


def run(rows, best_epoch=4, epochs=4):
  return {"rows": rows, "history": [], "config": {},
          "summary": {"epochs": epochs, "val": {"best_epoch": best_epoch}}}


def case_rows(values, metric="dice", start=0):
  return [{"case": f"c{start + i:02d}", "quality": "Good", metric: float(v)}
          for i, v in enumerate(values)]


# --- hierarchical bootstrap ---------------------------------------------------------------

def test_one_seed_equals_the_plain_case_bootstrap():
  x = np.random.default_rng(1).normal(0.01, 0.05, size=40)
  lo, hi = claims.hierarchical_bootstrap([x])
  rng = np.random.default_rng(99)  # Independent draws: equal up to Monte Carlo error.
  means = x[rng.integers(0, x.size, size=(20000, x.size))].mean(axis=1)
  ref = np.quantile(means, [0.025, 0.975])
  se = x.std() / math.sqrt(x.size)
  assert lo == pytest.approx(ref[0], abs=0.15 * se)
  assert hi == pytest.approx(ref[1], abs=0.15 * se)


def test_constant_differences_collapse_the_ci_and_a_shift_shifts_it():
  assert claims.hierarchical_bootstrap([np.full(5, 0.3), np.full(8, 0.3)]) == (
      pytest.approx(0.3), pytest.approx(0.3))
  rng = np.random.default_rng(2)
  groups = [rng.normal(size=7), rng.normal(size=11), rng.normal(size=4)]
  lo, hi = claims.hierarchical_bootstrap(groups)
  lo2, hi2 = claims.hierarchical_bootstrap([g + 0.7 for g in groups])
  assert (lo2, hi2) == (pytest.approx(lo + 0.7, abs=1e-12), pytest.approx(hi + 0.7, abs=1e-12))


def test_seeds_are_resampled_not_only_cases():
  # Two seeds of 50 frames at 0 and 1 (tiny spread): a case bootstrap of the pooled frames
  # gives about [0.40, 0.60]; drawing (seed 0, seed 0) or (1, 1) a quarter of the time
  # each puts the percentiles near 0 and 1.
  rng = np.random.default_rng(3)
  lo, hi = claims.hierarchical_bootstrap([rng.normal(0, 1e-3, 50), rng.normal(1, 1e-3, 50)])
  assert lo < 0.01 and hi > 0.99


# --- one pair ---------------------------------------------------------------------------

def test_effect_and_p_of_a_pair_are_the_seed_averaged_differences():
  rng = np.random.default_rng(4)
  a0, b0 = rng.uniform(0.7, 0.9, 12), rng.uniform(0.7, 0.9, 12)
  a1, b1 = rng.uniform(0.7, 0.9, 12), rng.uniform(0.7, 0.9, 12)
  b1[5] = np.nan  # Dropped from that seed only.
  runs = {("a", 0): run(case_rows(a0)), ("b", 0): run(case_rows(b0)),
          ("a", 1): run(case_rows(a1, start=4)), ("b", 1): run(case_rows(b1, start=4)),
          ("b", 2): run(case_rows(b1))}  # Seed 2: b only, not paired.
  # Cases c00-c15; c04-c11 are in both seeds; c09 (b1[5]) only from seed 0.
  per_case = {}
  for start, a, b in ((0, a0, b0), (4, a1, b1)):
    for i in range(12):
      if np.isfinite(b[i]):
        per_case.setdefault(start + i, []).append(a[i] - b[i])
  d = np.array([np.mean(per_case[c]) for c in sorted(per_case)])
  assert d.size == 16
  row = claims.pair_row(runs, "C4", "Good", "a", "b", "dice", -1)
  assert (row.n, row.seeds) == (16, 2)
  assert row.effect == pytest.approx(-d.mean(), abs=1e-12)
  assert row.p == pytest.approx(sps.wilcoxon(d).pvalue, rel=1e-9)
  assert row.ci[0] <= row.effect <= row.ci[1]
  assert claims.pair_row(runs, "C4", "Good", "a", "c", "dice", 1) is None


# --- power ------------------------------------------------------------------------------

def test_mde_has_80_percent_power_exactly_and_by_simulation():
  n, sd = 30, 0.02
  e = claims.mde(n, sd)
  df, nc = n - 1, e / sd * math.sqrt(n)
  t = sps.t.ppf(0.975, df)
  assert sps.nct.sf(t, df, nc) + sps.nct.cdf(-t, df, nc) == pytest.approx(0.8, abs=1e-6)
  samples = np.random.default_rng(5).normal(e, sd, size=(4000, n))
  rate = np.mean(sps.ttest_1samp(samples, 0.0, axis=1).pvalue < 0.05)
  assert rate == pytest.approx(0.8, abs=0.03)
  assert claims.mde(n, sd, alpha=0.05 / 20) > e * 1.3
  assert math.isnan(claims.mde(1, sd))


# --- verdicts ---------------------------------------------------------------------------

def row(effect, ci, p_holm, metric="dice"):
  return claims.Row("C1", "Good", "x vs y", metric, 10, 3, effect, ci, p_holm, p_holm)


@pytest.mark.parametrize("made, expected", [
    (row(0.02, (0.01, 0.03), 0.01), "yes"),
    (row(-0.02, (-0.03, -0.01), 0.01), "no"),  # Significant against the claim.
    (row(0.001, (-0.002, 0.004), 0.6), "no"),  # CI wholly below Dice's 0.005: negligible.
    (row(0.003, (-0.004, 0.010), 0.6), "cannot tell"),
    (row(0.003, (-0.004, 0.010), 0.04, "contour_ratio"), "yes"),
    (row(-0.5, (-0.9, 1.2), 0.3, "epochs"), "cannot tell"),
    (row(-0.5, (-0.9, 0.9), 0.3, "epochs"), "no"),  # Below epochs' 1.0.
])
def test_verdict_rules(made, expected):
  assert claims.verdict(made) == expected


def test_claim_verdict_aggregates_rows():
  assert claims.claim_verdict(["yes", "yes"]) == "yes"
  assert claims.claim_verdict(["yes", "cannot tell", "no"]) == "no"
  assert claims.claim_verdict(["yes", "cannot tell"]) == "cannot tell"
  assert claims.claim_verdict([]) == "cannot tell"


# --- C2 ---------------------------------------------------------------------------------

def test_epoch_differences_by_hand():
  best = {"Poor": {("kld_alpha", 0): 10, ("dice", 0): 20, ("vae", 0): 30,
                   ("kld_alpha", 1): 12, ("dice", 1): 14},
          "Good": {("kld_alpha", 0): 7, ("wdecay", 0): 8, ("kld_kde", 0): 5,
                   ("kld_alpha", 2): 9}}  # Seed 2: no other model, no pair.
  by_group = {g: {k: run([], best_epoch=v) for k, v in runs.items()}
              for g, runs in best.items()}
  others = ["dice", "wdecay", "vae", "rd_vae", "bd_vae"]
  d = claims.epoch_differences(by_group, "kld_alpha", others)
  assert sorted(d) == sorted([10 - 25, 12 - 14, 7 - 8])
  assert claims.epoch_differences(by_group, "kld_kde", others) == [5 - 8]
  rows, _ = claims.claim_rows(by_group)
  c2 = [r for r in rows if r.claim == "C2"]
  assert [r.n for r in c2] == [3, 1]
  assert c2[0].effect == pytest.approx(-np.mean(d))  # Fewer epochs: positive effect.
  assert c2[0].p == pytest.approx(sps.wilcoxon(d).pvalue)


# --- end to end -------------------------------------------------------------------------

EPOCHS = {"dice": 6, "kld_alpha": 4, "vae": 5}


def shaped_rows(model, seed, group):
  rng = np.random.default_rng([seed, len(model), len(group)])
  rows = group_rows(model, seed, group)
  for r in rows:
    r.update(empty=0.0, holes=0.0, truth_contour_ratio=1.04,
             components=float(1 + (rng.uniform() < 0.3)),
             contour_ratio=1.05 + 0.1 * rng.uniform())
  return rows


def test_report_has_the_claims_section_and_its_csvs(tmp_path):
  sweep = tmp_path / "sweep"
  for group in ("Poor", "Good"):
    for seed in SEEDS:
      for model in MODELS:  # dice, kld_alpha, vae: Models 1, 4, 3.
        config = {"seed": seed, "model": {"name": model}, "train": {"max_epochs": 6},
                  "data": {"qualities": [group], "keep_unknown_quality": False}}
        write_run(str(sweep / f"{model}_{group}_seed{seed}"), model, seed,
                  epochs=EPOCHS[model], rows=shaped_rows(model, seed, group), config=config)
  out = tmp_path / "out"
  result = run_report(f"--sweep_dir={sweep}", f"--out={out}")
  assert result.returncode == 0, result.stderr
  text = (out / "report.md").read_text()
  for words in ("## The paper's claims on this sweep", "## Power", "## Early stopping",
                "measured on this machine", "KLD-alpha vs Dice", "0 of 12 runs stopped early",
                "epoch cap (max_epochs 6)", "not recorded", "3/π ≈ 0.955",
                "- C1 (KLD-alpha (Model 4) has the best Dice): Poor: ",
                "- C4 (Model 6 beats Model 7): no comparison possible.",
                "Poor: no runs of W-decay, KLD-kde, RD-like-VAE, BD-like-VAE, KLD-pearson3"):
    assert words in text, words
  for f in ("claims.csv", "power.csv", "stopping.csv", "cost.csv"):
    assert f"`{f}`" in text, f
  header, rows = read_csv(out / "claims.csv")
  assert header == ["claim", "group", "comparison", "metric", "n_frames", "n_seeds", "effect",
                    "ci_low", "ci_high", "p_value", "p_holm", "verdict"]
  # Per group: C1 4 vs 1, 3; C3 3 vs 1, 4; C5 4 vs 1 on two measures; then one C2 row.
  assert len(rows) == 2 * (2 + 2 + 2) + 1
  assert [r[0] for r in rows].count("C2") == 1
  c2 = next(r for r in rows if r[0] == "C2")
  assert c2[4] == "4" and float(c2[6]) == pytest.approx(-(4 - 5.5))
  good = next(r for r in rows if r[:3] == ["C1", "Good", "KLD-alpha vs Dice"])
  assert good[4:6] == ["11", "2"]  # g00-g10 over seeds 0 and 1.
  header, rows = read_csv(out / "power.csv")
  assert header[:3] == ["group", "n_cases", "seeds"] and [r[:2] for r in rows] == [
      ["Poor", "7"], ["Good", "11"]]
  header, rows = read_csv(out / "stopping.csv")
  assert header == ["group", "model", "seed", "epochs", "stopped_early", "reason"]
  assert len(rows) == 12 and sum(r[5].startswith("epoch cap") for r in rows) == 4
  header, rows = read_csv(out / "cost.csv")
  assert header == ["group", "model", "runs", "median_seconds_per_epoch", "best_epoch_mean",
                    "epochs_mean", "train_seconds_total", "host_peak_gb"]
  assert len(rows) == 3 * 3
  pooled = next(r for r in rows if r[:2] == ["pooled", "dice"])
  assert pooled[2] == "4" and float(pooled[3]) == pytest.approx(34.0)  # Epochs 2-6: 32..36.
  assert float(pooled[6]) == pytest.approx(4 * 130.0)
  assert float(pooled[7]) == pytest.approx(1.6)


def test_variant_rows_and_holm_over_the_whole_table():
  rng = np.random.default_rng(6)
  runs = {(m, s): run([dict(r, contour_ratio=1.1 + 0.05 * rng.uniform(), components=1.0)
                       for r in case_rows(rng.uniform(0.7, 0.9, 9) + shift)])
          for m, shift in (("dice", 0.0), ("kld_alpha", 0.02), ("kld_pearson3", -0.01))
          for s in (0, 1)}
  rows, notes = claims.claim_rows({"Good": runs})
  assert [(r.claim, r.comparison, r.metric) for r in rows] == [
      ("C1", "KLD-alpha vs Dice", "dice"),
      ("C1v", "KLD-pearson3 (variant reading) vs Dice", "dice"),
      ("C5", "KLD-alpha vs Dice", "contour_ratio"),
      ("C5", "KLD-alpha vs Dice", "components"),  # All differences 0: p = 1.
      ("C2", "KLD-alpha vs mean of Models 1,2,3,6,7", "epochs")]  # Same best epochs.
  p = np.array([r.p for r in rows])
  order = np.argsort(p, kind="stable")
  ref = np.empty(5)
  ref[order] = np.minimum(np.maximum.accumulate(p[order] * (5 - np.arange(5))), 1)
  assert [r.p_holm for r in rows] == pytest.approx(ref)
  assert rows[3].p == 1.0 and rows[3].verdict == "no"  # CI [0, 0]: below 0.05.
  assert rows[4].n == 2 and rows[4].verdict == "no"  # CI [0, 0]: below 1 epoch.
  assert any("no runs of W-decay" in n for n in notes)
