"""Benchmarks of the live parts (`surgescale bench gateway`, `surgescale bench controller`).

Each module has `main(argv) -> int`, prints a human table and, as its last line, one JSON object
with the figures its issue names.
"""
