"""From frame records to fixed-shape arrays: subset, split by patient, target, geometry.

source -> select_frames -> split_frames -> preprocess (uint8 images, binary LV masks, one
static shape) -> device arrays. Images stay 8-bit: intensities in [0, 1] are value / 255,
which keeps the 256-level grid the distribution losses use as a sufficient statistic.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Sequence

import numpy as np
from PIL import Image

from echokld.errors import InputError

UNKNOWN_QUALITY = "Unknown"
LV_LABEL = 1


def load_records(data_config: Any, seed: int) -> list[dict]:
  """Reads the configured source (synthetic, folder, camus or camus_tfds)."""
  source = data_config.source
  if source == "synthetic":
    from echokld.data import synthetic
    return synthetic.make_synthetic(data_config.synthetic_patients, seed,
                                    tuple(data_config.synthetic_shape), data_config.view)
  if not data_config.root:
    raise InputError("config.data.root", f"data.source={source!r} needs data.root")
  if source == "folder":
    from echokld.data import folder
    return folder.read_folder(data_config.root)
  if source == "camus":
    from echokld.data import camus
    return camus.read_camus(data_config.root, view=data_config.view)
  if source == "camus_tfds":
    from echokld.data import camus_tfds
    return camus_tfds.read_records(data_config.root, view=data_config.view)
  raise InputError("config.data.source", f"unknown source {source!r} "
                   "(synthetic, folder, camus, camus_tfds)")


def quality_group(record: dict) -> str:
  return record.get("quality") or UNKNOWN_QUALITY


def select_frames(records: Sequence[dict], view: str, qualities: Sequence[str],
                  keep_unknown: bool = True) -> list[dict]:
  """Labelled frames of the view whose quality is listed (or unknown, with keep_unknown)."""
  keep = set(qualities) | ({UNKNOWN_QUALITY} if keep_unknown else set())
  return [r for r in records if r["label"] is not None and r.get("view", view) == view
          and quality_group(r) in keep]


def _patients_in_order(records: Sequence[dict], rng: np.random.Generator) -> list[str]:
  patients = sorted({r["patient"] for r in records})
  return [patients[i] for i in rng.permutation(len(patients))]


def split_frames(records: Sequence[dict], method: str, test_frames: dict[str, int],
                 val_fraction: float, seed: int) -> dict[str, list[dict]]:
  """Deterministic, patient-disjoint train/val/test split.

  paper: per quality group, whole patients are drawn for the test set until it holds the
  reserved number of frames (§3.4: 10 poor, 30 medium, 36 good), and the remaining patients
  are split val_fraction/rest. official: the records' own `split` field; without official
  test frames, the test set is the validation set (said in the summary).
  """
  if method == "official":
    out = {name: [r for r in records if r.get("split") == name] for name in ("train", "val",
                                                                              "test")}
    unused = [r for r in records if r.get("split") not in out]
    if unused:  # Said, not silent: e.g. metadata.csv rows with an empty split.
      patients = sorted({r["patient"] for r in unused})
      print(f"note: data.split=official: {len(unused)} frame(s) of {len(patients)} "
            f"patient(s) have no split and are not used (e.g. {unused[0]['case']})",
            file=sys.stderr, flush=True)
    if not out["train"] or not out["val"]:
      raise InputError("config.data.split", "official split needs records with split "
                       "train and val (metadata.csv 'split' column or CAMUS database_split)")
    if not out["test"]:
      out["test"] = list(out["val"])
    return out
  if method != "paper":
    raise InputError("config.data.split", f"unknown split {method!r} (paper, official)")
  rng = np.random.default_rng(seed)
  out = {"train": [], "val": [], "test": []}
  for group in sorted({quality_group(r) for r in records}):
    members = [r for r in records if quality_group(r) == group]
    by_patient: dict[str, list[dict]] = {}
    for r in members:
      by_patient.setdefault(r["patient"], []).append(r)
    order = _patients_in_order(members, rng)
    wanted, taken = int(test_frames.get(group, 0)), 0
    rest = []
    for patient in order:
      if taken < wanted:
        out["test"].extend(by_patient[patient])
        taken += len(by_patient[patient])
      else:
        rest.append(patient)
    num_val = int(round(val_fraction * len(rest)))
    for i, patient in enumerate(rest):
      out["val" if i < num_val else "train"].extend(by_patient[patient])
  for name, frames in out.items():
    if name != "test" and not frames:
      raise InputError("config.data", f"the {name} split is empty ({len(records)} frames "
                       "selected): use more data or change data.test_frames")
  return out


@dataclasses.dataclass(frozen=True)
class Geometry:
  """How a frame was mapped to the model's shape, so predictions can be mapped back."""

  orig_shape: tuple[int, int]
  resized_shape: tuple[int, int]  # Shape after resizing (== orig_shape when not resized).
  offset: tuple[int, int]  # Where the resized frame's (0, 0) lands in the model canvas.
  spacing_mm: tuple[float, float] | None  # Spacing in the model canvas.


