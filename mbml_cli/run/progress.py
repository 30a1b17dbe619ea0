"""Progress of a training stage: a rich bar on a terminal, plain lines elsewhere, the recent rate and
the ETA; `fmt_duration` for every time shown to the user."""
from __future__ import annotations

import math
import time
from collections import deque

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


# ---- progress --------------------------------------------------------------------------------------
class RecentRate:
    """Units per second over the last `window` seconds (not since the start: a fast warm-up phase,
    such as collect's random actions, does not inflate it), and the time left at that rate."""

    def __init__(self, total: int, done: int = 0, window: float = 30.0, clock=time.monotonic):
        self.total, self.window, self.clock = total, window, clock
        self.samples = deque([(clock(), done)])

    def update(self, done: int) -> None:
        now = self.clock()
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()

    @property
    def rate(self) -> float:
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 and d1 > d0 else float("nan")

    @property
    def eta(self) -> float:
        return (self.total - self.samples[-1][1]) / self.rate if self.rate > 0 else float("nan")


class Reporter:
    """A rich progress bar on a terminal; otherwise one plain line per `report(line=True)` call and at
    least one every `quiet` seconds. Both show the recent rate and the ETA (`RecentRate`)."""

    def __init__(self, title: str, total: int, done: int = 0, unit: str = "it", quiet: float = 10.0):
        self.console = Console(stderr=True)
        self.live = self.console.is_terminal
        self.title, self.total, self.unit, self.quiet = title, total, unit, quiet
        self.recent = RecentRate(total, done)
        self.last_line, self.info = time.monotonic(), ""
        if self.live:
            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[speed]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                TextColumn("{task.fields[eta]}"), TextColumn("{task.fields[info]}"),
                                console=self.console, refresh_per_second=4)
            self.task = self.bar.add_task(escape(title), total=total, completed=done, info="", speed="", eta="")
            self.bar.start()

    def speed(self) -> tuple[str, str]:
        rate = self.recent.rate
        text = "" if rate != rate else (f"{rate:,.1f} {self.unit}/s" if rate >= 1 else f"{1 / rate:,.2f} s/{self.unit}")
        return text, fmt_duration(self.recent.eta)

    def update(self, done: int, info: str | None = None, line: bool = False) -> None:
        """Called every step: the rate and the text are formatted only when shown (a few times a second
        on a terminal, at printed lines otherwise)."""
        self.recent.update(done)
        self.info = info if info is not None else self.info
        now = time.monotonic()
        if self.live:
            fields = {}
            if info is not None or line or now - self.last_line > 0.25:
                speed, eta = self.speed()
                fields, self.last_line = {"info": escape(self.info), "speed": speed, "eta": eta}, now
            self.bar.update(self.task, completed=done, **fields)
        elif line or now - self.last_line > self.quiet:
            speed, eta = self.speed()
            self.console.print(f"{self.title} {done}/{self.total} {speed} ETA {eta} {self.info}".rstrip(),
                               markup=False, highlight=False, soft_wrap=True)
            self.last_line = now

    def close(self) -> None:
        if self.live:
            self.bar.stop()


def format_returns(tasks: list[int], returns) -> str:
    vals = [f"{i}:{r:.0f}" if np.isfinite(r) else f"{i}:–" for i, r in zip(tasks, returns)]
    if len(vals) > 12:
        finite = [r for r in returns if np.isfinite(r)]
        return f"return mean {np.mean(finite):.1f} min {np.min(finite):.1f} max {np.max(finite):.1f}" if finite else ""
    return "R " + " ".join(vals)
