"""Saliency methods: maps of where a model looks, in the raw image grid."""
