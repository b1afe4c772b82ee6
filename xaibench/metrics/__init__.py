"""Metrics: performance (from predictions) and explanation (from maps, masks, perturbations)."""
