"""experiments/benchmarks as a package: its scripts run as `python -m experiments.benchmarks.SCRIPT`."""
