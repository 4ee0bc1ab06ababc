"""The environment the supervisor hands to each worker process it spawns.

The supervisor (:mod:`.supervisor`) starts every worker as ``python -m
wsharbor.app.worker`` with these variables set; the worker (:mod:`.worker`)
reads them and removes them from its environment, so that the application's
own subprocesses don't inherit them. Both import this module, so that the
supervisor doesn't import the worker, and with it the asyncio layer, for three
names.
"""

from __future__ import annotations

__all__ = ["ENV_BALANCE", "ENV_CONFIG", "ENV_FD", "ENV_READY_FD", "EXIT_RECYCLED"]

#: The worker's :class:`~wsharbor.app.config.Config`, as ``Config.to_json()``.
ENV_CONFIG = "_WSHARBOR_WORKER_CONFIG"
#: The file descriptor of the listening socket, inherited by the worker.
ENV_FD = "_WSHARBOR_WORKER_FD"
#: The file descriptor of the pipe on which the worker reports it is ready.
ENV_READY_FD = "_WSHARBOR_WORKER_READY_FD"
#: ``FD:SLOT``: the connection scoreboard's file descriptor and the worker's slot
#: in it (see :mod:`.balance`).
ENV_BALANCE = "_WSHARBOR_WORKER_BALANCE"

#: The exit status of a worker that retired after ``--limit-max-requests``
#: connections: the supervisor replaces it at once, and it is not a crash.
EXIT_RECYCLED = 4
