"""`mbml dash`: a read-only Textual dashboard of one experiment store, live while a run writes it.

A timer starts a thread worker every `interval` seconds; the worker reopens the store and reads a
`Snapshot` (read/snapshot.py) and posts it back; the app hands it to the three panels. Reading never
blocks the interface, and a store that is empty, half-written or deleted shows a message. The first
read posts the header's part (records, recipe, tasks) before the metrics tables and evaluations,
so the run shows at once and the panels fill in as the parts arrive.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

from rich.text import Text
from textual import work
from textual.worker import get_current_worker
from textual.app import App, ComposeResult, ScreenStackError
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.message import Message
from textual.widgets import Footer, Static, TabbedContent, TabPane

from ...read import snapshot as reader
from ...read.embedding import embedding
from ...read.tables import plot_series
from ...read.snapshot import Snapshot
from .widgets import (PALETTE, LinePlot, ReturnsTable, RunHeader, ScatterPlot, Series, fmt, scatter_legend,
                      test_rows, train_rows)

LOG_MODES = ("auto", "log", "linear")
PANELS = ("losses", "returns", "embeddings")
TERMINATED = 128 + signal.SIGTERM           # the exit code after SIGTERM, as a shell reports it
PART_NAMES = {"tables": "the metrics tables", "evals": "the evaluations"}


def in_background() -> bool:
    """Whether the terminal Textual draws on (stderr) belongs to another process group, as under
    `timeout` in a shell: Textual then stops itself instead of drawing."""
    try:
        fd = sys.__stderr__.fileno()
        return os.isatty(fd) and os.tcgetpgrp(fd) != os.getpgrp()
    except (AttributeError, OSError, ValueError):
        return False


def reading(snap: Snapshot, *parts: str) -> str:
    """"Reading …" while any of `parts` is still being read, else ""."""
    left = [PART_NAMES[p] for p in parts if p in snap.loading]
    return f"Reading {' and '.join(left)}…" if left else ""


class SnapshotRead(Message):
    """Posted by the polling worker (from its thread) with what it read."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


# ---- panels ------------------------------------------------------------------------------------
class LossesPanel(Horizontal):
    """A list of the store's metrics tables and a grid of plots of the chosen one."""

    def compose(self) -> ComposeResult:
        yield Static(id="tables")
        with VerticalScroll(id="plots"):
            yield Static(id="losses-title")
            yield Static(id="losses-msg", classes="message")
            yield Grid(id="plot-grid")

    async def show(self, snap: Snapshot, choice: str | None, log_mode: str, interval: float) -> None:
        keys = reader.plot_tables(snap)
        key = choice if choice in keys else reader.default_table(snap)
        self.query_one("#tables", Static).update(self._table_list(snap, keys, choice, key))
        msg, title, grid = (self.query_one("#losses-msg", Static), self.query_one("#losses-title", Static),
                            self.query_one("#plot-grid", Grid))
        if key is None:
            msg.update(reading(snap, "tables") or
                       "No metrics yet. Each stage appends rows to metrics/<stage>/<name> while it "
                       f"trains; this panel shows them as they come (polling every {interval:g}s).")
            msg.display, title.display = True, False
            await grid.remove_children()
            return
        msg.display, title.display = False, True
        table = snap.tables[key]
        series = plot_series(table)
        grouped = any(p.tasks for p in series.values())
        title.update(Text.assemble((key, "bold"), (
            f"  {table.n} rows, x = {table.x_name}" + ("  ·  per-task columns: mean, dim min/max" if grouped else "")
            + f"  ·  scale {log_mode}  (t: next table, l: scale)", "dim")))
        plots = list(grid.query(LinePlot))
        if [p.title for p in plots] != list(series):
            await grid.remove_children()
            plots = [LinePlot() for _ in series]
            for plot, name in zip(plots, series):
                plot.title = name
            await grid.mount_all(plots)
        grid.styles.grid_size_columns = 1 if len(series) == 1 else 2
        n_rows = (len(series) + 1) // 2
        grid.styles.height = "1fr" if n_rows <= 3 else n_rows * 10
        for i, (plot, (name, p)) in enumerate(zip(plots, series.items())):
            plot.x_name = table.x_name
            plot.log_mode = log_mode
            plot.series = (Series(name, p.x, p.y, PALETTE[i % len(PALETTE)], p.lo, p.hi, p.tasks),)

    @staticmethod
    def _table_list(snap: Snapshot, keys: list[str], choice: str | None, shown: str | None) -> Text:
        out = Text(no_wrap=True, overflow="ellipsis")
        out.append("metrics tables\n", "bold")
        auto = f"auto → {shown}" if choice not in keys and shown else "auto (follow the run)"
        out.append(("▸ " if choice not in keys else "  ") + auto + "\n",
                   "reverse" if choice not in keys else "")
        for k in keys:
            out.append(("▸ " if k == choice else "  ") + k, "reverse" if k == choice else "")
            out.append(f" {snap.tables[k].n}\n", "dim")
        return out


