"""What a person at the terminal sees; the full log goes to `WORKDIR/launch.INFO`.

The console shows what runs, a progress bar with ETA over training and over each evaluation or
prediction pass, one line per finished phase, where outputs went, and warnings that matter.
Everything said here is logged too. Library chatter (orbax, absl INFO) goes only to the log:
`launch.py` points absl's handler at the log file. Only process 0 speaks.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

import jax
import tqdm
from absl import logging


def _speaks() -> bool:
    return jax.process_index() == 0


def say(message: str) -> None:
    """One line to the console (above any progress bar) and to the log."""
    logging.info("%s", message)
    if _speaks():
        tqdm.tqdm.write(message, file=sys.stderr)


def warn(message: str) -> None:
    logging.warning("%s", message)
    if _speaks():
        tqdm.tqdm.write(f"warning: {message}", file=sys.stderr)


def bar(total: int | None, desc: str, unit: str = "step", leave: bool = True) -> tqdm.tqdm:
    """A progress bar with rate and ETA on stderr; silent on processes other than 0. Off a
    terminal (CI, `> out.txt`) it redraws at most every 30 s, so captured output stays short."""
    interactive = sys.stderr.isatty()
    return tqdm.tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=leave,
                     disable=not _speaks(), dynamic_ncols=True,
                     mininterval=0.2 if interactive else 30.0)


def track(items: Iterable, desc: str, unit: str = "batch"):
    """Iterates `items` under a progress bar (its length, when it has one, gives the ETA)."""
    try:
        total = len(items)  # type: ignore[arg-type]
    except TypeError:
        total = None
    with bar(total, desc, unit, leave=False) as progress:
        for item in items:
            yield item
            progress.update(1)
