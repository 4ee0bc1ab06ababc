"""Measurement tools (layer 5): ``wsharbor bench compression`` and ``wsharbor bench memory``.

- :mod:`wsharbor.bench.compression`: memory, compressed size and time of
  permessage-deflate settings for a corpus of messages (the deployment guide's
  table), as a function (:func:`~wsharbor.bench.compression.benchmark`) and a
  command;
- :mod:`wsharbor.bench.memory`: memory per connection on real connections, beside
  websockets when it is installed;
- :mod:`wsharbor.bench.corpus`: loading corpora, and the bundled sample.
- :mod:`wsharbor.bench.console`: what the commands share on the console (usage
  errors, the argument parser, the progress bar, the table renderer).

Submodules are imported on use; this package imports nothing.
"""

from __future__ import annotations

__all__: list[str] = []