class ReturnsPanel(VerticalScroll):
    """Training tasks' latest returns (collect, BCQ) and one algo's test-task scores."""

    def compose(self) -> ComposeResult:
        yield Static(id="train-title", classes="section")
        yield Static(id="train-msg", classes="message")
        yield ReturnsTable(id="train-returns")
        yield Static(id="test-title", classes="section")
        yield Static(id="test-msg", classes="message")
        yield ReturnsTable(id="test-returns")

    def show(self, snap: Snapshot, algo: str | None) -> None:
        sources, rows = reader.train_returns(snap)
        self.query_one("#train-title", Static).update(Text.assemble(
            ("Training tasks", "bold"), ("  latest return and its trend, per table with return_<task> "
                                         "columns (collect: SAC episodes, bcq: BCQ evaluations)", "dim")))
        self._table("train", rows, *train_rows(sources, rows), "" if sources else reading(snap, "tables") or
                    "No training returns logged yet (collect and bcq log return_<task>).")
        title = self.query_one("#test-title", Static)
        if algo is None:
            title.update(Text("Test tasks", "bold"))
            self._table("test", [], [], [], "No distilled policy yet: test-task scores appear "
                                               "when distill evaluates or `mbml eval` runs.")
            return
        sources, rows = reader.test_returns(snap, algo)
        res = snap.evals.get(algo)
        head = Text.assemble(("Test tasks · ", "bold"), (algo, "bold cyan"),
                             ("  score = mean return of the episodes after the first "
                              f"{(snap.recipe.get('eval') or {}).get('skip', 2)}", "dim"))
        if res is not None and res.scores_from:
            head.append(f"  scores from {res.scores_from}", "dim")
        if res is not None and res.unseen:
            head.append(f"  unseen tasks ({res.unseen[0]}): score {fmt(res.unseen[1])}", "bold")
        head.append("  (a: next algo)", "dim")
        title.update(head)
        has_scores = sources or any(r.score is not None for r in rows)
        note = res.note if res is not None else ""
        self._table("test", rows, *test_rows(algo, sources, rows),
                    note or ("" if has_scores else reading(snap, "tables", "evals") or
                             f"No evaluation of {algo} yet: distill evaluates every "
                             f"eval_every epochs (eval/{algo}/history), the eval stage at the end (eval/{algo}/test)."))

    def _table(self, which: str, rows, columns, body, message: str) -> None:
        msg = self.query_one(f"#{which}-msg", Static)
        msg.update(message)
        msg.display = bool(message)
        table = self.query_one(f"#{which}-returns", ReturnsTable)
        table.display = bool(rows)
        if rows:
            table.show(columns, body)


