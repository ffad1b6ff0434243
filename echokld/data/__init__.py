"""Data sources and the pipeline.

A source returns a list of frame records: plain dicts with the keys
  case        str, unique frame id, e.g. "patient0001_2CH_ED"
  patient     str
  view        str ("2CH", "4CH")
  phase       str ("ED", "ES")
  quality     str ("Good", "Medium", "Poor") or None when unknown
  image       2-D numpy array, rows = depth (apex at the top); uint8 or float
  label       2-D uint8 numpy array in {0, 1, 2, 3} (CAMUS convention) or None (unlabeled)
  spacing_mm  (row, col) floats or None when unknown
  split       official subgroup ("train", "val", "test") or None
and any further metadata (e.g. CAMUS cfg fields such as "ed_frame", "ef").
"""
