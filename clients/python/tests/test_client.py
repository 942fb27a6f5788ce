"""The Python client against a real ptyd, whose socket `PTYD_SOCKET` names (the Rust test
`tests/tests/python_package.rs` starts one and runs these)."""

import asyncio
import os
import unittest

import ptyd

TIMEOUT = 10


class SyncClient(unittest.TestCase):
    def setUp(self) -> None:
        self.client = ptyd.Client(os.environ["PTYD_SOCKET"], client="test_client.py")
        self.addCleanup(self.client.close)

    def test_an_agent_drives_a_python_repl_and_a_live_shell(self) -> None:
        c = self.client
        self.assertTrue(c.daemon_version and c.pid > 0)
        repl = c.spawn("python3", ["-q"], env={"PYTHONSTARTUP": ""})
        c.wait_for(repl, ">>> ", timeout=TIMEOUT)
        c.submit(repl, "def double(x):\n    return 2 * x\n")
        c.submit(repl, "print('answer', double(21))")
        match = c.wait_for(repl, r"answer (\d+)", timeout=TIMEOUT)
        self.assertEqual(match.groups[0], "42")
        events = ptyd.Client(os.environ["PTYD_SOCKET"])
        self.addCleanup(events.close)
        feed = events.events()
        c.submit(repl, "exit()")
        self.assertEqual(c.wait(repl, timeout=TIMEOUT), ptyd.ExitStatus(0, None))
        exited = next(e for e in feed if e.get("event") == "exited" and e["session"] == repl)
        self.assertEqual(exited["exit"]["code"], 0)

        shell = c.spawn("bash", env={"HOME": os.environ.get("TMPDIR", "/tmp")})
        result = c.run(shell, "cd / && echo here; (exit 3)", timeout=TIMEOUT)
        self.assertEqual((result.code, result.text, result.timed_out), (3, "here\r\n", False))
        self.assertEqual(c.run(shell, "pwd").text, "/\r\n")
        self.assertEqual(c.info(shell)["cwd"], "/")
        c.kill(shell)

    def test_attach_streams_output_with_offsets_and_the_exit(self) -> None:
        c = self.client
        s = c.spawn("sh", ["-c", "printf 'one two'; exit 5"])
        att = c.attach(s, since=0)
        self.assertEqual(att.read_until("one"), b"one")
        rest = b""
        status = None
        offset = None
        for event in att:
            if isinstance(event, ptyd.Output):
                offset = event.offset if offset is None else offset
                rest += event.data
            elif isinstance(event, ptyd.Exit):
                status = event.status
        self.assertIn(b"two", att._rest + rest)
        self.assertEqual(status, ptyd.ExitStatus(5, None))
        data, reply = c.read(s, since=4)
        self.assertEqual((data, reply["offset"]), (b"two", 4))

    def test_exec_and_input_and_the_screen(self) -> None:
        c = self.client
        r = c.exec("sh", ["-c", "echo out; exit 2"], timeout=TIMEOUT)
        self.assertEqual((r.code, r.text), (2, "out\r\n"))
        cat = c.spawn("cat", close_with_connection=True)
        c.input(cat, "typed\n")
        c.wait_for(cat, "typed\r\n.*typed", timeout=TIMEOUT)
        self.assertIn("typed", c.screen(cat)["lines"])
        self.assertTrue(any(s["session"] == cat for s in c.list()))

    def test_errors_are_named_like_the_protocol_codes(self) -> None:
        c = self.client
        with self.assertRaises(ptyd.HandleNotFound) as err:
            c.info("6f1c2b2e-8d0a-4a57-9a3e-0d6f1f6b9c11")
        self.assertEqual(err.exception.code, "HandleNotFound")
        self.assertIn("6f1c2b2e", str(err.exception))
        sh = c.spawn("sh", close_with_connection=True)
        with self.assertRaises(ptyd.NoShellIntegration):
            c.run(sh, "true")
        with self.assertRaises(ptyd.Timeout):
            c.wait(sh, timeout=0.05)
        with self.assertRaises(ptyd.BadRequest):
            c.wait_for(sh, "(unclosed", timeout=1)
        with self.assertRaises(ptyd.SpawnFailed):
            c.spawn("/no/such/program")


class AsyncClientTest(unittest.IsolatedAsyncioTestCase):
    async def test_the_same_agent_with_asyncio_and_requests_at_once(self) -> None:
        async with await ptyd.AsyncClient.connect(os.environ["PTYD_SOCKET"]) as c:
            repl = await c.spawn("python3", ["-q"], env={"PYTHONSTARTUP": ""})
            att = await c.attach(repl, since=0)
            await att.read_until(">>> ")
            # A wait and other requests on one connection at once.
            waiting = asyncio.ensure_future(c.wait_for(repl, r"(?m)^(\d+)\r?$", timeout=TIMEOUT))
            await c.submit(repl, "print(6 * 7)")
            sessions, match = await asyncio.gather(c.list(), waiting)
            self.assertEqual(match.groups[0], "42")
            self.assertTrue(any(s["session"] == repl for s in sessions))
            await c.submit(repl, "exit()")
            events = [e async for e in att]
            self.assertEqual(events[-1], ptyd.Exit(repl, ptyd.ExitStatus(0, None)))

            shell = await c.spawn("zsh" if os.path.exists("/usr/bin/zsh") else "bash",
                                  env={"HOME": os.environ.get("TMPDIR", "/tmp")})
            result = await c.run(shell, "echo async; false", timeout=TIMEOUT)
            self.assertEqual((result.code, result.text), (1, "async\r\n"))
            with self.assertRaises(ptyd.HandleNotFound):
                await c.kill("6f1c2b2e-8d0a-4a57-9a3e-0d6f1f6b9c11")
            await c.kill(shell)
            status = await c.wait(shell, timeout=TIMEOUT)
            self.assertTrue(status.code is not None or status.signal is not None, status)


if __name__ == "__main__":
    unittest.main()
