"""The blocking client: one connection, one request at a time, events buffered."""

import collections
import socket
from typing import Any, Deque, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from . import _wire
from ._wire import Event, ExitStatus, Header, Match, Result
from .errors import ConnectionClosed, SessionExited, error_for


class Client:
    """A connection to ptyd. Use it as a context manager, or call `close`.

    Timeouts are in seconds. Replies are matched by id; events that arrive meanwhile are
    kept for the attachment or subscription they belong to.
    """

    def __init__(self, path: Optional[str] = None, *, client: str = "ptyd.py") -> None:
        self.path = path or _wire.default_socket()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(self.path)
        except OSError:
            self._sock.close()
            raise
        self._next_id = 0
        self._events: Dict[str, Deque[Event]] = collections.defaultdict(collections.deque)
        self._daemon_events: Deque[Header] = collections.deque()
        hello = self._call({"type": "hello", "protocol_version": _wire.PROTOCOL_VERSION,
                            "client": client}, "hello")
        self.daemon_version: str = hello["daemon_version"]
        self.pid: int = hello["pid"]

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- frames ----------------------------------------------------------------------

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionClosed("ptyd closed the connection")
            buf += chunk
        return bytes(buf)

    def _recv(self) -> Tuple[Header, bytes]:
        frame_len = _wire.split_prefix(self._recv_exact(4))
        return _wire.decode(self._recv_exact(frame_len))

    def _dispatch(self, header: Header, payload: bytes) -> None:
        """Keeps an event for whoever reads it later."""
        event = _wire.session_event(header, payload)
        if event is not None:
            self._events[event.session].append(event)
        elif header.get("type") in ("event", "events_dropped"):
            self._daemon_events.append(header)
        elif header.get("type") == "error":
            # An error without an id: the daemon is closing this connection.
            raise error_for(header)

    def _call_raw(self, request: Header, payload: bytes = b"") -> Tuple[Header, bytes]:
        self._next_id += 1
        rid = self._next_id
        self._sock.sendall(_wire.encode(dict(request, id=rid), payload))
        while True:
            header, data = self._recv()
            if header.get("id") == rid:
                return header, data
            self._dispatch(header, data)

    def _call(self, request: Header, reply: str, payload: bytes = b"") -> Header:
        header, _ = self._call_raw(request, payload)
        return _wire.expect(header, reply)

    # -- sessions --------------------------------------------------------------------

    def spawn(self, command: str, args: Sequence[str] = (), *, env: Optional[Dict[str, str]] = None,
              cwd: Optional[str] = None, cols: int = 80, rows: int = 24,
              labels: Optional[Dict[str, str]] = None, idle_timeout: Optional[float] = None,
              close_with_connection: bool = False) -> str:
        """Starts `command` on a new terminal; returns the session id."""
        req = _wire.spawn_request(command, args, env, cwd, cols, rows, labels, idle_timeout,
                                  close_with_connection, None)
        return self._call(req, "spawned")["session"]

    def attach(self, session: str, since: Optional[int] = None,
               lossless: bool = True) -> "Attachment":
        """Replays from `since` (the oldest byte still held when None), then streams."""
        req = _wire.attach_request(session, since, lossless)
        reply = self._call(req, "attached")
        return Attachment(self, session, reply)

    def input(self, session: str, data: Union[bytes, str]) -> None:
        """Writes bytes (or UTF-8 text) to the session's terminal."""
        self._call({"type": "input", "session": session}, "ok", _wire.as_bytes(data))

    def submit(self, session: str, text: str, settle: Optional[float] = None) -> int:
        """Types `text` as one input (a paste if the program asked for it), then Enter.
        Returns the output offset from which the answer can come."""
        req = _wire.submit_request(session, text, settle)
        return self._call(req, "submitted").get("offset") or 0

    def wait_for(self, session: str, pattern: str, since: Optional[int] = None,
                 timeout: Optional[float] = None, screen: bool = False) -> Match:
        """Waits until `pattern` (a Rust regex) matches output from `since` (default: the
        session's latest input), or the rendered screen with `screen`."""
        req = _wire.wait_for_request(session, pattern, since, timeout, screen)
        return Match.of(self._call(req, "matched"))

    def wait_quiet(self, session: str, quiet: float, timeout: Optional[float] = None) -> int:
        """Waits until the session has printed nothing for `quiet` seconds; the offset."""
        req = _wire.wait_quiet_request(session, quiet, timeout)
        return self._call(req, "quiet")["offset"]

    def run(self, session: str, command: str, timeout: Optional[float] = None,
            max_output: Optional[int] = None) -> Result:
        """Types `command` into the session's live shell (bash or zsh started by ptyd) and
        waits until it has finished: its exit code and output."""
        req = _wire.run_request(session, command, timeout, max_output)
        header, payload = self._call_raw(req)
        return Result.of(_wire.expect(header, "run_result"), payload)

    def exec(self, command: str, args: Sequence[str] = (), *, env: Optional[Dict[str, str]] = None,
             cwd: Optional[str] = None, cols: int = 80, rows: int = 24,
             timeout: Optional[float] = None, max_output: Optional[int] = None) -> Result:
        """Runs `command` on a new terminal to completion: its status and output."""
        req = _wire.exec_request(command, args, env, cwd, cols, rows, timeout, max_output)
        header, payload = self._call_raw(req)
        return Result.of(_wire.expect(header, "exec_result"), payload)

    def read(self, session: str, since: Optional[int] = None,
             max: Optional[int] = None) -> Tuple[bytes, Header]:
        """Output from `since` without attaching: the bytes, and the reply (`offset`,
        `next`, `dropped`, `end`)."""
        req = _wire.read_request(session, since, max)
        header, payload = self._call_raw(req)
        return payload, _wire.expect(header, "output_range")

    def screen(self, session: str, scrollback: int = 0, ansi: bool = False) -> Header:
        """What the terminal shows: `lines`, `cursor_row`/`cursor_col`, `title`, … and,
        with `ansi`, the bytes that repaint it under the key `ansi`."""
        header, payload = self._call_raw({"type": "screen", "session": session,
                                          "scrollback": scrollback, "ansi": ansi})
        return _wire.screen_reply(header, payload, ansi)

    def resize(self, session: str, cols: int, rows: int) -> None:
        self._call({"type": "resize", "session": session, "cols": cols, "rows": rows}, "ok")

    def kill(self, session: str, signal: Optional[str] = None) -> None:
        """Ends the session (SIGHUP, SIGKILL after the grace), or sends `signal`."""
        req = _wire.kill_request(session, signal)
        self._call(req, "ok")

    def wait(self, session: str, timeout: Optional[float] = None) -> ExitStatus:
        """Waits until the session has exited."""
        req = _wire.wait_request(session, timeout)
        return ExitStatus.of(self._call(req, "exited"))

    def info(self, session: str) -> Header:
        """The session's SessionInfo (PROTOCOL.md, Shared objects)."""
        return self._call({"type": "info", "session": session}, "session")

    def list(self) -> List[Header]:
        return self._call({"type": "list"}, "sessions")["sessions"]

    def events(self) -> Iterator[Header]:
        """Daemon-wide session events from the moment of this call (`event` headers:
        spawned, exited, idle_killed, resized; `events_dropped` when this client fell
        behind). Subscribes at once; iterate the result to read them."""
        self._call({"type": "subscribe"}, "ok")
        return self._daemon_event_feed()

    def _daemon_event_feed(self) -> Iterator[Header]:
        while True:
            while self._daemon_events:
                yield self._daemon_events.popleft()
            self._dispatch(*self._recv())


