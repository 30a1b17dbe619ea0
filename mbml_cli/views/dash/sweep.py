"""`mbml dash runs/<sweep>/`: the sweep, a row per run — status, the stage it is in, progress, ETA —
polled like the run dashboard (a thread reads the stores, nothing is written). Enter on a row opens
that run's usual dashboard (`app.py`); `q` there comes back to the sweep.

Progress is `read.records.progress` over the stage records a run of the store's recipe makes, each
weighted by the seconds the sweep's pre-flight projected for it (`estimates.yaml`, else equally, as
the sweep's own live view does); the ETA of a running run is the time since its first stage started,
scaled by the progress still to make.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Footer, Static

from ...core.store import Store
from ...read import records
from .app import PollingApp
from .widgets import duration

STYLES = {"done": "green", "running": "bold yellow", "failed": "bold red", "interrupted": "yellow",
          "partial": "yellow", "stopped": "yellow", "waiting": "dim", "no store": "dim"}


@dataclass(eq=False)
class RunRow:
    label: str
    store: str
    values: dict                   # seed and grid values
    status: str = "no store"
    stage: str = ""
    fraction: float = 0.0
    eta: float | None = None
    message: str = ""


def read_rows(directory: Path, opened: dict[str, Store], now: float) -> tuple[str, list[RunRow]]:
    """(the sweep's name, a row per run in the sweep's order); `opened` caches stores between polls."""
    from ...run.sweep import SWEEP_FILE, from_file, read_estimates
    sweep = from_file(directory / SWEEP_FILE)
    weights = read_estimates(directory)
    rows = []
    for run in sweep.runs(directory):
        row = RunRow(run.label, run.store, {"seed": run.seed, **run.values})
        try:
            store = opened.get(run.store) or Store.open(run.store)
            opened[run.store] = store
            found = records.progress(store, records.planned_keys(store.recipe), weights)
        except Exception:                           # noqa: BLE001 - not made yet, or caught mid-write
            rows.append(row)
            continue
        row.status, row.stage, row.fraction, row.message = found.status, found.stage, found.fraction, found.message
        if found.status == "running" and found.started and found.fraction > 0:
            row.eta = (now - found.started) * (1 - found.fraction) / found.fraction
        rows.append(row)
    return sweep.name, rows


class RowsRead(Message):
    def __init__(self, name: str, rows: list[RunRow], error: str = "") -> None:
        super().__init__()
        self.name, self.rows, self.error = name, rows, error


class SweepApp(PollingApp):
    """A row per run; Enter returns the selected run's store (`main` then opens its dashboard)."""

    TITLE = "mbml dash (sweep)"
    CSS = "#sweep-head { height: auto; padding: 0 1; background: $boost; } DataTable { height: 1fr; }"
    BINDINGS = [Binding("enter", "open", "Open run"), Binding("r", "poll", "Refresh"), Binding("q", "quit", "Quit")]

    def __init__(self, directory: str | Path, interval: float = 2.0, clock=time.time):
        super().__init__()
        self.directory, self.interval, self.clock = Path(directory), float(interval), clock
        self.rows: list[RunRow] = []
        self.opened: dict[str, Store] = {}
        self.polls = 0

    def compose(self) -> ComposeResult:
        yield Static("reading the sweep…", id="sweep-head")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="runs")
        yield Footer()

    def on_mount(self) -> None:
        self.start_polling()

    def read(self) -> RowsRead:
        try:
            return RowsRead(*read_rows(self.directory, self.opened, self.clock()))
        except Exception as e:                      # noqa: BLE001 - a dashboard never crashes on a read
            return RowsRead(self.directory.name, self.rows, f"{type(e).__name__}: {e}")

    def on_rows_read(self, message: RowsRead) -> None:
        self._reading = False
        self.rows = message.rows
        done = sum(r.status == "done" for r in self.rows)
        head = Text.assemble((f"sweep {message.name}", "bold"), f"  {done}/{len(self.rows)} runs done  ",
                             (str(self.directory), "dim"), ("  Enter: open a run's dashboard", "dim"))
        if message.error:
            head.append(f"\ncannot read the sweep: {message.error}", "bold red")
        self.query_one("#sweep-head", Static).update(head)
        table = self.query_one(DataTable)
        columns = ["run", *(self.rows[0].values if self.rows else {}), "status", "stage", "progress", "ETA", "note"]
        if [str(c.label) for c in table.columns.values()] != columns:
            table.clear(columns=True)
            table.add_columns(*columns)
        cursor = table.cursor_row
        table.clear()
        for r in self.rows:
            table.add_row(r.label, *(str(v) for v in r.values.values()), Text(r.status, STYLES.get(r.status, "")),
                          r.stage, f"{100 * r.fraction:.0f}%", duration(r.eta) if r.eta is not None else "",
                          Text(r.message[:60], "dim"), key=r.store)
        if self.rows:
            table.move_cursor(row=min(cursor, len(self.rows) - 1))
        self.polls += 1

    def action_open(self) -> None:
        table = self.query_one(DataTable)
        if self.rows and 0 <= table.cursor_row < len(self.rows):
            self.exit(self.rows[table.cursor_row].store)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()


def main(directory: str, interval: float = 2.0) -> None:
    """The sweep's table; a selected run's dashboard; back to the table when that one quits."""
    from .app import main as run_dash
    while True:
        chosen = SweepApp(directory, interval).run_to_end()
        if not chosen:
            return
        if Path(chosen).exists():
            run_dash(chosen, interval)
