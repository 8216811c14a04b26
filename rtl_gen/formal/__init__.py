"""Formal (SymbiYosys) checks of the generated RTL.

`axi_rules` checks the AXI4 manager-side handshake rules of the DMA engines in `rtl_gen.dma`
against a free, protocol-abiding environment; see `axi_rules.check`. Run it from the command
line with ``python -m rtl_gen.formal.axi_rules``.
"""
__all__ = ["DMAAxiRules", "FormalResult", "MUTATIONS", "check"]


def __getattr__(name):
    # Imported lazily so that `python -m rtl_gen.formal.axi_rules` does not load it twice.
    if name in __all__:
        from . import axi_rules
        return getattr(axi_rules, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
