"""Configs: `base` holds every field; one file per model changes only what differs.

Each model file's `get_config(arg)` takes '' (quick setting), 'paper' (§3.3 protocol) or
'cpu_study' (the paper's design at CPU scale, trained to early stopping; docs/study) or 'best'
(the best-measured recipe for masks: 128x128, geometric augmentation; docs/RESULTS.md).
"""
