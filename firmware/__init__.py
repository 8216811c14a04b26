"""Compiler from an int8 graph to the accelerator's layer program and DDR image."""
