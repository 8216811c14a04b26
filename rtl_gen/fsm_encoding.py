"""One-hot state registers for Amaranth FSMs with many states.

Amaranth numbers an FSM's states in binary, and Yosys leaves such a register alone when it
has an initial value (as every Amaranth signal does): each output then decodes ~7 state bits
before it can select anything, several LUT levels on the slowest paths of a large FSM. The
`fsm_encoding` attribute makes Yosys extract the FSM and recode it one-hot, so that "in state
S" is a single flip-flop.

Yosys warns that it ignores the register's initial value: the FSM starts in its reset state
after the domain's reset, which every target applies before use (the platforms' power-on
reset, LiteX's CRG, the simulators' testbenches).
"""
from __future__ import annotations


def one_hot(fsm) -> None:
    """Mark an FSM (the object of `with m.FSM() as fsm:`, after its block) for one-hot
    encoding. Amaranth 0.5 has no public handle on the state signal, so this reaches into
    the FSM's data (pinned: amaranth < 0.6)."""
    fsm._data["signal"].attrs["fsm_encoding"] = "one-hot"
