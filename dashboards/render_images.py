#!/usr/bin/env python3
"""Renders every row of the Grafana dashboards as a PNG, from the range results of an end-to-end test run.

Python 3.11 and matplotlib (`make dashboard-images` runs it in its own venv). Grafana itself is not needed:

    python3 dashboards/render_images.py --data .build/dashboard-data [--out docs/img] [--target app]

The data file holds the range result of every dashboard query, keyed by the expression with Grafana's variables
replaced exactly as `generate.py --queries` replaces them (`plain_promql`, imported from there):

    {"start": <unix s>, "end": <unix s>, "step": <s>,
     "series": {"<expr>": [{"metric": {<labels>}, "values": [[<unix s>, "<value>"], ...]}, ...]}}

Each row becomes `<out>/<dashboard uid>-<row slug>.png` (pgconn-overview-latency.png), its panels placed by their
gridPos on a 24-column grid, in Grafana's dark theme: timeseries as lines or bars, stat as its last value, bargauge
as one bar per series, table as a small table, state-timeline as coloured bands from the panel's value mappings,
heatmap as the per-bucket increases. Text panels are left out, and so is a row that holds nothing else. Units are
formatted the way Grafana formats them (s, percentunit, bytes, short, ops, none). The time axis counts seconds from
the start of the run.

The target dashboard shows one target (Grafana's single-select `target` variable): series whose `target` label
is another target are dropped. Series aggregated over targets (the heatmaps' `sum by (le)`) cannot be split and
cover every target of the run.

The output depends only on the inputs: a fixed size per row, a fixed DPI, no timestamps or software name in the
PNG, and a palette of at most 128 colours to keep each file small.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap, PowerNorm, to_rgb
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import FancyBboxPatch, Rectangle
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import IdentityTransform
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # no dashboards/__pycache__ from importing generate.py
from generate import GRID_WIDTH, plain_promql  # noqa: E402  (the substitution --queries uses, not a copy)

DPI = 100
WIDTH = 1400  # pixels; one grid column is (WIDTH - 2 * MARGIN) / 24
UNIT_HEIGHT = 32  # pixels per gridPos height unit (Grafana: 30 px + 8 px margin at 1920 px wide)
MARGIN = 10
GUTTER = 8
HEADER = 44
PALETTE_COLOURS = 256

# Grafana's dark theme.
CANVAS = "#111217"
PANEL = "#181b1f"
BORDER = "#2c3036"
TEXT = "#ccccdc"
TEXT_DIM = "#8e8e9a"
GRID = "#2a2d33"
UNFILLED = "#23262b"
HEADER_BLUE = "#6e9fff"  # table headers and legend table columns

# Grafana's named colours (dark theme) and its classic palette, in the order it gives them to series.
NAMED_COLOURS = {
    "green": "#73BF69", "red": "#F2495C", "blue": "#5794F2", "purple": "#B877D9", "yellow": "#FADE2A",
    "orange": "#FF9830", "dark-orange": "#FA6400", "text": TEXT, "transparent": PANEL,
}
CLASSIC_PALETTE = [
    "#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0", "#508642",
    "#CCA300", "#447EBC", "#C15C17", "#890F02", "#0A437C", "#6D1F62", "#584477", "#B7DBAB", "#F4D598",
    "#70DBED", "#F9BA8F", "#F29191", "#82B5D8", "#E5A8E2", "#AEA2E0", "#629E51", "#E5AC0E", "#64B0C8",
    "#E0752D", "#BF1B00", "#0A50A1", "#962D82", "#614D93",
]

TITLE_PT = 10
TICK_PT = 7.5
LEGEND_PT = 7.5
LINE_PX = 14  # one line of legend or table text


def colour(name: str) -> str:
    """A Grafana colour name, or a hex colour as it is."""
    return NAMED_COLOURS.get(name, name)


def text_on(background: str) -> str:
    """Dark or light text, whichever contrasts more with `background` (Grafana's getContrastText)."""
    r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgb(background))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "#0b0c0e" if (1.05 / (luminance + 0.05)) < 3 else "#ffffff"


# ---------------------------------------------------------------------------------------------------------
# Units, formatted as Grafana's valueFormats do


def auto_decimals(value: float) -> int:
    """Grafana's getDecimalsForValue: three significant digits (7.24, 69.2, 0.0100), none for an integer."""
    if value == 0 or not math.isfinite(value) or value % 1 == 0:
        return 0
    return max(0, -math.floor(math.log10(abs(value))) + 2)


def to_fixed(value: float, decimals: int | None) -> str:
    if not math.isfinite(value):
        return "+Inf" if value > 0 else "-Inf" if value < 0 else "NaN"
    return f"{value:.{auto_decimals(value) if decimals is None else decimals}f}"


SECOND_SCALES = [(1e-9, " ns"), (1e-6, " µs"), (1e-3, " ms"), (1, " s"), (60, " min"), (3600, " hour"),
                 (86400, " day"), (604800, " week"), (31536000, " year")]
