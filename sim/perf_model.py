# amaranth: UnusedElaboratable=no
"""Analytical cycle model of the accelerator's schedule (`rtl_gen.sequencer`): for a compiled
program, per layer the MACs, the bytes moved, the compute and DMA cycles and the cycles the
LAYER_CYCLES register reports, plus the run's CYCLES register.

The model walks the sequencer's states with closed forms for the units behind them:

  * a read (descriptor, input, weights, records) and a store are modelled burst by burst
    as the DMA cuts them (`cfg.max_burst` beats, never across 4 KiB), against a DDR that
    answers with fixed latencies (`DdrTiming`, i.e. `sim.amaranth_axi_ram.AxiRam` without
    stalls): one AR/AW a cycle, at most `cfg.max_outstanding` bursts in flight (reads:
    until their last beat; writes: until their B), read beats `read_latency` cycles after
    their AR and in order, one per cycle, a B `write_latency` cycles after the later of its
    AW and its last W beat, W beats one per cycle from the store reader;
  * a pointwise tile streams pixels x in_c / pw_in steps; a pixel's result queues in the
    AccSerializer, so the MAC array stalls only when its pw_out / lanes requantizer beats
    take longer than the steps; then the engine and requantizer pipelines drain; a depthwise group walks the (H+1) x (W+1) grid
    (`DepthwiseEngine.tile_cycles`); MEAN and SOFTMAX run their units' fixed schedules.

Overlap rules, as the sequencer implements them:

  * a layer's output store runs behind the next layer: it delays only the next store (one
    write command at a time), a layer that loads its input (which loads beside the store,
    unless its bytes overlap the store's, then starts once the store is done) and the end
    of the run;
  * a layer whose input is the previous layer's output loads nothing;
  * CONV tile t+1's weights and records load while tile t computes, DWCONV group g+1's
    records and taps while group g computes; tiles and groups run one after the other,
    each draining its pipeline first;
  * descriptor fetches, the first tile's (group's) loads and DWCONV weights are not
    overlapped.

Everything is counted in cycles from the first descriptor fetch, the cycle the sequencer
enters a state being the unit of time; the constants below are the few cycles each state
and hand-over costs in the RTL.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from firmware.compiler import SUBSAMPLE, Firmware
from firmware.layout import ADD_RECORD_BYTES, PARAM_BYTES, round_up
from firmware.program import DESCRIPTOR_BYTES, Descriptor, Flags, Opcode
from rtl_gen.add_unit import AddUnit
from rtl_gen.axi import AXI_BOUNDARY_BYTES
from rtl_gen.buffers import BufferReader
from rtl_gen.config import AccelConfig
from rtl_gen.depthwise import DepthwiseEngine
from rtl_gen.float_requant import FloatRequantizer
from rtl_gen.pointwise import PointwiseEngine
from rtl_gen.requant import Requantizer
from rtl_gen.softmax_unit import SoftmaxUnit
from firmware.contract import Geometry, check_fits
from rtl_gen.sequencer import DECODE_CYCLES

# From the cycle the sequencer's DMA command is accepted to its first AR (AW) handshake
# (the accelerator's command slice, the burst splitter's two register stages, then the AR
# register).
_ADDRESS_ISSUE = 4
# From a read's last beat on the bus to the cycle the sequencer leaves the load's wait state
# (output register, completion, done pulse).
_READ_DONE = 4
# From a store's last B to the cycle the sequencer sees it finished.
_STORE_DONE = 3
# An AR (AW) waiting for a free slot goes out 2 cycles after the burst that frees it ends.
_CREDIT_RETURN = 2
# From a run state (walks accepted) to the first item at a unit (`BufferReader.LATENCY`).
_WALK_START = 1 + BufferReader.LATENCY
# From a store's command to its first W beat: a walk start behind the walk's slice, then
# the W register (two cycles after its first AW).
_STORE_FIRST_BEAT = 1 + _WALK_START + 1
# From the last write into the output buffer to the sequencer's next state.
_WRITER_IDLE = 1
_MEAN_PARTIAL_END = 1
# An engine result's register in the AccSerializer's queue, then its output register.
_SERIALIZER = 2
# DECODE, the serial size products and VALIDATE.
_DECODE = DECODE_CYCLES
TAPS = 9


@dataclass(frozen=True)
class DdrTiming:
    """Fixed DDR latencies in accelerator cycles, as `AxiRam(read_latency, write_latency)`."""
    read_latency: int = 4    # AR handshake to its first R beat
    write_latency: int = 2   # a burst's last W beat (or its AW, if later) to its B


@dataclass
class LayerCycles:
    """One layer of the program: work, traffic and predicted cycles."""
    layer: int
    op: str               # `layer_label`, its role (" (subsample)") and "k/n" for band k of n
    macs: int             # multiply-accumulates of the network layer (unpadded channels)
    weight_bytes: int     # weights read from DDR
    record_bytes: int     # channel records read from DDR
    input_bytes: int      # input activations read from DDR (0 when chained)
    output_bytes: int     # output activations stored to DDR
    chained: bool         # input taken from the previous layer's output buffer
    compute: int          # cycles the engines spend on the layer's tiles / groups
    dma: int              # cycles of the layer's transfers, one after the other (store included)
    cycles: int           # LAYER_CYCLES: descriptor fetch to the start of the store

    @property
    def bytes(self) -> int:
        return (DESCRIPTOR_BYTES + self.weight_bytes + self.record_bytes + self.input_bytes
                + self.output_bytes)


@dataclass
class Prediction:
    cfg: AccelConfig
    layers: list[LayerCycles]
    total: int            # CYCLES: first descriptor fetch to the end of the run

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)


def _bursts(addr: int, nbytes: int, cfg: AccelConfig) -> list[int]:
    """Beats of each burst the DMA cuts a transfer into (`rtl_gen.dma.BurstSplitter`)."""
    page = AXI_BOUNDARY_BYTES // cfg.bus_bytes
    beat, left, out = addr // cfg.bus_bytes, nbytes // cfg.bus_bytes, []
    while left:
        n = min(left, cfg.max_burst, page - beat % page)
        out.append(n)
        beat, left = beat + n, left - n
    return out


def read_end(start: int, addr: int, nbytes: int, cfg: AccelConfig, ddr: DdrTiming) -> int:
    """The cycle the sequencer moves on from a load whose command is accepted at `start`."""
    issued, last = [], []
    for j, beats in enumerate(_bursts(addr, nbytes, cfg)):
        ar = start + _ADDRESS_ISSUE if j == 0 else issued[-1] + 1
        if j >= cfg.max_outstanding:
            ar = max(ar, last[j - cfg.max_outstanding] + _CREDIT_RETURN)
        first = ar + ddr.read_latency if j == 0 else max(ar + ddr.read_latency, last[-1] + 1)
        issued.append(ar)
        last.append(first + beats - 1)
    return last[-1] + _READ_DONE


def store_end(start: int, addr: int, nbytes: int, cfg: AccelConfig, ddr: DdrTiming) -> int:
    """The cycle from which the sequencer sees a store accepted at `start` finished."""
    w = start + _STORE_FIRST_BEAT
    issued, responses = [], []
    for j, beats in enumerate(_bursts(addr, nbytes, cfg)):
        aw = start + _ADDRESS_ISSUE if j == 0 else issued[-1] + 1
        if j >= cfg.max_outstanding:
            aw = max(aw, responses[j - cfg.max_outstanding] + _CREDIT_RETURN)
        w += beats
        b = max(aw, w - 1) + ddr.write_latency
        issued.append(aw)
        responses.append(b if j == 0 else max(b, responses[-1] + 1))
    return responses[-1] + _STORE_DONE


# The units are built only to read their latencies.
@cache
def _float_cycles() -> int:
    return FloatRequantizer().CYCLES


def conv_tile_cycles(d: Descriptor, cfg: AccelConfig) -> int:
    """CONV_RUN to the state after the tile's last output write, loads not counted.

    A pixel's result takes `steps` = in_c / pw_in cycles in the MAC array and `drain` =
    pw_out / lanes one-cycle beats (or pw_out FloatRequantizer values) in the AccSerializer,
    whose queue lets the array go on with the next pixel: results leave one every
    max(steps, drain) cycles, and the last one still drains before the tail.
    """
    g = Geometry(cfg)
    steps = d.in_c // cfg.pw_in
    if d.flags & Flags.FLOAT_REQUANT:
        beats, beat_cycles, tail = cfg.pw_out, _float_cycles(), _float_cycles()
    else:
        beats, beat_cycles, tail = cfg.pw_out // g.lanes, 1, Requantizer.LATENCY
    drain = beats * beat_cycles
    pixels = d.in_h * d.in_w
    return (_WALK_START + steps + PointwiseEngine.pipeline_latency(cfg) + _SERIALIZER
            + (pixels - 1) * max(steps, drain) + drain - beat_cycles + tail + _WRITER_IDLE)


def dw_group_cycles(d: Descriptor, cfg: AccelConfig) -> int:
    """DW_RUN to the state after the group's last output write, loads not counted. A
    depthwise result is one requantizer beat, so the engine never waits on it. The walk
    starts when the first pixel arrives or, on a narrow map, when the engine's table fill
    lets it (the group was loaded in the cycle before DW_RUN)."""
    engine = DepthwiseEngine
    start = max(_WALK_START, engine.walk_start(d.in_w) - 1)
    grid_and_drain = engine.tile_cycles(d.in_h, d.in_w) - (engine.walk_start(d.in_w) - 1)
    return start + grid_and_drain + _SERIALIZER + Requantizer.LATENCY + _WRITER_IDLE


def dw_trailing_positions(d: Descriptor) -> int:
    """Grid positions after a group's last output: the rows below the last output row (a
    band without bottom padding, or top padding at stride 2 and an even height, has some),
    then the columns right of the last output column (VALID or PyTorch-style padding)."""

    def last_end(size, before, after):
        last = size - 1 + after                  # last row (column) a window may end on
        if d.stride == 2 and (last - before) % 2:
            last -= 1                            # windows end on odd (padding before) or even
        return last

    last_row = last_end(d.in_h, d.pad_top, d.pad_bottom)
    last_col = last_end(d.in_w, d.pad_left, d.pad_right)
    return (d.in_h - last_row) * (d.in_w + 1) + (d.in_w - last_col)


# After a group's last output leaves the DepthwiseEngine it still passes the requantizer
# and the writer; the engine can take the next group that many cycles (and one state) sooner.
_DW_OUTPUT_TAIL = _SERIALIZER + Requantizer.LATENCY + _WRITER_IDLE + 1


def mean_cycles(d: Descriptor, cfg: AccelConfig) -> int:
    """MEAN_RUN to STORE: accumulate every beat, then the MeanUnit's FLUSH, FETCH and the
    load of its output register, and the drain of in_c / lanes rows through the
    requantizer."""
    beats = d.in_c // Geometry(cfg).lanes
    return (_WALK_START + d.in_h * d.in_w * beats + 3 + beats + Requantizer.LATENCY
            + _WRITER_IDLE)


def mean_partial_cycles(d: Descriptor, cfg: AccelConfig) -> int:
    """MEAN_RUN of a MEAN_PARTIAL band to the next FETCH: its beats into the sums, then the
    activation reader's last item and MEAN_PARTIAL_WAIT."""
    beats = d.in_c // Geometry(cfg).lanes
    return _WALK_START + d.in_h * d.in_w * beats + _MEAN_PARTIAL_END


