"""Echo servers measured by the benchmark, one script per library.

Every script takes the same flags (see :func:`benchmarks.servers._common.parse_args`):
``--host`` (127.0.0.1), ``--port`` (0: the kernel picks one), ``--uvloop``,
``--max-size``, ``--compression`` and ``--fanout``. It binds, prints ``READY <port>`` on its
own line on stdout, echoes every message (binary as binary, text as text) with
permessage-deflate disabled, and exits 0 on SIGTERM or SIGINT.

``--compression`` negotiates permessage-deflate with the library's own default settings
(whatever a user of the library gets by turning it on; picows has no permessage-deflate
and refuses the flag). ``--fanout`` turns the echo into a chat room: the handler keeps the
set of open connections, and every message received goes to all of them at once, with the
library's broadcast where it has one (websockets' and wsharbor's ``broadcast()``) or a loop
of sends (aiohttp's ``send_str``, picows' ``transport.send``). The reference servers take
neither flag.
"""
