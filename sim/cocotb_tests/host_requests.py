"""The simulator's side of `sim.bridge_transport.CocotbSession`: serve a host's requests over
the Unix socket whose path is the session's ``socket`` param, one at a time.

Each request is one JSON line ``{"op": ..., ...}``, followed by ``n`` raw bytes for the ops
that carry a payload; each answer is one JSON line (``{"n": k}`` when ``k`` bytes follow,
``{"error": ...}`` for an op the bench does not know). ``close`` ends the session, as does
the host going away. While the host thinks, simulated time stands still: the simulator only
advances while a handler awaits.
"""
from __future__ import annotations

import json
import socket
from typing import Awaitable, Callable

from cocotb.triggers import Timer

# A handler gets the request and a reader of its payload bytes; it returns the answer and
# the bytes that follow it.
Handler = Callable[[dict, Callable[[int], bytes]], Awaitable[tuple[dict, bytes]]]


def idle_handler(clock_ns: float) -> Handler:
    """``idle``: let ``cycles`` clock cycles pass (no Python on clock edges meanwhile)."""
    async def idle(req, read):
        await Timer(max(1, req["cycles"]) * clock_ns, unit="ns")
        return {}, b""
    return idle


async def serve_requests(socket_path: str, handlers: dict[str, Handler]) -> None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(socket_path)
    f = conn.makefile("rwb")

    def read(n: int) -> bytes:
        data = f.read(n)
        if len(data) != n:
            raise ConnectionError(f"host sent {len(data)} of {n} bytes")
        return data

    try:
        while True:
            line = f.readline()
            if not line:
                break                                   # the host went away
            req = json.loads(line)
            if req["op"] == "close":
                f.write(b"{}\n")
                f.flush()
                break
            handler = handlers.get(req["op"])
            if handler is None:
                answer, payload = {"error": f"unknown operation {req['op']!r}"}, b""
            else:
                answer, payload = await handler(req, read)
            f.write(json.dumps(answer).encode() + b"\n" + payload)
            f.flush()
    finally:
        f.close()
        conn.close()
