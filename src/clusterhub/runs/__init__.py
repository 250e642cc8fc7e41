"""Notebook runs: a notebook executed with papermill as a Slurm batch job under the user's own identity.

params.py checks and types the parameters and expands a sweep; job.py checks a run with the spawner's own rules
and writes its batch script; states.py reads squeue and sacct into the run's state, efficiency and failing cell.
"""