SECOND_BOUNDS = [1e-6, 1e-3, 1, 60, 3600, 86400, 604800, 31536000]
SHORT_SUFFIXES = ["", " K", " Mil", " Bil", " Tri", " Quadr"]
COUNT_SUFFIXES = ["", "K", "M", "B", "T"]
BYTE_SUFFIXES = [" B", " KiB", " MiB", " GiB", " TiB", " PiB"]


def scale_for(unit: str, magnitude: float) -> tuple[float, str]:
    """(divisor, suffix) with which Grafana shows numbers of `magnitude` in `unit`."""
    m = abs(magnitude)
    if unit == "s":
        if m == 0:
            return 1, " s"
        index = sum(1 for bound in SECOND_BOUNDS if m >= bound)
        return SECOND_SCALES[index]
    if unit == "ms":
        divisor, suffix = scale_for("s", m / 1000)
        return divisor * 1000, suffix
    if unit == "percentunit":
        return 0.01, "%"
    if unit == "percent":
        return 1, "%"
    if unit in ("short", "ops", "bytes"):
        factor, suffixes = (1024, BYTE_SUFFIXES) if unit == "bytes" else (
            1000, SHORT_SUFFIXES if unit == "short" else COUNT_SUFFIXES)
        index = 0 if m == 0 else min(max(math.floor(math.log(m, factor) + 1e-9), 0), len(suffixes) - 1)
        suffix = suffixes[index]
        if unit == "ops":
            suffix = (" " + suffix if suffix else "") + " ops"
        return factor ** index, suffix
    return 1, ""  # none, and anything else shown as a plain number


def format_value(value: float, unit: str, decimals: int | None = None) -> str:
    """One value as a stat, bar gauge or legend shows it: '7.24 s', '69.2%', '35.3 MiB', '2'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "No data"
    if value == 0 and unit == "s":
        return "0 s"
    divisor, suffix = scale_for(unit, value)
    return to_fixed(value / divisor, decimals) + suffix


def trimmed(text: str) -> str:
    """'2.50 s' as '2.5 s': bucket bounds are exact numbers, not measurements."""
    return re.sub(r"(\.\d*?)0+(?=\D|$)", r"\1", text).replace(". ", " ").rstrip(".")


def nice_ticks(lo: float, hi: float, unit: str, bins: int, *, fixed_lo=False, fixed_hi=False):
    """Axis limits and (positions, labels): nice steps in the unit's display scale, one suffix for the axis."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi == lo:
        lo, hi = (lo, lo + 1) if lo == 0 or fixed_lo else (lo - abs(lo) * 0.1, hi + abs(hi) * 0.1)
    divisor, _ = scale_for(unit, max(abs(lo), abs(hi)))
    values = MaxNLocator(nbins=bins, steps=[1, 2, 2.5, 5, 10]).tick_values(lo / divisor, hi / divisor)
    if not fixed_lo:
        lo = min(lo, values[0] * divisor)
    if not fixed_hi:
        hi = max(hi, values[-1] * divisor)
    positions = [v * divisor for v in values if lo - 1e-12 <= v * divisor <= hi + 1e-12]
    # The suffix of the largest tick for the whole axis (1 ms rather than 1000 µs), decimals from the step.
    divisor, suffix = scale_for(unit, max(abs(p) for p in positions))
    step = (positions[1] - positions[0]) / divisor if len(positions) > 1 else 1
    decimals = 0
    while decimals < 6 and abs(step * 10 ** decimals - round(step * 10 ** decimals)) > 1e-6 * max(1, step):
        decimals += 1
    ticks = [(p, format_value(0, unit) if abs(p) < abs(step * divisor) / 1e6 else f"{p / divisor:.{decimals}f}"
              + suffix) for p in positions]
    return lo, hi, ticks


def time_ticks(span: float, bins: int):
    """Positions and labels of the time axis: seconds since the start of the run."""
    values = MaxNLocator(nbins=bins, steps=[1, 2, 5, 10], integer=True).tick_values(0, span)
    return [(v, f"{v:.0f} s") for v in values if 0 <= v <= span]


# ---------------------------------------------------------------------------------------------------------
# Data: the range results, looked up by the expression as generate.py --queries writes it


@dataclass
class Series:
    """One series of a panel: its display name, labels, the query's refId and values on the run's time grid."""

    name: str
    labels: dict
    ref: str
    values: list  # float per step of the run, NaN where Prometheus returned no sample

    def last(self) -> float:
        """Grafana's lastNotNull."""
        return next((v for v in reversed(self.values) if not math.isnan(v)), math.nan)

    def max(self) -> float:
        present = [v for v in self.values if not math.isnan(v)]
        return max(present) if present else math.nan


