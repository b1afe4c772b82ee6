"""Human-facing outputs beyond the tables: saliency galleries (and, later, the HTML report)."""
