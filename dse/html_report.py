"""An interactive Pareto-front page: one self-contained HTML file, no external scripts.

Each panel plots the first objective against another; hovering a point shows its
configuration and metrics (native SVG tooltips plus a detail box), the front is highlighted and
the exact multiplier starred.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

DETAIL_KEYS = ("config", "config_bits", "design", "threshold", "accuracy", "accuracy_drop", "f1_macro", "power", "area",
               "delay", "pdp", "fpga_luts", "fpga_power", "mae", "wce", "mred",
               "error_probability", "feasible", "strategy", "generation", "trial")
W, H, PAD = 520, 360, 52


def _scale(values: pd.Series, lo_px: float, hi_px: float):
    lo, hi = float(values.min()), float(values.max())
    span = (hi - lo) or 1.0
    return lambda v: lo_px + (float(v) - lo) / span * (hi_px - lo_px)


def _panel(done: pd.DataFrame, front_ids: set, x_key: str, y_key: str, labels: dict) -> str:
    sx = _scale(done[x_key], PAD, W - 12)
    sy = _scale(done[y_key], H - PAD, 12)
    parts = [f'<svg width="{W}" height="{H}" xmlns="http://www.w3.org/2000/svg">',
             f'<rect x="{PAD}" y="12" width="{W - PAD - 12}" height="{H - PAD - 12}" fill="#fafafa" stroke="#ccc"/>']
    for value in (done[x_key].min(), done[x_key].max()):
        parts.append(f'<text x="{sx(value):.1f}" y="{H - PAD + 16}" font-size="11" text-anchor="middle">{value:.4g}</text>')
    for value in (done[y_key].min(), done[y_key].max()):
        parts.append(f'<text x="{PAD - 4}" y="{sy(value) + 4:.1f}" font-size="11" text-anchor="end">{value:.4g}</text>')
    parts.append(f'<text x="{(W + PAD) / 2}" y="{H - 8}" font-size="12" text-anchor="middle">{html.escape(labels[x_key])}</text>')
    parts.append(f'<text x="14" y="{H / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 14 {H / 2})">{html.escape(labels[y_key])}</text>')
    # the front is drawn last, on top of the dominated points
    for _, row in sorted(done.iterrows(), key=lambda r: r[1]["trial"] in front_ids):
        on_front = row["trial"] in front_ids
        exact = row.get("role") == "baseline"
        detail = {k: row[k] for k in DETAIL_KEYS if k in row and pd.notna(row[k])}
        tip = html.escape("\n".join(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}"
                                    for k, v in detail.items()))
        data = html.escape(json.dumps({k: (float(v) if isinstance(v, float) else str(v)) for k, v in detail.items()}))
        colour = "#d62728" if exact else "#1f77b4" if on_front else "#b0b0b0"
        radius = 7 if exact else 5 if on_front else 3.5
        parts.append(f'<circle cx="{sx(row[x_key]):.1f}" cy="{sy(row[y_key]):.1f}" r="{radius}" '
                     f'fill="{colour}" stroke="#333" stroke-width="{0.8 if on_front or exact else 0}" '
                     f'data-detail="{data}"><title>{tip}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def write_front_html(name: str, trials: pd.DataFrame, front: pd.DataFrame, objectives: list[str],
                     labels: dict[str, str], path: Path) -> None:
    """The page: one panel per cost objective and a detail box that follows the mouse."""
    done = trials[trials["state"] == "COMPLETE"]
    front_ids = set(front["trial"]) if not front.empty else set()
    panels = "".join(_panel(done, front_ids, x, objectives[0], labels) for x in objectives[1:]) \
        if not done.empty else "<p>No completed trial yet.</p>"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(name)}: Pareto front</title>
<style>body{{font-family:sans-serif;margin:20px}} svg{{margin:6px}} circle:hover{{stroke-width:2}}
#detail{{position:fixed;right:16px;top:16px;background:#fff;border:1px solid #999;padding:8px;
font:12px monospace;white-space:pre;min-width:260px}}</style></head>
<body><h2>{html.escape(name)}</h2>
<p>{len(done)} completed trials; {len(front_ids)} on the Pareto front (blue); the exact
multiplier in red. Hover a point for its configuration and metrics.</p>
<div>{panels}</div><div id="detail">hover a point</div>
<script>
document.querySelectorAll('circle').forEach(function (c) {{
  c.addEventListener('mouseenter', function () {{
    var d = JSON.parse(c.getAttribute('data-detail')), lines = [];
    for (var k in d) lines.push(k + ': ' + d[k]);
    document.getElementById('detail').textContent = lines.join('\\n');
  }});
}});
</script></body></html>
"""
    path.write_text(page)