@dataclass
class RunData:
    start: float
    end: float
    step: float
    series: dict
    target: str | None = None  # keep only this target's per-target series
    missing: list = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> RunData:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return cls(float(raw["start"]), float(raw["end"]), float(raw["step"]), raw["series"])

    @cached_property
    def times(self) -> list[float]:
        """Seconds since the start of the run, one per step."""
        count = int(round((self.end - self.start) / self.step)) + 1
        return [i * self.step for i in range(count)]

    def targets(self) -> list[str]:
        return sorted({s["metric"]["target"] for result in self.series.values() for s in result
                       if "target" in s["metric"]})

    def query(self, panel: dict, where: str) -> list[Series]:
        """Every series of every query of `panel`, named by its legendFormat, in Grafana's order."""
        out = []
        for t in panel.get("targets", []):
            expr = plain_promql(t["expr"])
            result = self.series.get(expr)
            if result is None:
                self.missing.append(f"{where}: no data for {expr}")
                continue
            for s in result:
                labels = s["metric"]
                if self.target is not None and labels.get("target", self.target) != self.target:
                    continue
                values = [math.nan] * len(self.times)
                for ts, value in s["values"]:
                    i = int(round((float(ts) - self.start) / self.step))
                    if 0 <= i < len(values) and math.isfinite(float(value)):  # NaN, ±Inf: a gap, as no sample
                        values[i] = float(value)
                out.append(Series(legend(t["legendFormat"], labels), labels, t["refId"], values))
        return out


def legend(fmt: str, labels: dict) -> str:
    """A legendFormat with its {{label}} references filled in; __auto: the labels as Prometheus prints them."""
    if fmt in ("__auto", ""):
        inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
        return labels.get("__name__", "") + ("{" + inner + "}" if inner else "")
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


def de_accumulate(series: list[Series]) -> list[Series]:
    """Cumulative `le` buckets (lowest first) as counts per bucket, the way Grafana reads format=heatmap."""
    def bound(s):
        le = s.labels.get("le", "+Inf")
        return math.inf if le in ("+Inf", "Inf") else float(le)

    ordered = sorted(series, key=bound)
    out, previous = [], None
    for s in ordered:
        values = s.values if previous is None else [
            v - p if not (math.isnan(v) or math.isnan(p)) else v for v, p in zip(s.values, previous.values)]
        out.append(Series(s.name, s.labels, s.ref, [max(v, 0.0) if not math.isnan(v) else v for v in values]))
        previous = s
    return out


# ---------------------------------------------------------------------------------------------------------
# Drawing in pixels


