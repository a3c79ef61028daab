"""An interactive Pareto-front page: one self-contained HTML file that works offline.

One panel per pair of objectives (SVG with ticked, labelled axes); hovering a point shows its
configuration and metrics rounded to 4 significant digits with their units (native SVG
tooltips plus a detail box); the front is highlighted, the exact multiplier starred, and a
table of the front sorts by any column (plain inline JavaScript, no external script).
"""

from __future__ import annotations

import html
import json
import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

DETAIL_KEYS = ("design", "config", "config_bits", "threshold", "accuracy", "accuracy_drop",
               "f1_macro", "power", "area", "delay", "pdp", "fpga_luts", "fpga_power",
               "fpga_delay", "mae", "wce", "mred", "error_probability", "feasible", "strategy",
               "generation", "trial")
W, H = 560, 420
LEFT, RIGHT, TOP, BOTTOM = 80, 16, 14, 62  # room for tick labels and axis labels
TICKS = 8


def shown(value, unit: str = "") -> str:
    """A value as the page shows it: 4 significant digits for reals, with its unit."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    text = f"{value:.4g}" if isinstance(value, (float, np.floating)) else str(value)
    return f"{text} {unit}" if unit else text


def nice_ticks(lo: float, hi: float, count: int = TICKS) -> list[float]:
    """About ``count`` round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) in [lo, hi]."""
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def axis_range(values: pd.Series) -> tuple[float, float]:
    """The data range with a margin, so that no point sits on the frame."""
    lo, hi = float(values.min()), float(values.max())
    margin = (hi - lo) * 0.05 or abs(hi) * 0.05 or 0.5
    return lo - margin, hi + margin


def _axes(x_range: tuple[float, float], y_range: tuple[float, float], x_label: str,
          y_label: str) -> list[str]:
    """Frame, grid lines, tick labels and axis titles of one panel."""
    sx, sy = _scale(x_range, LEFT, W - RIGHT), _scale(y_range, H - BOTTOM, TOP)
    parts = [f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" '
             'fill="#fafafa" stroke="#888"/>']
    for tick in nice_ticks(*x_range):
        x = sx(tick)
        parts.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{H - BOTTOM + 5}" class="grid"/>'
                     f'<text x="{x:.1f}" y="{H - BOTTOM + 19}" class="tick" text-anchor="middle">{tick:.4g}</text>')
    for tick in nice_ticks(*y_range):
        y = sy(tick)
        parts.append(f'<line x1="{LEFT - 5}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{LEFT - 8}" y="{y + 4:.1f}" class="tick" text-anchor="end">{tick:.4g}</text>')
    mid_x, mid_y = (LEFT + W - RIGHT) / 2, (TOP + H - BOTTOM) / 2
    parts.append(f'<text x="{mid_x}" y="{H - 18}" class="axis" text-anchor="middle">{html.escape(x_label)}</text>'
                 f'<text x="18" y="{mid_y}" class="axis" text-anchor="middle" '
                 f'transform="rotate(-90 18 {mid_y})">{html.escape(y_label)}</text>')
    return parts


def _scale(bounds: tuple[float, float], lo_px: float, hi_px: float):
    lo, hi = bounds
    return lambda v: lo_px + (float(v) - lo) / (hi - lo) * (hi_px - lo_px)


def _panel(done: pd.DataFrame, front_ids: set, x_key: str, y_key: str, labels: dict,
           units: dict) -> str:
    x_range, y_range = axis_range(done[x_key]), axis_range(done[y_key])
    sx, sy = _scale(x_range, LEFT, W - RIGHT), _scale(y_range, H - BOTTOM, TOP)
    parts = [f'<svg width="{W}" height="{H}" viewBox="0 0 {W} {H}" xmlns="http://www.w3.org/2000/svg">',
             *_axes(x_range, y_range, labels[x_key], labels[y_key])]
    # the front is drawn last, on top of the dominated points
    for _, row in sorted(done.iterrows(), key=lambda r: r[1]["trial"] in front_ids):
        on_front = row["trial"] in front_ids
        exact = row.get("role") == "baseline"
        detail = {k: shown(row[k], units.get(k, "")) for k in DETAIL_KEYS
                  if k in row and pd.notna(row[k])}
        tip = html.escape("\n".join(f"{k}: {v}" for k, v in detail.items()))
        colour = "#d62728" if exact else "#1f77b4" if on_front else "#b0b0b0"
        radius = 7 if exact else 5 if on_front else 3.5
        parts.append(f'<circle cx="{sx(row[x_key]):.1f}" cy="{sy(row[y_key]):.1f}" r="{radius}" '
                     f'fill="{colour}" stroke="#333" stroke-width="{0.8 if on_front or exact else 0}" '
                     f'data-detail="{html.escape(json.dumps(detail))}"><title>{tip}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def _numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def front_table(front: pd.DataFrame, objectives: list[str], units: dict) -> str:
    """The front as an HTML table, one row per member; each cell keeps its raw value in
    ``data-v`` for sorting and shows it rounded."""
    first = ["design", "config_bits", *objectives]
    columns = [c for c in dict.fromkeys([*first, *DETAIL_KEYS]) if c in front]
    head = "".join(
        f'<th data-col="{i}" data-type="{"num" if _numeric(front[c]) else "text"}">{html.escape(c)}'
        f'{" [" + html.escape(units[c]) + "]" if units.get(c) else ""}</th>'
        for i, c in enumerate(columns))
    rows = []
    for _, row in front.iterrows():
        cells = "".join(
            f'<td data-v="{html.escape(str(row[c]))}">{html.escape(shown(row[c]))}</td>'
            if pd.notna(row[c]) else '<td data-v=""></td>' for c in columns)
        rows.append(f"<tr>{cells}</tr>")
    return (f'<table id="front"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


SCRIPT = """
document.querySelectorAll('circle').forEach(function (c) {
  c.addEventListener('mouseenter', function () {
    var d = JSON.parse(c.getAttribute('data-detail')), lines = [];
    for (var k in d) lines.push(k + ': ' + d[k]);
    document.getElementById('detail').textContent = lines.join('\\n');
  });
});
document.querySelectorAll('#front th').forEach(function (th) {
  th.addEventListener('click', function () {
    var body = document.querySelector('#front tbody'), col = +th.getAttribute('data-col');
    var up = th.getAttribute('data-sort') !== 'up';
    document.querySelectorAll('#front th').forEach(function (h) { h.removeAttribute('data-sort'); });
    th.setAttribute('data-sort', up ? 'up' : 'down');
    var rows = Array.prototype.slice.call(body.rows);
    var numeric = th.getAttribute('data-type') === 'num';
    rows.sort(function (a, b) {
      var x = a.cells[col].getAttribute('data-v'), y = b.cells[col].getAttribute('data-v');
      var order = numeric ? (parseFloat(x) || 0) - (parseFloat(y) || 0) : x.localeCompare(y);
      return up ? order : -order;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""

STYLE = """body{font-family:sans-serif;margin:20px;max-width:1200px} svg{margin:6px}
circle:hover{stroke-width:2} .tick{font-size:11px;fill:#333} .axis{font-size:12px}
.grid{stroke:#e2e2e2;stroke-width:1}
#detail{position:fixed;right:16px;top:16px;background:#fff;border:1px solid #999;padding:8px;
font:12px monospace;white-space:pre;min-width:260px}
#scroll{overflow-x:auto} #front{border-collapse:collapse;font-size:12px;margin-top:8px}
#front th,#front td{border:1px solid #ccc;padding:3px 6px;text-align:right}
#front th{cursor:pointer;background:#eee;user-select:none}
#front th[data-sort=up]::after{content:' \\25B2'} #front th[data-sort=down]::after{content:' \\25BC'}"""


def write_front_html(name: str, trials: pd.DataFrame, front: pd.DataFrame, objectives: list[str],
                     directions: list[str], labels: dict[str, str], units: dict[str, str],
                     path: Path) -> None:
    """The page: a panel per pair of objectives, the detail box and the sortable front table.
    ``labels`` are axis labels with units, ``units`` the unit of each column ('' if none)."""
    done = trials[trials["state"] == "COMPLETE"]
    front_ids = set(front["trial"]) if not front.empty else set()
    pairs = [(objectives[j], objectives[i]) for i, j in combinations(range(len(objectives)), 2)]
    panels = "".join(_panel(done, front_ids, x, y, labels, units) for x, y in pairs) \
        if not done.empty else "<p>No completed trial yet.</p>"
    senses = "; ".join(f"{html.escape(labels[m])}: {'higher' if d == 'maximize' else 'lower'} is better"
                       for m, d in zip(objectives, directions))
    note = ("" if len(objectives) == 2 else
            f"<p>Each panel is a 2-D projection of a {len(objectives)}-objective front: a point "
            "non-dominated in all objectives may look dominated in a projection (a point that "
            "beats it on both plotted axes loses on another objective).</p>")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(name)}: Pareto front</title>
<style>{STYLE}</style></head>
<body><h2>{html.escape(name)}: Pareto front</h2>
<p>{len(done)} completed trials; {len(front_ids)} on the Pareto front over all objectives
(blue); the exact multiplier in red. {senses}. Hover a point for its configuration and
metrics.</p>{note}
<div>{panels}</div><div id="detail">hover a point</div>
<h3>The front ({len(front)} members; click a column header to sort)</h3>
<div id="scroll">{front_table(front, objectives, units)}</div>
<script>{SCRIPT}</script></body></html>
"""
    path.write_text(page)
