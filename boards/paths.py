"""Every slow register-to-register path of a synthesized ECP5 netlist, from Yosys alone.

nextpnr reports one critical path per build, and a build of a whole board config takes 30 min
or more, so closing timing path by path is slow. This walks the netlist Yosys writes
(`synth_ecp5 -json`, ~5 min) and estimates the arrival time of every flip-flop, block-RAM and
multiplier input with a small delay model of the ECP5 fabric:

* a LUT4 adds 0.24 ns (nextpnr's figure for speed grade 6), a PFUMX / L6MUX21 0.2 ns (their
  LUT inputs are inside the slice: no routing);
* a carry chain (CCU2C) costs 0.45 ns to enter and 0.06 ns per cell to ripple;
* each routed net costs 0.45 ns + 0.3 ns x log2(1 + fanout): a high-fanout enable or
  handshake net is what dominated the measured critical paths (2.8-3.5 ns for one hop);
* clock-to-out: 0.52 ns for a flip-flop, 5.8 ns for an unregistered DP16KD output (nextpnr's
  figure), 0.5 ns for a MULT18X18D with its output register (4.5 ns without).

A block RAM's output also crosses the die to its reader (4.9 ns in one 45F build): placement,
which this model does not see, so a block-RAM path ranks lower here than it routes.

The model ranks paths; it does not replace nextpnr (placement adds or removes a few ns). Paths
are grouped by (start, end) register names with the numeric suffixes Yosys adds removed, so a
40-bit register shows once. Usage:

    python -m boards.paths build/synth45/mnet_accel.json [--top 30] [--min-ns 7]
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import defaultdict

LUT_NS, MUX_NS, CARRY_IN_NS, CARRY_STEP_NS, CARRY_OUT_NS = 0.24, 0.2, 0.45, 0.06, 0.3
FF_CQ_NS, BRAM_CQ_NS, DSP_REG_NS, DSP_COMB_NS = 0.52, 5.8, 0.5, 4.5


def route_ns(fanout: int) -> float:
    return 0.45 + 0.3 * math.log2(1 + fanout)


# Combinational cells: output port -> input ports that reach it.
_COMB = {
    "LUT4": {"Z": ("A", "B", "C", "D")},
    "PFUMX": {"Z": ("ALUT", "BLUT", "C0")},
    "L6MUX21": {"Z": ("D0", "D1", "SD")},
}
# Wide-function mux inputs fed inside the slice (no general routing).
_LOCAL_INPUTS = ("ALUT", "BLUT", "D0", "D1")
_CCU_INPUTS = ("A0", "B0", "C0", "D0", "A1", "B1", "C1", "D1")


def _clean(name: str) -> str:
    """A register's name without Yosys' mapping suffixes (`_TRELLIS_FF_Q_12`, `_LUT4_Z`...)."""
    name = re.sub(r"_(TRELLIS_FF|LUT4|CCU2C|PFUMX|L6MUX21|DP16KD|MULT18X18D)_.*$", "", name)
    return re.sub(r"\[\d+\]$", "", name)


class Netlist:
    def __init__(self, path: str, top: str | None = None):
        data = json.load(open(path))
        mods = data["modules"]
        top = top or next(n for n, m in mods.items()
                          if m.get("attributes", {}).get("top") or len(mods) == 1)
        mod = mods[top]
        self.cells = mod["cells"]
        self.names = {}
        for name, net in mod["netnames"].items():
            if net.get("hide_name"):
                continue
            for bit in net["bits"]:
                if isinstance(bit, int) and (bit not in self.names
                                             or len(name) < len(self.names[bit])):
                    self.names[bit] = name
        self.driver, self.fanout = {}, defaultdict(int)
        for cname, cell in self.cells.items():
            for port, direction in cell.get("port_directions", {}).items():
                for bit in cell["connections"].get(port, []):
                    if not isinstance(bit, int):
                        continue
                    if direction == "output":
                        self.driver[bit] = (cname, port)
                    else:
                        self.fanout[bit] += 1
        self.arrival: dict = {}

    def _start(self, cname: str, port: str) -> float | None:
        """Clock-to-out of a sequential output, None for a combinational one."""
        cell = self.cells[cname]
        kind = cell["type"]
        if kind == "TRELLIS_FF":
            return FF_CQ_NS
        if kind == "DP16KD":
            return DSP_REG_NS if cell["parameters"].get("REGMODE_A", "NOREG") != "NOREG" \
                else BRAM_CQ_NS
        if kind == "MULT18X18D":
            reg = cell["parameters"].get("REG_OUTPUT_CLK", "NONE")
            return DSP_REG_NS if reg != "NONE" else DSP_COMB_NS
        if kind in _COMB or kind == "CCU2C":
            return None
        return FF_CQ_NS     # anything else (TRELLIS_DPR16X4, IO): treat as a register

    def bit_arrival(self, bit, local: bool = False) -> tuple:
        """(ns at the input pin, previous bit) for a net bit, including its routing unless
        `local` (a slice's LUT outputs into its own wide-function muxes)."""
        if not isinstance(bit, int) or bit not in self.driver:
            return 0.0, None
        t, _ = self.out_arrival(*self.driver[bit])
        return t + (0.0 if local else route_ns(self.fanout[bit])), bit

    def out_arrival(self, cname: str, port: str) -> tuple:
        key = (cname, port)
        if key in self.arrival:
            return self.arrival[key]
        self.arrival[key] = (0.0, None)     # breaks combinational loops, if any
        start = self._start(cname, port)
        cell = self.cells[cname]
        if start is not None:
            result = (start, None)
        elif cell["type"] == "CCU2C":
            conns = cell["connections"]
            best = (0.0, None)
            cin = conns.get("CIN", [None])[0]
            if isinstance(cin, int) and cin in self.driver:
                # Dedicated carry routing: a step, not a routed net.
                t, _ = self.out_arrival(*self.driver[cin])
                best = (t + CARRY_STEP_NS, cin)
            for p in _CCU_INPUTS:
                for b in conns.get(p, []):
                    t, prev = self.bit_arrival(b)
                    if t + CARRY_IN_NS > best[0]:
                        best = (t + CARRY_IN_NS, prev)
            result = (best[0] + (0 if port == "COUT" else CARRY_OUT_NS), best[1])
        else:
            step = LUT_NS if cell["type"] == "LUT4" else MUX_NS
            best = (0.0, None)
            for p in _COMB[cell["type"]][port]:
                for b in cell["connections"].get(p, []):
                    t, prev = self.bit_arrival(b, local=p in _LOCAL_INPUTS)
                    if t > best[0]:
                        best = (t, prev)
            result = (best[0] + step, best[1])
        self.arrival[key] = result
        return result

    def trace(self, bit) -> list:
        """Net names from the path's start register to `bit`."""
        names = []
        while isinstance(bit, int) and bit in self.driver:
            names.append(self.names.get(bit, f"${bit}"))
            cname, port = self.driver[bit]
            if self._start(cname, port) is not None:
                break
            _, bit = self.out_arrival(cname, port)
        return names[::-1]

    def endpoints(self):
        """(ns, endpoint description, bit) for every sequential input."""
        for cname, cell in self.cells.items():
            kind = cell["type"]
            if kind in _COMB or kind == "CCU2C":
                continue
            for port, direction in cell.get("port_directions", {}).items():
                if direction != "input" or port in ("CLK", "CLKA", "CLKB"):
                    continue
                for bit in cell["connections"].get(port, []):
                    t, _ = self.bit_arrival(bit)
                    if t > 0:
                        yield t, f"{cname}.{port}", bit


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m boards.paths", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("netlist", help="Yosys JSON netlist (synth_ecp5 -json)")
    ap.add_argument("--top", type=int, default=30, help="groups to print")
    ap.add_argument("--min-ns", type=float, default=7.0, help="only paths above this estimate")
    args = ap.parse_args(argv)
    sys.setrecursionlimit(1_000_000)
    net = Netlist(args.netlist)
    groups = {}
    for t, end, bit in net.endpoints():
        if t < args.min_ns:
            continue
        path = net.trace(bit)
        key = (_clean(path[0]) if path else "?", _clean(end))
        if key not in groups or groups[key][0] < t:
            groups[key] = (t, path, groups.get(key, (0, 0, 0))[2] + 1)
        else:
            groups[key] = (groups[key][0], groups[key][1], groups[key][2] + 1)
    ranked = sorted(groups.items(), key=lambda kv: -kv[1][0])
    print(f"{len(groups)} start/end groups above {args.min_ns} ns (model estimate)")
    for (start, end), (t, path, count) in ranked[:args.top]:
        print(f"{t:6.2f} ns  {start}  ->  {end}   ({count} endpoint bits, {len(path)} nets)")
        print("          " + " > ".join(_clean(n) for n in path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
