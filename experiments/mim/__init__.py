"""experiments/mim as a package: its scripts run as `python -m experiments.mim.SCRIPT`."""
