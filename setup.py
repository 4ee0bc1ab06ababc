"""Build the optional C accelerator.

The extension is ``optional``: when no compiler is available the build prints a
warning and the package installs with its pure-Python fallback.  Set
``WSHARBOR_REQUIRE_SPEEDUPS=1`` to make a failed build an error (CI does).
"""

import os

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "wsharbor.protocol._speedups",
            sources=["src/wsharbor/protocol/_speedups.c"],
            optional=os.environ.get("WSHARBOR_REQUIRE_SPEEDUPS") != "1",
        )
    ]
)
