"""Segmenters: anatomy masks for radiographs that have none (``xaibench data masks``)."""
