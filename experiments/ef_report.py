"""docs/CLINICAL.md from the numbers of experiments/ef_agreement.py (text only, no I/O)."""

from __future__ import annotations

import numpy as np

CAMUS_PAPER_R, CAMUS_PAPER_MAE = 0.80, 5.6
COMMAND = ("python experiments/ef_agreement.py --data_root=../shared/data/camus224 "
           "[--pred_dir=PRED] [--csv_dir=WORK]")
GROUPS = ("all", "Good", "Medium", "Poor")
NAMES = {"area_length": "area-length", "disks": "disks (20)"}


def table(stats: dict[str, dict[str, dict]]) -> list[str]:
  """Markdown rows: one per method and quality group."""
  lines = ["| method | patients | n | r | bias | SD | 95% limits of agreement | MAE | "
           "MAE, bias removed (LOO) |", "|---|---|---|---|---|---|---|---|---|"]
  for method, by_group in stats.items():
    for group in GROUPS:
      s = by_group.get(group, {"n": 0})
      if s["n"] < 3:
        lines.append(f"| {NAMES[method]} | {group} | {s['n']} | | | | | | |")
        continue
      lines.append(
          f"| {NAMES[method]} | {group} | {s['n']} | {s['r']:.3f} | {s['bias']:+.1f} | "
          f"{s['sd']:.1f} | {s['loa_low']:+.1f} to {s['loa_high']:+.1f} | {s['mae']:.1f} | "
          f"{s['mae_loo']:.1f} |")
  return lines


def where_it_lands(stats: dict, source: str) -> list[str]:
  """The comparison with the CAMUS paper's encoder-decoder (biplane volumes)."""
  al, dk = stats["area_length"]["all"], stats["disks"]["all"]
  return [
      f"The CAMUS paper's encoder-decoder reached r = {CAMUS_PAPER_R:.2f} and a mean absolute "
      f"EF error of {CAMUS_PAPER_MAE}% with biplane (2CH + 4CH) volumes from its own masks. "
      f"A single-plane 2CH estimate from {source} correlates with the biplane reference at "
      f"r = {dk['r']:.3f} (disks) and {al['r']:.3f} (area-length), but lands "
      f"{dk['bias']:+.1f} and {al['bias']:+.1f} EF points off on average, so its mean absolute "
      f"error ({dk['mae']:.1f} and {al['mae']:.1f} points) is "
      f"{'above' if dk['mae'] > CAMUS_PAPER_MAE else 'below'} the paper's. With the constant "
      f"bias removed (estimated on the other patients, leave-one-out) the error is "
      f"{dk['mae_loo']:.1f} (disks) and {al['mae_loo']:.1f} (area-length) points, "
      f"{'below' if dk['mae_loo'] < CAMUS_PAPER_MAE else 'above'} the paper's {CAMUS_PAPER_MAE}; "
      f"the limits of agreement ({dk['loa_low']:+.1f} to {dk['loa_high']:+.1f} for disks) "
      f"stay wide."]


def aspect_lines(aspects: dict) -> list[str]:
  lines = ["| pixel aspect (column / row size) | method | mean abs EF change | largest |",
           "|---|---|---|---|"]
  for aspect, by_method in aspects.items():
    for method, change in by_method.items():
      change = np.abs(change[np.isfinite(change)])
      lines.append(f"| {aspect:g} | {NAMES[method]} | {change.mean():.2f} | {change.max():.2f} |")
  return lines


def aspect_summary(aspects: dict) -> str:
  changes = [np.abs(c[np.isfinite(c)]) for by_method in aspects.values()
             for c in by_method.values()]
  means, largest = max(c.mean() for c in changes), max(c.max() for c in changes)
  return (f"For aspects from {min(aspects):g} to {max(aspects):g}, assuming square pixels "
          f"moves the EF by at most {means:.2f} points on average over the patients, and "
          f"one patient's by up to {largest:.2f}.")


# Until experiments/qc_flag.py is run on trained runs: what it will measure (numbers go here).
QC_SECTION = [
    "## Quality control flag (not measured yet)",
    "",
    "Can the disagreement of a prediction's members (ensemble runs, or one run's test-"
    "time views) tell which masks are poor, so that a reader checks those first? Nothing "
    "here has been measured. What will be measured, with runs trained on a camus224 copy "
    "whose metadata.csv marks train/val/test (so the runs' split.json names the frames):",
    "",
    "`python experiments/qc_flag.py --workdir=RUN [--workdir=RUN2 ...] [--tta=flip] "
    "--data_root=CAMUS224_COPY --out=docs/qc --csv_dir=WORK`",
    "",
    "For each score of `echokld/infer/qc.py` (`mask_disagreement`: 1 - mean pairwise Dice"
    " of the members' masks; `disagreement`: mean per-pixel spread over the members' LV "
    "union), the threshold maximising Youden's J for detecting Dice < 0.85 is chosen on "
    "the validation frames and measured on the test frames: sensitivity and specificity "
    "(counts, Wilson 95% CIs), the score's AUC, and a scatter of score against Dice "
    "(`docs/qc/qc_flag.md`, `docs/qc/figures/qc_score_vs_dice.png`). Its "
    "`docs/qc/qc_threshold.json` is what `python -m echokld.predict ... "
    "--qc_calibration=docs/qc/qc_threshold.json` flags with (`qc_flag` in areas.csv). "
    "Whether flagged frames also carry larger EF errors is not measured.",
    "",
]


