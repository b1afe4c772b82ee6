"""Adaptation strategies: which parameters of a backbone train, and how."""
