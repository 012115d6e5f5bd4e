"""Network namespaces for tests that need several hosts: made and torn down by the test.

``Network.create(hosts)`` makes one namespace per host, named ``ripmap-t-<pid>-<host>``
(unique per test process), the first host (the hub) holding a bridge that every other
host's veth pair plugs into, with addresses from a private /24 that exists only inside
these namespaces: no interface or route is ever added to the caller's namespace, no
namespace gets a default route, so nothing sent inside can leave them. Commands run in a
host with ``exec_prefix(host)`` (``ip netns exec``); ``link_down``/``link_up`` pull and
plug a host's cable (its port on the bridge); ``destroy`` kills what still runs inside and
deletes the namespaces (their veths and bridge go with them).

``clean_stale()`` removes namespaces with this prefix left by a test process that died
(its pid no longer runs), with whatever was still running inside them.
``unavailable()`` says why namespaces cannot be made here (not root, no CAP_NET_ADMIN,
no iproute2, no veth or bridge support), or None.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time

PREFIX = "ripmap-t-"
SUBNET = "10.213.7"  # 10.213.7.0/24, only ever inside the namespaces made here
HUB_ADDRESS = 1  # the hub's address on the bridge; other hosts get 11, 12, ...
BRIDGE = "br0"
HOST_IF = "eth0"  # each non-hub host's end of its veth pair


class Unavailable(RuntimeError):
    """Namespaces (or veth pairs, or bridges) cannot be made here; the message says why."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; raise with its stderr when it fails and ``check``."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, ["ip", *args], done.stdout,
                                            done.stderr)
    return done


def _why(exc: subprocess.CalledProcessError) -> str:
    return f"`{' '.join(exc.cmd)}` failed: {(exc.stderr or '').strip() or exc.returncode}"


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2 is not installed)"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        ip("netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        return _why(exc) + " (namespaces need root or CAP_NET_ADMIN + CAP_SYS_ADMIN)"
    except OSError as exc:
        return f"`ip netns add` failed: {exc}"
    try:
        ip("-n", probe, "link", "add", BRIDGE, "type", "bridge")
        ip("-n", probe, "link", "add", "pa", "type", "veth", "peer", "name", "pb")
    except subprocess.CalledProcessError as exc:
        return _why(exc) + " (no bridge or veth support in this kernel)"
    finally:
        ip("netns", "del", probe, check=False)
    return None


def namespaces() -> list[str]:
    """Every network namespace's name."""
    out = ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def pids(namespace: str) -> list[int]:
    """The processes running in ``namespace``."""
    out = ip("netns", "pids", namespace, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_inside(namespace: str) -> None:
    """SIGKILL every process still running in ``namespace`` (only ever one of ours)."""
    for pid in pids(namespace):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pids(namespace) and time.monotonic() < deadline:
        time.sleep(0.05)


def delete(namespace: str) -> None:
    """Kill what runs inside ``namespace`` and delete it (its interfaces go with it)."""
    _kill_inside(namespace)
    ip("netns", "del", namespace, check=False)


def clean_stale() -> list[str]:
    """Delete the namespaces a crashed test run left (its pid is gone); returns them."""
    pattern = re.compile(rf"^{re.escape(PREFIX)}(\d+)-")
    stale = [ns for ns in namespaces()
             if (m := pattern.match(ns)) and int(m.group(1)) != os.getpid()
             and not _alive(int(m.group(1)))]
    for ns in stale:
        delete(ns)
    return stale


class Network:
    """Hosts in namespaces of their own, joined by a bridge in the first (the hub)."""

    def __init__(self, hosts: list[str]) -> None:
        if len(hosts) < 2 or len(set(hosts)) != len(hosts):
            raise ValueError("need at least two distinct host names")
        self.hosts = list(hosts)
        self.hub = hosts[0]
        self.made: list[str] = []

    def namespace(self, host: str) -> str:
        return f"{PREFIX}{os.getpid()}-{host}"

    def address(self, host: str) -> str:
        """The host's address on the bridge."""
        return f"{SUBNET}.{HUB_ADDRESS if host == self.hub else 10 + self.hosts.index(host)}"

    def port(self, host: str) -> str:
        """The name of ``host``'s port on the bridge (in the hub's namespace)."""
        return f"p-{self.hosts.index(host)}-{host}"[:15]

    def exec_prefix(self, host: str) -> list[str]:
        """Prefix a command line with this to run it in ``host``'s namespace."""
        return ["ip", "netns", "exec", self.namespace(host)]

    @classmethod
    def create(cls, hosts: list[str]) -> Network:
        """Make the namespaces and links; everything made is removed if a step fails."""
        net = cls(hosts)
        try:
            net._build()
        except subprocess.CalledProcessError as exc:
            net.destroy()
            raise Unavailable(_why(exc)) from exc
        except BaseException:
            net.destroy()
            raise
        return net

    def _build(self) -> None:
        hub = self.namespace(self.hub)
        for host in self.hosts:
            ns = self.namespace(host)
            ip("netns", "add", ns)
            self.made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", hub, "link", "add", BRIDGE, "type", "bridge", "stp_state", "0",
           "forward_delay", "0")
        ip("-n", hub, "addr", "add", f"{self.address(self.hub)}/24", "dev", BRIDGE)
        ip("-n", hub, "link", "set", BRIDGE, "up")
        for host in self.hosts[1:]:
            ns = self.namespace(host)
            # made straight inside the two namespaces: never visible in the caller's
            ip("link", "add", HOST_IF, "netns", ns, "type", "veth",
               "peer", "name", self.port(host), "netns", hub)
            ip("-n", hub, "link", "set", self.port(host), "master", BRIDGE)
            ip("-n", hub, "link", "set", self.port(host), "up")
            ip("-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", HOST_IF)
            ip("-n", ns, "link", "set", HOST_IF, "up")

    def link_down(self, host: str) -> None:
        """Pull ``host``'s cable: its bridge port goes down, so nothing passes either way
        (its own end loses carrier; its sockets stay open, as on a real partition)."""
        ip("-n", self.namespace(self.hub), "link", "set", self.port(host), "down")

    def link_up(self, host: str) -> None:
        """Plug ``host``'s cable back in."""
        ip("-n", self.namespace(self.hub), "link", "set", self.port(host), "up")

    def carrier(self, host: str) -> bool:
        """Whether ``host``'s own interface sees the link up."""
        out = ip("-n", self.namespace(host), "-o", "link", "show", HOST_IF).stdout
        return "LOWER_UP" in out

    def destroy(self) -> None:
        """Kill whatever still runs in the namespaces and delete them."""
        for ns in reversed(self.made):
            delete(ns)
        self.made.clear()