def add_cycles(d: Descriptor, cfg: AccelConfig) -> int:
    """ADD_RUN to the state after the last output write: one beat of `lanes` channels per
    cycle through the AddUnit and the Requantizer."""
    beats = d.in_h * d.in_w * d.in_c // Geometry(cfg).lanes
    return (_WALK_START + beats + AddUnit.LATENCY + Requantizer.LATENCY + _WRITER_IDLE)


def softmax_cycles(d: Descriptor) -> int:
    """SOFTMAX_RUN to STORE, including the -128 padding up to out_c."""
    run = _WALK_START + SoftmaxUnit.vector_cycles(d.real_c) + _WRITER_IDLE
    pad = d.out_c - d.real_c
    return run + (1 + pad + _WRITER_IDLE if pad else 0)


def layer_label(d: Descriptor) -> str:
    """The layer's kind in reports: the descriptor's opcode, except that a dense layer, which
    the firmware runs as a CONV descriptor, is FULLY_CONNECTED (it is the one CONV with
    FLOAT_REQUANT: TFLite requantizes only FULLY_CONNECTED through double scales)."""
    if d.opcode == Opcode.CONV and d.flags & Flags.FLOAT_REQUANT:
        return "FULLY_CONNECTED"
    return Opcode(d.opcode).name


