"""One operation of the quantized graph IR (``evaluators.runtime.qgraph``): the IR's leaf, which
the graph, its readers (QDQ fusion) and its ops build on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Node:
    """One operation: ONNX op type (or a ``dse.*`` fused op), its tensors and attributes."""

    op: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)