class Canvas:
    """A matplotlib figure addressed in pixels from its top-left corner, the way a dashboard is laid out."""

    def __init__(self, width: int, height: int):
        self.w, self.h = width, height
        self.fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor=CANVAS)
        FigureCanvasAgg(self.fig)
        self.renderer = self.fig.canvas.get_renderer()

    def _frac(self, x, y):
        return x / self.w, 1 - y / self.h

    def text(self, x, y, s, *, size=LEGEND_PT, color=TEXT, weight="normal", ha="left", va="top", **kw):
        fx, fy = self._frac(x, y)
        return self.fig.text(fx, fy, s, fontsize=size, color=color, fontweight=weight, ha=ha, va=va, **kw)

    def rect(self, x, y, w, h, color, *, radius=0.0, edge=None, alpha=1.0):
        """A filled rectangle; in display pixels (the DPI is fixed), so that rounded corners stay round."""
        style = f"round,pad=0,rounding_size={radius}" if radius else "square,pad=0"
        patch = FancyBboxPatch((x, self.h - y - h), w, h, boxstyle=style, transform=IdentityTransform(),
                               facecolor=color, edgecolor=edge or "none", linewidth=1 if edge else 0, alpha=alpha,
                               zorder=-1)  # below the axes, which a figure draws at zorder 0
        self.fig.add_artist(patch)

    def axes(self, x, y, w, h):
        fx, fy = self._frac(x, y + h)
        ax = self.fig.add_axes((fx, fy, max(w, 1) / self.w, max(h, 1) / self.h))
        ax.set_facecolor("none")
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.tick_params(colors=TEXT_DIM, labelsize=TICK_PT, length=0, pad=3)
        ax.tick_params(axis="x", pad=7)
        ax.set_axisbelow(True)  # grid lines under bars too, not only under lines
        return ax

    def width(self, s: str, size=LEGEND_PT, weight="normal") -> float:
        w, _, _ = self.renderer.get_text_width_height_descent(s, FontProperties(size=size, weight=weight), False)
        return w

    def fit(self, s: str, width: float, size=LEGEND_PT, weight="normal") -> str:
        """`s`, cut with an ellipsis so that it fits in `width` pixels."""
        if self.width(s, size, weight) <= width:
            return s
        while s and self.width(s + "…", size, weight) > width:
            s = s[:-1]
        return s + "…"

    def png(self) -> bytes:
        """The figure as a palette PNG without metadata (no timestamp, no software name)."""
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=DPI, facecolor=CANVAS, metadata={"Software": None})
        image = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
        image = image.quantize(colors=PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        out = io.BytesIO()
        image.save(out, format="PNG", optimize=True)
        return out.getvalue()


@dataclass
class Box:
    """A rectangle in pixels from the top-left corner."""

    x: float
    y: float
    w: float
    h: float


@dataclass
class Context:
    canvas: Canvas
    data: RunData
    where: str

    @property
    def times(self):
        return self.data.times

    @property
    def span(self):
        return self.data.end - self.data.start


def style_time_axis(ctx: Context, ax, width: float):
    """The run's whole time range, a tick about every 75 pixels, vertical grid lines."""
    ax.set_xlim(0, ctx.span)
    ticks = time_ticks(ctx.span, max(2, int(width // 75)))
    ax.set_xticks([t for t, _ in ticks], [label for _, label in ticks])
    ax.grid(axis="x", color=GRID, linewidth=0.6)


def threshold_colour(value: float, thresholds: dict) -> str:
    """The colour of the last threshold step whose lower bound `value` reaches."""
    chosen = thresholds["steps"][0]["color"]
    for step in thresholds["steps"][1:]:
        if not math.isnan(value) and value >= step["value"]:
            chosen = step["color"]
    return colour(chosen)


def mapped(value: float, defaults: dict) -> tuple[str, str] | None:
    """(text, colour) of the value mapping that matches `value`, if one does."""
    if math.isnan(value):
        return None
    key = str(int(value)) if value == int(value) else str(value)
    for mapping in defaults.get("mappings", []):
        option = mapping.get("options", {}).get(key)
        if mapping.get("type") == "value" and option:
            return option.get("text", key), colour(option.get("color", "text"))
    return None


def display(value: float, defaults: dict) -> tuple[str, str]:
    """(text, colour) of a value as a stat or bar gauge shows it: value mappings first, then unit and thresholds."""
    found = mapped(value, defaults)
    if found:
        return found
    return (format_value(value, defaults.get("unit", "none"), defaults.get("decimals")),
            threshold_colour(value, defaults.get("thresholds", {"steps": [{"color": "green"}]})))


def no_data(ctx: Context, box: Box):
    ctx.canvas.text(box.x + box.w / 2, box.y + box.h / 2, "No data", size=11, color=TEXT_DIM, ha="center",
                    va="center")


# ---------------------------------------------------------------------------------------------------------
# Panels. Each draws into `box`, the panel's body below its title.


@dataclass
class YAxis:
    """A value axis of a time series panel: its side, series, label, limits, ticks and the room its labels need."""

    side: str
    series: list
    label: str
    lo: float
    hi: float
    ticks: list
    margin: float


def draw_timeseries(ctx: Context, panel: dict, box: Box, series: list[Series]):
    c = ctx.canvas
    defaults = panel["fieldConfig"]["defaults"]
    custom = defaults.get("custom", {})
    legend_opts = panel["options"].get("legend", {})
    by_ref = {}
    for override in panel["fieldConfig"].get("overrides", []):
        if override["matcher"]["id"] == "byFrameRefID":
            by_ref[override["matcher"]["options"]] = {p["id"]: p["value"] for p in override["properties"]}
    colours = {id(s): CLASSIC_PALETTE[i % len(CLASSIC_PALETTE)] for i, s in enumerate(series)}

    legend = Legend.plan(c, series, legend_opts, box.w - 16, box.h * 0.42)
    legend_h = legend.height
    plot = Box(box.x, box.y, box.w, box.h - legend_h - 18)
    if not series:
        no_data(ctx, Box(box.x, box.y, box.w, box.h))
        return

    # One y axis per unit: the panel's on the left, the series of an override placed right on the right.
    sides = {"left": [], "right": []}
    for s in series:
        sides["right" if by_ref.get(s.ref, {}).get("custom.axisPlacement") == "right" else "left"].append(s)
    axes = []
    for side, members in sides.items():
        if not members:
            continue
        props = by_ref.get(members[0].ref, {}) if side == "right" else {}
        unit = props.get("unit", defaults.get("unit", "short"))
        label = props.get("custom.axisLabel", custom.get("axisLabel", ""))
        present = [v for s in members for v in s.values if not math.isnan(v)]
        lo, hi = (min(present), max(present)) if present else (0.0, 1.0)
        lo, hi = defaults.get("min", lo), defaults.get("max", hi)
        if custom.get("drawStyle") == "bars":
            lo = min(lo, 0.0)
        lo, hi, ticks = nice_ticks(lo, hi, unit, max(2, int(plot.h // 45)), fixed_lo="min" in defaults,
                                   fixed_hi="max" in defaults)
        margin = max(c.width(text, TICK_PT) for _, text in ticks) + 14 + (14 if label else 0)
        axes.append(YAxis(side, members, label, lo, hi, ticks, margin))
    left = next((a.margin for a in axes if a.side == "left"), 12)
    right = next((a.margin for a in axes if a.side == "right"), 12)
    inner = Box(plot.x + left, plot.y + 4, plot.w - left - right, plot.h - 4)

    base = None
    for y in axes:
        ax = c.axes(inner.x, inner.y, inner.w, inner.h) if base is None else base.twinx()
        if base is None:
            base = ax
            style_time_axis(ctx, ax, inner.w)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.tick_params(colors=TEXT_DIM, labelsize=TICK_PT, length=0, pad=3)
        ax.set_ylim(y.lo, y.hi)
        ax.set_yticks([t for t, _ in y.ticks], [text for _, text in y.ticks])
        if y.side == "left":
            ax.grid(axis="y", color=GRID, linewidth=0.6)
        else:
            ax.yaxis.set_label_position("right")
            ax.yaxis.tick_right()
        if y.label:
            ax.set_ylabel(y.label, color=TEXT_DIM, fontsize=TICK_PT, labelpad=4)
        for s in y.series:
            draw_series(ax, ctx, s, colours[id(s)], custom, inner.w / ctx.span)
        if custom.get("thresholdsStyle", {}).get("mode") == "dashed" and y.side == "left":
            for step in defaults.get("thresholds", {}).get("steps", [])[1:]:
                ax.axhline(step["value"], color=colour(step["color"]), linewidth=1, linestyle=(0, (4, 3)))

    legend.draw(c, box.x + 8, box.y + box.h - legend_h, box.w - 16, colours, defaults)


def draw_series(ax, ctx: Context, s: Series, col: str, custom: dict, px_per_s: float):
    """One series as lines with a faint fill, or as bars, with gaps where there are no samples."""
    times, values = ctx.times, s.values
    if custom.get("drawStyle") == "bars":
        # Grafana's outlined bars with gaps while there is room; narrower ones side by side, or they alias.
        wide = ctx.data.step * px_per_s >= 5
        width = ctx.data.step * (0.7 if wide else 1.0)
        xs = [t for t, v in zip(times, values) if not math.isnan(v)]
        ys = [v for v in values if not math.isnan(v)]
        ax.bar(xs, ys, width=width, color=col, alpha=custom.get("fillOpacity", 40) / 100, linewidth=0)
        if wide:
            ax.bar(xs, ys, width=width, fill=False, edgecolor=col, linewidth=0.8)
        return
    ax.plot(times, values, color=col, linewidth=max(1.0, custom.get("lineWidth", 1) * 1.2), solid_joinstyle="round")
    opacity = custom.get("fillOpacity", 0) / 100
    if opacity:
        floor = max(ax.get_ylim()[0], 0) if ax.get_ylim()[0] <= 0 <= ax.get_ylim()[1] else ax.get_ylim()[0]
        ax.fill_between(times, values, floor, where=[not math.isnan(v) for v in values], color=col,
                        alpha=opacity, linewidth=0, interpolate=False)


@dataclass
class Legend:
    """A time series legend: a list flowed into lines, or a table with Max and Last * sorted by Max."""

    lines: list  # list mode: [[(series, x offset), ...], ...]; table mode: [[series], ...] for the rows shown
    rest: list  # table mode: the series that did not fit
    table: bool

    @property
    def height(self) -> float:
        if not self.lines:
            return 0
        return (len(self.lines) + (1 if self.table else 0) + (1 if self.rest else 0)) * LINE_PX + 4

    @classmethod
    def plan(cls, c: Canvas, series: list[Series], opts: dict, width: float, max_height: float) -> Legend:
        if not opts.get("showLegend", True) or not series:
            return cls([], [], False)
        if opts.get("displayMode") == "table":
            rows = list(series)
            if opts.get("sortDesc"):
                rows.sort(key=lambda s: -s.max() if not math.isnan(s.max()) else math.inf)
            room = max(1, int(max_height // LINE_PX) - 1)  # below the header
            shown = rows if len(rows) <= room else rows[:max(room - 1, 1)]  # keep a line for "… more"
            return cls([[s] for s in shown], rows[len(shown):], True)
        lines, x = [[]], 0.0
        for s in series:
            w = 18 + c.width(s.name) + 12
            if x + w > width and lines[-1]:
                lines.append([])
                x = 0.0
            lines[-1].append((s, x))
            x += w
        return cls(lines, [], False)

    def draw(self, c: Canvas, x: float, y: float, width: float, colours: dict, defaults: dict):
        unit, decimals = defaults.get("unit", "short"), defaults.get("decimals")
        y += 2
        if not self.table:
            for line in self.lines:
                for s, dx in line:
                    c.rect(x + dx, y + 5, 12, 3, colours[id(s)], radius=1)
                    c.text(x + dx + 17, y + 1, s.name)
                y += LINE_PX
            return
        columns = [("Max", Series.max), ("Last *", Series.last)]
        column_w = 76
        right = [x + width - (len(columns) - 1 - i) * column_w for i in range(len(columns))]
        c.text(x, y, "Name", color=TEXT_DIM)
        for (name, _), r in zip(columns, right):
            c.text(r, y, name, color=HEADER_BLUE, ha="right")
        for (s,) in self.lines:
            y += LINE_PX
            c.rect(x, y + 5, 12, 3, colours[id(s)], radius=1)
            c.text(x + 17, y + 1, c.fit(s.name, width - 17 - len(columns) * column_w - 8))
            for (_, calc), r in zip(columns, right):
                c.text(r, y + 1, format_value(calc(s), unit, decimals), ha="right")
        if self.rest:
            top = max((s.max() for s in self.rest if not math.isnan(s.max())), default=math.nan)
            c.text(x + 17, y + LINE_PX + 1, f"… {len(self.rest)} more series, max {format_value(top, unit, decimals)}",
                   color=TEXT_DIM)


def draw_stat(ctx: Context, panel: dict, box: Box, series: list[Series]):
    c = ctx.canvas
    defaults = panel["fieldConfig"]["defaults"]
    options = panel["options"]
    if not series:
        no_data(ctx, box)
        return
    n = len(series)
    horizontal = box.w >= box.h
    for i, s in enumerate(series):
        cell = (Box(box.x + i * box.w / n, box.y, box.w / n, box.h) if horizontal
                else Box(box.x, box.y + i * box.h / n, box.w, box.h / n))
        cell = Box(cell.x + 4, cell.y + 2, cell.w - 8, cell.h - 6)
        value = s.last()
        text, col = display(value, defaults)
        background = options.get("colorMode") == "background"
        if background:
            c.rect(cell.x, cell.y, cell.w, cell.h, col, radius=3)
        fg = text_on(col) if background else col
        graph = options.get("graphMode") == "area" and not background
        top = cell.y
        if n > 1 or options.get("textMode") == "value_and_name":
            c.text(cell.x + cell.w / 2, cell.y + 4, c.fit(s.name, cell.w - 8, TICK_PT + 1), size=TICK_PT + 1,
                   color=fg if background else TEXT, ha="center")
            top += 18
        if graph:
            ax = c.axes(cell.x, cell.y + cell.h * 0.6, cell.w, cell.h * 0.4)
            ax.set_xlim(0, ctx.span)
            ax.set_xticks([])
            ax.set_yticks([])
            present = [v for v in s.values if not math.isnan(v)]
            lo, hi = (min(present), max(present)) if present else (0, 1)
            ax.set_ylim(lo - (hi - lo or 1) * 0.05, hi + (hi - lo or 1) * 0.6)
            ax.plot(ctx.times, s.values, color=col, linewidth=1.2)
            ax.fill_between(ctx.times, s.values, ax.get_ylim()[0], where=[not math.isnan(v) for v in s.values],
                            color=col, alpha=0.18, linewidth=0)
        height = (cell.y + cell.h * (0.66 if graph else 1)) - top
        size = min(height * 0.7, 40) / (DPI / 72)
        width = c.width(text, size, "bold")
        if width > cell.w * 0.88:
            size *= cell.w * 0.88 / width
        c.text(cell.x + cell.w / 2, top + height / 2, text, size=size, color=fg, weight="bold", ha="center",
               va="center")


def draw_bargauge(ctx: Context, panel: dict, box: Box, series: list[Series]):
    c = ctx.canvas
    defaults = panel["fieldConfig"]["defaults"]
    if any(t.get("format") == "heatmap" for t in panel.get("targets", [])):
        series = de_accumulate(series)
    if not series:
        no_data(ctx, box)
        return
    values = [s.last() for s in series]
    present = [v for v in values if not math.isnan(v)]
    lo = defaults.get("min", min(present + [0]))
    hi = defaults.get("max", max(present + [lo]))
    slot = min(box.h / len(series), 60)
    name_w = 0
    texts = [display(v, defaults) for v in values]
    value_w = max(c.width(t, 9, "bold") for t, _ in texts) + 10
    name_above = slot >= 34
    if not name_above:
        name_w = min(max(c.width(s.name) for s in series) + 10, box.w * 0.35)
    for i, (s, v, (text, col)) in enumerate(zip(series, values, texts)):
        y = box.y + 4 + i * slot
        bar_y, bar_h = (y + 15, slot - 19) if name_above else (y + 2, slot - 4)
        bar_h = max(min(bar_h, 24), 6)
        if name_above:
            c.text(box.x + 8, y + 1, c.fit(s.name, box.w - 16), color=TEXT)
        else:
            c.text(box.x + 8, bar_y + bar_h / 2, c.fit(s.name, name_w - 10), color=TEXT, va="center")
        bx, bw = box.x + 8 + name_w, box.w - 16 - name_w - value_w
        c.rect(bx, bar_y, bw, bar_h, UNFILLED, radius=2)
        share = 0 if math.isnan(v) or hi == lo else min(max((v - lo) / (hi - lo), 0), 1)
        if hi == lo and not math.isnan(v) and v > lo:
            share = 1
        if share > 0:
            c.rect(bx, bar_y, max(bw * share, 2), bar_h, col, radius=2)
        c.text(box.x + box.w - 8, bar_y + bar_h / 2, text, size=9, color=col, weight="bold", ha="right",
               va="center")


def draw_table(ctx: Context, panel: dict, box: Box, series: list[Series]):
    c = ctx.canvas
    if not series:
        no_data(ctx, box)
        return
    organize = next((t["options"] for t in panel.get("transformations", []) if t["id"] == "organize"), {})
    exclude = {k for k, v in organize.get("excludeByName", {}).items() if v}
    index = organize.get("indexByName", {})
    rename = organize.get("renameByName", {})
    names = sorted({k for s in series for k in s.labels} - exclude, key=lambda k: (index.get(k, len(index)), k))
    headers = [rename.get(k) or k for k in names]
    rows = [[s.labels.get(k, "") for k in names] for s in series]
    sort = panel["options"].get("sortBy", [])
    if sort and sort[0]["displayName"] in headers:
        column = headers.index(sort[0]["displayName"])
        rows.sort(key=lambda r: r[column], reverse=sort[0].get("desc", False))
    widths = [max([c.width(h, LEGEND_PT, "bold")] + [c.width(r[i]) for r in rows]) + 14 for i, h in enumerate(headers)]
    available = box.w - 16
    if sum(widths) > available:  # shrink the widest columns first
        while sum(widths) > available and max(widths) > 40:
            widest = widths.index(max(widths))
            widths[widest] -= 1
    x0, y = box.x + 8, box.y + 4
    x = x0
    for h, w in zip(headers, widths):
        c.text(x + 4, y + 2, c.fit(h, w - 8, LEGEND_PT, "bold"), color=HEADER_BLUE, weight="bold")
        x += w
    y += LINE_PX + 6
    c.rect(x0, y - 3, sum(widths), 1, BORDER)
    for r in rows:
        if y + LINE_PX > box.y + box.h:
            break
        x = x0
        for cell, w in zip(r, widths):
            c.text(x + 4, y + 2, c.fit(cell, w - 8), color=TEXT)
            x += w
        y += LINE_PX + 6
        c.rect(x0, y - 3, sum(widths), 1, BORDER)


def draw_state_timeline(ctx: Context, panel: dict, box: Box, series: list[Series]):
    c = ctx.canvas
    defaults = panel["fieldConfig"]["defaults"]
    if not series:
        no_data(ctx, box)
        return
    name_w = max(c.width(s.name) for s in series) + 16
    plot = Box(box.x + name_w, box.y + 4, box.w - name_w - 12, box.h - 4 - 18)
    ax = c.axes(plot.x, plot.y, plot.w, plot.h)
    style_time_axis(ctx, ax, plot.w)
    ax.grid(False)
    ax.set_ylim(len(series), 0)
    ax.set_yticks([])
    row_height = panel["options"].get("rowHeight", 0.9)
    px_per_s = plot.w / ctx.span
    step = ctx.data.step
    for i, s in enumerate(series):
        c.text(box.x + 8, plot.y + (i + 0.5) * plot.h / len(series), c.fit(s.name, name_w - 12), color=TEXT,
               va="center")
        runs = []  # (start index, end index exclusive, value), merged like mergeValues
        for j, v in enumerate(s.values):
            if math.isnan(v):
                continue
            if runs and runs[-1][1] == j and runs[-1][2] == v:
                runs[-1][1] = j + 1
            else:
                runs.append([j, j + 1, v])
        for start, end, v in runs:
            text, col = display(v, defaults)
            x0, x1 = ctx.times[start], min(ctx.times[end - 1] + step, ctx.span)
            ax.add_patch(Rectangle((x0, i + (1 - row_height) / 2), x1 - x0, row_height, facecolor=col,
                                   edgecolor=PANEL, linewidth=0.8, alpha=0.85))
            if (x1 - x0) * px_per_s > c.width(text) + 8:
                ax.text((x0 + x1) / 2, i + 0.5, text, ha="center", va="center", fontsize=LEGEND_PT,
                        color=text_on(col), clip_on=True)


def heatmap_colours(options: dict) -> ListedColormap:
    """The panel's scheme in `steps` colours, dark to bright as Grafana's dark theme shows it."""
    scheme = options.get("color", {})
    base = colormaps.get(scheme.get("scheme", "Oranges"), colormaps["Oranges"])
    steps = int(scheme.get("steps", 64))
    picks = [base(0.95 - 0.85 * i / (steps - 1)) for i in range(steps)]  # high counts bright on dark
    return ListedColormap(picks[::-1] if scheme.get("reverse") else picks)


def draw_heatmap(ctx: Context, panel: dict, box: Box, series: list[Series]):
    c = ctx.canvas
    options = panel["options"]
    if not series:
        no_data(ctx, box)
        return
    buckets = de_accumulate(series)
    y_unit = options.get("yAxis", {}).get("unit", "short")
    bounds = [s.labels.get("le", "+Inf") for s in buckets]
    labels = [format_value(0, y_unit)] + [b if b.endswith("Inf") else trimmed(format_value(float(b), y_unit))
                                         for b in bounds]
    label_w = max(c.width(lbl, TICK_PT) for lbl in labels) + 12
    legend_h = 22 if options.get("legend", {}).get("show") else 0
    plot = Box(box.x + label_w, box.y + 4, box.w - label_w - 12, box.h - 4 - 18 - legend_h)
    ax = c.axes(plot.x, plot.y, plot.w, plot.h)
    style_time_axis(ctx, ax, plot.w)
    ax.grid(False)
    threshold = options.get("filterValues", {}).get("le", 1e-9)
    cells = [[(v if not math.isnan(v) and v > threshold else math.nan) for v in s.values] for s in buckets]
    present = [v for row in cells for v in row if not math.isnan(v)]
    top = max(present, default=1.0)
    step = ctx.data.step
    xs = [max(t - step, 0) for t in ctx.times] + [ctx.times[-1]]
    cmap = heatmap_colours(options)
    cmap.set_bad(alpha=0)
    norm = PowerNorm(gamma=options.get("color", {}).get("exponent", 0.5), vmin=0, vmax=top)
    gap = options.get("cellGap", 1) * 0.5
    wide = step * plot.w / ctx.span >= 4  # a gap between narrower columns would hide them
    ax.pcolormesh(xs, list(range(len(buckets) + 1)), cells, cmap=cmap, norm=norm, edgecolors=PANEL if wide else "none",
                  linewidth=gap if wide else 0)
    if not wide:
        for row in range(1, len(buckets)):
            ax.axhline(row, color=PANEL, linewidth=gap)
    ax.set_ylim(0, len(buckets))
    every = max(1, math.ceil((len(labels) * LINE_PX) / plot.h))
    ax.set_yticks(list(range(0, len(labels), every)), labels[::every])
    if legend_h:
        y = box.y + box.h - legend_h + 4
        low, high = format_value(min(present, default=0), "short"), format_value(top, "short")
        lw = c.width(low, TICK_PT)
        c.text(plot.x, y + 2, low, size=TICK_PT, color=TEXT_DIM)
        bar = c.axes(plot.x + lw + 6, y + 3, 160, 8)
        bar.imshow([[i / 63 for i in range(64)]], aspect="auto", cmap=cmap, norm=PowerNorm(gamma=1, vmin=0, vmax=1))
        bar.set_xticks([])
        bar.set_yticks([])
        c.text(plot.x + lw + 172, y + 2, high, size=TICK_PT, color=TEXT_DIM)


DRAW = {
    "timeseries": draw_timeseries,
    "stat": draw_stat,
    "bargauge": draw_bargauge,
    "table": draw_table,
    "state-timeline": draw_state_timeline,
    "heatmap": draw_heatmap,
}


# ---------------------------------------------------------------------------------------------------------
# Rows and files


def rows(dash: dict) -> list[tuple[str, list[dict]]]:
    """(row title, its panels that can be drawn) in dashboard order; a row with nothing to draw is left out."""
    out = []
    for p in dash["panels"]:
        if p["type"] == "row":
            out.append((p["title"], []))
        elif out and p["type"] in DRAW:
            out[-1][1].append(p)
    return [(title, panels) for title, panels in out if panels]


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def render_row(dash: dict, title: str, panels: list[dict], data: RunData) -> bytes:
    top = min(p["gridPos"]["y"] for p in panels)
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    height = HEADER + (bottom - top) * UNIT_HEIGHT + MARGIN
    c = Canvas(WIDTH, height)
    c.text(MARGIN, 12, dash["title"] + "  ›  " + title, size=12, weight="bold")
    run = f"{data.end - data.start:.0f} s end-to-end run, step {data.step:g} s; time axis: seconds since its start"
    if data.target is not None:
        run = f"target {data.target}, " + run
    c.text(WIDTH - MARGIN, 15, run, size=8, color=TEXT_DIM, ha="right")
    column = (WIDTH - 2 * MARGIN) / GRID_WIDTH
    for p in panels:
        g = p["gridPos"]
        box = Box(MARGIN + g["x"] * column + GUTTER / 2, HEADER + (g["y"] - top) * UNIT_HEIGHT + GUTTER / 2,
                  g["w"] * column - GUTTER, g["h"] * UNIT_HEIGHT - GUTTER)
        c.rect(box.x, box.y, box.w, box.h, PANEL, radius=2, edge=BORDER)
        c.text(box.x + 8, box.y + 7, c.fit(p["title"], box.w - 16, TITLE_PT, "bold"), size=TITLE_PT,
               weight="bold")
        body = Box(box.x, box.y + 26, box.w, box.h - 30)
        ctx = Context(c, data, f"{dash['uid']} / {p['title']}")
        DRAW[p["type"]](ctx, p, body, data.query(p, ctx.where))
    return c.png()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path,
                        help="ranges.json of an end-to-end test run, or the directory that holds it")
    parser.add_argument("--out", default=Path("docs/img"), type=Path, help="directory for the PNGs (docs/img)")
    parser.add_argument("--target", help="the target the target dashboard shows (default: the first by name)")
    args = parser.parse_args(argv)

    path = args.data / "ranges.json" if args.data.is_dir() else args.data
    data = RunData.load(path)
    args.out.mkdir(parents=True, exist_ok=True)
    targets = data.targets()
    for name in ("pgconn-overview", "pgconn-target"):
        dash = json.loads((HERE / (name + ".json")).read_text(encoding="utf-8"))
        data.target = None
        if name == "pgconn-target":
            data.target = args.target or (targets[0] if targets else None)
            if data.target is not None and data.target not in targets:
                parser.error(f"--target {data.target}: not in {path} (targets: {', '.join(targets)})")
        for title, panels in rows(dash):
            path = args.out / f"{dash['uid']}-{slug(title)}.png"
            png = render_row(dash, title, panels, data)
            path.write_bytes(png)
            print(f"{path}: {len(png) / 1024:.0f} KiB")
    for line in data.missing:
        print("no data: " + line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