def _role(fw: Firmware, d: Descriptor) -> str:
    return fw.roles[d.layer] if d.layer < len(fw.roles) else ""


def _layer_macs(fw: Firmware, d: Descriptor) -> int:
    """The network layer's MACs, on its logical (unpadded) channels; none for a pass that
    only moves values (a strided 1x1 convolution's subsampling)."""
    out_pixels = d.out_h * d.out_w
    if _role(fw, d) == SUBSAMPLE:
        return 0
    if d.opcode == Opcode.CONV:
        # The logical channels of the input tensor (a band reads inside it), or of the
        # subsampling pass that wrote the region; else the stored channels.
        writers = [t.shape[-1] for t in fw.tensors.values()
                   if t.addr <= d.input_addr < t.addr + t.nbytes]
        writers += [p.real_c for p in fw.descriptors if _role(fw, p) == SUBSAMPLE and
                    p.output_addr <= d.input_addr < p.output_addr + p.out_h * p.out_w * p.out_c]
        real_in = writers[0] if writers else d.in_c
        return out_pixels * d.real_c * real_in
    if d.opcode == Opcode.DWCONV:
        return out_pixels * d.real_c * TAPS
    return 0


def _output_bytes(d: Descriptor) -> int:
    return d.out_h * d.out_w * d.out_c


