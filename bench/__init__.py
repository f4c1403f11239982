"""Benchmarks of sqla_boss, run by hand (``python -m bench.<name>``); numbers, never assertions."""
