"""The real driver's bookkeeping without a lab or libvirt-python: the driver's modules
bound to the fake libvirt (``tests/fakelibvirt``), its connection calls replaced by
scripted answers, so these run in the sim lane.

* A ``migrateToURI`` that returns (with "canceled by client") between the two looks of
  one poll is the job's end as that error says, not "the domain still runs on the
  source" (issue 8: the lab-abort flake under load).
* Error texts never carry a URI's query: a TLS lab's ``?pkipath=`` (issue 8, S3).
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest
from fakelibvirt import libvirt
from fakelibvirt.driver import driver_modules

from livemig.core.errors import MigrationError
from livemig.drivers.base import JobType

_mods = driver_modules()  # the real driver's modules, bound to the fake libvirt
Connections, HostUnreachable = _mods.conn.Connections, _mods.conn.HostUnreachable
DomainInfo, Job, LibvirtDriver = _mods.domains.DomainInfo, _mods.jobs.Job, _mods.real.LibvirtDriver

SECRET_URI = "qemu+tls://198.18.0.12/system?pkipath=/var/tmp/livemig-lab/x/pki/client"
ABORTED = "operation aborted: job 'migration out' canceled by client"


def bare_driver(job: Job, call: Any) -> LibvirtDriver:
    """A driver holding one job of ``vm1``; ``call(host, fn)`` answers its libvirt calls."""
    driver = LibvirtDriver.__new__(LibvirtDriver)
    driver._jobs = {"vm1": job}
    driver._vms = {}
    driver._events_lock = threading.Lock()
    driver._completed = {}
    driver._call = call  # type: ignore[method-assign]
    return driver


def running_on_source() -> DomainInfo:
    return DomainInfo(dom=None, active=True, persistent=True,
                      state=libvirt.VIR_DOMAIN_RUNNING, reason=0)


class ReturnsAfterFirstLook(Job):
    """A job whose ``migrateToURI`` returns with ``ABORTED`` right after the poll's first
    look at ``returned`` (a thread switch at the worst moment: likely under load)."""

    looks = 0

    @property  # type: ignore[override]
    def returned(self) -> bool:
        self.looks += 1
        if self.looks > 1:
            self.error = ABORTED
        return self.looks > 1

    @returned.setter
    def returned(self, _value: bool) -> None:
        pass


def source_without_job(host: str, fn: Any) -> Any:
    """The aborted job is gone from lab1, the guest runs there; nothing on lab2."""
    if host == "lab1":
        return running_on_source(), {"type": libvirt.VIR_DOMAIN_JOB_NONE}
    return None


def test_a_migrate_call_returning_between_two_looks_of_a_poll_is_read_as_its_error() -> None:
    job = ReturnsAfterFirstLook(source="lab1", dest="lab2", started=0.0,
                                thread=threading.Thread(target=print))
    info = bare_driver(job, source_without_job).job_info("vm1")
    # before the fix: FAILED, "migrateToURI returned and the domain still runs on the source"
    assert (info.type, info.error) == (JobType.CANCELLED, ABORTED)


def test_a_migrate_call_returning_while_the_source_is_read_is_seen_at_the_next_poll() -> None:
    job = Job(source="lab1", dest="lab2", started=0.0, thread=threading.Thread(target=print))

    def call(host: str, fn: Any) -> Any:
        if host == "lab1":
            job.error, job.returned = ABORTED, True  # returns while lab1 is being asked
        return source_without_job(host, fn)

    driver = bare_driver(job, call)
    assert driver.job_info("vm1").type is JobType.UNBOUNDED  # decided on what it saw first
    info = driver.job_info("vm1")
    assert (info.type, info.error) == (JobType.CANCELLED, ABORTED)


def test_a_migrate_error_naming_a_tls_uri_is_recorded_without_its_query() -> None:
    class Domain:
        def lookupByName(self, _name: str) -> Domain:  # noqa: N802 - libvirt's name
            return self

        def migrateSetMaxDowntime(self, *_: Any) -> None:  # noqa: N802 - libvirt's name
            pass

        def migrateToURI(self, *_: Any) -> None:  # noqa: N802
            raise libvirt.libvirtError(f"unable to connect to '{SECRET_URI}': refused")

        def abortJob(self) -> None:  # noqa: N802
            raise libvirt.libvirtError(f"cannot reach {SECRET_URI}")

        def close(self) -> None:
            pass

    job = Job(source="lab1", dest="lab2", started=0.0)
    driver = bare_driver(job, lambda host, fn: fn(Domain()) if host == "lab1" else None)
    driver._policy = type("P", (), {"max_downtime": 0.5})()
    driver.instance_host = lambda name: "lab1"  # type: ignore[method-assign]
    # migrateToURI's own connection (Connections.open_private) answers as the domain
    driver._conns = SimpleNamespace(open_private=lambda host: Domain())  # type: ignore[assignment]
    driver.start_migration("vm1", "lab2", uri=SECRET_URI, flags=0, bandwidth_mib=8)
    started = driver._jobs["vm1"]
    assert started.thread is not None
    started.thread.join(10)
    info = driver.job_info("vm1")
    assert info.type is JobType.FAILED
    assert info.error == "unable to connect to 'qemu+tls://198.18.0.12/system': refused"
    with pytest.raises(MigrationError) as raised:
        driver.abort_job("vm1")
    assert "pkipath" not in str(raised.value) and "198.18.0.12/system" in str(raised.value)


def test_a_connection_error_names_the_uri_without_pkipath() -> None:
    # port 1 on loopback: refused at once, nothing leaves the machine
    uri = "qemu+tls://127.0.0.1:1/system?pkipath=/var/tmp/livemig-lab/x/pki/client"
    conns = Connections({"lab1": uri}, connect_timeout=1.0)
    with pytest.raises(HostUnreachable) as raised:
        conns.get("lab1")
    text = str(raised.value)
    assert "qemu+tls://127.0.0.1:1/system" in text
    assert "pkipath" not in text and "/pki/client" not in text
    with pytest.raises(HostUnreachable) as again:  # the remembered failure, too
        conns.get("lab1")
    assert "pkipath" not in str(again.value)
