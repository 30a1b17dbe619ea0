"""The live view of units running at once — a sweep's runs, or one run's algorithms (`mbml run
--jobs N`): a row per unit with its status, the stage it is in, progress and ETA.

Progress comes from the stores' stage records (what `mbml dash` reads; nothing is asked of the
workers): the fraction of the unit's stage keys done, each weighted by its projected seconds when a
pre-flight gave them (else equally), the running stage counting with its own progress. The ETA is
the time this unit has run so far, scaled by the progress still to make over the progress made
(both counted from the lowest progress seen: a resumed stage first falls back to its checkpoint).
On a terminal the view is a rich table redrawn in place; elsewhere (a log, CI) a line is printed when
a unit starts or ends and every `quiet` seconds one per running unit.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..read import records
from ..recipe.inputs import clean
from .progress import fmt_duration

STATUS_STYLE = {"done": "green", "skipped": "green", "failed": "red", "running": "cyan", "waiting": "dim",
                "interrupted": "yellow"}


@dataclass
class Tracked:
    label: str
    store: str
    keys: list[str]                         # the stage record keys this unit runs
    status: str = "waiting"                 # waiting | running | done | skipped | failed | interrupted
    stage: str = ""
    progress: float = 0.0
    started: float | None = None
    start_progress: float = 0.0
    ended: float | None = None
    extra: dict = field(default_factory=dict)   # columns of the sweep (seed, grid values)
    opened: object = None                   # its Store, once it exists (opened once: records re-read each time)

    def read(self, weights: dict[str, float]) -> None:
        from ..core.store import Store
        try:
            self.opened = self.opened or Store.open(self.store)
            found = records.progress(self.opened, self.keys, weights)
        except Exception:                   # noqa: BLE001 - not made yet, or caught mid-write: next time
            return
        self.stage, self.progress = found.stage, found.fraction
        if self.status == "running" and self.progress < self.start_progress:
            # resumed: the record said how far the killed run got, the stage restarted from its last
            # checkpoint, behind that; the rate counts from here (else a sliver of progress over the
            # minutes since the start gave a days-long ETA)
            self.started, self.start_progress = time.time(), self.progress

    @property
    def eta(self) -> float | None:
        made = self.progress - self.start_progress
        if self.status != "running" or self.started is None or made <= 0:
            return None
        return (time.time() - self.started) * (1 - self.progress) / made


class LiveView:
    def __init__(self, title: str, units: list[Tracked], console: Console, weights: dict[str, float] | None = None,
                 extra_columns: tuple[str, ...] = (), quiet: float = 30.0, every: float = 2.0):
        self.title, self.units, self.console = title, {u.label: u for u in units}, console
        self.weights, self.extra_columns, self.quiet = weights or {}, extra_columns, quiet
        self.started, self.last_lines = time.time(), time.monotonic()
        self.live = Live(self.table(), console=console, auto_refresh=False) if console.is_terminal else None
        self.every, self.last_read, self.ended = every, 0.0, 0

    def __enter__(self):
        if self.live:
            self.live.start()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.live.update(self.table(), refresh=True)
            self.live.stop()

    def tick(self, running: dict, finished: dict[str, int]) -> None:
        """Called by `executors.run_units`: labels running now, and label → exit code of those done.
        The stores are read every `every` seconds."""
        read, now = False, time.monotonic()
        if now - self.last_read >= self.every:
            read, self.last_read = True, now
        for label in running:
            u = self.units[label]
            if read or u.status == "waiting":
                u.read(self.weights)
            if u.status == "waiting":
                u.status, u.started, u.start_progress = "running", time.time(), u.progress
                self.say(f"{u.label}: started")
        for label, code in finished.items():
            u = self.units[label]
            if u.status in ("waiting", "running"):
                u.status = {0: "done", 130: "interrupted", 143: "interrupted"}.get(code, "failed")
                u.ended = time.time()
                if u.status == "done":
                    u.progress = 1.0
                self.say(f"{u.label}: {u.status}" + (f" (exit {code})" if code else "")
                         + (f" after {fmt_duration(u.ended - u.started)}" if u.started else ""))
        if self.live:
            if read or len(finished) != self.ended:
                self.live.update(self.table(), refresh=True)
            self.ended = len(finished)
        elif time.monotonic() - self.last_lines > self.quiet:
            self.last_lines = time.monotonic()
            for u in self.units.values():
                if u.status == "running":
                    self.say(f"{u.label}: {u.stage or 'starting'} {100 * u.progress:.0f}% ETA {fmt_duration(u.eta or float('nan'))}")

    def say(self, line: str) -> None:
        if not self.live:
            self.console.print(clean(line), highlight=False, markup=False, soft_wrap=True)

    def table(self) -> Table:
        done = sum(u.status in ("done", "skipped") for u in self.units.values())
        title = f"{clean(self.title)}: {done}/{len(self.units)} done, {fmt_duration(time.time() - self.started)} so far"
        table = Table("unit", *self.extra_columns, "status", "stage", "progress", "ETA", title=title,
                      min_width=len(title) + 4)                   # the title on one line
        for u in self.units.values():
            style = STATUS_STYLE.get(u.status, "")
            table.add_row(clean(u.label), *(clean(u.extra.get(c, "")) for c in self.extra_columns),
                          f"[{style}]{u.status}[/{style}]" if style else u.status, clean(u.stage),
                          f"{100 * u.progress:.0f}%", fmt_duration(u.eta) if u.eta is not None else "")
        return table