def _overlap(addr_a: int, bytes_a: int, addr_b: int, bytes_b: int) -> bool:
    return addr_a < addr_b + bytes_b and addr_b < addr_a + bytes_a


class _Schedule:
    """The sequencer's timeline, layer by layer; `now` is the cycle the next state starts."""

    def __init__(self, fw: Firmware, cfg: AccelConfig, ddr: DdrTiming):
        self.fw, self.cfg, self.ddr = fw, cfg, ddr
        self.g = Geometry(cfg)
        self.now = 0
        self.store_clear = 0      # from when the write side is free
        self.prev = None          # the previous layer's descriptor, if it stored its output
        self.stored = None        # the last layer that stored its output
        self.dma = 0              # this layer's transfer cycles so far

    def read(self, addr: int, nbytes: int, when: int | None = None) -> None:
        start = self.now if when is None else max(self.now, when)
        self.now = read_end(start, addr, nbytes, self.cfg, self.ddr)
        self.dma += self.now - start

    def fetch(self, index: int) -> None:
        self.read(self.fw.program_addr + index * DESCRIPTOR_BYTES, DESCRIPTOR_BYTES)

    def store(self, d: Descriptor) -> int:
        """Start the layer's store once the previous one is done; returns its bytes."""
        start = max(self.now, self.store_clear)
        nbytes = round_up(d.out_h * d.out_w * d.out_c, self.cfg.bus_bytes)
        self.store_clear = store_end(start, d.output_addr, nbytes, self.cfg, self.ddr)
        self.dma += self.store_clear - start
        self.now = start + 1
        return nbytes

    def tiles(self, count: int, next_loads, before_run: int, run: int,
              last_run: int | None = None) -> int:
        """Run `count` tiles (groups) whose first one is loaded, tile t + 1 loading with
        `next_loads(t + 1)` behind tile t; `before_run` states between the loads and the run
        state, `run` cycles from a tile's run state to the next one's wait state (nothing
        else waiting), `last_run` (default `run`) from the last one's to the state after it.
        Returns the compute cycles."""
        last_run = run if last_run is None else last_run
        self.now += before_run
        for t in range(count):
            if t < count - 1:
                done = self.now + run
                self.now += 1
                next_loads(t + 1)
                self.now = max(self.now, done - 1) + before_run
            else:
                self.now += last_run
        return (count - 1) * run + last_run

    def conv(self, d: Descriptor) -> tuple[int, int, int]:
        """The tiles of pw_out channels; returns (weight bytes, record bytes, compute)."""
        cfg = self.cfg
        tile_w, tile_r = d.in_c * cfg.pw_out, PARAM_BYTES * cfg.pw_out
        count = d.out_c // cfg.pw_out

        def loads(t):
            self.read(d.weight_addr + t * tile_w, tile_w)
            self.read(d.param_addr + t * tile_r, tile_r)

        loads(0)
        # CONV_WAIT, then CONV_RUN.
        compute = self.tiles(count, loads, 1, conv_tile_cycles(d, cfg))
        return count * tile_w, count * tile_r, compute

    def dwconv(self, d: Descriptor) -> tuple[int, int, int]:
        """All taps, then the groups of dw_lanes channels; returns as `conv`."""
        cfg = self.cfg
        weight_bytes = round_up(TAPS * d.in_c, cfg.bus_bytes)
        group_r = PARAM_BYTES * cfg.dw_lanes
        count = d.in_c // cfg.dw_lanes

        def loads(t):
            self.read(d.param_addr + t * group_r, group_r)
            self.now += _WALK_START + TAPS + 1      # DW_TAPS: into the tap register

        self.read(d.weight_addr, weight_bytes)
        loads(0)
        # DW_WAIT and DW_TILE, then DW_RUN. Trailing grid positions without outputs: the
        # writer idles earlier, and the next group starts once the engine has drained.
        run, trailing = dw_group_cycles(d, cfg), dw_trailing_positions(d)
        compute = self.tiles(count, loads, 2, run - min(trailing, _DW_OUTPUT_TAIL),
                             run - trailing)
        return weight_bytes, count * group_r, compute

    def add(self, d: Descriptor, prev: Descriptor | None) -> tuple[int, int, int]:
        """The second input (after the store still running if it overlaps it), the two
        records, ADD_WAIT, then ADD_RUN; returns as `conv`."""
        bus = self.cfg.bus_bytes
        weight_bytes, record_bytes = round_up(d.weight_bytes, bus), max(ADD_RECORD_BYTES, bus)
        racing = prev is not None and _overlap(d.weight_addr, d.weight_bytes,
                                               prev.output_addr, _output_bytes(prev))
        self.read(d.weight_addr, weight_bytes, when=self.store_clear if racing else None)
        self.read(d.param_addr, record_bytes)
        self.now += 1                               # ADD_WAIT
        compute = add_cycles(d, self.cfg)
        self.now += compute
        return weight_bytes, record_bytes, compute

    def layer(self, d: Descriptor) -> LayerCycles:
        start, self.dma = self.now, 0
        self.fetch(d.layer)
        self.now += _DECODE
        in_bytes = d.in_h * d.in_w * d.in_c
        prev = self.prev
        chained = (prev is not None and d.input_addr == prev.output_addr and
                   in_bytes <= _output_bytes(prev))
        input_bytes = 0
        if not chained:
            # Beside the store still running, unless that may be writing the input's bytes;
            # the layer itself starts after the store (INPUT_STORE_WAIT).
            input_bytes = round_up(in_bytes, self.g.act_word)
            racing = self.stored is not None and _overlap(
                d.input_addr, in_bytes, self.stored.output_addr, _output_bytes(self.stored))
            self.read(d.input_addr, input_bytes, when=self.store_clear if racing else None)
            if self.store_clear >= self.now:
                self.now = self.store_clear + 1
        weight_bytes = record_bytes = 0
        if d.opcode == Opcode.CONV:
            weight_bytes, record_bytes, compute = self.conv(d)
        elif d.opcode == Opcode.DWCONV:
            weight_bytes, record_bytes, compute = self.dwconv(d)
        elif d.opcode == Opcode.ADD:
            weight_bytes, record_bytes, compute = self.add(d, prev)
        elif d.opcode == Opcode.MEAN and d.flags & Flags.MEAN_PARTIAL:
            compute = mean_partial_cycles(d, self.cfg)
            self.now += compute
        else:
            compute = mean_cycles(d, self.cfg) if d.opcode == Opcode.MEAN else softmax_cycles(d)
            self.now += compute
        if d.opcode == Opcode.MEAN and d.flags & Flags.MEAN_PARTIAL:
            output_bytes, self.prev = 0, None       # no store; nothing chains after it
        else:
            output_bytes = self.store(d)
            self.prev = self.stored = d
        name = layer_label(d) + (f" ({_role(self.fw, d)})" if _role(self.fw, d) else "")
        band, bands = self.fw.bands[d.layer] if d.layer < len(self.fw.bands) else (0, 1)
        if bands > 1:
            name += f" {band + 1}/{bands}"
        return LayerCycles(d.layer, name, _layer_macs(self.fw, d),
                           weight_bytes, record_bytes, input_bytes, output_bytes, chained,
                           compute, self.dma, self.now - start)

    def finish(self, end_index: int) -> int:
        """The END descriptor, then the last store; returns the run's cycles."""
        self.fetch(end_index)
        self.now += 2                                   # DECODE, DECODED
        return max(self.now, self.store_clear) + 1      # FINISH


def predict(fw: Firmware, cfg: AccelConfig | None = None,
            ddr: DdrTiming = DdrTiming()) -> Prediction:
    """Per-layer and total cycles of `fw` on the accelerator built for `cfg` (default: the
    config it was compiled for). Raises `firmware.contract.ProgramError` for a program the
    accelerator would stop on."""
    cfg = cfg or fw.cfg
    check_fits(fw, cfg)
    schedule = _Schedule(fw, cfg, ddr)
    layers = [schedule.layer(d) for d in fw.descriptors if d.opcode != Opcode.END]
    return Prediction(cfg, layers, schedule.finish(len(layers)))
