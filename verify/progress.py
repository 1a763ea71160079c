"""A minimal progress bar on stderr, shown only when stderr is a terminal."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, label: str, *, enabled: bool | None = None, stream=None,
                 unit: str | None = None):
        self.unit = unit  # None: counts in millions (values); else plain counts of `unit`
        self.stream = stream or sys.stderr
        self.total = max(int(total), 1)
        self.label = label
        self.done = 0
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._start = time.monotonic()
        self._last = 0.0

    def update(self, n: int) -> None:
        self.done += int(n)
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and self.done < self.total:
            return
        self._last = now
        frac = min(self.done / self.total, 1.0)
        bar = "#" * int(30 * frac)
        rate = self.done / max(now - self._start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        counts = (f"{self.done / 1e6:,.0f}M/{self.total / 1e6:,.0f}M" if self.unit is None
                  else f"{self.done:,}/{self.total:,} {self.unit}")
        self.stream.write(f"\r{self.label} [{bar:<30}] {100 * frac:5.1f}%  {counts}  eta {eta:4.0f}s")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
