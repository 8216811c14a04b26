"""SDRAM initialization over the bridge: the init sequence a LiteX BIOS runs at boot, for a
SoC without CPU (`boards.soc`), replayed through LiteDRAM's DFII registers.

    init_sdram(client, json.loads(Path("build/soc/sdram_init.json").read_text()), sleep)

``client`` is a LiteX bus client with the SoC's csr.csv (``RemoteClient`` on a board,
`sim.soc_sim`'s UARTBone client in simulation); the steps are `boards.soc.sdram_init_steps`'
(written by gen-accel --soc). The controller comes out of reset under hardware control with
CKE low, so on a board nothing reaches the SDRAM before this has run.
"""
from __future__ import annotations

# LiteDRAM's DFII bits (litedram.init's Python header), by the names its init sequences use.
DFII_BITS = {"DFII_CONTROL_SEL": 0x01, "DFII_CONTROL_CKE": 0x02, "DFII_CONTROL_ODT": 0x04,
             "DFII_CONTROL_RESET_N": 0x08,
             "DFII_COMMAND_CS": 0x01, "DFII_COMMAND_WE": 0x02, "DFII_COMMAND_CAS": 0x04,
             "DFII_COMMAND_RAS": 0x08}
# DFII control around the sequence: software (no SEL), then hardware (SEL: the controller
# drives the DFI again).
CONTROL_SOFTWARE = (DFII_BITS["DFII_CONTROL_CKE"] | DFII_BITS["DFII_CONTROL_ODT"]
                    | DFII_BITS["DFII_CONTROL_RESET_N"])
CONTROL_HARDWARE = DFII_BITS["DFII_CONTROL_SEL"] | CONTROL_SOFTWARE


def init_sdram(client, steps: list[dict], sleep) -> None:
    """Replay ``steps``; ``sleep(seconds)`` waits device time (each step's ``delay`` is in
    clock cycles of the SoC, whose frequency csr.csv gives)."""
    regs = client.regs
    hz = int(client.constants.config_clock_frequency)
    regs.sdram_dfii_control.write(CONTROL_SOFTWARE)
    for step in steps:
        regs.sdram_dfii_pi0_address.write(step["address"])
        regs.sdram_dfii_pi0_baddress.write(step["bank"])
        if "control" in step:
            regs.sdram_dfii_control.write(step["control"])
        else:
            regs.sdram_dfii_pi0_command.write(step["command"])
            regs.sdram_dfii_pi0_command_issue.write(1)
        if step["delay"]:
            sleep(step["delay"] / hz)
    regs.sdram_dfii_control.write(CONTROL_HARDWARE)