def to_uint8(image: np.ndarray) -> np.ndarray:
  """Scales intensities to [0, 1] on the 8-bit grid: uint8 as is, anything else min-max."""
  if image.dtype == np.uint8:
    return image
  image = image.astype(np.float64)
  lo, hi = float(np.min(image)), float(np.max(image))
  scaled = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
  return np.round(scaled * 255.0).astype(np.uint8)


def _resize(array: np.ndarray, shape: tuple[int, int], nearest: bool) -> np.ndarray:
  resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
  return np.asarray(Image.fromarray(array).resize((shape[1], shape[0]), resample))


def _place(array: np.ndarray, shape: tuple[int, int], offset: tuple[int, int]) -> np.ndarray:
  """Pads/crops `array` into a zero canvas of `shape` with its origin at `offset`."""
  canvas = np.zeros(shape, array.dtype)
  r0, c0 = offset
  src_r, src_c = max(0, -r0), max(0, -c0)
  dst_r, dst_c = max(0, r0), max(0, c0)
  h = min(array.shape[0] - src_r, shape[0] - dst_r)
  w = min(array.shape[1] - src_c, shape[1] - dst_c)
  canvas[dst_r:dst_r + h, dst_c:dst_c + w] = array[src_r:src_r + h, src_c:src_c + w]
  return canvas


def _fit_offset(size: int, canvas: int, lv_lo: int, lv_hi: int, centre: bool) -> int:
  """Offset along one axis: centred (or top-aligned), then shifted to keep the LV inside."""
  offset = (canvas - size) // 2 if centre else 0
  if offset + lv_lo < 0:
    offset = -lv_lo
  if offset + lv_hi > canvas:
    offset = canvas - lv_hi
  return offset


