"""The host driver (`firmware.driver`), its build-folder loader (`firmware.deploy`), the LiteX
bridge transport's word packing and the `accel-run` CLI.

The register sequence is checked against a scripted register space; the real thing runs
over `sim.bridge_transport.VerilatorTransport`: a gen-accel build of a six-op miniature of
the seed network on the smallest accelerator config (2x2 MACs, one depthwise lane, 32-bit
bus; its Verilator build is cached like every other, about a minute when the RTL changed),
classifying real CIFAR-10 test images, the int8 scores equal to the build's TFLite output
byte for byte.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from firmware.driver import (CTRL_IRQ_EN, CTRL_SOFT_RESET, CTRL_START, REG, STATUS_BUSY,
                             STATUS_DONE, STATUS_ERROR, AccelDriver, DriverError, Runner)
from rtl_gen.regs import ACCEL_ID, REGMAP_VERSION
from rtl_gen.sequencer import ErrorCode
from sim.verilator_runner import verilator_available


class ScriptedRegs:
    """A register space that answers STATUS from a script (one value per read, the last
    repeated) and records every access, for the driver's side of the contract."""

    def __init__(self, statuses, *, ident=ACCEL_ID, error_code=0, layer_cycles=(),
                 irq=None):
        self.statuses, self.ident, self.code = list(statuses), ident, error_code
        self.layer_cycles, self.irq = list(layer_cycles), irq
        self.log, self.mem, self.slept = [], {}, 0.0

    def read32(self, offset):
        self.log.append(("r", offset))
        if offset == REG["STATUS"]:
            return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if offset >= REG["LAYER_CYCLES"]:
            return self.layer_cycles[(offset - REG["LAYER_CYCLES"]) // 4]
        return {REG["ID"]: self.ident, REG["VERSION"]: REGMAP_VERSION,
                REG["ERROR_CODE"]: self.code, REG["LAYER_COUNT"]: len(self.layer_cycles),
                REG["CYCLES_LO"]: 0x2345, REG["CYCLES_HI"]: 1}.get(offset, 0)

    def write32(self, offset, value):
        self.log.append(("w", offset, value))

    def read_mem(self, addr, n):
        return bytes(self.mem.get(addr + i, 0) for i in range(n))

    def write_mem(self, addr, data):
        self.mem.update({addr + i: b for i, b in enumerate(data)})

    def wait_irq(self, timeout_s):
        return self.irq

    def sleep(self, seconds):
        self.slept += seconds

    def writes(self):
        return [e[1:] for e in self.log if e[0] == "w"]


def test_run_sequence_and_registers_read_back():
    """PROG_ADDR halves, STATUS cleared (write 1 to clear) before START, START with IRQ_EN;
    polled until DONE; CYCLES_LO read before CYCLES_HI (it latches HI)."""
    regs = ScriptedRegs([STATUS_BUSY, STATUS_BUSY, STATUS_DONE], layer_cycles=[7, 9, 11])
    r = AccelDriver(regs).run(0x1_2345_6780, timeout_s=1.0, use_irq=True)
    assert regs.writes()[:4] == [(REG["PROG_ADDR_LO"], 0x2345_6780), (REG["PROG_ADDR_HI"], 1),
                                 (REG["STATUS"], STATUS_DONE | STATUS_ERROR),
                                 (REG["CTRL"], CTRL_START | CTRL_IRQ_EN)]
    reads = [e[1] for e in regs.log if e[0] == "r"]
    assert reads.index(REG["CYCLES_LO"]) < reads.index(REG["CYCLES_HI"])
    assert r.ok and not r.timed_out and r.cycles == (1 << 32) | 0x2345
    assert r.layer_cycles == [7, 9, 11] and r.layer_count == 3


def test_error_code_and_timeout_are_reported():
    regs = ScriptedRegs([STATUS_DONE | STATUS_ERROR], error_code=ErrorCode.BAD_DESCRIPTOR,
                        layer_cycles=[5])
    r = AccelDriver(regs).run(0, timeout_s=1.0, use_irq=False)
    assert r.done and r.error and not r.ok and r.error_name == "BAD_DESCRIPTOR"

    # Never DONE: polled until the timeout (device time, via sleep), then soft reset, and
    # the driver waits for BUSY to drop before it returns.
    regs = ScriptedRegs([STATUS_BUSY] * 30 + [0])
    drv = AccelDriver(regs, poll_s=0.01)
    r = drv.run(0, timeout_s=0.1, use_irq=False)
    assert r.timed_out and not r.ok and r.error_name == "TIMEOUT"
    assert (REG["CTRL"], CTRL_SOFT_RESET) in regs.writes()
    assert regs.slept >= 0.1


def test_interrupt_that_never_comes_is_a_timeout():
    regs = ScriptedRegs([STATUS_BUSY, 0], irq=False)
    r = AccelDriver(regs).run(0, timeout_s=0.5, use_irq=True)
    assert r.timed_out and (REG["CTRL"], CTRL_SOFT_RESET) in regs.writes()


def test_identify_refuses_another_device():
    assert AccelDriver(ScriptedRegs([0])).identify() == REGMAP_VERSION
    with pytest.raises(DriverError, match="ID reads 0xdeadbeef"):
        AccelDriver(ScriptedRegs([0], ident=0xDEADBEEF)).identify()


class FakeRemoteClient:
    """What LiteXTransport uses of litex's RemoteClient: 32-bit words on a byte-addressed bus."""

    def __init__(self):
        self.words, self.bursts = {}, []

    def read(self, addr, length=None):
        n = 1 if length is None else length
        self.bursts.append(n)
        out = [self.words.get(addr + 4 * i, 0) for i in range(n)]
        return out[0] if length is None else out

    def write(self, addr, datas):
        datas = datas if isinstance(datas, list) else [datas]
        self.bursts.append(len(datas))
        self.words.update({addr + 4 * i: d for i, d in enumerate(datas)})


def test_litex_transport_packs_words_little_endian_with_unaligned_edges():
    from firmware.litex_transport import BURST_WORDS, LiteXTransport
    t = LiteXTransport.over_client(FakeRemoteClient(), regs_base=0xF000_0000,
                                   mem_base=0x4000_0000)
    data = bytes(np.random.default_rng(1).integers(0, 256, 4 * BURST_WORDS + 9, np.uint8))
    t.write_mem(0x101, data)                    # unaligned start and end
    assert t.read_mem(0x101, len(data)) == data
    assert t.read_mem(0x100, 1) == b"\0"        # the byte before was preserved
    assert t.client.words[0x4000_0100] == int.from_bytes(b"\0" + data[:3], "little")
    assert max(t.client.bursts) == BURST_WORDS
    t.write32(0x08, 0x1_0000_0005)
    assert t.client.words[0xF000_0008] == 5 and t.read32(0x08) == 5


# ---- a real build ----------------------------------------------------------------------------

def accel_run(argv, capsys):
    from firmware import accel_run
    try:
        code = accel_run.main([str(a) for a in argv])
    except SystemExit as e:                     # argparse's own errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_deployment_recompiles_to_the_build_and_refuses_an_edited_one(tiny_build, tmp_path,
                                                                     capsys):
    import shutil

    from firmware.deploy import BuildError, Deployment
    dep = Deployment.load(tiny_build)
    assert dep.image == (tiny_build / "firmware/ddr_image.bin").read_bytes()
    mm = json.loads((tiny_build / "firmware/memory_map.json").read_text())
    assert dep.input_addr == mm["regions"]["input"]["addr"]
    assert dep.program_addr == mm["regions"]["program"]["addr"]
    edited = tmp_path / "edited"
    shutil.copytree(tiny_build, edited)
    image = bytearray((edited / "firmware/ddr_image.bin").read_bytes())
    image[0] ^= 1
    (edited / "firmware/ddr_image.bin").write_bytes(bytes(image))
    with pytest.raises(BuildError, match="not what model.tflite and config.json compile to"):
        Deployment.load(edited)


