"""Datasets: the sample contract, patient-level splits and the built-in sources."""
