"""EF from apical 2CH masks against the CAMUS reference EF (biplane, expert contours).

  python experiments/ef_agreement.py --data_root=DIR [--pred_dir=PRED] [--out=docs] \
      [--csv_dir=WORK]

DIR holds labels/<case>.png (uint8, 1 = LV cavity, 3 = left atrium) and metadata.csv with
`case,patient,phase,image_quality,ef` (the camus224 layout). The patients with a reference
`ef` and both an ED and an ES frame are measured: EF from the ground-truth masks through the
single-plane area-length and method-of-disks formulas of echokld.clinical, and, with
--pred_dir, from predicted masks `<case>_mask.png` found anywhere under PRED (as
echokld.predict names them). Pixel spacing is not needed: EF is a ratio.

Writes OUT/CLINICAL.md and OUT/figures/ef_bland_altman_{gt,model}.png. Per-patient tables
(volumes.csv format) go only to --csv_dir: they are CAMUS-derived data, not for committing.
"""

from __future__ import annotations

import argparse
import csv
import math
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from scipy import ndimage  # noqa: E402

from echokld import cli  # noqa: E402
from echokld.clinical import geometry, volumes  # noqa: E402
from echokld.errors import InputError  # noqa: E402

import ef_report  # noqa: E402

LV, MYOCARDIUM = 1, 2
QUALITIES = ("Good", "Medium", "Poor")
# Pixel aspect ratios (column size / row size) tried to see what the lost spacing does to EF.
ASPECTS = (0.7, 1.4)
REQUIRED = ("case", "patient", "phase", "image_quality", "ef")


def read_cases(data_root: pathlib.Path) -> list[dict]:
  """Metadata rows of the frames with a reference EF whose label map exists."""
  meta = data_root / "metadata.csv"
  if not meta.is_file():
    raise InputError(meta, "not found")
  with open(meta, newline="") as f:
    rows = list(csv.DictReader(f))
  missing = [c for c in REQUIRED if rows and c not in rows[0]]
  if not rows or missing:
    raise InputError(meta, f"needs the columns {', '.join(REQUIRED)}")
  cases = [r for r in rows if r["ef"].strip() and (data_root / "labels" / f"{r['case']}.png")
           .is_file()]
  if not cases:
    raise InputError(meta, "no frame with a reference `ef` and a labels/<case>.png")
  return cases


def read_png(path: pathlib.Path) -> np.ndarray:
  with Image.open(path) as image:
    array = np.asarray(image)
  if array.ndim != 2:
    raise InputError(path, f"expected a one-channel mask, got shape {array.shape}")
  return array


def label_annulus(labels: np.ndarray) -> np.ndarray | None:
  """Annulus from the label map: the two extreme LV pixels that touch no myocardium.

  The LV cavity is walled by myocardium except at the valve plane, where it meets the
  atrium or background; the extremes of those pixels along their principal direction are
  the annulus points. None if fewer than two such pixels.
  """
  lv = labels == LV
  open_side = ndimage.binary_dilation((labels != LV) & (labels != MYOCARDIUM)) & lv
  points = np.argwhere(open_side).astype(float)
  if len(points) < 2:
    return None
  centred = points - points.mean(axis=0)
  direction = np.linalg.svd(centred, full_matrices=False)[2][0]
  along = centred @ direction
  return np.stack([points[np.argmin(along)], points[np.argmax(along)]])


def patients_of(cases: list[dict]) -> dict[str, dict]:
  """{patient: {"ED": case, "ES": case, "ef", "quality", "split"}}, patients with both phases."""
  found: dict[str, dict] = {}
  for row in cases:
    entry = found.setdefault(row["patient"], {"ef": float(row["ef"]),
                                              "quality": row["image_quality"] or "Unknown",
                                              "split": row.get("split", "")})
    entry[row["phase"].upper()] = row["case"]
  return {p: e for p, e in sorted(found.items()) if "ED" in e and "ES" in e}


def ef_by_patient(patients: dict, masks: dict[str, np.ndarray], aspect: float | None = None,
                  csv_path: pathlib.Path | None = None) -> dict[str, dict[str, float]]:
  """{method: {patient: EF %}} through volumes.patient_volumes; NaN where not measurable.

  `aspect` (column / row pixel size) measures with anisotropic pixels; None: isotropic.
  """
  spacing = None if aspect is None else (1.0, aspect)
  frames = [volumes.FrameMask(p, phase, e[phase], masks[e[phase]], spacing)
            for p, e in patients.items() for phase in volumes.PHASES if e[phase] in masks]
  rows = volumes.patient_volumes(frames)
  if csv_path is not None:
    volumes.write_volumes_csv(csv_path, rows)
  column = "ef_px_percent" if aspect is None else "ef_percent"
  out: dict[str, dict[str, float]] = {m: {} for m in volumes.METHODS}
  for row in rows:
    out[row["method"]][row["patient"]] = row[column]
  return out


