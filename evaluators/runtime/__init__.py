"""Executing a quantized network with its multiplications taken from product tables.

The graph IR (``qgraph``: ``QGraph`` of ``node.Node``s, QDQ groups fused on reading by
``qdq``), the op registry (``ops``: every op the runner executes, by family: ``core_ops``,
``qops``, ``integer_ops``, ``fused_ops``, ``approx_ops``), the runner (``approx_runner``),
graph transformations (``transforms``), per-layer tables (``layer_tables``), prefix reuse
(``prefix_cache``), the operands a network multiplies (``workload``) and the resident network
evaluator with its kernel choice (``approx_network``).

Nothing is re-exported here: import the modules (the IR reads ONNX files, the kernels need
numba and PyTorch)."""
