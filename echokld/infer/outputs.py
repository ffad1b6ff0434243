"""The output folder of `echokld.predict`: nothing written outside it, nothing overwritten.

Each frame's files are first written into a private staging folder beside their final
place (same file system), then moved into place: without `overwrite` by a hard link,
which fails if the name exists (a planted symlink included) and so never replaces
anything; with `overwrite` by os.replace, which swaps the directory entry and never writes
through a link, and only over a regular file. A sub-folder that resolves outside the output
folder (a symlink) is refused. A .mhd mask and its .raw data file move together.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from typing import Callable, Iterable

from echokld.errors import InputError


class OutputFolder:
  """The resolved --output folder; every write goes through `write`."""

  def __init__(self, root: str, overwrite: bool = False):
    try:
      os.makedirs(root, exist_ok=True)
    except OSError as exc:
      raise InputError(root, f"cannot create output folder ({exc.strerror})") from None
    self.root = os.path.realpath(root)
    if not os.path.isdir(self.root):
      raise InputError(root, "output is not a folder")
    self.overwrite = overwrite

  def folder(self, rel_dir: str) -> str:
    """The real path of a sub-folder (created), refused if it resolves outside the root."""
    path = os.path.realpath(os.path.join(self.root, rel_dir))
    if os.path.commonpath([path, self.root]) != self.root:
      raise InputError(os.path.join(self.root, rel_dir), "resolves outside the output folder "
                       f"{self.root} (a symlink?); not written")
    os.makedirs(path, exist_ok=True)
    return path

  def check_free(self, rel_dir: str, names: Iterable[str]) -> None:
    """InputError if a name is taken (any entry; with overwrite: anything but a file)."""
    folder = os.path.join(self.root, rel_dir)
    for name in names:
      path = os.path.join(folder, name)
      try:
        mode = os.lstat(path).st_mode
      except FileNotFoundError:
        continue
      if stat.S_ISLNK(mode):
        raise InputError(path, "exists as a symlink; not replaced")
      if not stat.S_ISREG(mode):
        raise InputError(path, "exists and is not a regular file; not replaced")
      if not self.overwrite:
        raise InputError(path, "exists; not overwritten (use --overwrite or another --output)")

  def write(self, rel_dir: str, write_fn: Callable[[str], None]) -> list[str]:
    """Calls write_fn(staging folder), then moves every file it wrote into rel_dir.

    Nothing is moved unless every name is free (check_free), so a frame's files land
    all or none. Returns the final paths.
    """
    folder = self.folder(rel_dir)
    staging = tempfile.mkdtemp(prefix=".echokld-staging-", dir=folder)
    try:
      write_fn(staging)
      names = sorted(os.listdir(staging))
      self.check_free(rel_dir, names)
      placed = []
      for name in names:
        self._place(os.path.join(staging, name), os.path.join(folder, name))
        placed.append(os.path.join(folder, name))
      return placed
    finally:
      shutil.rmtree(staging, ignore_errors=True)

  def _place(self, src: str, dst: str) -> None:
    if self.overwrite:
      os.replace(src, dst)  # Replaces the entry itself; check_free refused links.
      return
    try:
      os.link(src, dst)  # Atomic, and fails on any existing entry: never replaces one.
    except FileExistsError:
      raise InputError(dst, "exists; not overwritten (use --overwrite or another "
                       "--output)") from None
    except OSError as exc:
      if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
        raise
      if os.path.lexists(dst):  # No hard links here: check, then rename.
        raise InputError(dst, "exists; not overwritten (use --overwrite or another "
                         "--output)") from None
      os.replace(src, dst)
