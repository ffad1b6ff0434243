"""echokld.predict --postprocess: the cleaned mask against scipy's own labelling."""

import numpy as np
import pytest
from scipy import ndimage

from conftest import error_lines, run_predict
from echokld.evaluation import metrics
from echokld.infer import runs as predict


@pytest.fixture(scope="module")
def runs(predict_workdirs):
  """The two tiny one-epoch runs of conftest, restored."""
  return [predict.load_run(w, batch_size=4) for w in predict_workdirs]


def test_postprocess_largest_keeps_one_hole_free_region_of_the_plain_mask(runs, tmp_path):
  images = [np.random.default_rng(i).integers(0, 255, (40, 56), dtype=np.uint8)
            for i in range(6)]
  plain = predict.predict_masks(runs, images)
  cleaned = predict.predict_masks(runs, images, postprocess="largest")
  fragmented = 0
  for raw, mask in zip(plain, cleaned):
    labels, count = ndimage.label(raw)  # 4-connected, as lv_region.
    fragmented += count > 1
    assert mask.dtype == np.uint8 and mask.shape == raw.shape
    if not count:
      assert not mask.any()
      continue
    sizes = np.bincount(labels.ravel())[1:]
    biggest = labels == 1 + np.argmax(sizes)
    np.testing.assert_array_equal(mask, ndimage.binary_fill_holes(biggest))
    assert ndimage.label(mask)[1] == 1 and metrics.holes(mask) == 0
  assert fragmented, "the fixture runs segment random frames in one piece: nothing tested"
  result = run_predict(f"--workdir={tmp_path}", "--input=x", "--output=y",
                       "--postprocess=bogus")
  assert result.returncode == 2 and len(error_lines(result)) == 1, result.stderr
  assert "postprocess" in result.stderr
