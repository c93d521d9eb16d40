"""Inference, separate from the models: volume translation, batches over folders, attribution, generation."""
