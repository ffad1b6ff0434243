"""Host-side evaluation: per-frame segmentation metrics and the test-set files of a run."""
