"""Executors: where independent cells run."""
