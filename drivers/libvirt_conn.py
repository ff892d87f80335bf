"""Connections of the real driver to each host's libvirtd, robust to faults.

One :class:`Connections` holds a ``virConnect`` per host and hides three facts of
life in a lab where hosts go down, links are cut and libvirtd is restarted:

* **A dead connection stays dead.** After libvirtd restarted, or after the keepalive
  declared the peer gone, every call on the old connection fails. :meth:`Connections.call`
  notices (``isAlive()`` is false after the error), opens the connection again once and
  repeats the call; if the host cannot be reached it raises :class:`HostUnreachable`.
* **Calls must not hang.** Every connection sends libvirt keepalives (``setKeepAlive``,
  interval and count from the scenario's policy): a peer that stays silent for
  ``interval * (count + 1)`` seconds (30 s by default) closes the connection and the
  call in flight fails. Before opening a connection, the host's libvirt port is probed
  with a plain TCP connect bounded by ``connect_timeout`` (libvirt's own connect would
  wait for the kernel's SYN retries, minutes, when the host's link is down). After a
  failed open the host is reported unreachable without retrying for ``retry_after``
  seconds, so a 0.5 s poll does not pay the probe each time. Measured in the lab: a
  call on a connection to a host whose link went down fails once the keepalive gives up
  (33 s with keepalive 5 s x 5 and a 3 s probe; 6 s with 1 s x 2), the next ones at
  once; a stopped libvirtd is refused at once (its socket closes, the probe is refused).
* **Events need an event loop.** Keepalives and domain events only work when a libvirt
  event implementation was registered *before* the connection was opened and something
  runs it: :func:`ensure_event_loop` registers the default one and runs it in a daemon
  thread, once per process. Every connection subscribes to ``JOB_COMPLETED``; the
  source's event is the only place the statistics of a post-copy migration survive.

Every error text this module makes names a URI without its query string or user part
(:func:`redact_uris`): a TLS lab's URI carries ``?pkipath=<the client key's directory>``,
and errors end up in ``migrations.csv``.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import libvirt

from livemig.core.errors import HypervisorUnavailable

T = TypeVar("T")

#: Default libvirtd ports by URI transport; other transports are not probed.
_PORTS = {"tcp": 16509, "tls": 16514, "ssh": 22, "libssh": 22, "libssh2": 22}

_loop_lock = threading.Lock()
_loop_started = False


HostUnreachable = HypervisorUnavailable
"""A host's libvirtd cannot be reached (host down, link down, libvirtd stopped): Nova's
``HypervisorUnavailable``, as the simulator raises it."""


def ensure_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once).

    Connections opened before this call get neither keepalives nor events.
    """
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


_URI = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^\s'\"/?#@]*@)?(?P<rest>[^\s'\"?#]*)"
    r"(?:[?#][^\s'\"]*)?"
)


def redact_uris(text: str) -> str:
    """``text`` with every URI's query, fragment and user part removed.

    >>> redact_uris("cannot connect to qemu+tls://198.18.0.11/system?pkipath=/var/tmp/p "
    ...             "(refused)")
    'cannot connect to qemu+tls://198.18.0.11/system (refused)'
    >>> redact_uris("'qemu+ssh://admin:pw@kvm1/system?keyfile=/root/.ssh/id' failed")
    "'qemu+ssh://kvm1/system' failed"
    >>> redact_uris("Domain not found: no domain with matching name 'vm1'")
    "Domain not found: no domain with matching name 'vm1'"
    """
    return _URI.sub(r"\g<scheme>\g<rest>", text)


def probe_address(uri: str) -> tuple[str, int] | None:
    """The (host, port) to probe for a remote libvirt URI, or None if not remote.

    >>> probe_address("qemu+tcp://198.18.0.11/system")
    ('198.18.0.11', 16509)
    >>> probe_address("qemu+tls://kvm1:16600/system")
    ('kvm1', 16600)
    >>> probe_address("qemu:///system") is None
    True
    """
    parts = urlsplit(uri)
    transport = parts.scheme.partition("+")[2]
    if not parts.hostname or transport not in _PORTS:
        return None
    return parts.hostname, parts.port or _PORTS[transport]


