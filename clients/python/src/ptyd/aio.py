"""The asyncio client: one connection, any number of requests at once."""

import asyncio
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from . import _wire
from ._wire import Event, ExitStatus, Header, Match, Result
from .errors import ConnectionClosed, PtydError, SessionExited, error_for


class AsyncClient:
    """A connection to ptyd for asyncio. `await AsyncClient.connect()`, then use it as an
    async context manager or call `close`. Timeouts are in seconds; requests may run
    concurrently (each is matched with its reply by id)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._next_id = 0
        self._pending: Dict[int, "asyncio.Future[Tuple[Header, bytes]]"] = {}
        self._events: Dict[str, "asyncio.Queue[Event]"] = {}
        self._daemon_events: "asyncio.Queue[Header]" = asyncio.Queue()
        self._closed: Optional[PtydError] = None
        self._task = asyncio.ensure_future(self._read_loop())
        self.daemon_version = ""
        self.pid = 0

    @classmethod
    async def connect(cls, path: Optional[str] = None, *, client: str = "ptyd.py") -> "AsyncClient":
        reader, writer = await asyncio.open_unix_connection(path or _wire.default_socket())
        self = cls(reader, writer)
        try:
            hello = await self._call({"type": "hello", "protocol_version": _wire.PROTOCOL_VERSION,
                                      "client": client}, "hello")
        except BaseException:
            await self.close()
            raise
        self.daemon_version, self.pid = hello["daemon_version"], hello["pid"]
        return self

    async def close(self) -> None:
        self._task.cancel()
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- frames ----------------------------------------------------------------------

    def _queue(self, session: str) -> "asyncio.Queue[Event]":
        return self._events.setdefault(session, asyncio.Queue())

    async def _read_loop(self) -> None:
        error: PtydError = ConnectionClosed("ptyd closed the connection")
        try:
            while True:
                frame_len = _wire.split_prefix(await self._reader.readexactly(4))
                header, payload = _wire.decode(await self._reader.readexactly(frame_len))
                rid = header.get("id")
                if rid:
                    future = self._pending.pop(rid, None)
                    if future is not None and not future.done():
                        future.set_result((header, payload))
                    continue
                event = _wire.session_event(header, payload)
                if event is not None:
                    self._queue(event.session).put_nowait(event)
                elif header.get("type") in ("event", "events_dropped"):
                    self._daemon_events.put_nowait(header)
                elif header.get("type") == "error":
                    error = error_for(header)
                    return
        except (asyncio.IncompleteReadError, OSError):
            pass
        finally:
            self._closed = error
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(error)
            self._pending.clear()

    async def _call_raw(self, request: Header, payload: bytes = b"") -> Tuple[Header, bytes]:
        if self._closed is not None:
            raise self._closed
        self._next_id += 1
        rid = self._next_id
        future: "asyncio.Future[Tuple[Header, bytes]]" = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        self._writer.write(_wire.encode(dict(request, id=rid), payload))
        await self._writer.drain()
        return await future

    async def _call(self, request: Header, reply: str, payload: bytes = b"") -> Header:
        header, _ = await self._call_raw(request, payload)
        return _wire.expect(header, reply)

    # -- sessions (the same operations as Client; see there) ------------------------

    async def spawn(self, command: str, args: Sequence[str] = (), *,
                    env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None,
                    cols: int = 80, rows: int = 24, labels: Optional[Dict[str, str]] = None,
                    idle_timeout: Optional[float] = None,
                    close_with_connection: bool = False) -> str:
        req = _wire.spawn_request(command, args, env, cwd, cols, rows, labels, idle_timeout,
                                  close_with_connection, None)
        return (await self._call(req, "spawned"))["session"]

    async def attach(self, session: str, since: Optional[int] = None,
                     lossless: bool = True) -> "AsyncAttachment":
        req = _wire.attach_request(session, since, lossless)
        queue = self._queue(session)
        reply = await self._call(req, "attached")
        return AsyncAttachment(self, session, reply, queue)

    async def input(self, session: str, data: Union[bytes, str]) -> None:
        await self._call({"type": "input", "session": session}, "ok", _wire.as_bytes(data))

    async def submit(self, session: str, text: str, settle: Optional[float] = None) -> int:
        req = _wire.submit_request(session, text, settle)
        return (await self._call(req, "submitted")).get("offset") or 0

    async def wait_for(self, session: str, pattern: str, since: Optional[int] = None,
                       timeout: Optional[float] = None, screen: bool = False) -> Match:
        req = _wire.wait_for_request(session, pattern, since, timeout, screen)
        return Match.of(await self._call(req, "matched"))

    async def wait_quiet(self, session: str, quiet: float,
                         timeout: Optional[float] = None) -> int:
        req = _wire.wait_quiet_request(session, quiet, timeout)
        return (await self._call(req, "quiet"))["offset"]

    async def run(self, session: str, command: str, timeout: Optional[float] = None,
                  max_output: Optional[int] = None) -> Result:
        req = _wire.run_request(session, command, timeout, max_output)
        header, payload = await self._call_raw(req)
        return Result.of(_wire.expect(header, "run_result"), payload)

    async def exec(self, command: str, args: Sequence[str] = (), *,
                   env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None,
                   cols: int = 80, rows: int = 24, timeout: Optional[float] = None,
                   max_output: Optional[int] = None) -> Result:
        req = _wire.exec_request(command, args, env, cwd, cols, rows, timeout, max_output)
        header, payload = await self._call_raw(req)
        return Result.of(_wire.expect(header, "exec_result"), payload)

    async def read(self, session: str, since: Optional[int] = None,
                   max: Optional[int] = None) -> Tuple[bytes, Header]:
        req = _wire.read_request(session, since, max)
        header, payload = await self._call_raw(req)
        return payload, _wire.expect(header, "output_range")

    async def screen(self, session: str, scrollback: int = 0, ansi: bool = False) -> Header:
        header, payload = await self._call_raw({"type": "screen", "session": session,
                                                "scrollback": scrollback, "ansi": ansi})
        return _wire.screen_reply(header, payload, ansi)

    async def resize(self, session: str, cols: int, rows: int) -> None:
        await self._call({"type": "resize", "session": session, "cols": cols, "rows": rows},
                         "ok")

    async def kill(self, session: str, signal: Optional[str] = None) -> None:
        req = _wire.kill_request(session, signal)
        await self._call(req, "ok")

    async def wait(self, session: str, timeout: Optional[float] = None) -> ExitStatus:
        req = _wire.wait_request(session, timeout)
        return ExitStatus.of(await self._call(req, "exited"))

    async def info(self, session: str) -> Header:
        return await self._call({"type": "info", "session": session}, "session")

    async def list(self) -> List[Header]:
        return (await self._call({"type": "list"}, "sessions"))["sessions"]

    async def subscribe(self) -> "asyncio.Queue[Header]":
        """Daemon-wide session events from now on, on the returned queue."""
        await self._call({"type": "subscribe"}, "ok")
        return self._daemon_events


class AsyncAttachment:
    """An attached session's events, in order: `async for`, or `await next_event()`."""

    def __init__(self, client: AsyncClient, session: str, reply: Header,
                 queue: "asyncio.Queue[Event]") -> None:
        self.client = client
        self.session = session
        self.offset: int = reply["offset"]
        self.dropped: int = reply.get("dropped", 0)
        self.end: int = reply["end"]
        self.done = False
        self._queue = queue
        self._rest = b""

    async def next_event(self) -> Optional[Event]:
        """The next event; None once the session's exit has been seen."""
        if self.done:
            return None
        if self.client._closed is not None and self._queue.empty():
            raise self.client._closed
        event = await self._queue.get()
        if isinstance(event, _wire.Exit):
            self.done = True
        return event

    def __aiter__(self) -> "AsyncAttachment":
        return self

    async def __anext__(self) -> Event:
        event = await self.next_event()
        if event is None:
            raise StopAsyncIteration
        return event

    async def read_until(self, needle: Union[bytes, str]) -> bytes:
        """As `Attachment.read_until`."""
        want = _wire.as_bytes(needle)
        seen = bytearray(self._rest)
        self._rest = b""
        while True:
            found = _wire.take_until(seen, want)
            if found is not None:
                out, self._rest = found
                return out
            event = await self.next_event()
            if event is None:
                raise SessionExited(f"session {self.session} exited before {needle!r}")
            if isinstance(event, _wire.Output):
                seen += event.data

    async def detach(self) -> None:
        await self.client._call({"type": "detach", "session": self.session}, "ok")
        self.done = True
