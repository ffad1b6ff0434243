"""The paper's study: sweeps of runs, their loading and statistics, reports and panels.

  sweep     models x seeds x quality groups, resumable and shardable
  protocol  --protocol=quick|paper: each run's config, sweep.json, the report's header
  stats     loading finished runs; Wilcoxon, Holm, ranks, bootstrap
  report    one training group's report (the paper's Tables 1-8, Figures 5-14)
  shape     its section on fragments, holes and contour smoothness
  overview  the quality groups side by side
  claims    the paper's claims tested (bootstrap CI, Holm, verdicts), power, stopping, cost
  panels    qualitative panels of every model's contour
  markdown  shared formatting
"""
