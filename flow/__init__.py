"""The gen-accel flow: the orchestrator above quantize, firmware, rtl_gen, sim and boards
(`flow.cli`), its build folders (`flow.build_dir`) and its cheap pre-build checks
(`flow.preflight`)."""
