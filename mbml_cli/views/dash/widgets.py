"""The dashboard's widgets: a braille line plot, a task-coloured scatter, the returns table and
the run header. Each widget holds its data in reactive attributes and renders with a pure
function of (data, size), so the drawing is testable without an app."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import DataTable, Static

from ...core import layout
from ...read import records
from ...read.snapshot import ReturnRow, Snapshot

# Distinct on dark and light backgrounds; task i gets PALETTE[i % len] and the symbol SYMBOLS[i].
PALETTE = ("#5fafff", "#ff8700", "#5fd75f", "#ff5f5f", "#af87ff",
           "#d7af5f", "#ff87d7", "#5fd7d7", "#d7d75f", "#bcbcbc")
SYMBOLS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
STATUS = {"done": ("✓", "green"), "running": ("●", "yellow"), "failed": ("✗", "red"),
          "partial": ("◐", "yellow"), "interrupted": ("‖", "yellow"), "pending": ("·", "dim"),
          "stale": ("↻", "cyan")}


def task_color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def task_symbol(i: int) -> str:
    return SYMBOLS[i] if 0 <= i < len(SYMBOLS) else "●"


# ---- numbers and durations -------------------------------------------------------------------
def fmt(v: float | None) -> str:
    """A number in at most 8 characters, 3 significant digits."""
    if v is None or not math.isfinite(v):
        return "—"
    if v == 0:
        return "0"
    e = math.floor(math.log10(abs(v)))
    if -2 <= e < 5:
        return f"{v:.{max(0, 2 - e)}f}"
    return f"{v:.1e}"


def fmt_axis(v: float, span: float) -> str:
    """An axis label with enough digits to tell labels `span` apart, at most 8 characters."""
    if not math.isfinite(v) or span <= 0 or v == 0:
        return fmt(v)
    e, step = math.floor(math.log10(abs(v))), math.floor(math.log10(span / 2))
    if -2 <= e < 5:
        text = f"{v:.{min(6, max(0, -step, 2 - e))}f}"
        if len(text) <= LABEL_W:
            return text
    return f"{v:.{min(3, max(1, e - step))}e}"


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


# ---- small inline charts -----------------------------------------------------------------------
SPARKS = "▁▂▃▄▅▆▇█"
EIGHTHS = " ▏▎▍▌▋▊▉█"


def sparkline(values, width: int = 16) -> str:
    """The history as block characters; longer histories are averaged into `width` buckets."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return ""
    if v.size > width:
        v = np.array([b.mean() for b in np.array_split(v, width)])
    lo, hi = v.min(), v.max()
    if hi - lo < 1e-12:
        return SPARKS[3] * v.size
    idx = np.rint((v - lo) / (hi - lo) * (len(SPARKS) - 1)).astype(int)
    return "".join(SPARKS[i] for i in idx)


def bar(value: float | None, lo: float, hi: float, width: int = 10) -> str:
    """A horizontal bar of `value` within [lo, hi], in eighths of a cell."""
    if value is None or not math.isfinite(value) or hi <= lo:
        return " " * width
    eighths = int(round((min(max(value, lo), hi) - lo) / (hi - lo) * width * 8))
    full, part = divmod(eighths, 8)
    return ("█" * full + (EIGHTHS[part] if part else "")).ljust(width)


# ---- braille canvas ----------------------------------------------------------------------------
# Braille cell dots: (row 0..3, column 0..1) → bit of U+2800 + bits.
_BITS = np.array([[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]], dtype=np.uint8)


