"""Build the optional C accelerators.

The extensions are ``optional``: when no compiler is available the build prints a
warning and the package installs with its pure-Python fallback.  Set
``WSHARBOR_REQUIRE_SPEEDUPS=1`` to make a failed build an error (CI does).
"""

import os

from setuptools import Extension, setup

optional = os.environ.get("WSHARBOR_REQUIRE_SPEEDUPS") != "1"
extensions = [
    Extension(
        "wsharbor.protocol._speedups",
        sources=["src/wsharbor/protocol/_speedups.c"],
        optional=optional,
    )
]
if os.name == "posix":
    # send() on many sockets in one call (broadcast()); POSIX sockets only.
    extensions.append(
        Extension(
            "wsharbor.asyncio._sendeach",
            sources=["src/wsharbor/asyncio/_sendeach.c"],
            optional=optional,
        )
    )

setup(ext_modules=extensions)
