"""Benchmarks of the live parts (`surgescale bench events`, `bench gateway`, `bench controller`,
`bench faults`), and `cleanup`, which leaves nothing of theirs behind in Redis.

Each module has `main(argv) -> int`, prints a human table and, as its last line, one JSON object
with the figures its issue names.
"""
