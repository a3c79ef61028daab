"""Recovering from and understanding a multiplier's error: approximation-aware retraining
through the product table (``retraining``) and the analysis of where the error meets the
network's operands and features (``analysis``).

Nothing is re-exported here: import the modules (both need PyTorch or onnxruntime)."""
