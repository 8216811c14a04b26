"""Host driver of the accelerator: the software side of the register contract in
`firmware.contract` (offsets and bit fields come from the same tables the RTL decoder is built
from), over any `Transport`.

    drv = AccelDriver(transport)
    drv.identify()                              # checks ID and the register map's major version
    drv.load(image, base)                       # the build's DDR image (weights, program, ...)
    drv.write_input(input_addr, input_bytes)
    drv.run(program_addr, timeout_s=1.0)        # PROG_ADDR, START, wait for DONE -> RunStatus
    scores = drv.read_int8(output_addr, n)

A transport is four bus operations plus two ways of letting device time pass:

* ``read32(offset)`` / ``write32(offset, value)``: a 32-bit access to the accelerator's
  register window (offsets as in `rtl_gen.regs.register_map`);
* ``read_mem(addr, n)`` / ``write_mem(addr, data)``: bytes in the accelerator's DDR address
  space (the addresses its AXI4 master drives, i.e. those of the build's memory map);
* ``wait_irq(timeout_s)``: sleep until the interrupt line is high (True), the timeout
  passes (False), or None when the transport has no interrupt line (the driver then polls
  STATUS);
* ``sleep(seconds)``: let that much device time pass between two polls.

Where each window sits on a real bus (a SoC's CSR region, its main RAM) is the transport's
business, so the driver is the same in simulation and on a board.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from firmware.contract import (ACCEL_ID, LAYER_COUNTERS, REGMAP_VERSION, ErrorCode,
                               register_fields, register_map)

REG = {r.name: r.offset for r in register_map()}
MASK = {f"{f.register}.{f.name}": ((1 << f.width) - 1) << f.lsb for f in register_fields()}
CTRL_START, CTRL_IRQ_EN, CTRL_SOFT_RESET = (MASK["CTRL.START"], MASK["CTRL.IRQ_EN"],
                                             MASK["CTRL.SOFT_RESET"])
STATUS_BUSY, STATUS_DONE, STATUS_ERROR = (MASK["STATUS.BUSY"], MASK["STATUS.DONE"],
                                          MASK["STATUS.ERROR"])
# After a soft reset the core drains the AXI bursts it has in flight before BUSY drops.
DRAIN_POLLS = 10_000


class Transport(Protocol):
    def read32(self, offset: int) -> int: ...
    def write32(self, offset: int, value: int) -> None: ...
    def read_mem(self, addr: int, n: int) -> bytes: ...
    def write_mem(self, addr: int, data: bytes) -> None: ...
    def wait_irq(self, timeout_s: float) -> bool | None: ...
    def sleep(self, seconds: float) -> None: ...


class DriverError(RuntimeError):
    """The device is not the accelerator, or it did not behave as the register map says."""


def error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"UNKNOWN_{code}"


@dataclass
class RunStatus:
    """What the registers say after a run. ``timed_out``: DONE did not come within the
    timeout (the core was then soft-reset). ``layer_cycles[i]`` belongs to descriptor i."""
    status: int
    error_code: int
    layer_count: int
    cycles: int
    layer_cycles: list[int] = field(default_factory=list)
    timed_out: bool = False

    @property
    def done(self) -> bool:
        return bool(self.status & STATUS_DONE)

    @property
    def error(self) -> bool:
        return self.timed_out or bool(self.status & STATUS_ERROR)

    @property
    def ok(self) -> bool:
        return self.done and not self.error

    @property
    def error_name(self) -> str:
        return "TIMEOUT" if self.timed_out and not self.error_code else error_name(self.error_code)


class AccelDriver:
    """Register-level driver; see the module docstring."""

    def __init__(self, transport: Transport, *, poll_s: float = 1e-3):
        self.t = transport
        self.poll_s = poll_s

    # ---- identity and memory ---------------------------------------------------------------
    def identify(self) -> int:
        """Check ID and the register map's major version; returns VERSION."""
        ident = self.t.read32(REG["ID"])
        if ident != ACCEL_ID:
            raise DriverError(f"no accelerator there: ID reads {ident:#010x}, "
                              f"expected {ACCEL_ID:#010x}")
        version = self.t.read32(REG["VERSION"])
        if version >> 16 != REGMAP_VERSION >> 16:
            raise DriverError(f"register map version {version:#x}, this driver speaks "
                              f"{REGMAP_VERSION:#x} (major versions differ)")
        return version

    def load(self, image: bytes, base: int) -> None:
        """Write the build's whole DDR image at its base address."""
        self.t.write_mem(base, bytes(image))

    def write_input(self, addr: int, data: bytes) -> None:
        self.t.write_mem(addr, bytes(data))

    def read_int8(self, addr: int, n: int) -> np.ndarray:
        return np.frombuffer(self.t.read_mem(addr, n), np.int8).copy()

    # ---- control ---------------------------------------------------------------------------
    def set_program(self, addr: int) -> None:
        self.t.write32(REG["PROG_ADDR_LO"], addr & 0xFFFF_FFFF)
        self.t.write32(REG["PROG_ADDR_HI"], addr >> 32)

    def start(self, *, irq: bool = True) -> None:
        """Clear DONE/ERROR (sticky, write 1 to clear), then pulse START."""
        self.t.write32(REG["STATUS"], STATUS_DONE | STATUS_ERROR)
        self.t.write32(REG["CTRL"], CTRL_START | (CTRL_IRQ_EN if irq else 0))

    def soft_reset(self) -> None:
        """Abort a run and wait (a bounded number of polls) until the core is idle."""
        self.t.write32(REG["CTRL"], CTRL_SOFT_RESET)
        for _ in range(DRAIN_POLLS):
            if not self.t.read32(REG["STATUS"]) & STATUS_BUSY:
                return
            self.t.sleep(self.poll_s)
        raise DriverError("the core stayed BUSY after a soft reset (an AXI burst never ended)")

    def wait(self, timeout_s: float, *, use_irq: bool = True) -> bool:
        """Wait until STATUS.DONE (the interrupt if the transport has one and ``use_irq``,
        else by polling); False when ``timeout_s`` of device time passed first."""
        if use_irq:
            got = self.t.wait_irq(timeout_s)
            if got is not None:
                return got and bool(self.t.read32(REG["STATUS"]) & STATUS_DONE)
        waited = 0.0
        while not self.t.read32(REG["STATUS"]) & STATUS_DONE:
            if waited >= timeout_s:
                return False
            self.t.sleep(self.poll_s)
            waited += self.poll_s
        return True

    def read_status(self) -> RunStatus:
        """STATUS, ERROR_CODE, LAYER_COUNT, CYCLES (LO latches HI) and LAYER_CYCLES[i] for
        the layers that finished."""
        status = self.t.read32(REG["STATUS"])
        code = self.t.read32(REG["ERROR_CODE"]) & MASK["ERROR_CODE.CODE"]
        count = self.t.read32(REG["LAYER_COUNT"]) & MASK["LAYER_COUNT.COUNT"]
        lo = self.t.read32(REG["CYCLES_LO"])
        cycles = lo | self.t.read32(REG["CYCLES_HI"]) << 32
        base = REG["LAYER_CYCLES"]
        layers = [self.t.read32(base + 4 * i) for i in range(min(count, LAYER_COUNTERS))]
        return RunStatus(status, code, count, cycles, layers)

    def run(self, program_addr: int, *, timeout_s: float, use_irq: bool = True) -> RunStatus:
        """One run of the program at ``program_addr``: start, wait, read the registers; a
        run without DONE within ``timeout_s`` is soft-reset and reported ``timed_out``."""
        self.set_program(program_addr)
        self.start(irq=use_irq)
        finished = self.wait(timeout_s, use_irq=use_irq)
        result = self.read_status()
        if not finished:
            result.timed_out = True
            self.soft_reset()
        return result