class BrailleCanvas:
    """A grid of `cols` × `rows` character cells with 2 × 4 dots each; each cell takes the colour
    of the last series drawn through it."""

    def __init__(self, cols: int, rows: int):
        self.cols, self.rows = cols, rows
        self.bits = np.zeros((rows, cols), np.uint8)
        self.color = np.full((rows, cols), -1, np.int16)

    @property
    def width(self) -> int:          # in dots
        return 2 * self.cols

    @property
    def height(self) -> int:
        return 4 * self.rows

    def dots(self, px, py, color: int) -> None:
        px, py = np.asarray(px, dtype=int), np.asarray(py, dtype=int)
        ok = (px >= 0) & (px < self.width) & (py >= 0) & (py < self.height)
        px, py = px[ok], py[ok]
        np.bitwise_or.at(self.bits, (py // 4, px // 2), _BITS[py % 4, px % 2])
        self.color[py // 4, px // 2] = color

    def polyline(self, px, py, color: int) -> None:
        """Straight segments through consecutive dot coordinates."""
        px, py = np.asarray(px, dtype=float), np.asarray(py, dtype=float)
        if px.size == 1:
            self.dots(np.rint(px), np.rint(py), color)
            return
        dx, dy = np.diff(px), np.diff(py)
        k = (np.maximum(np.abs(dx), np.abs(dy)).astype(int) + 1)
        seg = np.repeat(np.arange(k.size), k)
        t = (np.arange(k.sum()) - np.repeat(np.cumsum(k) - k, k)) / np.maximum(np.repeat(k - 1, k), 1)
        self.dots(np.rint(px[seg] + t * dx[seg]), np.rint(py[seg] + t * dy[seg]), color)

    def cells(self, palette) -> tuple[list[list[str]], list[list[str]]]:
        """(characters, styles), a row of `cols` each; a cell without dots is a blank."""
        chars = [[chr(0x2800 + int(b)) if b else " " for b in row] for row in self.bits]
        styles = [[palette[int(ci) % len(palette)] if ci >= 0 else "" for ci in row] for row in self.color]
        return chars, styles

    def lines(self, palette) -> list[Text]:
        return grid_lines(*self.cells(palette))


def grid_lines(chars: list[list[str]], styles: list[list[str]]) -> list[Text]:
    """A Text per row of a grid of one-cell characters and their styles."""
    out = []
    for row, row_styles in zip(chars, styles):
        line = Text(no_wrap=True)
        for ch, style in zip(row, row_styles):
            line.append(ch, style)
        out.append(line)
    return out


# ---- line plot ---------------------------------------------------------------------------------
@dataclass(eq=False)
class Series:
    """A line; for a per-task group also the tasks' min and max, drawn as dim lines."""
    name: str
    x: np.ndarray
    y: np.ndarray
    color: str = PALETTE[0]
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    tasks: int = 0


LABEL_W = 8


def use_log(ys: list[np.ndarray], mode: str) -> bool:
    """Log scale: always in "log" mode when every value is positive; in "auto" mode when the
    values are positive and span more than 1.7 decades (×50) (losses that fall fast read better so)."""
    v = np.concatenate([np.asarray(y, float) for y in ys]) if ys else np.zeros(0)
    if mode == "linear" or v.size == 0 or (v <= 0).any():
        return False
    return mode == "log" or v.max() / v.min() >= 50


def _trace(canvas: BrailleCanvas, px: np.ndarray, py: np.ndarray, color: int) -> None:
    """A line through points sorted by x, one dot column at a time: first → min → max → last of
    the points in each column, so long histories keep their spikes and stay connected."""
    starts = np.r_[0, np.flatnonzero(np.diff(px)) + 1]
    ends = np.r_[starts[1:], px.size] - 1
    cx = np.repeat(px[starts], 4)
    cy = np.stack([py[starts], np.minimum.reduceat(py, starts), np.maximum.reduceat(py, starts),
                   py[ends]], axis=1).reshape(-1)
    canvas.polyline(cx, cy, color)


def render_plot(series: list[Series], width: int, height: int, title: str = "", x_name: str = "step",
                log_mode: str = "auto") -> Text:
    """A titled line plot in `width` × `height` cells: y labels on the left, x range below."""
    series = [s for s in series if len(s.x)]
    head = Text(no_wrap=True, overflow="crop")
    head.append(title, "bold")
    if not series:
        head.append("  no points yet", "dim")
        head.truncate(width, overflow="ellipsis")
        return head
    parts = [np.asarray(v, float) for s in series for v in (s.y, s.lo, s.hi) if v is not None]
    log = use_log(parts, log_mode)
    head.append(f"  last {fmt(float(series[0].y[-1]))}", "dim")
    if series[0].tasks:
        head.append(f"  {series[0].tasks} tasks", "dim")
    if log:
        head.append("  log", "italic dim")
    head.truncate(width, overflow="ellipsis")
    cols, rows = width - LABEL_W - 1, height - 2
    if cols < 8 or rows < 2:
        return head
    tf = np.log10 if log else (lambda v: v)
    allx = np.concatenate([s.x for s in series])
    ally = tf(np.concatenate(parts))
    y_lo, y_hi = float(ally.min()), float(ally.max())
    if y_hi - y_lo < 1e-12:
        pad = abs(y_hi) * 0.1 or 1.0
        y_lo, y_hi = y_lo - pad, y_hi + pad
    x_lo, x_hi = float(allx.min()), float(allx.max())
    canvas = BrailleCanvas(cols, rows)
    for i, s in enumerate(series):
        order = np.argsort(s.x, kind="stable")
        px = np.rint((s.x[order] - x_lo) / ((x_hi - x_lo) or 1.0) * (canvas.width - 1)).astype(int)

        def dot_y(v):
            return np.rint((y_hi - tf(np.asarray(v, float)[order])) / (y_hi - y_lo) * (canvas.height - 1)).astype(int)

        for edge in (s.lo, s.hi):
            if edge is not None:
                _trace(canvas, px, dot_y(edge), len(series) + i)
        _trace(canvas, px, dot_y(s.y), i)
    palette = [s.color for s in series] + [f"dim {s.color}" for s in series]
    label_rows = {0: y_hi, rows // 2: (y_hi + y_lo) / 2 if rows > 2 else None, rows - 1: y_lo}
    out = Text(no_wrap=True, overflow="crop")
    out.append_text(head)
    for r, line in enumerate(canvas.lines(palette)):
        out.append("\n")
        v = label_rows.get(r)
        span = (10 ** y_hi - 10 ** y_lo) if log else (y_hi - y_lo)
        label = fmt_axis(10 ** v if log else v, span) if v is not None else ""
        out.append(label.rjust(LABEL_W)[:LABEL_W] + ("┤" if v is not None else "│"), "dim")
        out.append_text(line)
    left, right = fmt(x_lo), f"{fmt(x_hi)} {x_name}"
    out.append("\n" + " " * (LABEL_W + 1) + left + right.rjust(max(1, cols - len(left))), "dim")
    return out


class LinePlot(Widget):
    """One metric (or several, each in its colour) against training steps."""

    DEFAULT_CSS = """
    LinePlot { height: 1fr; min-height: 7; padding: 0 1; text-wrap: nowrap; text-overflow: clip; }
    """
    title: reactive[str] = reactive("")
    x_name: reactive[str] = reactive("step")
    series: reactive[tuple] = reactive((), always_update=True)
    log_mode: reactive[str] = reactive("auto")

    @property
    def point_count(self) -> int:
        return sum(len(s.x) for s in self.series)

    def render(self) -> Text:
        size = self.content_size
        return render_plot(list(self.series), size.width, size.height, self.title, self.x_name,
                           self.log_mode)


# ---- scatter -----------------------------------------------------------------------------------
def render_scatter(points: np.ndarray, labels: np.ndarray, width: int, height: int) -> Text:
    """Each point as a braille dot in its task's colour and each task's centre as its symbol, in
    `width` × `height` cells, each axis scaled to fill them; dotted axes through 0 (the points' mean,
    as PCA centres them)."""
    if width < 4 or height < 3 or len(points) == 0:
        return Text(no_wrap=True, overflow="crop")
    pts, labels = np.asarray(points, dtype=float), np.asarray(labels, dtype=int)
    canvas = BrailleCanvas(width, height)
    lo, span = pts.min(axis=0), np.ptp(pts, axis=0)

    def to_dots(xy: np.ndarray) -> np.ndarray:        # (…, 2) → dot column, dot row (down)
        frac = np.where(span > 1e-12, (xy - lo) / np.where(span > 1e-12, span, 1.0), 0.5)
        frac[..., 1] = 1 - frac[..., 1]
        return np.rint(frac * [canvas.width - 1, canvas.height - 1]).astype(int)

    dots = to_dots(pts)
    for t in np.unique(labels):                     # a point is a plus of 5 dots, to be seen
        for dx, dy in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
            canvas.dots(dots[labels == t, 0] + dx, dots[labels == t, 1] + dy, int(t))
    chars, styles = canvas.cells(PALETTE)
    c0, r0 = to_dots(np.zeros(2)) // [2, 4]
    for r in range(height):
        for c in range(width):
            if chars[r][c] == " " and (c == c0 or r == r0):
                chars[r][c], styles[r][c] = ("┼" if (c, r) == (c0, r0) else "┊" if c == c0 else "┄"), "dim"
    for t in np.unique(labels):
        c, r = to_dots(pts[labels == t].mean(axis=0)) // [2, 4]
        chars[r][c], styles[r][c] = task_symbol(int(t)), f"bold reverse {task_color(int(t))}"
    return Text("\n", no_wrap=True, overflow="crop").join(grid_lines(chars, styles))


def scatter_legend(tasks: list[tuple[int, str]], explained) -> Text:
    """Which mark is which task (with its parameters), and what the axes are."""
    out = Text("test task  param\n", "bold")
    for t, param in tasks:
        out.append(" ⣿", task_color(t))
        out.append(task_symbol(t), f"bold reverse {task_color(t)}")
        out.append(f" task {t}  {param}\n")
    out.append("\n⣿ a posterior mean of z\n", "dim")
    out.append("0 a task's centre (its mean)\n", "dim")
    out.append(f"→ PC1, {100 * explained[0]:.0f}% of the variance\n", "dim")
    out.append(f"↑ PC2, {100 * explained[1]:.0f}% of the variance\n", "dim")
    out.append("┼ 0: the mean of all points;\n  each axis fills the plot\n", "dim")
    return out


class ScatterPlot(Widget):
    """2-D points coloured and marked by task."""

    DEFAULT_CSS = """
    ScatterPlot { height: 1fr; width: 1fr; text-wrap: nowrap; text-overflow: clip; }
    """
    points: reactive[np.ndarray | None] = reactive(None, always_update=True)
    labels: reactive[np.ndarray | None] = reactive(None, always_update=True)

    @property
    def point_count(self) -> int:
        return 0 if self.points is None else len(self.points)

    def render(self) -> Text:
        if self.points is None or self.labels is None:
            return Text("")
        size = self.content_size
        return render_scatter(self.points, self.labels, size.width, size.height)


# ---- returns table -----------------------------------------------------------------------------
def return_cell(x: np.ndarray, y: np.ndarray, width: int = 14) -> Text:
    """Latest value and a sparkline of the history."""
    if len(y) == 0:
        return Text("—".rjust(8), "dim")
    cell = Text(fmt(float(y[-1])).rjust(8) + " ")
    cell.append(sparkline(y, width), "cyan")
    return cell


class ReturnsTable(DataTable):
    """Rows of tasks: latest return and trend per source; replaced whole on each poll."""

    DEFAULT_CSS = """
    ReturnsTable { height: auto; max-height: 100%; }
    """

    def __init__(self, **kwargs):
        super().__init__(cursor_type="none", zebra_stripes=True, **kwargs)

    def show(self, columns: list[str], rows: list[list]) -> None:
        self.clear(columns=True)
        self.add_columns(*columns)
        self.add_rows(rows)


def train_rows(sources: list[str], rows: list[ReturnRow]) -> tuple[list[str], list[list]]:
    columns = ["task", "param"] + [f"{s} return" for s in sources]
    body = [[Text(r.task, f"bold {task_color(int(r.task))}" if r.task.isdigit() else "bold"), r.param]
            + [return_cell(*r.cells[s]) for s in sources] for r in rows]
    return columns, body


def test_rows(algo: str, sources: list[str], rows: list[ReturnRow]) -> tuple[list[str], list[list]]:
    """Test tasks of one algo: per source the latest and trend, the best seen, the eval score
    with a bar; then the mean over tasks."""
    columns = ["task", "param"] + [f"{s} return" for s in sources] + ["best", f"{layout.stage_key('eval', algo)} score", ""]
    scores = [r.score for r in rows if r.score is not None]
    lo, hi = (min(scores), max(scores)) if scores else (0.0, 1.0)
    lo -= 0.5 * (hi - lo) if hi - lo > 1e-12 else 1.0      # the lowest score still shows a bar
    body = []
    for r in rows:
        best = [float(np.max(r.cells[s][1])) for s in sources if len(r.cells[s][1])]
        body.append([Text(r.task, f"bold {task_color(int(r.task))}" if r.task.isdigit() else "bold"),
                     r.param] + [return_cell(*r.cells[s]) for s in sources]
                    + [fmt(max(best)) if best else "—", fmt(r.score).rjust(8),
                       Text(bar(r.score, lo, hi), "green")])
    if rows:
        means = []
        for s in sources:
            last = [float(r.cells[s][1][-1]) for r in rows if len(r.cells[s][1])]
            means.append(Text(fmt(float(np.mean(last))).rjust(8) if last else "—".rjust(8), "bold"))
        body.append([Text("mean", "bold"), ""] + means
                    + ["", Text(fmt(float(np.mean(scores))).rjust(8) if scores else "—", "bold"), ""])
    return columns, body


# ---- header ------------------------------------------------------------------------------------
def recipe_summary(recipe: dict) -> str:
    """The recipe's sizes on one line: what this run trains, and how long."""
    parts = []
    c, b, r, d = (recipe.get(k) or {} for k in ("collect", "bcq", "reward", "distill"))
    if c:
        parts.append(f"collect {c.get('steps', '?')} steps/task")
    if b:
        parts.append(f"bcq {b.get('iterations', '?')} it")
    if r:
        parts.append(f"reward {r.get('ensemble_size', '?')}×{r.get('steps', '?')} steps")
    if d:
        parts.append(f"distill {d.get('epochs', '?')}×{d.get('steps_per_epoch', '?')} steps, z {d.get('latent_dim', '?')}")
    if recipe.get("algos"):
        parts.append("algos " + ", ".join(recipe["algos"]))
    return " · ".join(parts)


def render_header(snap: Snapshot, now: float, interval: float, width: int = 120) -> Text:
    """Run, recipe, the stage running now with progress and ETA, and every stage's status, in
    lines of at most `width` cells (the stage list wraps between stages)."""
    r = snap.recipe
    env = (r.get("env") or {})
    lines = []
    line = Text()
    line.append(str(r.get("name") or Path(snap.path).name), "bold")
    line.append(f"  {env.get('name') or 'no recipe yet'}", "bold cyan")
    if snap.task_param:
        line.append(f" ({snap.task_param})", "dim")
    n = {s: len(v) for s, v in snap.tasks.items()}
    if n:
        line.append(f"  {n.get('train', 0)} train / {n.get('test', 0)} test tasks")
    if "seed" in r:
        line.append(f"  seed {r['seed']}")
    if snap.revision:
        line.append(f"  rev {snap.revision[:7]}{'+dirty' if snap.revision.endswith('+dirty') else ''}", "dim")
    lines.append(line)
    line = Text(snap.path, "dim")
    summary = recipe_summary(r)
    if summary:
        line.append(f"  {summary}", "dim")
    lines.append(line)
    if snap.error:
        lines.append(Text(f"cannot read the store: {snap.error} (retrying every {interval:g}s)", "bold red"))
    for problem in snap.problems:
        lines.append(Text(f"⚠ {problem}", "yellow"))
    line = Text()
    active = records.current_stage(snap.stages)
    if active is not None:
        line.append("now ", "dim")
        line.append(active.key, "bold yellow")
        line.append(f"  {bar(active.progress, 0, 1, 20)}▏{100 * active.progress:3.0f}%", "yellow")
        line.append(f"  elapsed {duration(now - active.started) if active.started else '—'}")
        line.append(f"  ETA {duration(records.eta(active, now))}")
        quiet = records.silent(active, now)
        if quiet:
            line.append(f"  no progress for {duration(quiet)}: stopped?", "bold red")
    elif snap.stages and all(s.status == "done" for s in snap.stages):
        ended = max((s.ended or 0.0) for s in snap.stages)
        line.append(f"finished {duration(now - ended)} ago" if ended else "finished", "bold green")
    elif any(s.status == "failed" for s in snap.stages):
        failed = next(s for s in snap.stages if s.status == "failed")
        line.append(f"{failed.key} failed: {failed.message or 'no message'}", "bold red")
    elif any(s.status == "partial" for s in snap.stages):
        part = next(s for s in snap.stages if s.status == "partial")
        line.append(f"{part.key} partly done ({part.tasks_done}/{part.tasks_seen} tasks)"
                    f"{': ' + part.message if part.message else ''}", "yellow")
    elif all(s.status == "pending" for s in snap.stages):
        line.append("waiting: no stage has started yet", "dim")
    else:
        line.append("idle: no stage is running", "dim")
    lines.append(line)
    line = Text()
    for s in snap.stages:
        mark, style = STATUS.get(s.status, ("?", "magenta"))
        label = f"{mark} {s.key}" + (f" {100 * s.progress:.0f}%" if s.status == "running" else "")
        if s.tasks_seen and s.status != "done":
            label += f" {s.tasks_done}/{s.tasks_seen} tasks"
        item = Text(label, style)
        if line.cell_len and line.cell_len + 2 + item.cell_len > width:
            lines.append(line)
            line = Text()
        if line.cell_len:
            line.append("  ")
        line.append_text(item)
    lines.append(line)
    if snap.loading:
        lines.append(Text("reading the metrics tables and evaluations…", "dim italic"))
    for ln in lines:
        ln.truncate(width, overflow="ellipsis")
    return Text("\n").join(lines)


class RunHeader(Static):
    """The run and its stages; `snapshot` is set by the app on every poll."""

    DEFAULT_CSS = """
    RunHeader { height: auto; padding: 0 1; background: $boost; text-wrap: nowrap; }
    """
    snapshot: reactive[Snapshot | None] = reactive(None, always_update=True)
    interval: reactive[float] = reactive(2.0)

    def __init__(self, clock=time.time, **kwargs):
        super().__init__(**kwargs)
        self.clock = clock

    def watch_snapshot(self, snap: Snapshot | None) -> None:
        self._redraw()

    def on_resize(self) -> None:
        self._redraw()

    def _redraw(self) -> None:
        if self.snapshot is None:
            self.update(Text("reading the store…", "dim"))
        else:
            width = self.content_size.width or 120
            self.update(render_header(self.snapshot, self.clock(), self.interval, width))
