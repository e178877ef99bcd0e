"""A plain-text progress bar with rate and ETA for batch jobs (stderr; one line per update when not a tty)."""

from __future__ import annotations

import datetime
import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(max(seconds, 0.0))))


class ProgressBar:
    """`update(n)` after every batch; the rate counts only work done since the bar started."""

    def __init__(self, total: int, description: str = "rows", stream: TextIO | None = None, width: int = 30):
        self.total, self.description, self.width = total, description, width
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = time.perf_counter()

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        filled = int(self.width * self.done / self.total) if self.total else self.width
        eta_text = format_seconds(eta) if rate > 0 else "?"
        return (f"{self.description} [{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} "
                f"{rate:.2f}/s elapsed {format_seconds(elapsed)} ETA {eta_text}")

    def update(self, count: int) -> None:
        self.done += count
        ending = "\r" if self.stream.isatty() and self.done < self.total else "\n"
        self.stream.write(self.line() + ending)
        self.stream.flush()
