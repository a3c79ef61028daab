"""Every plot and page a study produces, in one package. ``write_reports(study)`` writes what a
study leaves for people: trials.csv, pareto.csv, retrained.csv (when designs were retrained), the
front and hypervolume plots, the interactive page, and what the study's kind adds.

Plots follow what a reader of a paper expects: titles, axis labels with units, a front of three
or four objectives shown as pairwise projections (a scatter matrix, no staircases: a point
non-dominated in all objectives may look dominated in a projection) and as parallel
coordinates, and the hypervolume normalized by the box between the ideal and reference points.

One module per thing drawn:

- ``front``: ``pareto.png`` (the front, pairwise projections for three or four objectives,
  retrained designs as arrows) and ``pareto_parallel.png`` (parallel coordinates).
- ``hypervolume``: ``hypervolume.png``, the normalized hypervolume over the search trials.
- ``front_page``: ``pareto.html``, the interactive front (offline, sortable table).
- ``compare``: the plot of ``python -m dse compare`` / ``dse.compare(..., plot=...)``: fronts
  overlaid and their hypervolume (the numbers are computed in ``dse.comparison``).
- ``sensitivity``: ``sensitivity.png`` of a layer-wise study (accuracy drop heat map).
- ``firmware``: ``precision_sparsity.png`` of a firmware study.
- ``chain``: the plot of ``python -m dse generate`` (a generated chain over the baselines).
- ``analysis``: the figures of ``python -m dse analyze``: ``tsne.png`` and the operand heat
  maps (``operands_<layer>.png``, ``operands_summary.png``).
- ``tsne_page``: ``tsne.html``, the interactive t-SNE page of ``python -m dse analyze``.

And what they share: ``labels`` (metric names, units, sources, axis labels), ``objectives``
(objective pairs, minimization form, the hypervolume box, completed trials) and ``figures``
(``pyplot()``, matplotlib on the Agg backend imported lazily: the one way plots get it).
"""

from __future__ import annotations

from pathlib import Path

from dse.export import trials_table, write_csv
from dse.reports.front import plot_front, plot_parallel
from dse.reports.front_page import write_front_html
from dse.reports.hypervolume import plot_hypervolume
from dse.reports.labels import label, unit
from dse.study import RETRAINED, Study


def write_reports(study: Study) -> dict[str, Path]:
    """Write the tables, the plots and the page into the study folder; returns their paths."""
    front = study.pareto()
    trials = trials_table(study, front)
    paths = {
        "trials": study.folder / "trials.csv",
        "pareto": study.folder / "pareto.csv",
        "plot": study.folder / "pareto.png",
        "html": study.folder / "pareto.html",
        "hypervolume": study.folder / "hypervolume.png",
    }
    # Verilog of generated designs stays in the store and in pareto/, not in the tables
    write_csv(trials.drop(columns=["verilog"], errors="ignore"), paths["trials"])
    write_csv(front.drop(columns=["verilog"], errors="ignore"), paths["pareto"])
    retrained = study.retrained()
    if not retrained.empty:
        paths["retrained"] = study.folder / "retrained.csv"
        write_csv(retrained, paths["retrained"])
    plot_front(study, trials, front, paths["plot"])
    if len(study.objectives) > 2 and not front.empty:
        paths["parallel"] = study.folder / "pareto_parallel.png"
        plot_parallel(study, trials, front, paths["parallel"])
    measured = trials[trials["role"] != RETRAINED]  # the page shows what the search measured
    write_front_html(study.name, measured, front, study.objectives, study.directions,
                     {k: label(study, k) for k in study.objectives},
                     {k: unit(study, k) for k in trials.columns}, paths["html"])
    plot_hypervolume(study, paths["hypervolume"])
    paths.update(study.settings.kind.write_reports(study, trials))
    return paths