@dataclass
class Inference:
    """One image's result: the class (argmax of the int8 scores, first on ties), the int8
    output tensor as read from DDR, and the registers after the run."""
    label: int | None
    scores: np.ndarray | None
    status: RunStatus


class Runner:
    """Classifies images with a `firmware.deploy.Deployment` on an `AccelDriver`: the DDR
    image's parameters and program (`Deployment.segments`) are written before the first
    image and after any failed run (which may have left anything anywhere); later images
    only rewrite the input region, since every layer rewrites its whole output region."""

    def __init__(self, driver: AccelDriver, deployment, *, timeout_s: float,
                 use_irq: bool = True):
        self.driver, self.dep = driver, deployment
        self.timeout_s, self.use_irq = timeout_s, use_irq
        self._loaded = False

    def classify(self, x_int8: np.ndarray) -> Inference:
        drv, dep = self.driver, self.dep
        if not self._loaded:
            for addr, data in dep.segments:
                drv.t.write_mem(addr, data)
            self._loaded = True
        drv.write_input(dep.input_addr, dep.input_bytes(x_int8))
        status = drv.run(dep.program_addr, timeout_s=self.timeout_s, use_irq=self.use_irq)
        if not status.ok:
            self._loaded = False
            return Inference(None, None, status)
        out = dep.output
        shape, stored = tuple(out["shape"]), int(out["stored_channels"])
        rows = int(np.prod(shape[:-1]))
        raw = drv.read_int8(out["addr"], rows * stored)
        scores = raw.reshape(shape[:-1] + (stored,))[..., :shape[-1]]
        return Inference(int(np.argmax(scores.reshape(-1))), scores, status)
