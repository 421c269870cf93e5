"""Benchmarks of chorde against its peers: ``python -m benchmarks [name ...] [--quick]``.

Every module here other than ``harness`` and ``__main__`` is a benchmark exposing
``run(quick: bool) -> list[benchmarks.harness.Result]``; adding one is dropping in a file.
"""
