"""A `firmware.driver.Transport` over the Verilated accelerator and its RTL DDR model.

    with VerilatorTransport(cfg, mem_bytes) as t:        # builds (cached) and starts the sim
        drv = AccelDriver(t)
        ...

The build is `sim.accel_sim.build_accelerator`'s (the same cached Verilator build
`simulate` uses); the simulator runs one cocotb session (`sim.cocotb_tests.host_bridge`) in a
background thread through `sim.verilator_runner.run`, and serves each bus operation over a
Unix socket, so the host driver talks to it exactly as it would to a board through a bridge:
register accesses are real AXI4-Lite transactions, memory goes through the model's backdoor
(on a board: the bridge's bus writes into DRAM). Device time is simulated time at
`CLOCK_NS` per cycle; it only passes while the driver waits (``wait_irq``, ``sleep``) or the
accelerator is being accessed.
"""
from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
from pathlib import Path

from sim.accel_sim import (CHUNK_CYCLES, CLOCK_NS, DEFAULT_BEAT_INTERVAL, DEFAULT_READ_LATENCY,
                           build_accelerator)

TEST_MODULE = "sim.cocotb_tests.host_bridge"
CONNECT_POLL_S = 0.5


class CocotbSession:
    """One cocotb session of a Verilator ``build`` running ``test_module`` in a background
    thread, serving the host's requests over a Unix socket (the socket's path goes to the
    session as the ``socket`` param, next to ``params``; the bench's side is
    `sim.cocotb_tests.host_requests`). `call` sends one request (a JSON
    line, then ``payload``) and returns the answer and its bytes; `close` ends the session."""

    def __init__(self, build, test_module: str, params: dict, *, prefix: str):
        from sim.verilator_runner import SimulationFailed, run
        self.build, self._f = build, None
        runs = build.directory / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=runs))
        # A Unix socket path may hold only ~100 bytes: the cache folder can be deeper.
        self._sock_dir = Path(tempfile.mkdtemp(prefix="mnet-bridge-"))
        path = str(self._sock_dir / "bridge.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        server.settimeout(CONNECT_POLL_S)
        self._failure: BaseException | None = None

        def session():
            try:
                run(build, test_module, params={"socket": path, **params},
                    test_dir=self.run_dir)
            except BaseException as e:          # reported to the host thread
                self._failure = e

        self._thread = threading.Thread(target=session, daemon=True)
        self._thread.start()
        try:
            while True:
                try:
                    conn, _ = server.accept()
                    break
                except socket.timeout:
                    if not self._thread.is_alive():
                        raise self._failure or SimulationFailed(
                            "the simulator ended before connecting")
        finally:
            server.close()
        conn.settimeout(None)
        self._conn = conn
        self._f = conn.makefile("rwb")

    def call(self, op: str, payload: bytes = b"", **args) -> tuple[dict, bytes]:
        from sim.verilator_runner import SimulationFailed
        try:
            self._f.write(json.dumps({"op": op, **args}).encode() + b"\n" + payload)
            self._f.flush()
            line = self._f.readline()
        except OSError as e:
            line, why = b"", e
        else:
            why = None
        if not line:
            self._thread.join(timeout=60)
            raise SimulationFailed(f"the simulator stopped answering ({why or 'closed'}): "
                                   f"{self._failure or 'see ' + str(self.run_dir / 'sim.log')}")
        answer = json.loads(line)
        if "error" in answer:
            raise SimulationFailed(answer["error"])
        data = self._f.read(answer["n"]) if "n" in answer else b""
        return answer, data

    def close(self) -> None:
        """End the session (waits for it) and remove its run folder, unless the session
        failed (its log is kept there)."""
        if self._f is None:
            return
        try:
            self.call("close")
        except (AssertionError, OSError):
            pass
        for obj in (self._f, self._conn):
            obj.close()
        self._f = None
        self._thread.join()
        shutil.rmtree(self._sock_dir, ignore_errors=True)
        if self._failure is None:
            shutil.rmtree(self.run_dir, ignore_errors=True)


class VerilatorTransport:
    """See the module docstring. ``stall_per_256``: the DDR model's random back-pressure."""

    def __init__(self, cfg, mem_bytes: int, *, read_latency: int = DEFAULT_READ_LATENCY,
                 beat_interval: int = DEFAULT_BEAT_INTERVAL, stall_per_256: int = 0):
        self.clock_ns = CLOCK_NS
        self.build = build_accelerator(cfg, mem_bytes, read_latency=read_latency,
                                       beat_interval=beat_interval)
        self.session = CocotbSession(
            self.build, TEST_MODULE, {"bus_bytes": cfg.bus_bytes, "clock_ns": CLOCK_NS,
                                      "chunk_cycles": CHUNK_CYCLES, "stall": stall_per_256},
            prefix="host_bridge")
        self.run_dir = self.session.run_dir
        self._call = self.session.call

    # ---- Transport -------------------------------------------------------------------------
    def read32(self, offset: int) -> int:
        return self._call("read32", addr=offset)[0]["value"]

    def write32(self, offset: int, value: int) -> None:
        self._call("write32", addr=offset, value=value & 0xFFFF_FFFF)

    def read_mem(self, addr: int, n: int) -> bytes:
        return self._call("read_mem", addr=addr, n=n)[1]

    def write_mem(self, addr: int, data: bytes) -> None:
        self._call("write_mem", bytes(data), addr=addr, n=len(data))

    def wait_irq(self, timeout_s: float) -> bool:
        return self._call("wait_irq", cycles=self.cycles(timeout_s))[0]["irq"]

    def sleep(self, seconds: float) -> None:
        self._call("idle", cycles=self.cycles(seconds))

    def cycles(self, seconds: float) -> int:
        return max(1, round(seconds * 1e9 / self.clock_ns))

    # ---- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        """End the simulator session; its run folder is kept only if it failed."""
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
