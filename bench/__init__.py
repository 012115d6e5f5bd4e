"""Benchmarks: ``python -m bench.run`` (``make bench``) writes BENCHMARKS.md.

Every benchmark starts its own private redis-server and real worker processes, repeats
each measurement at least three times, and reports medians with min-max, as ratios
against a baseline measured in the same run (the machine is shared and noisy).
"""
