"""The sans-I/O WebSocket protocol core: bytes in, events out; calls in, bytes out.

Nothing in this package does I/O or imports ``asyncio``, ``socket``,
``threading`` or ``signal``: ``tests/test_layers.py`` enforces it.
"""