def model_section(model: dict | None, patients: dict) -> list[str]:
  splits = {s: sum(1 for e in patients.values() if e["split"] == s) for s in ("train", "val")}
  if model is None:
    return [
        "## EF from a trained model's masks (placeholder: not measured yet)",
        "",
        "This half needs trained runs; nothing here has been measured. What will be measured, "
        "with the same script:",
        "",
        "1. Predicted masks for the 190 frames of the 95 patients with a reference EF:",
        "   `python -m echokld.predict --workdir=RUN --input=../shared/data/camus224/images "
        "--output=PRED` (it writes `<case>_mask.png`).",
        "2. `python experiments/ef_agreement.py --data_root=../shared/data/camus224 "
        "--pred_dir=PRED` fills this section: r, bias, limits of agreement, MAE of the model's "
        "2CH EF against the reference, overall and per quality group; the same against the "
        "EF of the ground-truth masks (the segmentation's own share of the error); mean Dice "
        "of the masks; and a Bland-Altman plot (`figures/ef_bland_altman_model.png`).",
        "",
        f"Caveat for that run: {splits['train']} of these {len(patients)} patients are in the "
        f"official training subgroup ({splits['val']} in validation, none in testing: camus224 "
        "has no testing patients). A model trained "
        "on camus224's training split has seen their frames, so its EF agreement there is "
        "optimistic; train with these patients held out to measure it fairly.", ""]
  vs_gt = model["vs_gt"]
  return [
      "## EF from a trained model's masks", "",
      f"Masks: {model['frames']} frames from `{model['pred_dir']}`, mean Dice against the "
      f"ground truth {model['dice']:.3f}.", "",
      *table(model["stats"]), "",
      "![Bland-Altman, model masks](figures/ef_bland_altman_model.png)", "",
      *where_it_lands(model["stats"], "the model's masks"), "",
      "Against the EF of the ground-truth masks (the segmentation's own share of the error): "
      + "; ".join(f"{NAMES[m]} r = {s['r']:.3f}, bias {s['bias']:+.1f}, MAE {s['mae']:.1f}"
                  for m, s in vs_gt.items() if s["n"] >= 3) + ".", ""]


