"""The interactive t-SNE page of ``dse analyze``: one self-contained HTML file that works offline.

A panel per network (inline SVG built by plain inline JavaScript from the embedded data),
points coloured by true class, misclassified ones crossed, those only the approximate network
misclassifies ringed in black. Hovering a point shows the image's index, true class, each
network's prediction and the image's thumbnail (an inline PNG data URI), and highlights the
same image in every panel; ``tsne.html#image=K`` opens with image K shown. No script, font or
image is fetched from anywhere. When the view is built the script sets
``document.body.dataset.rendered = "ok"``; an error sets ``document.body.dataset.error``.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from dse.reports.analysis import NETWORK_NAMES, class_colours, only_approximate

SIZE, MARGIN = 420, 12  # panel side and the margin inside it, in pixels

SCRIPT = r"""
(function () {
  var NS = 'http://www.w3.org/2000/svg';
  var D = JSON.parse(document.getElementById('data').textContent);
  var n = D.labels.length, marks = [], ringed = {}, current = null;
  for (var i = 0; i < n; i++) marks.push([]);
  D.ringed.forEach(function (i) { ringed[i] = true; });
  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    parent.appendChild(e);
    return e;
  }
  var legend = document.getElementById('legend');
  D.colours.forEach(function (colour, k) {
    var item = document.createElement('span');
    item.className = 'key';
    item.innerHTML = '<i style="background:' + colour + '"></i>class ' + k;
    legend.appendChild(item);
  });
  function show(i) {
    if (!(i >= 0 && i < n)) return;
    if (current !== null) marks[current].forEach(function (c) { c.classList.remove('on'); });
    current = i;
    marks[i].forEach(function (c) { c.classList.add('on'); c.parentNode.appendChild(c); });
    var lines = ['image ' + i + ' (test set index)', 'true class: ' + D.labels[i]];
    D.panels.forEach(function (p) {
      lines.push(p.name + ': class ' + p.pred[i] + (p.pred[i] === D.labels[i] ? '' : '  WRONG'));
    });
    if (ringed[i]) lines.push('misclassified only by the approximate network');
    document.getElementById('info').textContent = lines.join('\n');
    if (D.thumbs.length) {
      var img = document.getElementById('thumb');
      img.src = D.thumbs[i];
      img.style.display = 'block';
    }
  }
  D.panels.forEach(function (p) {
    var box = document.createElement('div');
    box.className = 'panel';
    var head = document.createElement('div');
    head.className = 'ptitle';
    head.textContent = p.title;
    box.appendChild(head);
    var svg = el('svg', {width: D.size, height: D.size, viewBox: '0 0 ' + D.size + ' ' + D.size}, box);
    el('rect', {x: 0.5, y: 0.5, width: D.size - 1, height: D.size - 1, 'class': 'frame'}, svg);
    for (var i = 0; i < n; i++) {
      var x = p.x[i], y = p.y[i];
      marks[i].push(el('circle', {cx: x, cy: y, r: 3, fill: D.colours[D.labels[i]], 'data-i': i}, svg));
      if (p.pred[i] !== D.labels[i]) {
        el('path', {d: 'M' + (x - 2.5) + ',' + (y - 2.5) + 'l5,5m0,-5l-5,5', 'class': 'wrong'}, svg);
      }
      if (ringed[i]) el('circle', {cx: x, cy: y, r: 6, 'class': 'ring'}, svg);
    }
    svg.addEventListener('mouseover', function (event) {
      var i = event.target.getAttribute('data-i');
      if (i !== null) show(+i);
    });
    document.getElementById('panels').appendChild(box);
  });
  var asked = /image=(\d+)/.exec(location.hash);
  if (asked) show(+asked[1]);
  document.body.dataset.rendered = 'ok';
})();
"""

ON_ERROR = ("window.onerror = function (message, source, line) { document.body.dataset.error = "
            "String(message) + ' (line ' + line + ')'; };")

STYLE = """body{font-family:sans-serif;margin:20px}
.panel{display:inline-block;margin:6px;vertical-align:top} .ptitle{font-size:13px;margin:2px 0}
.frame{fill:#fcfcfc;stroke:#999} circle[data-i]:hover,circle.on{stroke:#000;stroke-width:3;r:8}
.wrong{stroke:#000;stroke-width:1;pointer-events:none} .ring{fill:none;stroke:#000;stroke-width:1.1;pointer-events:none}
.key{display:inline-block;margin-right:12px;font-size:12px} .key i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:5px}
#view{display:flex;align-items:flex-start} #panels{flex:1}
#detail{position:sticky;top:16px;background:#fff;border:1px solid #999;padding:8px;min-width:250px;margin:6px}
#info{font:12px monospace;white-space:pre;margin:0} #thumb{display:none;width:112px;height:112px;image-rendering:pixelated;margin-bottom:6px}"""


def thumbnails(images: np.ndarray) -> list[str]:
    """Each uint8 image (N, H, W, 1 or 3) as a PNG data URI; none for other data (feature
    vectors have no picture)."""
    from PIL import Image

    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        return []
    uris = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, "PNG")
        uris.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())
    return uris


def _pixels(xy: np.ndarray) -> tuple[list[float], list[float]]:
    """Embedding coordinates scaled into the panel (one scale for both axes, y up)."""
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    scale = (SIZE - 2 * MARGIN) / max(float((hi - lo).max()), 1e-12)
    centre = (SIZE - scale * (hi - lo)) / 2
    x = centre[0] + scale * (xy[:, 0] - lo[0])
    y = SIZE - (centre[1] + scale * (xy[:, 1] - lo[1]))
    return np.round(x, 1).tolist(), np.round(y, 1).tolist()


def write_tsne_page(embeddings: dict[str, np.ndarray], views: dict, labels: np.ndarray,
                    classes: int, images: np.ndarray, title: str, path: Path) -> None:
    """The page for ``embeddings`` of the networks in ``views`` (``evaluators.recovery.analysis.Features``
    by network), ``labels`` and the raw test ``images`` of the embedded points."""
    panels = []
    for net, view in views.items():
        x, y = _pixels(embeddings[net])
        panels.append({"name": net, "x": x, "y": y, "pred": view.predictions.tolist(),
                       "title": f"{NETWORK_NAMES[net]}: accuracy "
                                f"{100 * view.accuracy(labels):.1f}% "
                                f"({int(np.sum(view.predictions != labels))} wrong)"})
    ringed = np.flatnonzero(only_approximate(views, labels))
    data = {"size": SIZE, "labels": labels.tolist(), "colours": class_colours(classes),
            "panels": panels, "ringed": ringed.tolist(), "thumbs": thumbnails(images)}
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head>
<body><script>{ON_ERROR}</script>
<h3>{html.escape(title)}</h3>
<p>Each panel embeds the features entering the network's classifier layer. Colour: true
class; black cross: misclassified by that network; black ring: misclassified only by the
approximate network ({len(ringed)} images). Hover a point for the image, its class and every
network's prediction; the same image is highlighted in every panel.</p>
<div id="legend"></div>
<div id="view"><div id="panels"></div>
<div id="detail"><img id="thumb" alt="test image"><pre id="info">hover a point</pre></div></div>
<script type="application/json" id="data">{payload}</script>
<script>{SCRIPT}</script></body></html>
"""
    path.write_text(page)
