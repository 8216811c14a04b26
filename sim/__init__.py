"""Simulation models and harness helpers for the accelerator RTL."""