JobCompleted = Callable[[str, str, dict[str, Any]], None]  # (host, domain name, stats)


class Connections:
    """Lazily (re)opened libvirt connections, one per host."""

    def __init__(
        self,
        uris: dict[str, str],
        *,
        keepalive_interval: float = 5.0,
        keepalive_count: int = 5,
        connect_timeout: float = 1.5,
        retry_after: float = 5.0,
        on_job_completed: JobCompleted | None = None,
    ) -> None:
        ensure_event_loop()
        self._uris = dict(uris)
        self._interval = max(1, round(keepalive_interval))
        self._count = max(1, keepalive_count)
        self._connect_timeout = connect_timeout
        self._retry_after = retry_after
        self._on_job_completed = on_job_completed
        self._conns: dict[str, libvirt.virConnect] = {}
        self._failed: dict[str, tuple[float, str]] = {}  # host -> (monotonic time, reason)
        self._lock = threading.RLock()

    def hosts(self) -> list[str]:
        return list(self._uris)

    def get(self, host: str) -> libvirt.virConnect:
        """An open connection to ``host``; ``KeyError`` for an unknown host,
        :class:`HostUnreachable` when it cannot be reached now."""
        if host not in self._uris:
            raise KeyError(host)
        with self._lock:
            conn = self._conns.get(host)
            if conn is not None and _alive(conn):
                return conn
            return self._open(host, "connection closed" if conn is not None else "not connected")

    def reachable(self, host: str) -> bool:
        try:
            self.get(host)
        except HostUnreachable:
            return False
        return True

    def forget_failure(self, host: str) -> None:
        """Try ``host`` again at the next call (it was just brought back)."""
        with self._lock:
            self._failed.pop(host, None)

    def call(self, host: str, fn: Callable[[libvirt.virConnect], T]) -> T:
        """``fn(connection)``; once more on a fresh connection if the first one died."""
        conn = self.get(host)
        try:
            return fn(conn)
        except libvirt.libvirtError as exc:
            if _alive(conn):
                raise  # a real answer (no such domain, operation invalid, ...)
            with self._lock:
                if self._conns.get(host) is conn:
                    self._drop(host)
                fresh = self._open(host, str(exc))
        try:
            return fn(fresh)
        except libvirt.libvirtError as exc:
            if _alive(fresh):
                raise
            with self._lock:
                self._drop(host)
                self._failed[host] = (time.monotonic(), _one_line(str(exc)))
            raise HostUnreachable(host=host, reason=_one_line(str(exc))) from exc

    def _open(self, host: str, why: str) -> libvirt.virConnect:
        failed = self._failed.get(host)
        if failed is not None and time.monotonic() - failed[0] < self._retry_after:
            raise HostUnreachable(host=host, reason=failed[1])
        self._drop(host)
        uri = self._uris[host]
        try:
            address = probe_address(uri)
            if address is not None:
                with socket.create_connection(address, timeout=self._connect_timeout):
                    pass
            conn = libvirt.open(uri)
        except (OSError, libvirt.libvirtError) as exc:
            reason = (f"cannot connect to {redact_uris(uri)} ({_one_line(why)}): "
                      f"{_one_line(str(exc)) or type(exc).__name__}")
            self._failed[host] = (time.monotonic(), reason)
            raise HostUnreachable(host=host, reason=reason) from exc
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(self._interval, self._count)
        if self._on_job_completed is not None:
            callback = self._on_job_completed

            def job_completed(_conn: Any, dom: Any, params: dict[str, Any], _opaque: Any) -> None:
                callback(host, dom.name(), dict(params))

            with contextlib.suppress(libvirt.libvirtError):
                conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, job_completed, None
                )
        self._conns[host] = conn
        self._failed.pop(host, None)
        return conn

    def _drop(self, host: str) -> None:
        conn = self._conns.pop(host, None)
        if conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

    def close(self) -> None:
        with self._lock:
            for host in list(self._conns):
                self._drop(host)


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _one_line(text: str) -> str:
    """One line, URIs redacted: the form of every error text this module makes."""
    return redact_uris(" ".join(text.split()))
