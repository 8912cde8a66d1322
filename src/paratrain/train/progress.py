"""Progress output from rank 0: a bar in a terminal, one dense line per epoch otherwise."""

from __future__ import annotations

import sys
from typing import Any


class EpochProgress:
    """Shows epoch, loss, samples/s and ETA; silent when verbosity is 0 or off rank 0."""

    def __init__(self, total_epochs: int, start_epoch: int, enabled: bool, stream=None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.total = total_epochs
        self.bar = None
        if enabled and self.stream.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_epochs, initial=start_epoch, unit="epoch", file=self.stream, dynamic_ncols=True)

    def update(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            postfix = {"loss": _number(record["train_loss"], ".4g"), "samples/s": _number(record["samples_per_s"], ".0f")}
            if "val_loss" in record:
                postfix["val"] = _number(record["val_loss"], ".4g")
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)
            return
        parts = [f"epoch {record['epoch']}/{self.total}", f"train_loss={record['train_loss']:.5g}"]
        for key in ("val_loss", "val_r2", "val_accuracy"):
            if key in record:
                parts.append(f"{key}={_number(record[key], '.5g')}")
        parts.append(f"samples/s={_number(record['samples_per_s'], '.0f')}")
        parts.append(f"seconds={record['seconds']:.2f}")
        print("  ".join(parts), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _number(value: float | None, spec: str) -> str:
    """A metric for the progress line; None (undefined, e.g. R² of a constant target) as 'n/a'."""
    return "n/a" if value is None else format(value, spec)