def render(gt: dict, model: dict | None, landmarks: dict, patients: dict,
           aspects: tuple) -> str:
  """The whole of docs/CLINICAL.md."""
  n = len(patients)
  groups = {q: sum(1 for e in patients.values() if e["quality"] == q) for q in GROUPS[1:]}
  reference = np.array([e["ef"] for e in patients.values()])
  al, dk = gt["stats"]["area_length"]["all"], gt["stats"]["disks"]["all"]
  both = [gt["efs"]["area_length"][p] - gt["efs"]["disks"][p] for p in patients]
  label = gt["label_annulus"]
  lm = landmarks
  lines = [
      "# Clinical measurements: LV volumes and ejection fraction", "",
      "`echokld.clinical` turns apical two-chamber (2CH) LV masks into end-diastolic and "
      "end-systolic volumes and the ejection fraction (EF). This page checks its EF against "
      "the CAMUS reference on real data. Regenerate it with", "",
      f"    {COMMAND}", "",
      f"Data: the {n} camus224 patients with a reference EF ({groups['Good']} Good, "
      f"{groups['Medium']} Medium, {groups['Poor']} Poor 2CH image quality), one ED and one ES "
      f"frame each. Reference EF (CAMUS `LVef`, biplane from experts' 2CH and 4CH contours): "
      f"mean {reference.mean():.1f}%, SD {reference.std(ddof=1):.1f}, range "
      f"{reference.min():.0f} to {reference.max():.0f}%. Only summary numbers and plots are "
      "kept here; per-patient tables stay out of the repository (CAMUS licence).", "",
      "## EF from the ground-truth 2CH masks (the ceiling of a 2CH-only method)", "",
      f"Over the {n} patients: disks r = {dk['r']:.3f}, bias {dk['bias']:+.1f} EF points, "
      f"95% limits of agreement {dk['loa_low']:+.1f} to {dk['loa_high']:+.1f}, mean absolute "
      f"error {dk['mae']:.1f}; area-length r = {al['r']:.3f}, bias {al['bias']:+.1f}, limits "
      f"{al['loa_low']:+.1f} to {al['loa_high']:+.1f}, MAE {al['mae']:.1f}. Bias = 2CH EF minus "
      "reference; MAE, bias removed (LOO) = the mean absolute error after subtracting the "
      "bias of the other patients.", "",
      *table(gt["stats"]), "",
      "![Bland-Altman, ground-truth masks](figures/ef_bland_altman_gt.png)", "",
      "### Where a 2CH-only estimate lands", "",
      *where_it_lands(gt["stats"], "the experts' own masks"), "",
      "The offset is not the formula's nor the landmarks': the two formulas differ by "
      f"{np.mean(np.abs(both)):.2f} EF points on average (largest {np.max(np.abs(both)):.2f}), "
      "and taking the annulus from the label map instead of the mask (below) gives disks "
      f"r = {label['r']:.3f}, bias {label['bias']:+.1f}, MAE {label['mae']:.1f}. The offset "
      "is between the 2CH masks and a biplane reference; camus224 has no 4CH frames, so "
      "whether the 4CH view accounts for it is not measured here.", "",
      "## Method", "",
      "**Landmarks, from the LV mask alone** (`echokld/clinical/geometry.py`; rows = depth, "
      "apex at the top). The mask is cleaned (largest 4-connected component, holes filled). "
      "The base is looked for on the convex hull of the boundary pixels' corners (which "
      "bridges a notch in the valve plane): the longest chain of hull vertices that stays "
      "within 1 pixel of a straight chord, faces the base (normal within 45 degrees of the "
      "long axis), spans at least 40% of the LV's width and ends in corners (the hull turns "
      "by at least 30 degrees within 30% of the width beyond each end). Its ends are the "
      "annulus points, the LV's basal corners where the walls meet the valve plane; the "
      "annulus midpoint is their midpoint. Without such a chord (a rounded base, e.g. an "
      "ellipse or a smooth predicted mask) the midpoint is where the long axis leaves the "
      "mask at the base. The apex is the boundary point farthest from the annulus midpoint "
      "(sub-pixel, on the 0.5 level of the bilinearly interpolated mask). The long axis, "
      "first the principal axis of the pixels, becomes apex -> midpoint and the search "
      "repeats until the landmarks stop moving.", "",
      "**Volumes** (`echokld/clinical/volumes.py`), with L the long axis: area-length "
      "V = 8 A^2 / (3 pi L), A the pixel count times the pixel area; method of disks: L in "
      "20 slabs, the disk of each the chord of the mask perpendicular to the axis through the "
      "slab's middle, V = sum(pi/4 D_i^2 L/20) (CAMUS's biplane rule with a_i = b_i). "
      "EF = (EDV - ESV) / EDV. `volumes.csv` (`patient_volumes`, `write_volumes_csv`) has "
      "both volumes in mL when the spacing is known and in cubic pixels always, the EF, the "
      "frames used, and a note where a frame is missing or its mask empty (then the EF is "
      "empty). The tests check both formulas within 2% of prolate spheroids (several sizes, "
      "tilts and anisotropic pixels), truncated spheroids and a capsule.", "",
      "**Pixel spacing.** camus224 lost the spacing, so volumes are in cubic pixels; EF is a "
      "ratio and a spacing common to the ED and ES frames cancels. The 224x224 resize, "
      "though, scaled depth and width by different factors (unless a frame covered a square "
      "field), so camus224 pixels stand for "
      "non-square areas of the original frames (a column/row aspect that differs per "
      "patient, the same for a patient's ED and ES). That does not cancel exactly: a "
      "vertical LV's area and disk diameters scale by the aspect and its length does not, so "
      "both volumes scale by the same factor and EF is unchanged, but a tilted LV's length "
      "and disk directions change with the aspect, so EF moves slightly. Measured by "
      "re-computing every patient's EF with anisotropic pixels:", "",
      *aspect_lines(gt["aspects"]), "",
      aspect_summary(gt["aspects"]), "",
      "## Landmark check on real masks", "",
      f"On {lm['frames']} camus224 ground-truth masks, a flat base was found in {lm['flat']} "
      f"({100 * lm['flat'] / lm['frames']:.1f}%); the rest fall back to the axis exit point. "
      "Against an annulus read from the label map (the two extreme LV pixels that touch no "
      "myocardium, i.e. that border the atrium or background), the mask-only annulus points "
      f"lie {lm['corner_median']:.1f} px (median) and {lm['corner_p90']:.1f} px (90th "
      f"percentile) away, the midpoints {lm['middle_median']:.1f} and {lm['middle_p90']:.1f} "
      f"px, and the long axis differs by {lm['length_median']:.2f}% (median) and "
      f"{lm['length_p90']:.2f}% (90th percentile). That label reference is itself imperfect: "
      "camus224's classes were recovered from interpolated label maps, which leaves a thin "
      "band of 'myocardium' between the LV and the atrium, and where it runs under the base "
      "the reference annulus is narrower than the LV's basal corners.", "",
      *model_section(model, patients),
      *QC_SECTION,
      "## Caveats", "",
      "- Single plane: CAMUS's reference is biplane; these are 2CH-only estimates.",
      "- 95 patients, all from the official training and validation subgroups.",
      "- camus224 frames are 224x224 resamplings of the originals (pixels non-square, see "
      "above), and their masks were recovered from interpolated label maps.", ""]
  return "\n".join(lines)
