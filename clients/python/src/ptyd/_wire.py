"""Framing (ipc-proto/PROTOCOL.md, Frames) and what both clients share."""

import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

from .errors import PtydError, error_for

PROTOCOL_VERSION = 2
#: Largest frame ptyd accepts; payloads stay below MAX_PAYLOAD so a frame fits.
MAX_FRAME = 1 << 20
MAX_PAYLOAD = MAX_FRAME - 64 * 1024

Header = Dict[str, Any]


def default_socket() -> str:
    """`$PTYD_SOCKET`, else `$XDG_RUNTIME_DIR/ptyd/ptyd.sock`, else `/tmp/ptyd-$UID/ptyd.sock`."""
    explicit = os.environ.get("PTYD_SOCKET")
    if explicit:
        return explicit
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "ptyd", "ptyd.sock")
    return f"/tmp/ptyd-{os.getuid()}/ptyd.sock"


def encode(header: Header, payload: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    frame_len = 4 + len(head) + len(payload)
    if frame_len > MAX_FRAME:
        raise ValueError(f"frame of {frame_len} bytes exceeds the {MAX_FRAME}-byte limit")
    return struct.pack(">II", frame_len, len(head)) + head + payload


def split_prefix(prefix: bytes) -> int:
    """The rest of a frame after its 4-byte length prefix."""
    (frame_len,) = struct.unpack(">I", prefix)
    if frame_len < 4 or frame_len > MAX_FRAME:
        raise PtydError(f"bad frame length {frame_len} from ptyd", "MalformedFrame")
    return frame_len


def decode(body: bytes) -> Tuple[Header, bytes]:
    """A frame's header and payload, from the bytes after its length prefix."""
    (header_len,) = struct.unpack(">I", body[:4])
    header = json.loads(body[4 : 4 + header_len])
    return header, body[4 + header_len :]


def seconds_to_ms(seconds: Optional[float]) -> Optional[int]:
    return None if seconds is None else max(0, int(seconds * 1000))


def expect(header: Header, reply: str, payload: bytes = b"") -> Header:
    """The reply's header if it is of type `reply`; raises what an error reply says."""
    kind = header.get("type")
    if kind == "error":
        raise error_for(header)
    if kind != reply:
        raise PtydError(f"expected a {reply} reply, got {kind}", "Internal")
    return header


@dataclass
class ExitStatus:
    """How a program ended: `code` if it exited, `signal` if a signal killed it."""

    code: Optional[int]
    signal: Optional[int]

    @classmethod
    def of(cls, h: Header) -> "ExitStatus":
        return cls(h.get("code"), h.get("signal"))


@dataclass
class Result:
    """What `exec` and `run` answer: status, the kept output and its bookkeeping."""

    session: str
    code: Optional[int]
    signal: Optional[int]
    output: bytes
    timed_out: bool
    truncated: bool
    total_bytes: int
    duration_ms: int

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    @classmethod
    def of(cls, h: Header, payload: bytes) -> "Result":
        return cls(h["session"], h.get("code"), h.get("signal"), payload, h["timed_out"],
                   h["truncated"], h["total_bytes"], h["duration_ms"])


@dataclass
class Match:
    """A `wait_for` match: the text, its offsets and capture groups."""

    session: str
    text: str
    offset: int
    end: int
    groups: List[Optional[str]] = field(default_factory=list)
    dropped: int = 0

    @classmethod
    def of(cls, h: Header) -> "Match":
        return cls(h["session"], h["text"], h["offset"], h["end"], h.get("groups", []),
                   h.get("dropped", 0))


@dataclass
class Output:
    """Terminal output of an attached session, at absolute `offset`."""

    session: str
    offset: int
    data: bytes


@dataclass
class Dropped:
    """Output `[offset, offset + count)` that will never reach this client."""

    session: str
    offset: int
    count: int


@dataclass
class Exit:
    """The attached session ended; nothing follows."""

    session: str
    status: ExitStatus


Event = Union[Output, Dropped, Exit]


def session_event(h: Header, payload: bytes) -> Optional[Event]:
    kind = h.get("type")
    if kind == "output":
        return Output(h["session"], h["offset"], payload)
    if kind == "dropped":
        return Dropped(h["session"], h["offset"], h["bytes"])
    if kind == "exit":
        return Exit(h["session"], ExitStatus.of(h))
    return None


def spawn_request(command: str, args: Any, env: Optional[Dict[str, str]], cwd: Optional[str],
                  cols: int, rows: int, labels: Optional[Dict[str, str]],
                  idle_timeout: Optional[float], close_with_connection: bool,
                  attach: Optional[bool]) -> Header:
    req: Header = {"type": "spawn", "command": command, "args": list(args), "env": env or {},
                   "cols": cols, "rows": rows, "labels": labels or {},
                   "close_with_connection": close_with_connection}
    return _with(req, cwd=cwd, idle_timeout_ms=seconds_to_ms(idle_timeout),
                 attach=None if attach is None else {"lossless": attach})


def as_bytes(data: Union[bytes, str]) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


def _with(req: Header, **optional: Any) -> Header:
    """`req` plus the optional fields that are set."""
    req.update({k: v for k, v in optional.items() if v is not None})
    return req


# One builder per request, shared by Client and AsyncClient.

def attach_request(session: str, since: Optional[int], lossless: bool) -> Header:
    return _with({"type": "attach", "session": session, "lossless": lossless}, since=since)


def submit_request(session: str, text: str, settle: Optional[float]) -> Header:
    return _with({"type": "submit", "session": session, "text": text},
                 settle_ms=seconds_to_ms(settle))


def wait_for_request(session: str, pattern: str, since: Optional[int],
                     timeout: Optional[float], screen: bool) -> Header:
    req = {"type": "wait_for", "session": session, "pattern": pattern,
           "on": "screen" if screen else "output"}
    return _with(req, since=since, timeout_ms=seconds_to_ms(timeout))


def wait_quiet_request(session: str, quiet: float, timeout: Optional[float]) -> Header:
    return _with({"type": "wait_quiet", "session": session, "quiet_ms": seconds_to_ms(quiet)},
                 timeout_ms=seconds_to_ms(timeout))


def run_request(session: str, command: str, timeout: Optional[float],
                max_output: Optional[int]) -> Header:
    return _with({"type": "run", "session": session, "command": command},
                 timeout_ms=seconds_to_ms(timeout), max_output=max_output)


def exec_request(command: str, args: Any, env: Optional[Dict[str, str]], cwd: Optional[str],
                 cols: int, rows: int, timeout: Optional[float],
                 max_output: Optional[int]) -> Header:
    req = {"type": "exec", "command": command, "args": list(args), "env": env or {},
           "cols": cols, "rows": rows}
    return _with(req, cwd=cwd, timeout_ms=seconds_to_ms(timeout), max_output=max_output)


def read_request(session: str, since: Optional[int], max: Optional[int]) -> Header:
    return _with({"type": "read", "session": session}, since=since, max=max)


def kill_request(session: str, signal: Optional[str]) -> Header:
    return _with({"type": "kill", "session": session}, signal=signal)


def wait_request(session: str, timeout: Optional[float]) -> Header:
    return _with({"type": "wait", "session": session}, timeout_ms=seconds_to_ms(timeout))


def screen_reply(header: Header, payload: bytes, ansi: bool) -> Header:
    reply = dict(expect(header, "screen"))
    if ansi:
        reply["ansi"] = payload
    return reply


def take_until(seen: bytearray, needle: bytes) -> Optional[Tuple[bytes, bytes]]:
    """`seen` up to and including `needle`, and the rest; None while it is not there."""
    at = seen.find(needle)
    if at < 0:
        return None
    return bytes(seen[: at + len(needle)]), bytes(seen[at + len(needle) :])
