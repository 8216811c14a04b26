"""Board targets (amaranth-boards) and the Yosys/nextpnr flow that reports how the accelerator,
or any Amaranth component, fits and times on them."""