class EmbeddingsPanel(Vertical):
    """Posterior means of z on the test tasks, by PCA, one algo at a time."""

    def compose(self) -> ComposeResult:
        yield Static(id="emb-title")
        yield Static(id="emb-msg", classes="message")
        with Horizontal(id="emb-body"):
            yield ScatterPlot(id="scatter")
            yield Static(id="legend")

    def show(self, snap: Snapshot, algo: str | None) -> None:
        title, msg = self.query_one("#emb-title", Static), self.query_one("#emb-msg", Static)
        scatter, legend = self.query_one(ScatterPlot), self.query_one("#legend", Static)
        res = snap.evals.get(algo) if algo else None
        emb = embedding(res.z_mean) if res is not None and res.z_mean is not None else None
        head = Text.assemble(("Task embeddings · ", "bold"), (algo or "no algo yet", "bold cyan"))
        if emb is None:
            title.update(head)
            msg.update(reading(snap, "evals") or
                       f"No embeddings for {algo} yet: the posterior means of z on the test tasks "
                       f"(z_mean) come with distill's evaluations (eval/{algo}/history) and the eval "
                       f"stage (eval/{algo}/test)." if algo else
                       "No distilled policy yet: embeddings appear when the eval stage runs.")
            msg.display, scatter.points, scatter.labels = True, None, None
            legend.update("")
            self.query_one("#emb-body").display = False
            return
        msg.display = False
        self.query_one("#emb-body").display = True
        sep = f"  separation {emb.separation:.1f}" if emb.separation is not None else ""
        head.append(f"  posterior means of z ({emb.latent}-D) from {res.z_from}, by PCA: "
                    f"PC1 {100 * emb.explained[0]:.0f}%, PC2 {100 * emb.explained[1]:.0f}% of variance"
                    f"{sep}", "dim")
        if res.probe is not None:
            head.append(f"  probe {100 * res.probe:.0f}% (relabelled contexts nearer their reward's task)", "bold")
        head.append("  (a: next algo)", "dim")
        title.update(head)
        scatter.labels, scatter.points = emb.labels, emb.points
        out = scatter_legend([(t, reader.task_param_text(snap, "test", str(t)))
                              for t in sorted(set(emb.labels.tolist()))], emb.explained)
        if emb.separation is not None:
            out.append("\nseparation = mean distance\nbetween task centres /\nmean spread within a task"
                       "\n(in z, not in the PCA)", "dim")
        legend.update(out)


# ---- the app -----------------------------------------------------------------------------------
class PollingApp(App):
    """Reads in a thread every `interval` seconds, one read at a time: `read()`, run in the thread,
    returns the message posted back (whose handler sets `_reading` False again). `run_to_end()`
    runs it with SIGTERM ending it as `q` does."""

    interval: float = 2.0
    _reading: bool = False

    def run_to_end(self):
        """`run()`; SIGTERM exits like `q` but with exit code `TERMINATED` (no traceback)."""
        previous = signal.signal(signal.SIGTERM, self._terminate)
        try:
            result = self.run()
        finally:
            signal.signal(signal.SIGTERM, previous)
        if self.return_code == TERMINATED:
            raise SystemExit(TERMINATED)
        return result

    def _terminate(self, signum, frame) -> None:
        if in_background():                         # the screen never was ours: nothing to restore
            os._exit(TERMINATED)
        # `timeout` sends SIGCONT after SIGTERM, and Textual's driver would re-enter the screen on it
        signal.signal(signal.SIGCONT, signal.SIG_DFL)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:                        # not running yet, or already closed
            raise SystemExit(TERMINATED) from None
        loop.call_soon_threadsafe(self.exit, None, TERMINATED)

    def start_polling(self) -> None:
        self.action_poll()
        self.set_interval(self.interval, self.action_poll)

    def action_poll(self) -> None:
        if not self._reading:
            self._reading = True
            self._read()

    @work(thread=True, exit_on_error=False, group="poll")
    def _read(self) -> None:
        self.post_message(self.read())

    def read(self) -> Message:
        raise NotImplementedError


