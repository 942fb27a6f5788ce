"""Client for ptyd, the PTY session daemon (standard library only).

    from ptyd import Client
    with Client() as c:                      # $PTYD_SOCKET, or the default socket
        s = c.spawn("python3", ["-q"])
        c.wait_for(s, ">>> ", timeout=5)
        c.submit(s, "print(6 * 7)")
        print(c.wait_for(s, r"\\b42\\b", timeout=5).text)

`AsyncClient` offers the same operations for asyncio. Errors are exceptions named like
the protocol's codes (`HandleNotFound`, `AtCapacity`, `NoShellIntegration`, …), all
subclasses of `PtydError`. The wire format is documented in ipc-proto/PROTOCOL.md.
"""

from ._wire import (PROTOCOL_VERSION, Dropped, Event, Exit, ExitStatus, Match, Output, Result,
                    default_socket)
from .aio import AsyncAttachment, AsyncClient
from .client import Attachment, Client
from .errors import (AtCapacity, BadRequest, ConnectionClosed, FrameTooLarge, HandleNotFound,
                     Internal, MalformedFrame, NoShellIntegration, PermissionDenied, PtydError,
                     QuotaExceeded, SessionBusy, SessionExited, ShuttingDown, SpawnFailed,
                     Timeout, UnknownRequest, VersionMismatch)

__all__ = [
    "PROTOCOL_VERSION", "AsyncAttachment", "AsyncClient", "AtCapacity", "Attachment",
    "BadRequest", "Client", "ConnectionClosed", "Dropped", "Event", "Exit", "ExitStatus",
    "FrameTooLarge", "HandleNotFound", "Internal", "MalformedFrame", "Match",
    "NoShellIntegration", "Output", "PermissionDenied", "PtydError", "QuotaExceeded", "Result",
    "SessionBusy", "SessionExited", "ShuttingDown", "SpawnFailed", "Timeout", "UnknownRequest",
    "VersionMismatch", "default_socket",
]
