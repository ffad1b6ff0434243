"""User-facing errors: one line naming the file or key, exit code 2 from the CLIs."""

from __future__ import annotations

import os


class InputError(Exception):
  """Bad user input (file, folder, config key). The message is one line and names the culprit."""

  exit_code = 2

  def __init__(self, where: str | os.PathLike, what: str):
    self.where = str(where)
    self.what = what
    super().__init__(f"{self.where}: {what}")


class TrainingDiverged(Exception):
  """The loss became non-finite; the last good checkpoint is kept."""

  exit_code = 3
