"""Registered hard multipliers: a * b two enabled cycles after a and b, on an ECP5 DSP block.

Yosys maps a `*` onto a MULT18X18D with every register of the block bypassed, and nothing
in the ECP5 flow moves the flip-flops around it into the block afterwards. The product then
crosses the block combinationally (3.9 ns) between two fabric registers, each a long route
away: that was the slowest path of the whole accelerator (about 14 ns, 72 MHz). With the
block's own input and output registers the path inside the block is register to register,
and only the short hops from the fabric into the block and out of it are left (nextpnr
times a MULT18X18D by its register settings).

`registered_product` builds the same two registers either way, so the latency is the same
in every simulator and on the board:

* for an ECP5 platform (`platform.family == "ecp5"`, e.g. `boards.synth`, which converts with
  the board's platform) it instantiates MULT18X18D with REG_INPUTA/B and REG_OUTPUT on CLK0;
* otherwise (Amaranth simulation, Verilator, other FPGAs) it writes the two registers and
  the `*` in Amaranth, which any synthesizer maps as it likes.

The operands are signed and at most 18 bits wide; the product is their exact signed
product (at most 36 bits).
"""
from __future__ import annotations

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal, Value, signed

MAX_OPERAND_BITS = 18
LATENCY = 2


def targets_ecp5(platform) -> bool:
    return getattr(platform, "family", None) == "ecp5"


def registered_product(m: Module, a, b, *, name: str, platform, enable=None) -> Signal:
    """Signal holding a * b (both signed, <= 18 bits) `LATENCY` enabled cycles after a, b.

    `enable` (default: always) advances both registers together, like a stalled pipeline.
    """
    a, b = Value.cast(a), Value.cast(b)
    for operand in (a, b):
        if not operand.shape().signed or len(operand) > MAX_OPERAND_BITS:
            raise ValueError(f"{name}: operands must be signed and at most "
                             f"{MAX_OPERAND_BITS} bits, got {operand.shape()}")
    product = Signal(signed(len(a) + len(b)), name=name)
    enable = Const(1) if enable is None else Value.cast(enable)
    if targets_ecp5(platform):
        _mult18x18d(m, a, b, product, enable, name)
    else:
        a_reg = Signal(a.shape(), name=f"{name}_a")
        b_reg = Signal(b.shape(), name=f"{name}_b")
        with m.If(enable):
            m.d.sync += [a_reg.eq(a), b_reg.eq(b), product.eq(a_reg * b_reg)]
    return product


def _mult18x18d(m: Module, a: Value, b: Value, product: Signal, enable: Value, name: str):
    """MULT18X18D with its A/B input registers and P output register on CLK0/CE0, no reset
    (the pipelines that use it frame their data with valid flags of their own)."""
    full = 2 * MAX_OPERAND_BITS
    a_ext = Signal(signed(MAX_OPERAND_BITS), name=f"{name}_A")
    b_ext = Signal(signed(MAX_OPERAND_BITS), name=f"{name}_B")
    p = Signal(full, name=f"{name}_P")
    m.d.comb += [a_ext.eq(a), b_ext.eq(b), product.eq(p[:len(product)])]
    ports = {
        **{f"i_A{k}": a_ext[k] for k in range(MAX_OPERAND_BITS)},
        **{f"i_B{k}": b_ext[k] for k in range(MAX_OPERAND_BITS)},
        **{f"i_C{k}": Const(0) for k in range(MAX_OPERAND_BITS)},
        **{f"o_P{k}": p[k] for k in range(full)},
        "i_SIGNEDA": Const(1), "i_SIGNEDB": Const(1),
        "i_SOURCEA": Const(0), "i_SOURCEB": Const(0),
        "i_CLK0": ClockSignal("sync"), "i_CE0": enable, "i_RST0": Const(0),
        **{f"i_{pin}{k}": Const(0) for pin in ("CLK", "CE", "RST") for k in (1, 2, 3)},
    }
    m.submodules[name] = Instance(
        "MULT18X18D",
        p_REG_INPUTA_CLK="CLK0", p_REG_INPUTA_CE="CE0", p_REG_INPUTA_RST="RST0",
        p_REG_INPUTB_CLK="CLK0", p_REG_INPUTB_CE="CE0", p_REG_INPUTB_RST="RST0",
        p_REG_INPUTC_CLK="NONE",
        p_REG_PIPELINE_CLK="NONE",
        p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
        p_GSR="DISABLED", p_RESETMODE="SYNC",
        **ports)