def round_up(value: int, multiple: int) -> int:
  return -(-value // multiple) * multiple


def model_shape(records: Sequence[dict], image_size: Any, native_shape: Sequence[int],
                multiple: int = 16) -> tuple[int, int]:
  """The one static (rows, cols) every frame is brought to."""
  if image_size:
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    return round_up(int(size[0]), multiple), round_up(int(size[1]), multiple)
  if native_shape:
    return round_up(int(native_shape[0]), multiple), round_up(int(native_shape[1]), multiple)
  return (round_up(max(r["image"].shape[0] for r in records), multiple),
          round_up(max(r["image"].shape[1] for r in records), multiple))


def preprocess_frame(image: np.ndarray, label: np.ndarray | None, shape: tuple[int, int],
                     resize: bool, spacing_mm: tuple[float, float] | None, where: str = ""
                     ) -> tuple[np.ndarray, np.ndarray | None, Geometry]:
  """8-bit image and binary LV mask in the model's shape, and the geometry to undo it.

  With `resize` the frame is resampled (bilinear image, nearest-neighbour labels). Otherwise
  it is padded/cropped: centred across, top-aligned in depth (the apex stays at the top),
  shifted so the whole LV stays inside.
  """
  image = to_uint8(np.asarray(image))
  orig = image.shape
  mask = None if label is None else (np.asarray(label) == LV_LABEL).astype(np.uint8)
  if resize:
    image = _resize(image, shape, nearest=False)
    if label is not None:
      mask = (_resize(np.asarray(label, np.uint8), shape, nearest=True) == LV_LABEL)
      mask = mask.astype(np.uint8)
    scale = (orig[0] / shape[0], orig[1] / shape[1])
    spacing = None if spacing_mm is None else (spacing_mm[0] * scale[0],
                                               spacing_mm[1] * scale[1])
    return image, mask, Geometry(tuple(orig), tuple(shape), (0, 0), spacing)
  if mask is not None and mask.any():
    rows, cols = np.nonzero(mask)
    lv = (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1)
  else:
    lv = (0, 0, orig[1] // 2, orig[1] // 2)
  if lv[1] - lv[0] > shape[0] or lv[3] - lv[2] > shape[1]:
    raise InputError(where or "frame", f"the LV ({lv[1] - lv[0]}x{lv[3] - lv[2]} px) does "
                     f"not fit in data.native_shape {shape}")
  offset = (_fit_offset(orig[0], shape[0], lv[0], lv[1], centre=False),
            _fit_offset(orig[1], shape[1], lv[2], lv[3], centre=True))
  image = _place(image, shape, offset)
  mask = None if mask is None else _place(mask, shape, offset)
  return image, mask, Geometry(tuple(orig), tuple(orig), offset, spacing_mm)


def undo_geometry(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
  """Maps a model-shaped mask back onto the original frame (inverse of preprocess_frame)."""
  back = _place(np.asarray(mask, np.uint8), geometry.resized_shape,
                (-geometry.offset[0], -geometry.offset[1]))
  if geometry.resized_shape != geometry.orig_shape:
    back = _resize(back, geometry.orig_shape, nearest=True)
  return back


@dataclasses.dataclass
class ArraySplit:
  """One split as host arrays: images (N, H, W) uint8, masks (N, H, W) uint8, metadata."""

  images: np.ndarray
  masks: np.ndarray
  cases: list[str]
  qualities: list[str]
  geometries: list[Geometry]

  def __len__(self) -> int:
    return len(self.cases)


def to_arrays(records: Sequence[dict], shape: tuple[int, int], resize: bool) -> ArraySplit:
  images, masks, geoms = [], [], []
  for r in records:
    image, mask, geom = preprocess_frame(r["image"], r["label"], shape, resize,
                                         r.get("spacing_mm"), r["case"])
    images.append(image)
    masks.append(mask)
    geoms.append(geom)
  empty = np.zeros((0,) + tuple(shape), np.uint8)
  return ArraySplit(np.stack(images) if images else empty,
                    np.stack(masks) if masks else empty, [r["case"] for r in records],
                    [quality_group(r) for r in records], geoms)


def build_splits(config: Any, records: Sequence[dict] | None = None
                 ) -> tuple[dict[str, ArraySplit], dict[str, list[str]]]:
  """The whole pipeline: source -> selected frames -> split -> arrays of one static shape.

  `records`: the source's records when the caller already read them (a replica group reads
  a seed-independent source once for all its seeds).
  """
  data = config.data
  keep_unknown = bool(data.get("keep_unknown_quality", True))
  if records is None:
    records = load_records(data, config.seed)
  records = select_frames(records, data.view, data.qualities, keep_unknown)
  if not records:
    raise InputError(data.root or "config.data", "no labelled frames of view "
                     f"{data.view} with qualities {tuple(data.qualities)}"
                     f"{'' if keep_unknown else ' (unknown quality excluded)'}")
  splits = split_frames(records, data.split, dict(data.test_frames), data.val_fraction,
                        config.seed)
  shape = model_shape(records, data.image_size, data.native_shape)
  arrays = {name: to_arrays(frames, shape, resize=bool(data.image_size))
            for name, frames in splits.items()}
  return arrays, {name: [r["case"] for r in frames] for name, frames in splits.items()}
