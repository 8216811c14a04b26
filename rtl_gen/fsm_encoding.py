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


def reset_only_by(m, fsm, state: str, reset) -> None:
    """Return `fsm` to `state` when `reset` is high, and by nothing else outside its own
    transitions: its state register drops the domain's reset and any `ResetInserter`'s, so
    `reset` must also be high during the domain's reset (power-on included).

    Yosys folds a state register's synchronous reset into the FSM's next-state logic (a
    flip-flop's reset pin cannot take it once the FSM is recoded), so the reset net sits at
    the head of the transition cone. A reset shared with the unit's other ~800 flip-flops is
    a slow net there (the 45F's slowest group of paths); a register of its own that drives
    only the state keeps that fanout off the FSM. Reaches into the signal's `_reset_less`
    (Amaranth has no public switch for an FSM's state; pinned: amaranth < 0.6).
    """
    fsm.state._reset_less = True
    with m.If(reset):
        m.d.sync += fsm.state.eq(fsm.encoding[state])
