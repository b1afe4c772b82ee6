"""Backbones: the adapter contract, the classifier wrapper and the built-in families."""
