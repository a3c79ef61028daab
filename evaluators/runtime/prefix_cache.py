"""Prefix reuse: exact reuse, across evaluations, of what a network computes before a table layer.

The tensors a graph holds just before its k-th table layer depend only on the images and on the
tables of the k layers before it. Trials of a layer-wise search often differ only in late
layers, so for each image batch the cache keeps, at every table-layer boundary, the tensors the
rest of the graph reads (skip tensors of residual networks included), keyed by the hashes of the
tables before that boundary. An evaluation resumes from the longest cached prefix and computes
only the rest: the outputs are exactly those of a full run.

Memory is bounded by bytes, least recently used snapshots first, with one rule against scans:
a snapshot is evicted only for one of a later evaluation. When the budget is spent on the
current evaluation's snapshots, later image batches' snapshots are not kept, so a budget
smaller than one evaluation keeps the first image batches for the next evaluation (plain LRU
would evict each batch just before the next evaluation needs it, and never hit).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from types import ModuleType

import numpy as np

from accel.batch import split_rows
from evaluators.runtime.approx_runner import run_each
from evaluators.runtime.layer_tables import Assignment, layer_table
from evaluators.runtime.ops import TABLE_OPS
from evaluators.runtime.qgraph import QGraph

Tensors = dict[str, np.ndarray]
Key = tuple[Hashable, int, tuple[str, ...]]
"""(image batch, table layers before the boundary, their tables' hashes in graph order)"""


class PrefixCache:
    """Snapshots of one graph's tensors at table-layer boundaries, at most ``budget`` bytes
    (0: nothing is kept). Counters say how much work it saved (``stats``)."""

    def __init__(self, graph: QGraph, budget: int) -> None:
        if budget < 0:
            raise ValueError(f"prefix cache budget must be >= 0 bytes, got {budget}")
        self.graph, self.budget = graph, budget
        self.positions = [i for i, n in enumerate(graph.nodes) if n.op in TABLE_OPS]
        self._depth = {p: k for k, p in enumerate(self.positions)}
        # key -> (snapshot, bytes, evaluation that last used it), least recently used first
        self._entries: OrderedDict[Key, tuple[Tensors, int, int]] = OrderedDict()
        self._evaluation = 0
        self.bytes = self.lookups = self.hits = self.skipped = self.layers = self.evictions = 0

    def __getstate__(self) -> dict:
        """Pickled (to a Ray worker) without its snapshots: they belong to one process."""
        return dict(self.__dict__, _entries=OrderedDict(), bytes=0)

    def run(self, batches: Iterable[tuple[Hashable, Tensors]], assignments: Sequence[Assignment],
            kernels: ModuleType) -> list[list[Tensors]]:
        """One evaluation: for each image batch ``(name, feeds)`` (equal names must mean equal
        feeds), the graph's outputs under each assignment, each resumed from its longest cached
        prefix; assignments resuming at the same boundary share one batched pass."""
        self._evaluation += 1
        hashes = [tuple(layer_table(a, self.graph.nodes[p].name).sha256 for p in self.positions)
                  for a in assignments]
        return [self._run_batch(images, feeds, assignments, hashes, kernels)
                for images, feeds in batches]

    def _run_batch(self, images: Hashable, feeds: Tensors, assignments: Sequence[Assignment],
                   hashes: list[tuple[str, ...]], kernels: ModuleType) -> list[Tensors]:
        """One image batch: the assignments grouped by the boundary they resume from."""
        found = [self._longest(images, h) for h in hashes]
        groups: dict[int, list[int]] = {}
        for i, (depth, _) in enumerate(found):
            groups.setdefault(depth, []).append(i)
        outputs: list[Tensors] = [{}] * len(assignments)
        for depth, members in groups.items():
            keep = self._keeper(images, [hashes[i] for i in members])
            start = self.positions[depth] if depth else 0
            fed = [found[i][1] if depth else feeds for i in members]
            results = run_each(self.graph, fed, [assignments[i] for i in members], kernels,
                               start=start, snapshot=keep)
            for i, result in zip(members, results):
                outputs[i] = result
        return outputs

    def _longest(self, images: Hashable, hashes: tuple[str, ...]) -> tuple[int, Tensors | None]:
        """(table layers before the longest cached boundary, its snapshot); (0, None) if none.
        The shallower snapshots of the same prefix count as used too."""
        self.lookups += 1
        self.layers += len(hashes)
        for depth in range(len(hashes) - 1, 0, -1):
            if (images, depth, hashes[:depth]) in self._entries:
                self.hits += 1
                self.skipped += depth
                for shallower in range(1, depth + 1):
                    self._touch((images, shallower, hashes[:shallower]))
                return depth, self._entries[(images, depth, hashes[:depth])][0]
        return 0, None

    def _touch(self, key: Key) -> None:
        if key in self._entries:
            snapshot, size, _ = self._entries[key]
            self._entries[key] = (snapshot, size, self._evaluation)
            self._entries.move_to_end(key)

    def _keeper(self, images: Hashable, hashes: list[tuple[str, ...]]) -> Callable:
        """The runner's snapshot callback for assignments run together (each one's part of
        the stacked tensors is copied, so an entry holds only its own bytes)."""

        def keep(position: int, tensors: Tensors) -> None:
            depth = self._depth[position]
            if depth == 0:
                return  # nothing multiplied yet
            if len(hashes) > 1:
                parts = {name: split_rows(v, len(hashes)) for name, v in tensors.items()}
                snapshots = [{name: parts[name][i].copy() for name in parts}
                             for i in range(len(hashes))]
            else:
                snapshots = [tensors]
            for h, snapshot in zip(hashes, snapshots):
                self._put((images, depth, h[:depth]), snapshot)

        return keep

    def _put(self, key: Key, snapshot: Tensors) -> None:
        """Keep a snapshot, evicting the least recently used ones of earlier evaluations to
        make room; without enough of those, the snapshot is not kept."""
        size = sum(v.nbytes for v in snapshot.values())
        if key in self._entries:
            return
        victims, freed = [], 0
        for old, (_, old_size, evaluation) in self._entries.items():
            if self.bytes - freed + size <= self.budget or evaluation == self._evaluation:
                break
            victims.append(old)
            freed += old_size
        if self.bytes - freed + size > self.budget:
            return
        for old in victims:
            del self._entries[old]
        self.bytes += size - freed
        self.evictions += len(victims)
        self._entries[key] = (snapshot, size, self._evaluation)

    def stats(self) -> dict:
        """lookups (one per assignment and image batch), hits (a prefix of at least one table
        layer reused), table layers skipped out of the total looked up, bytes and snapshots
        held, evictions, and the hit rate."""
        return {"lookups": self.lookups, "hits": self.hits, "layers_skipped": self.skipped,
                "layers_total": self.layers, "bytes": self.bytes, "entries": len(self._entries),
                "evictions": self.evictions,
                "hit_rate": self.hits / self.lookups if self.lookups else 0.0}
