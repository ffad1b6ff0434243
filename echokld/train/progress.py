"""One progress bar for a whole run (or group), on a terminal only.

The bar counts training images over all epochs left, so its rate (img/s) and ETA are the
run's; it reads "compiling" until the first device call returns and restarts its clock
then, so the compile does not spoil the first ETA. Its postfix holds the last epoch's loss,
the best validation Dice and the patience left before early stopping. Off a terminal (a
batch job's log) tqdm draws nothing and the console gets the plain epoch lines only.
"""

from __future__ import annotations

import sys
from typing import Any

import tqdm


class Progress:
  """The run's bar; `enabled=False` (config.log.progress) turns it off everywhere."""

  def __init__(self, enabled: bool, total_images: int, first_epoch: int, max_epochs: int):
    self.max_epochs, self.compiling = max_epochs, True
    self.bar = tqdm.tqdm(total=total_images, unit="img", desc="compiling",
                         disable=None if enabled else True, dynamic_ncols=True,
                         file=sys.stderr, leave=True)
    self.epoch_label = f"epoch {first_epoch + 1}/{max_epochs}"

  def compiled(self) -> None:
    """The first device call returned: restart the clock so rates exclude the compile."""
    if self.compiling:
      self.compiling = False
      self.bar.set_description(self.epoch_label, refresh=False)
      self.bar.reset(total=self.bar.total)

  def advance(self, images: int) -> None:
    self.bar.update(images)

  def end_epoch(self, row: dict[str, Any], state: Any, early_stop_patience: int) -> None:
    """Shows the finished epoch's numbers; the label moves to the next epoch."""
    self.epoch_label = f"epoch {min(row['epoch'] + 1, self.max_epochs)}/{self.max_epochs}"
    self.bar.set_description(self.epoch_label, refresh=False)
    self.bar.set_postfix(loss=f"{row['train_total']:.4f}",
                         best_dice=f"{float(state.best_dice):.4f}",
                         patience=int(early_stop_patience - int(state.bad_epochs)))

  def close(self) -> None:
    self.bar.close()


def write(line: str) -> None:
  """A console line that does not break a live bar (tqdm moves the bar below it)."""
  tqdm.tqdm.write(line, file=sys.stdout)
  sys.stdout.flush()