class Attachment:
    """An attached session's events, in order: iterate it, or call `next_event`."""

    def __init__(self, client: Client, session: str, reply: Header) -> None:
        self.client = client
        self.session = session
        self.offset: int = reply["offset"]
        self.dropped: int = reply.get("dropped", 0)
        self.end: int = reply["end"]
        self.done = False
        self._rest = b""

    def next_event(self) -> Optional[Event]:
        """The next event; None once the session's exit has been seen."""
        if self.done:
            return None
        queue = self.client._events[self.session]
        while not queue:
            self.client._dispatch(*self.client._recv())
        event = queue.popleft()
        if isinstance(event, _wire.Exit):
            self.done = True
        return event

    def __iter__(self) -> Iterator[Event]:
        while True:
            event = self.next_event()
            if event is None:
                return
            yield event

    def read_until(self, needle: Union[bytes, str]) -> bytes:
        """Output up to and including the first `needle` (what follows it in the same
        event is kept for the next call); raises SessionExited if the session ends first."""
        want = _wire.as_bytes(needle)
        seen = bytearray(self._rest)
        self._rest = b""
        while True:
            found = _wire.take_until(seen, want)
            if found is not None:
                out, self._rest = found
                return out
            event = self.next_event()
            if event is None:
                raise SessionExited(f"session {self.session} exited before {needle!r}")
            if isinstance(event, _wire.Output):
                seen += event.data

    def detach(self) -> None:
        self.client._call({"type": "detach", "session": self.session}, "ok")
        self.done = True
