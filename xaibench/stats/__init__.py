"""Statistics for reporting benchmark results: confidence intervals and tests."""
