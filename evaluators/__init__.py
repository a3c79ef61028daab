"""Turning one candidate into measured objectives, in named sub-packages. Each imports only the
ones listed before it (the leaves ``evaluators.errors`` and ``evaluators.classification``
first), so data flows down only:

- ``evaluators.data``: the datasets, one reader per data format behind one interface, and
  preprocessing;
- ``evaluators.runtime``: the quantized graph IR, its op registry and runner, graph
  transformations, per-layer tables, prefix reuse, workloads, the resident network evaluator;
- ``evaluators.networks``: the model zoo, training, a user's ONNX import, quantization,
  onnxruntime's exactness, the prepared (cached) network;
- ``evaluators.onnx``: ONNX models written and transformed (approximate export, integer graph,
  sweeps) and the one ModelProto editing helper;
- ``evaluators.recovery``: approximation-aware retraining and the failure analysis;
- ``evaluators.firmware``: reduced precision and pruning, the FPGA cost model, hls4ml export;
- ``evaluators.scoring``: scored evaluators (network quality and hardware cost), screening and
  the evaluators of the study kinds.
"""
