"""cocotb test modules, run inside a Verilator simulation by `sim.verilator_runner.run`.

Each module reads its parameters with `sim.verilator_runner.load_params` (the pytest side,
``tests/test_cocotb_dma.py``, passes the `AccelConfig` as ``params["cfg"]``):

* `dma_axiram`: `rtl_gen.dma.AxiDMA` against cocotbext-axi's `AxiRam` (back-pressure, SLVERR);
* `dma_fastmem`: the DMA copying inside `sim.axi_mem_model.with_memory` (speed, backdoor);
* `mem_model`: the fast memory model's timing, IDs, strobes and DECERR;
* `dma_bench`: clock/reset and stream drivers the DMA modules share.
"""