class DashApp(PollingApp):
    """Live view of one store: run header, then Losses, Returns and Embeddings panels."""

    CSS_PATH = "dash.tcss"
    TITLE = "mbml dash"
    BINDINGS = [
        Binding("1", "show('losses')", "Losses"),
        Binding("2", "show('returns')", "Returns"),
        Binding("3", "show('embeddings')", "Embeddings"),
        Binding("t", "next_table", "Next table"),
        Binding("a", "next_algo", "Next algo"),
        Binding("l", "log_scale", "Log/linear"),
        Binding("r", "refresh", "Refresh"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, path: str, interval: float = 2.0, clock=time.time):
        super().__init__()
        self.path, self.interval, self.clock = str(path), float(interval), clock
        self.reader = reader.Reader(self.path)
        self.snapshot: Snapshot | None = None
        self.table_choice: str | None = None      # None: follow the running stage
        self.algo_choice: str | None = None
        self.log_mode = "auto"
        self.polls = 0                             # complete snapshots applied (tests wait on this)
        self._reading = False
        self._signature: tuple | None = None

    def compose(self) -> ComposeResult:
        yield RunHeader(clock=self.clock, id="header")
        with TabbedContent(id="panels"):
            with TabPane("Losses [1]", id="losses"):
                yield LossesPanel()
            with TabPane("Returns [2]", id="returns"):
                yield ReturnsPanel()
            with TabPane("Embeddings [3]", id="embeddings"):
                yield EmbeddingsPanel()
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(RunHeader).interval = self.interval
        self.start_polling()

    def read(self) -> SnapshotRead:
        """The complete snapshot; until one was shown, each part is posted as it is read."""
        first = self.polls == 0
        for snap in self.reader.steps(self.clock()):
            if not snap.loading:
                break
            if get_current_worker().is_cancelled:     # the app is closing: skip the heavy parts
                snap.loading = ()
                break
            if first:
                self.post_message(SnapshotRead(snap))
        return SnapshotRead(snap)

    async def on_snapshot_read(self, message: SnapshotRead) -> None:
        self.snapshot = message.snapshot
        done = not self.snapshot.loading
        self._reading = self._reading and not done
        signature = reader.signature(self.snapshot)
        await self.redraw(panels=signature != self._signature)    # the header's clock moves anyway
        self._signature = signature
        self.polls += done

    async def redraw(self, panels: bool = True) -> None:
        snap = self.snapshot
        if snap is None:
            return
        try:
            header = self.query_one(RunHeader)
        except (NoMatches, ScreenStackError):       # a last poll arriving while the app closes
            return
        header.snapshot = snap
        if not panels:
            return
        algo = self.current_algo()
        await self.query_one(LossesPanel).show(snap, self.table_choice, self.log_mode, self.interval)
        self.query_one(ReturnsPanel).show(snap, algo)
        self.query_one(EmbeddingsPanel).show(snap, algo)

    def current_algo(self) -> str | None:
        names = reader.algos(self.snapshot) if self.snapshot else []
        if self.algo_choice in names:
            return self.algo_choice
        with_z = [a for a in names if a in self.snapshot.evals and self.snapshot.evals[a].z_mean is not None]
        return (with_z or names or [None])[0]

    # ---- actions ------------------------------------------------------------------------------
    def action_refresh(self) -> None:
        """Read now, the parts found malformed before included."""
        self.reader.forget()
        self.action_poll()

    def action_show(self, panel: str) -> None:
        self.query_one(TabbedContent).active = panel

    async def action_next_table(self) -> None:
        if self.snapshot is None:
            return
        options = [None] + reader.plot_tables(self.snapshot)
        i = options.index(self.table_choice) if self.table_choice in options else 0
        self.table_choice = options[(i + 1) % len(options)]
        self.query_one(TabbedContent).active = "losses"
        await self.redraw()

    async def action_next_algo(self) -> None:
        names = reader.algos(self.snapshot) if self.snapshot else []
        if names:
            current = self.current_algo()
            self.algo_choice = names[(names.index(current) + 1) % len(names)] if current in names else names[0]
            self.notify(f"algo: {self.algo_choice}", timeout=2)
            await self.redraw()

    async def action_log_scale(self) -> None:
        self.log_mode = LOG_MODES[(LOG_MODES.index(self.log_mode) + 1) % len(LOG_MODES)]
        await self.redraw()


def main(path: str, interval: float = 2.0) -> None:
    """`mbml dash PATH`."""
    DashApp(path, interval=interval).run_to_end()

