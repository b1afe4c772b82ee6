"""Importers of public chest X-ray collections: published layout -> manifest."""
