"""Scoring a candidate: network quality and hardware cost measured into one metrics dict.

The shared scoring and the AppAxO evaluator (``candidate``: ``ScoredEvaluator``,
``asic_metrics``, ``build_evaluator``), screening on a subset (``screening``), and the
evaluators of the other study kinds: generated circuits (``generated``), layer-wise
assignments (``layerwise``) and firmware variants (``firmware_variants``).

Nothing is re-exported here: import the modules."""
