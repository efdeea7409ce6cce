"""experiments/simclr as a package: its scripts run as `python -m experiments.simclr.SCRIPT`."""
