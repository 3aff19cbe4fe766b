"""The reference receiver: a local stand-in for the authority's API (``API.md`` in this folder).

``footprint receiver serve`` (or ``python -m pipelines.receiver``) runs it on 127.0.0.1; the
delivery stage and its tests talk to it over HTTP exactly as they would to the Unified Higher
Education Platform, traps and faults included. ``pipelines.local.receiver.LocalReceiver`` runs it
as a child process for tests and demos.
"""

from __future__ import annotations

from pipelines.receiver.faults import FaultSettings, FaultSettingsError
from pipelines.receiver.server import (
    BASE_PATH,
    DEFAULT_DB,
    DEFAULT_ENTITY,
    DEFAULT_PORT,
    HOST,
    Credentials,
    Receiver,
    ReceiverConfig,
    ReceiverServer,
    serve,
)

__all__ = [
    "BASE_PATH",
    "DEFAULT_DB",
    "DEFAULT_ENTITY",
    "DEFAULT_PORT",
    "HOST",
    "Credentials",
    "FaultSettings",
    "FaultSettingsError",
    "Receiver",
    "ReceiverConfig",
    "ReceiverServer",
    "serve",
]