def ef_with_annulus(patients: dict, labels: dict[str, np.ndarray]) -> dict[str, float]:
  """Disks EF with the annulus taken from the label map (`label_annulus`)."""
  out = {}
  for patient, entry in patients.items():
    vols = []
    for phase in volumes.PHASES:
      label = labels[entry[phase]]
      landmarks = geometry.find_landmarks(label == LV, annulus=label_annulus(label),
                                          name=entry[phase])
      vols.append(volumes.disks_volume(landmarks))
    out[patient] = volumes.ejection_fraction(*vols)
  return out


def landmark_check(labels: dict[str, np.ndarray]) -> dict[str, float]:
  """Mask-only landmarks against the label-derived annulus, over all given label maps."""
  flat, corner, middle, length = [], [], [], []
  for case, label in sorted(labels.items()):
    found = geometry.find_landmarks(label == LV, name=case)
    flat.append(found.flat_base)
    reference = label_annulus(label)
    if reference is None:
      continue
    pairs = found.annulus
    if (np.linalg.norm(pairs - reference[::-1], axis=1).sum() <
        np.linalg.norm(pairs - reference, axis=1).sum()):
      reference = reference[::-1]
    corner.extend(np.linalg.norm(pairs - reference, axis=1))
    middle.append(np.linalg.norm(found.base_mid - reference.mean(axis=0)))
    with_label = geometry.find_landmarks(label == LV, annulus=reference, name=case)
    length.append(100 * (found.length / with_label.length - 1))
  pct = lambda values, q: float(np.percentile(values, q))  # noqa: E731
  return {"frames": len(flat), "flat": int(np.sum(flat)),
          "corner_median": pct(corner, 50), "corner_p90": pct(corner, 90),
          "middle_median": pct(middle, 50), "middle_p90": pct(middle, 90),
          "length_median": pct(np.abs(length), 50), "length_p90": pct(np.abs(length), 90)}


def agreement(ours: dict[str, float], reference: dict[str, float],
              patients: list[str]) -> dict[str, float]:
  """Pearson r, bias, SD and 95% limits of agreement, MAE, leave-one-out bias-corrected MAE."""
  pairs = [(ours[p], reference[p]) for p in patients if p in ours and math.isfinite(ours[p])]
  n = len(pairs)
  if n < 3:
    return {"n": n}
  x, y = np.array(pairs).T
  diff = x - y
  bias, sd = float(diff.mean()), float(diff.std(ddof=1))
  loo_bias = (diff.sum() - diff) / (n - 1)
  return {"n": n, "r": float(np.corrcoef(x, y)[0, 1]), "bias": bias, "sd": sd,
          "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd,
          "mae": float(np.abs(diff).mean()), "mae_loo": float(np.abs(diff - loo_bias).mean())}


def bland_altman(path: pathlib.Path, efs: dict[str, dict[str, float]],
                 reference: dict[str, float], quality: dict[str, str], source: str) -> None:
  """Scatter against the reference (top) and Bland-Altman (bottom), one column per method."""
  fig, axes = plt.subplots(2, len(efs), figsize=(5.2 * len(efs), 9.5), squeeze=False)
  colours = {"Good": "tab:green", "Medium": "tab:orange", "Poor": "tab:red",
             "Unknown": "tab:gray"}
  for column, (method, ours) in enumerate(efs.items()):
    keep = [p for p in reference if p in ours and math.isfinite(ours[p])]
    x = np.array([ours[p] for p in keep])
    y = np.array([reference[p] for p in keep])
    stats = agreement(ours, reference, keep)
    top, bottom = axes[0, column], axes[1, column]
    for group, colour in colours.items():
      sel = np.array([quality[p] == group for p in keep], bool)
      if sel.any():
        top.scatter(y[sel], x[sel], s=16, color=colour, label=group)
        bottom.scatter((x[sel] + y[sel]) / 2, x[sel] - y[sel], s=16, color=colour, label=group)
    lo, hi = 0.95 * min(x.min(), y.min()), 1.05 * max(x.max(), y.max())
    top.plot([lo, hi], [lo, hi], "k:", lw=1)
    top.set(xlabel="reference EF (%, CAMUS biplane)", ylabel=f"2CH {method} EF (%)",
            title=f"{source}, {method}: r = {stats['r']:.3f}, n = {stats['n']}")
    for level, style in ((stats["bias"], "-"), (stats["loa_low"], "--"),
                         (stats["loa_high"], "--")):
      bottom.axhline(level, color="k", ls=style, lw=1)
      bottom.annotate(f"{level:+.1f}", (1.0, level), xycoords=("axes fraction", "data"),
                      ha="right", va="bottom", fontsize=8)
    bottom.axhline(0, color="gray", lw=0.5)
    bottom.set(xlabel="mean of the two EFs (%)", ylabel="2CH EF - reference EF (points)",
               title=f"bias {stats['bias']:+.1f}, limits {stats['loa_low']:+.1f} to "
                     f"{stats['loa_high']:+.1f}")
    top.legend(fontsize=8, loc="upper left")
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def find_predictions(pred_dir: pathlib.Path, cases: set[str]) -> dict[str, pathlib.Path]:
  """{case: path} of every <case>_mask.png under `pred_dir` (InputError on a duplicate)."""
  if not pred_dir.is_dir():
    raise InputError(pred_dir, "prediction folder does not exist")
  found: dict[str, pathlib.Path] = {}
  for path in sorted(pred_dir.rglob("*_mask.png")):
    case = path.name[:-len("_mask.png")]
    if case in cases:
      if case in found:
        raise InputError(path, f"second mask for {case} (first: {found[case]})")
      found[case] = path
  if not found:
    raise InputError(pred_dir, "no <case>_mask.png for any case with a reference EF")
  return found


