"""The network under study: the model zoo (``zoo``: registry architectures), deterministic
training (``training``), a user's ONNX model imported (``model_import``), onnxruntime's static
quantization (``quantization``), whether onnxruntime is exact on this CPU (``ort_exactness``),
and the prepared network, built once and cached (``prepared``).

Nothing is re-exported here: import the modules (most need PyTorch or onnxruntime)."""
