"""Benchmarks of wsharbor against peer WebSocket servers.

Run ``python -m benchmarks --help`` from the repository root. Each echo server is a small
script in :mod:`benchmarks.servers` started as a subprocess; the load generator
(:mod:`benchmarks.loadgen`) is another subprocess, a raw ``asyncio.Protocol`` under uvloop
that sends pre-built masked frames. Nothing here is imported by the test suite and nothing
here asserts timings.
"""
