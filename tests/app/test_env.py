"""``wsharbor.app.env``: the supervisor hands workers their environment without
importing the worker (and with it the asyncio layer)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from wsharbor.app import env, supervisor, worker


def test_importing_the_supervisor_does_not_load_the_worker_or_asyncio() -> None:
    code = textwrap.dedent(
        """
        import sys
        import wsharbor.app.supervisor
        print(" ".join(sorted(sys.modules)))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert "wsharbor.app.supervisor" in loaded and "wsharbor.app.env" in loaded
    assert "wsharbor.app.worker" not in loaded
    assert "wsharbor.asyncio" not in loaded
    assert "asyncio" not in loaded, sorted(m for m in loaded if m.startswith("asyncio"))


def test_both_sides_use_the_same_names() -> None:
    names = {env.ENV_CONFIG, env.ENV_FD, env.ENV_READY_FD}
    assert len(names) == 3
    for name in ("ENV_CONFIG", "ENV_FD", "ENV_READY_FD"):
        assert getattr(supervisor, name) is getattr(env, name)
        assert getattr(worker, name) is getattr(env, name)
