"""``wsharbor.app.listen``: binding, inherited fds and systemd socket activation.

Real sockets only: TCP on 127.0.0.1 port 0, Unix sockets in short temporary
directories, and a listening socket on fd 3 of a subprocess whose environment
has ``LISTEN_PID`` set to its own pid, as systemd does.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wsharbor.app.config import Config
from wsharbor.app.listen import (
    SD_LISTEN_FDS_START,
    Listener,
    describe,
    open_listener,
    systemd_fd,
)
from wsharbor.exceptions import ConfigError

TIMEOUT = 30.0
SRC = Path(__file__).resolve().parents[2] / "src"


def config(**kwargs: Any) -> Config:
    return Config(app="app:handler", **kwargs)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory with a short path: Unix socket paths are limited to 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="wsh-", dir="/tmp") as directory:
        yield Path(directory)


def ipv6_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def accepts(listener: Listener) -> bool:
    """Whether a client can connect to the listener and be accepted."""
    sock = listener.sock
    with socket.socket(sock.family, socket.SOCK_STREAM) as client:
        client.settimeout(TIMEOUT)
        client.connect(sock.getsockname())
        sock.settimeout(TIMEOUT)
        conn, _ = sock.accept()
        conn.close()
    return True


# systemd_fd(): the LISTEN_PID / LISTEN_FDS rules of sd_listen_fds(3).


def test_systemd_not_activated() -> None:
    environ = {"PATH": "/bin"}
    assert systemd_fd(environ) is None
    assert environ == {"PATH": "/bin"}


def test_systemd_activated_for_this_process() -> None:
    environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "web"}
    assert systemd_fd(environ) == SD_LISTEN_FDS_START == 3
    # Removed, so that children (the workers) don't take the socket for theirs.
    assert environ == {}


def test_systemd_variables_meant_for_another_process() -> None:
    environ = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}
    assert systemd_fd(environ) is None
    assert environ == {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}


def test_systemd_zero_fds() -> None:
    environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "0"}
    assert systemd_fd(environ) is None
    assert environ == {}


def test_systemd_more_than_one_fd() -> None:
    environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2"}
    with pytest.raises(ConfigError) as caught:
        systemd_fd(environ)
    assert str(caught.value) == "LISTEN_FDS=2: wsharbor serves exactly one socket"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"LISTEN_PID": "abc", "LISTEN_FDS": "1"},
            "LISTEN_PID='abc' / LISTEN_FDS='1': must be integers (systemd socket activation)",
        ),
        (
            {"LISTEN_FDS": "1"},
            "LISTEN_PID=None / LISTEN_FDS='1': must be integers (systemd socket activation)",
        ),
        (
            {"LISTEN_PID": "1", "LISTEN_FDS": "one"},
            "LISTEN_PID='1' / LISTEN_FDS='one': must be integers (systemd socket activation)",
        ),
    ],
)
def test_systemd_bad_variables(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        systemd_fd(environ)
    assert str(caught.value) == message


@pytest.mark.parametrize("name", ["uds", "fd", "host", "port"])
def test_systemd_activation_conflicts_with_an_explicit_socket(name: str) -> None:
    environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"}
    with pytest.raises(ConfigError) as caught:
        open_listener(config(explicit=frozenset({name})), environ)
    assert str(caught.value) == (
        f"--{name} conflicts with systemd socket activation (LISTEN_FDS is set)"
    )


ACTIVATED_CHILD = textwrap.dedent(
    """
    import os, sys
    from wsharbor.app.config import Config
    from wsharbor.app.listen import describe, open_listener

    listener = open_listener(Config(app="app:handler"))
    left = sorted(name for name in os.environ if name.startswith("LISTEN_"))
    print(listener.sock.fileno(), describe(listener.sock), ",".join(left) or "-", flush=True)
    conn, _ = listener.sock.accept()
    conn.sendall(b"accepted by " + str(os.getpid()).encode())
    conn.close()
    listener.close()
    """
)


#: What systemd does between fork and exec: the socket on fd 3, LISTEN_PID = our pid.
SYSTEMD_LAUNCHER = textwrap.dedent(
    """
    import os, sys
    fd = int(sys.argv[1])
    os.dup2(fd, 3)
    os.close(fd)
    os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="web")
    os.execv(sys.executable, [sys.executable, "-c", sys.argv[2]])  # same pid
    """
)


def test_systemd_socket_on_fd_3_in_a_real_process() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        child = subprocess.Popen(
            [sys.executable, "-c", SYSTEMD_LAUNCHER, str(server.fileno()), ACTIVATED_CHILD],
            pass_fds=(server.fileno(),),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        try:
            assert child.stdout is not None
            line = child.stdout.readline().split()
            assert line == ["3", f"127.0.0.1:{port}", "-"], child.stderr and child.stderr.read()
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
                client.settimeout(TIMEOUT)
                assert client.recv(100) == f"accepted by {child.pid}".encode()
            assert child.wait(TIMEOUT) == 0
        finally:
            if child.poll() is None:
                child.kill()
            child.communicate(timeout=TIMEOUT)


# Inherited fds: --fd.


def test_fd_listening_socket() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen()
    fd = server.detach()
    listener = open_listener(config(fd=fd))
    try:
        assert listener.sock.fileno() == fd
        assert listener.unlink is None
        assert listener.sock.get_inheritable()
        assert accepts(listener)
    finally:
        listener.close()
    with pytest.raises(OSError) as caught:
        os.fstat(fd)
    assert caught.value.errno == errno.EBADF


def test_fd_not_open() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    os.close(write_fd)
    with pytest.raises(ConfigError) as caught:
        open_listener(config(fd=read_fd))
    assert str(caught.value) == f"--fd {read_fd}: fd {read_fd} is not open"


def test_fd_not_a_socket(tmp_path: Path) -> None:
    with open(tmp_path / "file", "w") as file:
        fd = file.fileno()
        with pytest.raises(ConfigError) as caught:
            open_listener(config(fd=fd))
        assert str(caught.value) == f"--fd {fd}: fd {fd} is not a socket"


@pytest.mark.parametrize(
    ("family", "kind"),
    [
        (socket.AF_INET, socket.SOCK_STREAM),  # bound but not listening
        (socket.AF_INET, socket.SOCK_DGRAM),
        (socket.AF_UNIX, socket.SOCK_STREAM),  # not even bound
    ],
)
def test_fd_not_a_listening_stream_socket(family: int, kind: int) -> None:
    with socket.socket(family, kind) as sock:
        if family == socket.AF_INET:
            sock.bind(("127.0.0.1", 0))
        fd = sock.fileno()
        with pytest.raises(ConfigError) as caught:
            open_listener(config(fd=fd))
        assert str(caught.value) == f"--fd {fd}: fd {fd} is not a listening stream socket"
        # The fd is left alone: it still belongs to its owner.
        assert os.fstat(fd) is not None
        assert sock.fileno() == fd


# Unix sockets: --uds.


def test_uds_binds_and_removes_the_file(short_tmp: Path) -> None:
    path = str(short_tmp / "app.sock")
    listener = open_listener(config(uds=path, backlog=16))
    try:
        assert listener.unlink == path
        assert describe(listener.sock) == f"unix:{path}"
        assert listener.sock.get_inheritable()
        assert accepts(listener)
    finally:
        listener.close()
    assert not os.path.exists(path)
    listener.close()  # twice: the file is already gone, no error


def test_uds_replaces_a_stale_socket_file(short_tmp: Path) -> None:
    path = str(short_tmp / "stale.sock")
    old = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old.bind(path)
    old.close()  # the file stays, nobody listens
    assert os.path.exists(path)
    listener = open_listener(config(uds=path))
    try:
        assert accepts(listener)
    finally:
        listener.close()


def test_uds_another_server_is_listening(short_tmp: Path) -> None:
    path = str(short_tmp / "busy.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(path)
        other.listen()
        with pytest.raises(ConfigError) as caught:
            open_listener(config(uds=path))
        assert str(caught.value) == f"--uds {path}: another server is listening there"
        assert os.path.exists(path)  # not removed from under the other server


def test_uds_exists_and_is_not_a_socket(short_tmp: Path) -> None:
    path = short_tmp / "file.sock"
    path.write_text("data")
    with pytest.raises(ConfigError) as caught:
        open_listener(config(uds=str(path)))
    assert str(caught.value) == f"--uds {path}: exists and is not a socket"
    assert path.read_text() == "data"


def test_uds_cannot_bind(short_tmp: Path) -> None:
    path = str(short_tmp / "missing" / "app.sock")
    with pytest.raises(ConfigError) as caught:
        open_listener(config(uds=path))
    assert str(caught.value) == f"--uds {path}: cannot bind: No such file or directory"


# TCP: --host, --port.


def test_tcp_binds_port_0() -> None:
    listener = open_listener(config(host="127.0.0.1", port=0))
    try:
        host, port = listener.sock.getsockname()
        assert host == "127.0.0.1" and port > 0
        assert describe(listener.sock) == f"127.0.0.1:{port}"
        assert listener.unlink is None
        assert listener.sock.get_inheritable()
        assert listener.sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        assert accepts(listener)
    finally:
        listener.close()


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 on this machine")
def test_tcp_ipv6() -> None:
    listener = open_listener(config(host="::1", port=0))
    try:
        port = listener.sock.getsockname()[1]
        assert listener.sock.family == socket.AF_INET6
        assert listener.sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        assert describe(listener.sock) == f"[::1]:{port}"
        assert accepts(listener)
    finally:
        listener.close()


def test_tcp_port_in_use() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(ConfigError) as caught:
            open_listener(config(host="127.0.0.1", port=port))
        assert str(caught.value) == f"port {port} on 127.0.0.1 is already in use"


def test_tcp_host_cannot_be_resolved() -> None:
    # RFC 6761 section 6.4: "invalid" never resolves.
    with pytest.raises(ConfigError) as caught:
        open_listener(config(host="no-such-host.invalid", port=0))
    assert str(caught.value).startswith("--host no-such-host.invalid: cannot resolve: ")


def test_tcp_host_not_an_address_of_this_machine() -> None:
    # RFC 5737: 192.0.2.0/24 is for documentation, never assigned.
    with pytest.raises(ConfigError) as caught:
        open_listener(config(host="192.0.2.1", port=0))
    assert str(caught.value) == "--host 192.0.2.1: not an address of this machine"


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 on this machine")
def test_tcp_other_bind_error() -> None:
    # Linux refuses a link-local address without a scope id: EINVAL.
    with pytest.raises(ConfigError) as caught:
        open_listener(config(host="fe80::1", port=0))
    assert str(caught.value) == "cannot listen on fe80::1:0: Invalid argument"


PRIVILEGED_CHILD = textwrap.dedent(
    """
    from wsharbor.app.config import Config
    from wsharbor.app.listen import open_listener
    from wsharbor.exceptions import ConfigError

    try:
        open_listener(Config(app="app:handler", host="127.0.0.1", port=1))
    except ConfigError as exc:
        print(exc)
    else:
        print("bound")
    """
)

#: Root may bind any port: drop CAP_NET_BIND_SERVICE (10) from the bounding set
#: (PR_CAPBSET_DROP, 24), then exec, so that the new program runs without it.
DROP_CAPABILITY = textwrap.dedent(
    """
    import ctypes, os, sys
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(24, 10, 0, 0, 0) != 0:
            print("cannot drop CAP_NET_BIND_SERVICE:", os.strerror(ctypes.get_errno()))
            sys.exit(0)
    os.execv(sys.executable, [sys.executable, "-c", sys.argv[1]])
    """
)


def test_tcp_privileged_port() -> None:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as file:
            unprivileged = int(file.read())
    except OSError:
        unprivileged = 1024
    if unprivileged <= 1:
        pytest.skip("every port is unprivileged on this machine")
    result = subprocess.run(
        [sys.executable, "-c", DROP_CAPABILITY, PRIVILEGED_CHILD],
        capture_output=True,
        text=True,
        check=False,
        timeout=TIMEOUT,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    assert result.returncode == 0, result.stderr
    if result.stdout.startswith("cannot drop"):
        pytest.skip(result.stdout.strip())
    assert result.stdout == "port 1 on 127.0.0.1: permission denied\n"


# describe().


def test_describe_unnamed_unix_socket() -> None:
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        assert describe(left) == "unix:(unnamed)"
