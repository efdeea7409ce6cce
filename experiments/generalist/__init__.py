"""experiments/generalist as a package: its scripts run as `python -m experiments.generalist.SCRIPT`."""
