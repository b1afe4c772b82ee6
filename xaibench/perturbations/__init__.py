"""Region perturbations: remove the information inside a region mask."""
