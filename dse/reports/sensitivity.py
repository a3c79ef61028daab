"""``sensitivity.png`` of a layer-wise study: the accuracy drop with each library member alone
in each group of layers, as a heat map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dse.reports.figures import pyplot, wrap


def sensitivity_plot(drops: pd.DataFrame, path: Path, title: str) -> None:
    """Heat map of the layer sensitivity: accuracy drop (percentage points) with each member
    alone in each group of layers, the exact multiplier elsewhere."""
    plt = pyplot()
    points = 100 * drops.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * drops.shape[1], 1.4 + 0.4 * drops.shape[0]))
    image = ax.imshow(np.clip(points, 0, None), cmap="magma_r", aspect="auto")
    ax.set_xticks(range(drops.shape[1]), drops.columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(drops.shape[0]), [wrap(str(g), 40) for g in drops.index], fontsize=7)
    if points.size <= 400:
        for (i, j), value in np.ndenumerate(points):
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=6,
                    color="white" if value > 0.6 * max(np.nanmax(points), 1e-9) else "black")
    fig.colorbar(image, ax=ax, label="accuracy drop [percentage points]")
    ax.set_xlabel("multiplier (library member)")
    ax.set_ylabel("layers")
    ax.set_title(f"{title}: layer sensitivity (one layer approximate, exact elsewhere)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
