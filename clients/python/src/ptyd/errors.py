"""Errors: one exception class per protocol error code (ipc-proto/PROTOCOL.md, Errors)."""

from typing import Dict, Optional, Type


class PtydError(Exception):
    """A request ptyd refused, or a connection it closed; `code` is the protocol's code."""

    code = "Internal"

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class AtCapacity(PtydError):
    code = "AtCapacity"


class QuotaExceeded(PtydError):
    code = "QuotaExceeded"


class HandleNotFound(PtydError):
    code = "HandleNotFound"


class SpawnFailed(PtydError):
    code = "SpawnFailed"


class VersionMismatch(PtydError):
    code = "VersionMismatch"


class PermissionDenied(PtydError):
    code = "PermissionDenied"


class MalformedFrame(PtydError):
    code = "MalformedFrame"


class FrameTooLarge(PtydError):
    code = "FrameTooLarge"


class SessionExited(PtydError):
    code = "SessionExited"


class BadRequest(PtydError):
    code = "BadRequest"


class UnknownRequest(PtydError):
    code = "UnknownRequest"


class Timeout(PtydError):
    code = "Timeout"


class ShuttingDown(PtydError):
    code = "ShuttingDown"


class NoShellIntegration(PtydError):
    code = "NoShellIntegration"


class SessionBusy(PtydError):
    code = "SessionBusy"


class Internal(PtydError):
    code = "Internal"


class ConnectionClosed(PtydError):
    """ptyd closed the connection (or it broke) before answering."""

    code = "ConnectionClosed"


_BY_CODE: Dict[str, Type[PtydError]] = {
    cls.code: cls
    for cls in (
        AtCapacity, QuotaExceeded, HandleNotFound, SpawnFailed, VersionMismatch,
        PermissionDenied, MalformedFrame, FrameTooLarge, SessionExited, BadRequest,
        UnknownRequest, Timeout, ShuttingDown, NoShellIntegration, SessionBusy, Internal,
    )
}


def error_for(header: dict) -> PtydError:
    """The exception for an `error` frame; an unknown code is treated like `Internal`."""
    code = str(header.get("code", "Internal"))
    cls = _BY_CODE.get(code, PtydError)
    return cls(str(header.get("message", "")), code)
