"""Echo servers measured by the benchmark, one script per library.

Every script takes the same flags (see :func:`benchmarks.servers._common.parse_args`):
``--host`` (127.0.0.1), ``--port`` (0: the kernel picks one), ``--uvloop`` and
``--max-size``. It binds, prints ``READY <port>`` on its own line on stdout, echoes every
message (binary as binary, text as text) with permessage-deflate disabled, and exits 0 on
SIGTERM or SIGINT.
"""
