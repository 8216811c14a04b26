"""The one typed hardware configuration. Every generated artifact (RTL, firmware layout,
register header, performance model) is derived from an `AccelConfig`."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields


class ConfigError(ValueError):
    """An impossible hardware configuration."""


# Upper bounds that keep generation practical: Amaranth writes a memory's initial contents
# word by word (a 1 MiB buffer alone takes about a minute to convert), and arrays wider than
# 64 lanes only multiply elaboration time on any FPGA this targets.
MAX_BUFFER_BYTES = 1 << 20
MAX_PARALLEL = 64
# AXI IDs: the DMA always drives ID 0, so the width only has to suit the interconnect; 16 bits
# covers any of them, and 0 or a negative width makes no port at all.
MAX_ID_WIDTH = 16
# No FPGA this targets clocks a design like this anywhere near 500 MHz (the ECP5's global
# clock network tops out at 400 MHz; the accelerator routes at about 70-80 MHz there).
MAX_CLOCK_MHZ = 500


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass(frozen=True)
class AccelConfig:
    # Pointwise MAC array: `pw_out` output channels x `pw_in` input channels per cycle.
    pw_out: int = 16
    pw_in: int = 8
    # Depthwise engine: channels processed in parallel, each with a 3x3 window per cycle.
    dw_lanes: int = 8
    # AXI4 master toward DDR.
    bus_bytes: int = 8              # data width in bytes (64-bit bus)
    addr_width: int = 32
    id_width: int = 4
    max_burst: int = 16             # beats per burst (AXI4 INCR allows up to 256)
    max_outstanding: int = 4        # read bursts in flight
    # On-chip buffers, in bytes.
    act_buffer_bytes: int = 64 * 1024
    # 64 KiB: a pointwise tile (pw_out x in_c) fits half of it up to in_c = 2048 at pw_out 16
    # (MobileNetV2's 1280-input dense head), in as many block RAMs as 32 KiB on the ECP5s.
    weight_buffer_bytes: int = 64 * 1024
    # Target clock for synthesis and for time figures in reports.
    clock_mhz: float = 50.0
    # The residual-ADD unit (`rtl_gen.add_unit`): only MobileNetV2-style networks have ADD
    # layers, and the LUT model charges it 4,400 LUT4 per requantizer lane
    # (`boards.targets.LUT_PER_ADD_LANE`). Without it an ADD descriptor stops the run with
    # UNSUPPORTED.
    with_add: bool = True

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            # f.type is a string: `from __future__ import annotations`.
            if f.type == "bool":
                if not isinstance(v, bool):
                    raise ConfigError(f"{f.name} must be true or false, got {v!r}")
                continue
            number = f.type == "float"
            if isinstance(v, bool) or not isinstance(v, (int, float) if number else int):
                raise ConfigError(f"{f.name} must be {'a number' if number else 'an integer'}, "
                                  f"got {v!r}")
        for f in ("pw_out", "pw_in", "dw_lanes", "bus_bytes", "max_burst", "max_outstanding"):
            v = getattr(self, f)
            if not _pow2(v):
                raise ConfigError(f"{f} must be a power of two, got {v}")
        for f in ("pw_out", "pw_in", "dw_lanes"):
            if getattr(self, f) > MAX_PARALLEL:
                raise ConfigError(f"{f} must be <= {MAX_PARALLEL}, got {getattr(self, f)}")
        if not 4 <= self.bus_bytes <= 64:
            raise ConfigError(f"bus_bytes must be 4..64 (32- to 512-bit AXI), got {self.bus_bytes}")
        if self.max_burst > 256:
            raise ConfigError(f"max_burst must be <= 256 (AXI4 INCR), got {self.max_burst}")
        if self.max_burst * self.bus_bytes > 4096:
            raise ConfigError("one burst must not exceed the 4 KiB AXI boundary")
        if not 16 <= self.addr_width <= 64:
            raise ConfigError(f"addr_width must be 16..64, got {self.addr_width}")
        if not 1 <= self.id_width <= MAX_ID_WIDTH:
            raise ConfigError(f"id_width must be 1..{MAX_ID_WIDTH}, got {self.id_width}")
        for f in ("act_buffer_bytes", "weight_buffer_bytes"):
            if not 1024 <= getattr(self, f) <= MAX_BUFFER_BYTES:
                raise ConfigError(f"{f} must be 1 KiB .. {MAX_BUFFER_BYTES >> 20} MiB, "
                                  f"got {getattr(self, f)}")
        if not 0 < self.clock_mhz <= MAX_CLOCK_MHZ:   # also rejects nan
            raise ConfigError(f"clock_mhz must be > 0 and <= {MAX_CLOCK_MHZ}, "
                              f"got {self.clock_mhz}")

    @property
    def macs_per_cycle(self) -> int:
        return self.pw_out * self.pw_in

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_dict(cls, d: dict) -> "AccelConfig":
        known = {f.name for f in fields(cls)}
        if not isinstance(d, dict):
            raise ConfigError(f"a config is a JSON object of AccelConfig fields, got {type(d).__name__}")
        unknown = set(d) - known
        if unknown:
            # repr: a key may hold anything, even a newline, and the error is one line.
            names = sorted(k if k.isprintable() else repr(k) for k in map(str, unknown))
            raise ConfigError(f"unknown config keys: {', '.join(names)}")
        return cls(**d)
