"""Measurements behind ``medlnkit bench``: training steps, memory, checkpoints, generation, runs.

:mod:`medlnkit.bench` runs them and writes the results; each module here measures one thing inside a
fresh worker process started by :func:`medlnkit.benchmarks.isolation.run_isolated`.
"""