def dice(a: np.ndarray, b: np.ndarray) -> float:
  total = a.sum() + b.sum()
  return float(2 * np.logical_and(a, b).sum() / total) if total else 1.0


def measure(masks: dict[str, np.ndarray], patients: dict, reference: dict, quality: dict,
            csv_path: pathlib.Path | None) -> dict:
  """EF of every patient by both methods and its agreement with the reference, by group."""
  efs = ef_by_patient(patients, masks, csv_path=csv_path)
  groups = {"all": list(patients)}
  groups.update({q: [p for p in patients if quality[p] == q] for q in QUALITIES})
  return {"efs": efs, "stats": {m: {g: agreement(efs[m], reference, members)
                                    for g, members in groups.items()} for m in efs}}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_root", required=True, type=pathlib.Path)
  parser.add_argument("--pred_dir", type=pathlib.Path, default=None)
  parser.add_argument("--out", type=pathlib.Path,
                      default=pathlib.Path(__file__).resolve().parents[1] / "docs")
  parser.add_argument("--csv_dir", type=pathlib.Path, default=None,
                      help="per-patient volumes CSVs (CAMUS-derived: keep out of the repo)")
  parser.add_argument("--landmark_frames", choices=("all", "ef"), default="all",
                      help="label maps for the landmark check: every one, or the EF frames")
  args = parser.parse_args(argv)

  cases = read_cases(args.data_root)
  patients = patients_of(cases)
  reference = {p: e["ef"] for p, e in patients.items()}
  quality = {p: e["quality"] for p, e in patients.items()}
  labels = {c: read_png(args.data_root / "labels" / f"{c}.png")
            for e in patients.values() for c in (e["ED"], e["ES"])}
  if args.csv_dir is not None:
    args.csv_dir.mkdir(parents=True, exist_ok=True)
  csv_of = lambda name: None if args.csv_dir is None else args.csv_dir / name  # noqa: E731

  gt_masks = {c: label == LV for c, label in labels.items()}
  gt = measure(gt_masks, patients, reference, quality, csv_of("volumes_gt.csv"))
  bland_altman(args.out / "figures" / "ef_bland_altman_gt.png", gt["efs"], reference, quality,
               "ground-truth masks")
  everyone = list(patients)
  gt["label_annulus"] = agreement(ef_with_annulus(patients, labels), reference, everyone)
  gt["aspects"] = {}
  for aspect in ASPECTS:
    skewed = ef_by_patient(patients, gt_masks, aspect=aspect)
    gt["aspects"][aspect] = {
        m: np.array([skewed[m][p] - gt["efs"][m][p] for p in everyone]) for m in skewed}

  if args.landmark_frames == "all":
    all_labels = {p.stem: read_png(p) for p in sorted((args.data_root / "labels").glob("*.png"))}
  else:
    all_labels = labels
  landmarks = landmark_check(all_labels)

  model = None
  if args.pred_dir is not None:
    paths = find_predictions(args.pred_dir, set(gt_masks))
    predicted = {c: read_png(p) != 0 for c, p in paths.items()}
    with_both = {p: e for p, e in patients.items() if e["ED"] in predicted and e["ES"] in predicted}
    model = measure(predicted, with_both, reference, quality, csv_of("volumes_model.csv"))
    model["vs_gt"] = {m: agreement(model["efs"][m], gt["efs"][m], list(with_both))
                      for m in volumes.METHODS}
    model["dice"] = float(np.mean([dice(predicted[c], gt_masks[c]) for c in predicted]))
    model["frames"], model["pred_dir"] = len(predicted), str(args.pred_dir)
    bland_altman(args.out / "figures" / "ef_bland_altman_model.png", model["efs"], reference,
                 quality, "model masks")

  text = ef_report.render(gt=gt, model=model, landmarks=landmarks, patients=patients,
                          aspects=ASPECTS)
  (args.out / "CLINICAL.md").write_text(text)
  print(f"wrote {args.out / 'CLINICAL.md'}")
  for method in volumes.METHODS:
    s = gt["stats"][method]["all"]
    print(f"ground truth, {method}: n={s['n']} r={s['r']:.3f} bias={s['bias']:+.2f} "
          f"LoA=[{s['loa_low']:+.2f}, {s['loa_high']:+.2f}] MAE={s['mae']:.2f}")


if __name__ == "__main__":
  cli.run_script(main)
