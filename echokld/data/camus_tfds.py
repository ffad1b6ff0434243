"""CAMUS as a prepared TFDS dataset (array_record), written once and read without TensorFlow.

Reading the NIfTI/.mhd copy each run costs decompression and parsing of ~2000 files; the
prepared dataset is one array_record file read by random access. Records read back are
identical to camus.read_camus's (same keys, values, dtypes), so the pipeline need not care.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds
import tqdm

from echokld.data import camus
from echokld.errors import InputError

NAME = "camus_lv"
SPLIT = "full"  # one split; the record field "split" carries the official subgroup.
FILE_FORMAT = "array_record"
_TEXT_KEYS = ("case", "patient", "view", "phase", "quality", "split")
_ARRAY_KEYS = ("image", "label", "spacing_mm")

_CITATION = """\
@article{leclerc2019camus,
  author  = {Leclerc, Sarah and Smistad, Erik and Pedrosa, Jo{\\~a}o and {\\O}stvik, Andreas
             and Cervenansky, Frederic and Espinosa, Florian and Espeland, Torvald and
             Berg, Erik Andreas Rye and Jodoin, Pierre-Marc and Grenier, Thomas and
             Lartizien, Carole and D'hooge, Jan and Lovstakken, Lasse and Bernard, Olivier},
  title   = {Deep Learning for Segmentation Using an Open Large-Scale Dataset in 2D
             Echocardiography},
  journal = {IEEE Transactions on Medical Imaging},
  volume  = {38},
  number  = {9},
  pages   = {2198--2210},
  year    = {2019},
  doi     = {10.1109/TMI.2019.2900516}
}"""


class CamusLv(tfds.core.GeneratorBasedBuilder):
  """ED/ES frames of one apical view of CAMUS with their 4-class labels and cfg metadata."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "ED/ES frames of one view from either CAMUS release."}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name=view, description=f"Apical {view} ED and ES frames.")
      for view in camus.VIEWS
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
CAMUS is registration-gated. Register at the CAMUS challenge site of CREATIS (Universite de
Lyon), download the NIfTI release (database_nifti/ + database_split/) or the 2019 release
(training/ + testing/), unpack it, and pass that folder as the manual dir
(python -m echokld.data.prepare --camus_dir=DIR --data_dir=OUT). License: CC BY-NC-SA 4.0.
Cite S. Leclerc et al., IEEE TMI 38(9):2198-2210, 2019, doi:10.1109/TMI.2019.2900516."""

  def __init__(self, *, show_progress: bool = False, **kwargs: Any):
    self._show_progress = show_progress
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="CAMUS 2D echocardiography ED/ES frames: image rows = depth with the "
        "apex at the top, label 0 background, 1 LV cavity, 2 myocardium, 3 left atrium.",
        features=tfds.features.FeaturesDict({
            # zlib: variable 2-D shapes need an encoding, and labels shrink ~50x.
            "image": tfds.features.Tensor(shape=(None, None), dtype=np.uint8,
                                          encoding="zlib"),
            "label": tfds.features.Tensor(shape=(None, None), dtype=np.uint8,
                                          encoding="zlib"),
            "has_label": tfds.features.Tensor(shape=(), dtype=np.bool_),
            # float64 as raw bytes: the default proto encoding would round it to float32.
            "spacing_mm": tfds.features.Tensor(shape=(2,), dtype=np.float64,
                                               encoding="bytes"),
            **{key: tfds.features.Text() for key in _TEXT_KEYS},
            "metadata_json": tfds.features.Text(),  # cfg fields: ed_frame, ef, ...
        }),
        homepage="https://www.creatis.insa-lyon.fr/Challenge/camus/",
        citation=_CITATION,
        license="CC BY-NC-SA 4.0",
        disable_shuffling=True,  # keep read_camus's order: patient, then ED, ES.
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    return {SPLIT: self._generate_examples(dl_manager.manual_dir)}

  def _generate_examples(self, camus_dir: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    specs = camus.list_frames(os.fspath(camus_dir), view=self.builder_config.name)
    workers = min(8, (os.cpu_count() or 1) + 2)
    records = camus.ordered_map(camus.load_frame, specs, workers=workers, window=4 * workers)
    progress = tqdm.tqdm(total=len(specs), desc=f"CAMUS {self.builder_config.name} frames",
                         unit="frame", disable=not self._show_progress)
    with progress:
      for spec, record in zip(specs, records):
        yield record["case"], encode_record(record, spec.image_path)
        progress.update()


def encode_record(record: dict[str, Any], where: str | os.PathLike) -> dict[str, Any]:
  """Turns a camus record into a TFDS example (None -> "" or an empty label + has_label)."""
  image = record["image"]
  if image.dtype != np.uint8:
    if not (np.issubdtype(image.dtype, np.integer) or np.array_equal(image, np.round(image))) \
        or image.min() < 0 or image.max() > 255:
      raise InputError(where, f"image dtype {image.dtype} does not fit the dataset's uint8")
    image = image.astype(np.uint8)
  label = record["label"]
  metadata = {k: v for k, v in record.items() if k not in _TEXT_KEYS + _ARRAY_KEYS}
  return {
      "image": image,
      "label": np.zeros((0, 0), np.uint8) if label is None else label,
      "has_label": label is not None,
      "spacing_mm": np.asarray(record["spacing_mm"], np.float64),
      **{key: record[key] or "" for key in _TEXT_KEYS},
      "metadata_json": json.dumps(metadata, sort_keys=True),
  }


def decode_example(example: dict[str, Any]) -> dict[str, Any]:
  """Inverse of encode_record on what the data source returns (bytes for text)."""
  text = {key: example[key].decode("utf-8") if isinstance(example[key], bytes)
          else str(example[key]) for key in _TEXT_KEYS + ("metadata_json",)}
  record: dict[str, Any] = {key: text[key] for key in _TEXT_KEYS}
  record["quality"] = record["quality"] or None
  record["split"] = record["split"] or None
  record["image"] = np.asarray(example["image"])
  record["label"] = np.asarray(example["label"]) if bool(example["has_label"]) else None
  record["spacing_mm"] = tuple(float(x) for x in example["spacing_mm"])
  record.update(json.loads(text["metadata_json"]))
  return record


def builder(data_dir: str | os.PathLike, view: str = "2CH", **kwargs: Any) -> CamusLv:
  """The builder for one view's dataset under data_dir (which holds camus_lv/)."""
  return CamusLv(data_dir=os.fspath(data_dir), config=camus.check_view(view),
                 file_format=FILE_FORMAT, **kwargs)


def prepare(camus_dir: str | os.PathLike, data_dir: str | os.PathLike, view: str = "2CH",
            show_progress: bool = False) -> pathlib.Path:
  """Writes the dataset once (a prepared one is kept) and returns its folder."""
  camus.list_frames(camus_dir, view=view)  # fail fast, in one line, before TFDS starts.
  ds_builder = builder(data_dir, view, show_progress=show_progress)
  config = tfds.download.DownloadConfig(manual_dir=os.fspath(camus_dir))
  ds_builder.download_and_prepare(download_config=config)
  return pathlib.Path(ds_builder.data_dir)


def read_records(data_dir: str | os.PathLike, view: str = "2CH") -> list[dict[str, Any]]:
  """Reads a prepared view by random access (no TensorFlow); same records as read_camus."""
  ds_builder = builder(data_dir, view)
  if not (pathlib.Path(ds_builder.data_dir) / "dataset_info.json").is_file():
    raise InputError(data_dir, f"no prepared {NAME}/{ds_builder.builder_config.name} dataset "
                     f"{ds_builder.version}; run python -m echokld.data.prepare --camus_dir=... "
                     f"--data_dir={os.fspath(data_dir)} --view={ds_builder.builder_config.name}")
  try:
    source = ds_builder.as_data_source(split=SPLIT)
    return [decode_example(source[i]) for i in range(len(source))]
  except InputError:
    raise
  except Exception as e:  # a damaged or foreign dataset folder
    message = " ".join(str(e).split())[:200]
    raise InputError(ds_builder.data_dir, f"cannot read prepared dataset: {message}") from e
