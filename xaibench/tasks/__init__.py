"""Tasks: a dataset, a label rule, regions of interest and a default grid."""
