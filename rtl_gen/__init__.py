"""Amaranth generators of the MobileNet accelerator: engines, buffers, AXI DMA, registers."""