def test_cli_bad_input_is_one_line_and_exit_2(tiny_build, images, tmp_path, capsys):
    not_image = tmp_path / "notes.png"
    not_image.write_text("not a picture")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((2, 2), np.float32))
    cases = [
        (["--build", tmp_path / "nowhere", "--sim", images[0]], "no such build folder"),
        (["--build", tmp_path, "--sim", images[0]], "not a gen-accel build"),
        (["--build", tiny_build, "--sim", tmp_path / "missing.png"], "no such input file"),
        (["--build", tiny_build, "--sim", not_image], "not an image file"),
        (["--build", tiny_build, "--sim", wrong], "need int8 of shape"),
        (["--build", tiny_build, "--server", "nohostport", images[0]], "no csr.csv"),
        (["--build", tiny_build, "--sim", "--timeout", "-1", images[0]], "--timeout"),
        (["--build", tiny_build, images[0]], "one of the arguments"),
    ]
    for argv, message in cases:
        code, out, err = accel_run(argv, capsys)
        assert code == 2, (argv, out, err)
        assert message in err and len(err.strip().splitlines()) == 1 and not out, (argv, err)


_unavailable = verilator_available()
needs_verilator = pytest.mark.skipif(_unavailable is not None, reason=_unavailable or "")


@needs_verilator
def test_driver_over_verilator_is_bit_exact_with_tflite(tiny_build, images):
    """The driver API over the simulated bridge: two real images in one session (the
    second rewrites only the input region), scores equal TFLite's bytes, the class their
    argmax, one LAYER_CYCLES entry per descriptor; a corrupt descriptor ends the next run
    with BAD_DESCRIPTOR at that layer, and the run after it reloads the image and is
    bit-exact again."""
    from firmware.deploy import Deployment
    from firmware.program import DESCRIPTOR_BYTES
    from quantize.convert import golden_interpreter, golden_run
    from sim.accel_sim import CLOCK_NS, cycle_limit, memory_size
    from sim.bridge_transport import VerilatorTransport

    dep = Deployment.load(tiny_build)
    interp = golden_interpreter((tiny_build / "model.tflite").read_bytes())
    out_index = interp.get_output_details()[0]["index"]
    xs = [dep.quantize_image(p) for p in images]
    assert not np.array_equal(xs[0], xs[1])
    layers = len(dep.descriptors)
    assert layers == len(dep.fw.descriptors) - 1          # all but END
    with VerilatorTransport(dep.fw.cfg, memory_size(dep.fw)) as t:
        drv = AccelDriver(t)
        drv.identify()
        runner = Runner(drv, dep, timeout_s=4 * cycle_limit(dep.fw) * CLOCK_NS * 1e-9)
        for x in xs:
            r = runner.classify(x)
            want = golden_run(interp, x)[out_index]
            assert r.status.ok and r.status.error_code == ErrorCode.NONE, r.status
            assert r.scores.dtype == np.int8 and r.scores.tobytes() == want.tobytes()
            assert r.label == int(np.argmax(want.reshape(-1)))
            assert r.status.layer_count == layers and len(r.status.layer_cycles) == layers
            assert all(c > 0 for c in r.status.layer_cycles)
            assert sum(r.status.layer_cycles) <= r.status.cycles

        bad = 2 * DESCRIPTOR_BYTES + 4                     # descriptor 2's shape word
        word = drv.t.read_mem(dep.program_addr + bad, 4)
        drv.t.write_mem(dep.program_addr + bad, bytes([word[0] ^ 1]) + word[1:])
        drv.write_input(dep.input_addr, dep.input_bytes(xs[0]))
        broken = drv.run(dep.program_addr, timeout_s=runner.timeout_s)
        assert broken.done and broken.error and not broken.timed_out
        assert broken.error_name == "BAD_DESCRIPTOR" and broken.layer_count == 2
        runner._loaded = False                             # as after any failed run
        again = runner.classify(xs[1])
        assert again.status.ok
        assert again.scores.tobytes() == golden_run(interp, xs[1])[out_index].tobytes()


@needs_verilator
def test_accel_run_sim_prints_class_and_layer_cycles(tiny_build, images, capsys):
    """accel-run --sim --check --poll --json: polling instead of the interrupt, the same
    class and scores as TFLite, exit 0."""
    code, out, err = accel_run(["--build", tiny_build, "--sim", "--check", "--poll", "--json",
                                *images], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["input"] for r in records] == [str(p) for p in images]
    from firmware.deploy import Deployment
    dep = Deployment.load(tiny_build)
    for r in records:
        assert r["ok"] and r["matches_tflite"] is True and r["error"] is None
        assert r["class"] == int(np.argmax(r["scores"]))
        assert len(r["layer_cycles"]) == len(dep.descriptors)
