"""Benchmarks: each prints a table and writes JSON under ``bench/results/``.

``python -m bench.run`` is the end-to-end benchmark (``make bench``); it
starts a stack of its own on free ports and measures it next to its floor,
a bare Celery no-op on the same Redis. May import any project package.
"""
