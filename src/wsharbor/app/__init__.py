"""The application server: ``wsharbor run module:handler``.

Layer 4 of wsharbor: it imports the asyncio layer, the protocol layer and the
exceptions, never the other way round. The pieces:

- :mod:`.config`: every setting, from flags or ``WSHARBOR_*`` variables;
- :mod:`.importer`: ``module:attr`` to a handler;
- :mod:`.listen`: the listening socket (bind, ``--fd``, systemd socket activation);
- :mod:`.worker`: one serving process (health, readiness, metrics, access log);
- :mod:`.broker`: the process's pub/sub hub, :func:`hub` for handlers;
- :mod:`.supervisor`: N worker processes sharing the socket, signals, restarts;
- :mod:`.env`: the environment variables the supervisor hands to a worker;
- :mod:`.cli`: the command line.
"""

from __future__ import annotations

from .broker import hub

__all__ = ["hub"]
