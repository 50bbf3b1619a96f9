"""Training progress for a person: a bar on a terminal, plain lines in a log, or nothing."""

from __future__ import annotations

import sys
from typing import TextIO

from gpunet.train import EpochReport

BAR_WIDTH = 24


class Progress:
    """Shows epoch, loss, validation loss and samples/s after each epoch.

    On a terminal one line is redrawn in place; otherwise a plain line is
    written every tenth of the run and at its end; ``quiet`` shows nothing.
    """

    def __init__(self, epochs: int, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.epochs = epochs
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.bar = not quiet and self.stream.isatty()
        self.every = max(1, epochs // 10)
        self.last_line = ""
        self.printed_epoch = 0

    def update(self, report: EpochReport, validation_loss: float | None, first_epoch: int) -> None:
        """Show one epoch; ``first_epoch`` is where this run started (1, or after a resume)."""
        done = report.epoch - first_epoch + 1
        rate = report.samples / report.seconds if report.seconds > 0 else float("inf")
        text = f"epoch {report.epoch:>4}  loss {report.loss:.5f}"
        if validation_loss is not None:
            text += f"  val {validation_loss:.5f}"
        text += f"  {rate:>10,.0f} samples/s"
        self.last_line = text
        if self.quiet:
            return
        if self.bar:
            filled = round(BAR_WIDTH * done / self.epochs)
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            # \x1b[K clears what a longer previous line left behind.
            self.stream.write(f"\r[{bar}] {done}/{self.epochs}  {text}\x1b[K")
            self.stream.flush()
        elif done % self.every == 0 or done == 1:
            self._line(text, report.epoch)

    def close(self, epoch: int) -> None:
        """End the display; the last epoch is shown if it was not."""
        if self.bar:
            self.stream.write("\n")
        elif not self.quiet and self.printed_epoch != epoch and self.last_line:
            self._line(self.last_line, epoch)
        self.stream.flush()

    def _line(self, text: str, epoch: int) -> None:
        print(text, file=self.stream, flush=True)
        self.printed_epoch = epoch
