"""The exception names of Nova's live-migration flow.

The hierarchy follows Nova's: the scheduler's destination loop retries a host on
``Invalid`` (and modern Nova's ``MigrationPreCheckError``); the API rejects the
request and restores the instance's state on the *known pre-check failures*
(:data:`PRECHECK_FAILURES`); anything else puts the instance in ERROR.
"""

from __future__ import annotations


class NovaException(Exception):
    """Base of every flow exception; ``str(exc)`` is the one-line message."""

    msg_fmt = "An unknown exception occurred."

    def __init__(self, message: str | None = None, **kwargs: object) -> None:
        self.kwargs = kwargs
        if message is None:
            try:
                message = self.msg_fmt % kwargs
            except (KeyError, TypeError):
                message = self.msg_fmt
        super().__init__(message)

    @property
    def name(self) -> str:
        return type(self).__name__


class Invalid(NovaException):
    msg_fmt = "Unacceptable parameters."


class BadRequest(Invalid):
    """The request body is malformed (Nova's HTTPBadRequest)."""

    msg_fmt = "host and block_migration must be specified."


class InstanceNotFound(NovaException):
    msg_fmt = "Instance %(instance)s could not be found."


class InstanceInvalidState(Invalid):
    msg_fmt = (
        "Instance %(instance)s in %(attr)s %(state)s. "
        "Cannot %(method)s while the instance is in this state."
    )


class UnexpectedTaskStateError(NovaException):
    msg_fmt = "Unexpected task state: expecting %(expected)s but the actual state is %(actual)s"


class ComputeServiceUnavailable(NovaException):
    msg_fmt = "Compute service of %(host)s is unavailable at this time."


class HypervisorUnavailable(ComputeServiceUnavailable):
    """A host's libvirtd cannot be reached now (host down, link down, libvirtd stopped)."""

    msg_fmt = "Connection to the hypervisor is broken on host: %(host)s (%(reason)s)"


class UnableToMigrateToSelf(Invalid):
    msg_fmt = "Unable to migrate instance (%(instance)s) to current host (%(host)s)."


class InvalidHypervisorType(Invalid):
    msg_fmt = "The supplied hypervisor type of is invalid."


class DestinationHypervisorTooOld(Invalid):
    msg_fmt = (
        "The instance requires a newer hypervisor version than has been provided."
    )


class InvalidCPUInfo(Invalid):
    msg_fmt = "Unacceptable CPU info: %(reason)s"


class InvalidLocalStorage(NovaException):
    msg_fmt = "%(path)s is not on local storage: %(reason)s"


class InvalidSharedStorage(NovaException):
    msg_fmt = "%(path)s is not on shared storage: %(reason)s"


class MigrationPreCheckError(NovaException):
    msg_fmt = "Migration pre-check error: %(reason)s"


class MigrationError(NovaException):
    msg_fmt = "Migration error: %(reason)s"


class NoValidHost(NovaException):
    msg_fmt = "No valid host was found. %(reason)s"


class MaxRetriesExceeded(NoValidHost):
    msg_fmt = "Exceeded maximum number of retries. %(reason)s"


class LiveMigrationFailed(NovaException):
    """The driver's migration job failed (migrateToURI raised)."""

    msg_fmt = "Live migration failed: %(reason)s"


class InvalidMigrationState(Invalid):
    """An operator action (abort, force-complete) on a migration in the wrong status."""

    msg_fmt = (
        "Migration %(migration_id)s state of instance %(instance_uuid)s is %(state)s. "
        "Cannot %(method)s while the migration is in this state."
    )


class MigrationNotFoundForInstance(NovaException):
    msg_fmt = "Migration for instance %(instance_id)s is not in progress."


class MigrationAborted(NovaException):
    """The migration was cancelled by an abort request before it started."""

    msg_fmt = "Migration %(migration_id)s aborted by request while %(state)s."


class ControllerRestarted(NovaException):
    """The controller died while the migration was between steps; resolved on restart."""

    msg_fmt = "The controller restarted while the migration was %(state)s: %(resolution)s"


class HorizonReached(NovaException):
    """The run reached its horizon (the scenario's ``until``) before the migration ended."""

    msg_fmt = ("The run reached its horizon (until: %(until)s s) while the migration was "
               "%(state)s: %(resolution)s")


PRECHECK_FAILURES: tuple[type[NovaException], ...] = (
    ComputeServiceUnavailable,
    InvalidHypervisorType,
    UnableToMigrateToSelf,
    DestinationHypervisorTooOld,
    InvalidLocalStorage,
    InvalidSharedStorage,
)
"""Failures after which Nova restores vm_state and clears task_state."""

RETRYABLE: tuple[type[NovaException], ...] = (Invalid, MigrationPreCheckError)
"""Failures after which the scheduler loop tries the next host."""
