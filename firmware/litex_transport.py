"""A `firmware.driver.Transport` over a LiteX SoC's host bridge (UART or Etherbone), through
LiteX's own `litex.tools.litex_client.RemoteClient`, which talks to a running
``litex_server`` (the process that owns the serial port or the UDP link).

    with LiteXTransport.over_uart("/dev/ttyUSB0", csr_csv="build/soc/csr.csv") as t:
        AccelDriver(t).identify()

The SoC (`boards.soc`) puts the accelerator's register window and the DRAM it reads on the
bridge's bus; csr.csv of that build names both: the memory regions ``mnet_accel`` (the
registers) and ``main_ram`` (the accelerator's DDR address 0). There is no interrupt line
across the bridge, so the driver polls STATUS.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time

REGS_REGION = "mnet_accel"
RAM_REGION = "main_ram"
BURST_WORDS = 255          # an Etherbone record carries at most 255 words
SERVER_START_S = 10.0


class BridgeError(OSError):
    """No bridge, or a bridge that does not lead to the accelerator (one line)."""


class LiteXTransport:
    """Register window at ``regs_base`` and accelerator address 0 at ``mem_base`` on the
    bridge's bus; both default to csr.csv's ``mnet_accel`` and ``main_ram`` regions."""

    def __init__(self, *, host: str = "localhost", port: int = 1234, csr_csv: str | None = None,
                 regs_base: int | None = None, mem_base: int | None = None,
                 server: subprocess.Popen | None = None):
        from litex.tools.litex_client import RemoteClient
        self._server, self._sleep, self._on_close = server, time.sleep, None
        self.client = RemoteClient(host=host, port=port, csr_csv=csr_csv)
        mems = getattr(self.client, "mems", None)
        try:
            self.regs_base = regs_base if regs_base is not None else \
                getattr(mems, REGS_REGION).base
            self.mem_base = mem_base if mem_base is not None else getattr(mems, RAM_REGION).base
        except AttributeError:
            raise BridgeError(f"{csr_csv or 'no csr.csv'}: no '{REGS_REGION}' and "
                              f"'{RAM_REGION}' memory regions; give the SoC build's csr.csv "
                              "(or both bases)") from None
        try:
            self.client.open()
        except OSError as e:
            self.close()
            raise BridgeError(f"no litex_server at {host}:{port} ({e.strerror or e})") from None

    @classmethod
    def over_client(cls, client, *, regs_base: int, mem_base: int, sleep=time.sleep,
                    on_close=None) -> "LiteXTransport":
        """Over any LiteX-style bus client (``read(addr, length)``, ``write(addr, words)``),
        e.g. `sim.soc_sim`'s UARTBone client on the simulated SoC; ``sleep`` lets device time
        pass, ``on_close`` runs after `close`."""
        t = cls.__new__(cls)
        t.client, t.regs_base, t.mem_base = client, regs_base, mem_base
        t._server, t._sleep, t._on_close = None, sleep, on_close
        return t

    @classmethod
    def over_uart(cls, device: str, *, baudrate: int = 115200, bind_port: int = 1234,
                  **kwargs) -> "LiteXTransport":
        """Start ``litex_server --uart`` on ``device`` and connect to it."""
        server = subprocess.Popen(
            [sys.executable, "-m", "litex.tools.litex_server", "--uart", "--uart-port", device,
             "--uart-baudrate", str(baudrate), "--bind-port", str(bind_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if server.poll() is not None:
                lines = (server.stderr.read() or "").strip().splitlines()
                raise BridgeError(f"{device}: litex_server ended "
                                  f"({lines[-1] if lines else f'status {server.returncode}'})")
            try:
                socket.create_connection(("localhost", bind_port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            server.kill()
            raise BridgeError(f"{device}: litex_server did not start within {SERVER_START_S:g} s")
        return cls(port=bind_port, server=server, **kwargs)

    # ---- Transport -------------------------------------------------------------------------
    def read32(self, offset: int) -> int:
        return int(self.client.read(self.regs_base + offset))

    def write32(self, offset: int, value: int) -> None:
        self.client.write(self.regs_base + offset, value & 0xFFFF_FFFF)

    def read_mem(self, addr: int, n: int) -> bytes:
        lo = addr - addr % 4
        words = -(-(addr + n - lo) // 4)
        out = bytearray()
        for i in range(0, words, BURST_WORDS):
            chunk = self.client.read(self.mem_base + lo + 4 * i, min(BURST_WORDS, words - i))
            out += b"".join(int(w).to_bytes(4, "little") for w in chunk)
        return bytes(out[addr - lo:addr - lo + n])

    def write_mem(self, addr: int, data: bytes) -> None:
        lo, hi = addr - addr % 4, -(-(addr + len(data)) // 4) * 4
        if (lo, hi) != (addr, addr + len(data)):      # unaligned edges: read-modify-write
            buf = bytearray(self.read_mem(lo, hi - lo))
            buf[addr - lo:addr - lo + len(data)] = data
            data = bytes(buf)
        words = [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4)]
        for i in range(0, len(words), BURST_WORDS):
            self.client.write(self.mem_base + lo + 4 * i, words[i:i + BURST_WORDS])

    def wait_irq(self, timeout_s: float) -> None:
        return None                                   # no interrupt across the bridge

    def sleep(self, seconds: float) -> None:
        self._sleep(seconds)

    def close(self) -> None:
        self.client.close()
        if self._server is not None:
            self._server.terminate()
            self._server.wait(timeout=10)
            self._server = None
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
