"""Synthetic apical two-chamber echocardiograms: the built-in data set.

Each patient gets an anatomy (LV, myocardium, left atrium and one more chamber inside a
sector-shaped field of view) and an image quality; ED and ES frames differ by the LV's
contraction. Blood pools (LV, atrium, the extra chamber) share one intensity distribution,
so a model must learn shape and position, as on real echo. Quality sets contrast, speckle
strength and, for poor images, drop-outs, shadows and near-field clutter.

Everything is deterministic from (seed, patient index): adding patients does not change
the ones already drawn.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

QUALITIES = ("Good", "Medium", "Poor")
# Share of each quality among CAMUS 2CH frames (396 good, 386 medium, 118 poor of 900).
QUALITY_SHARES = (0.44, 0.43, 0.13)

# Per quality: blood, myocardium, tissue means; speckle shape (gamma k, lower = stronger);
# haze added inside cavities; whether drop-out/shadow artefacts occur.
_QUALITY_STYLE = {
    "Good": dict(blood=0.07, myo=0.72, tissue=0.42, speckle_k=4.0, haze=0.0, artefacts=False),
    "Medium": dict(blood=0.12, myo=0.55, tissue=0.38, speckle_k=2.5, haze=0.06, artefacts=False),
    "Poor": dict(blood=0.18, myo=0.42, tissue=0.32, speckle_k=1.6, haze=0.12, artefacts=True),
}


def _ellipse_field(rows: np.ndarray, cols: np.ndarray, center: tuple[float, float],
                   axes: tuple[float, float], tilt: float, wobble: np.ndarray) -> np.ndarray:
  """Normalised radius (< 1 inside) of a tilted ellipse whose boundary wobbles by `wobble`."""
  dr, dc = rows - center[0], cols - center[1]
  cos, sin = np.cos(tilt), np.sin(tilt)
  along, across = dr * cos + dc * sin, -dr * sin + dc * cos
  radius = np.sqrt((along / axes[0]) ** 2 + (across / axes[1]) ** 2)
  angle = np.arctan2(across / axes[1], along / axes[0])
  harmonics = np.arange(1, len(wobble) + 1)
  bump = (wobble[:, None] * np.cos(harmonics[:, None] * angle.ravel()[None, :])).sum(0)
  return radius / (1.0 + bump.reshape(radius.shape))


def _anatomy(rng: np.random.Generator) -> dict:
  """Patient-level anatomy in units of the image height / width."""
  return dict(
      lv_center_col=rng.uniform(0.44, 0.56),
      lv_top=rng.uniform(0.1, 0.16),
      lv_length=rng.uniform(0.25, 0.3),
      lv_width=rng.uniform(0.13, 0.18),
      tilt=rng.uniform(-0.18, 0.18),
      myo_thickness=rng.uniform(0.035, 0.05),
      la_length=rng.uniform(0.09, 0.12),
      la_width=rng.uniform(0.12, 0.16),
      extra_side=rng.choice([-1.0, 1.0]),
      wobble=rng.normal(0.0, 0.03, size=4),
      depth_mm=rng.uniform(140.0, 170.0),
      sector_half_angle=rng.uniform(0.58, 0.68),
  )


def _frame(anatomy: dict, phase: str, quality: str, shape: tuple[int, int],
           rng: np.random.Generator, squeeze: tuple[float, float, float] | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
  """Renders one frame: (uint8 image, uint8 label) of the given shape.

  `squeeze` = (width factor, length factor, atrium factor) of the LV against end-diastole;
  None draws end-systole's at random for an ES frame (1, 1, 1 for ED).
  """
  h, w = shape
  rows, cols = np.meshgrid(np.arange(h) / h, np.arange(w) / w * (w / h), indexing="ij")
  apex_col = 0.5 * w / h
  style = _QUALITY_STYLE[quality]

  if squeeze is None:
    squeeze = ((1.0, 1.0, 1.0) if phase == "ED" else
               (rng.uniform(0.8, 0.88), rng.uniform(0.88, 0.94), 1.12))
  contraction, length_factor, la_scale = squeeze
  length = anatomy["lv_length"] * length_factor
  width = anatomy["lv_width"] * contraction * w / h
  center_col = apex_col + (anatomy["lv_center_col"] - 0.5) * w / h
  # The cavity is an ellipse cut at the mitral plane (85% of its length).
  mitral_row = anatomy["lv_top"] + 0.85 * 2 * length
  center = (anatomy["lv_top"] + length, center_col)
  lv_r = _ellipse_field(rows, cols, center, (length, width), anatomy["tilt"], anatomy["wobble"])
  lv = (lv_r < 1.0) & (rows < mitral_row)
  thickness = anatomy["myo_thickness"] / np.sqrt(contraction)
  myo_r = _ellipse_field(rows, cols, center, (length + thickness, width + thickness),
                         anatomy["tilt"], anatomy["wobble"])
  myo = (myo_r < 1.0) & (rows < mitral_row) & ~lv
  la_len, la_wid = anatomy["la_length"] * la_scale, anatomy["la_width"] * la_scale * w / h
  mitral_col = center_col + np.tan(anatomy["tilt"]) * (mitral_row - center[0])
  la = _ellipse_field(rows, cols, (mitral_row + la_len * 0.95, mitral_col), (la_len, la_wid),
                      anatomy["tilt"], anatomy["wobble"][::-1] * 0.5) < 1.0
  la &= ~lv & ~myo
  extra = _ellipse_field(rows, cols, (mitral_row + 0.05, mitral_col + anatomy["extra_side"] *
                                      (la_wid + width) * 0.95), (0.07, 0.06 * w / h),
                         0.3 * anatomy["extra_side"], anatomy["wobble"][1:] * 0.5) < 1.0
  extra &= ~lv & ~myo & ~la

  depth = np.hypot(rows, cols - apex_col)
  angle = np.arctan2(cols - apex_col, rows)
  sector = (depth < 0.97) & (np.abs(angle) < anatomy["sector_half_angle"])

  mean = np.full(shape, style["tissue"])
  mean *= 1.0 + 0.25 * np.sin(9.0 * depth + 4.0 * angle + rng.uniform(0, 6.28))  # texture
  mean[myo] = style["myo"]
  blood = lv | la | extra
  mean[blood] = style["blood"] + style["haze"] * np.exp(-depth[blood] / 0.35)
  if style["artefacts"]:
    dropout_angle = rng.uniform(-0.5, 0.5) * anatomy["sector_half_angle"]
    mean *= 1.0 - 0.6 * np.exp(-((angle - dropout_angle) / 0.08) ** 2)
    mean += 0.25 * np.exp(-depth / 0.06)  # near-field clutter at the apex
  mean *= np.exp(-0.6 * depth)  # attenuation with depth

  speckle = rng.gamma(style["speckle_k"], 1.0 / style["speckle_k"], size=shape)
  speckle = ndimage.gaussian_filter(speckle, sigma=0.6)
  image = mean * speckle + rng.normal(0.0, 0.01, size=shape)
  image = np.where(sector, np.clip(image, 0.0, 1.0), 0.0)
  label = np.zeros(shape, np.uint8)
  label[myo] = 2
  label[la] = 3
  label[lv] = 1
  label[~sector] = 0
  return np.round(image * 255.0).astype(np.uint8), label


def make_synthetic(num_patients: int = 150, seed: int = 0,
                   image_shape: tuple[int, int] = (96, 96), view: str = "2CH") -> list[dict]:
  """Returns 2 * num_patients frame records (ED and ES) in the convention of echokld.data."""
  records = []
  for index in range(num_patients):
    rng = np.random.default_rng([seed, index])
    quality = QUALITIES[int(rng.choice(3, p=QUALITY_SHARES))]
    anatomy = _anatomy(rng)
    spacing = anatomy["depth_mm"] / image_shape[0]
    patient = f"patient{index + 1:04d}"
    for phase in ("ED", "ES"):
      image, label = _frame(anatomy, phase, quality, image_shape, rng)
      records.append(dict(case=f"{patient}_{view}_{phase}", patient=patient, view=view,
                          phase=phase, quality=quality, image=image, label=label,
                          spacing_mm=(spacing, spacing), split=None))
  return records


def make_beating_sequence(num_frames: int = 20, seed: int = 0,
                          image_shape: tuple[int, int] = (96, 96), patient: int = 0,
                          quality: str = "Good", es_fraction: float = 0.4) -> dict:
  """One synthetic cine loop of a beating LV, from end-diastole over one heart cycle.

  The LV contracts smoothly from frame 0 (ED) to frame round(es_fraction * num_frames) (ES)
  and relaxes back; speckle is drawn anew per frame, as in a real loop. The anatomy is
  patient `patient` of `make_synthetic(seed=seed)`'s draw.

  Returns:
    {"images", "labels"} (num_frames, H, W) uint8, "ed_frame" and "es_frame" (the truth),
    "spacing_mm" and "quality".
  """
  if num_frames < 4 or not 0.0 < es_fraction < 1.0:
    raise ValueError(f"need >= 4 frames and 0 < es_fraction < 1 (got {num_frames}, "
                     f"{es_fraction})")
  rng = np.random.default_rng([seed, patient])
  rng.choice(3, p=QUALITY_SHARES)  # Keeps the anatomy that make_synthetic draws.
  anatomy = _anatomy(rng)
  es_squeeze = (rng.uniform(0.8, 0.88), rng.uniform(0.88, 0.94), 1.12)
  es_frame = int(round(es_fraction * num_frames))
  images, labels = [], []
  for t in range(num_frames):
    # 0 at ED, 1 at ES: a half cosine up to ES, another back down to the next ED.
    part = t / es_frame if t <= es_frame else (num_frames - t) / (num_frames - es_frame)
    s = 0.5 - 0.5 * np.cos(np.pi * part)
    squeeze = tuple(1.0 + s * (f - 1.0) for f in es_squeeze)
    image, label = _frame(anatomy, "ED", quality, image_shape, rng, squeeze)
    images.append(image)
    labels.append(label)
  spacing = anatomy["depth_mm"] / image_shape[0]
  return {"images": np.stack(images), "labels": np.stack(labels), "ed_frame": 0,
          "es_frame": es_frame, "spacing_mm": (spacing, spacing), "quality": quality}
