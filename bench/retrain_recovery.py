"""Benchmark: how much of the accuracy an approximate multiplier loses retraining wins back.

    python bench/retrain_recovery.py runs/STUDY [--from runs/OTHER ...] [--cases 3]
                                     [--epochs 1,3] [--gradients ste,table] [--train-size N]
                                     [--own N] [--drops 0.03,0.3] [--csv FILE] [--plot PNG]
    python bench/retrain_recovery.py --tables-from A.csv B.csv [--plot PNG]

The cases are designs whose accuracy drop on the study's network lies in ``--drops`` (by
default at least 3 and at most 30 points): ``--own`` (default ``--cases``) of the study's own
measured designs and ``--cases`` from each ``--from`` study (their multipliers applied to this
study's network: AppAxO configurations, generated circuits), chosen evenly over the range of
their drops. Each case is fine-tuned from the
study's int8 model for every number of ``--epochs`` (separate runs, each with its own one-cycle
schedule) and every gradient mode, scored with dse's evaluator on the study's test images,
and reported as the share of the lost accuracy it recovered:
``(after - before) / (exact - before)``. Prints a markdown table and the seconds per epoch.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
from common import cpu_name, use_shared_data

from circuits.product_table import ProductTable
from dse.assembly import study_data
from dse.designs import design_tables, measured
from dse.reports.figures import pyplot
from dse.study import load_study
from evaluators.recovery.retraining import RetrainSettings, retrain
from evaluators.runtime.approx_network import ApproxNetworkEvaluator


def candidates(source: str, network: ApproxNetworkEvaluator, exact: float, count: int,
               drops: tuple[float, float], rescore: bool) -> list[tuple[str, str, object, float]]:
    """(name, kind, tables, accuracy) of ``count`` designs of ``source`` whose drop on this
    network lies in ``drops`` (fractions), spread over that range. ``rescore``: the designs come from
    another study (their stored accuracy is of another network)."""
    study = load_study(source)
    rows = measured(study).drop_duplicates("design")
    rows = rows[rows["role"] != "baseline"]
    kind = {"appaxo36": "AppAxO", "xpat": "generated circuit",
            "layerwise": "layer-wise"}[study.settings.space.type]
    if not rescore:
        drop = exact - rows["accuracy"]
        rows = rows[(drop >= drops[0]) & (drop <= drops[1])].sort_values("accuracy")
        picked = rows.iloc[np.linspace(0, len(rows) - 1, min(count, len(rows))).round().astype(int)]
        return [(r["design"], kind, design_tables(study, r), float(r["accuracy"]))
                for _, r in picked.drop_duplicates("design").iterrows()]
    found = []
    for _, row in rows.sample(frac=1.0, random_state=0).iterrows():
        tables = design_tables(study, row)
        accuracy = network.evaluate(tables)["accuracy"]
        if drops[0] <= exact - accuracy <= drops[1]:
            found.append((row["design"], kind, tables, accuracy))
        if len(found) >= 4 * count:
            break
    found.sort(key=lambda c: c[3])
    index = np.linspace(0, len(found) - 1, min(count, len(found))).round().astype(int)
    return [found[i] for i in sorted(set(index))]


def measure(args: argparse.Namespace) -> tuple[pd.DataFrame, str]:
    """Retrain every case; the rows (accuracy after each run and the share recovered) and a
    line saying on what and how fast."""
    study = load_study(args.study)
    data = study_data(study, log=lambda s: None)
    inputs, labels = data.train_inputs[: args.train_size], data.train_labels[: args.train_size]
    network = ApproxNetworkEvaluator(data.int8_onnx, data.test_inputs, data.test_labels,
                                     classes=data.classes)
    exact = network.evaluate(ProductTable.exact(signed=True))["accuracy"]
    low, high = (float(d) for d in args.drops.split(","))
    own = args.cases if args.own is None else args.own
    cases = candidates(args.study, network, exact, own, (low, high), rescore=False) if own else []
    for source in args.sources:
        cases += candidates(source, network, exact, args.cases, (low, high), rescore=True)
    rows, seconds = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, kind, tables, before in cases:
            row = {"network": study.name, "design": name, "kind": kind, "exact": exact,
                   "before": before}
            for gradient in args.gradients.split(","):
                for epochs in (int(e) for e in args.epochs.split(",")):
                    start = time.perf_counter()
                    model = retrain(data.int8_onnx, tables, inputs, labels,
                                    RetrainSettings(epochs=epochs, gradient=gradient))
                    seconds.setdefault(gradient, []).append((time.perf_counter() - start) / epochs)
                    path = Path(tmp) / "retrained.onnx"
                    onnx.save(model, str(path))
                    after = ApproxNetworkEvaluator(path, data.test_inputs, data.test_labels,
                                                   classes=data.classes).evaluate(tables)["accuracy"]
                    row[f"{gradient} {epochs} ep"] = after
                    row[f"{gradient} {epochs} ep recovered"] = (after - before) / (exact - before)
                    print(f"{name} {gradient} {epochs} epochs: {before:.4f} -> {after:.4f}",
                          flush=True)
            rows.append(row)
    speed = ", ".join(f"{g}: {np.mean(v):.1f} s per epoch" for g, v in seconds.items())
    return pd.DataFrame(rows), (f"{study.name}: {len(inputs)} training images, "
                                f"{len(data.test_labels)} test images; {speed} ({cpu_name()})")


def print_table(frame: pd.DataFrame) -> None:
    """The rows as a markdown table, and how many met the 80%-within-3-epochs goal."""
    runs = [c for c in frame.columns if c.endswith(" ep")]
    print("| network | design | kind | exact | before | " + " | ".join(runs) + " |")
    print("|---" * (5 + len(runs)) + "|")
    for _, r in frame.iterrows():
        cells = [f"{r[c]:.4f} ({r[c + ' recovered']:.0%})" for c in runs]
        print(f"| {r['network']} | {r['design']} | {r['kind']} | {r['exact']:.4f} | "
              f"{r['before']:.4f} | " + " | ".join(cells) + " |")
    at_three = [c for c in frame.columns if c.endswith("3 ep recovered")]
    if at_three:
        best = frame[at_three].max(axis=1)
        print(f"recovered at least 80% within 3 epochs (best gradient): {(best >= 0.8).sum()} of "
              f"{len(frame)}")


def _run_label(column: str) -> str:
    """``ste 3 ep`` -> ``ste, 3 epochs``."""
    gradient, epochs, _ = column.split()
    return f"{gradient}, {epochs} epoch{'' if epochs == '1' else 's'}"


def plot(frame: pd.DataFrame, path: str) -> None:
    """Accuracy before and after each run, per case, against the exact multiplier's."""
    plt = pyplot()
    runs = [c for c in frame.columns if c.endswith(" ep")]
    networks = list(dict.fromkeys(frame["network"]))
    fig, axes = plt.subplots(len(networks), 1, figsize=(11, 3.6 * len(networks)), squeeze=False)
    width = 0.8 / (len(runs) + 1)
    for ax, net in zip(axes[:, 0], networks):
        part = frame[frame["network"] == net].reset_index(drop=True)
        x = np.arange(len(part))
        for i, column in enumerate(["before", *runs]):
            ax.bar(x + (i - len(runs) / 2) * width, 100 * part[column], width,
                   label="before retraining" if column == "before" else _run_label(column))
        ax.scatter(x, 100 * part["exact"], marker="_", s=900, color="black", zorder=3,
                   label="exact multiplier")
        ax.set_xticks(x, [f"{d}\n({k})" for d, k in zip(part["design"], part["kind"])], fontsize=8)
        ax.set_ylabel("test accuracy [%]")
        ax.set_ylim(max(0.0, 100 * part["before"].min() - 5), 100)
        ax.set_title(f"{net}: accuracy before and after retraining through the design's table")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", help="a study folder (not with --tables-from)")
    parser.add_argument("--from", dest="sources", action="append", default=[],
                        help="another study whose designs are applied to this network")
    parser.add_argument("--cases", type=int, default=3, help="designs per source")
    parser.add_argument("--own", type=int, help="designs of the study itself (default --cases)")
    parser.add_argument("--epochs", default="1,3")
    parser.add_argument("--gradients", default="ste,table")
    parser.add_argument("--train-size", type=int, help="first N training samples (default all)")
    parser.add_argument("--drops", default="0.03,0.3",
                        help="least and most accuracy drop (fractions) of a case")
    parser.add_argument("--csv", help="also write the rows here")
    parser.add_argument("--tables-from", nargs="+", metavar="CSV",
                        help="print (and plot) the rows of earlier runs' --csv files instead")
    parser.add_argument("--plot", help="a PNG of accuracy before and after, per case")
    args = parser.parse_args()
    use_shared_data()
    if args.tables_from:
        frame = pd.concat([pd.read_csv(f) for f in args.tables_from], ignore_index=True)
    else:
        if not args.study:
            parser.error("give a study folder, or --tables-from")
        frame, line = measure(args)
        print(f"# retraining recovery, {line}")
        if args.csv:
            frame.to_csv(args.csv, index=False)
    print_table(frame)
    if args.plot:
        plot(frame, args.plot)


if __name__ == "__main__":
    main()
