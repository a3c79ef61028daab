"""ONNX models written and transformed: approximate models whose nodes carry their multipliers
(``approximate``), the integer-only graph (``integer_graph``), EMGAxO's sweep and batch
evaluation (``sweep``), and the one ModelProto editing helper every transformation uses
(``editing``: transformations in the qonnx style, ``apply(model) -> (new model, changed)``).

Nothing is re-exported here: import the modules."""
