"""The generated C header compiles cleanly and agrees with the Python encoders."""
import shutil
import struct
import subprocess

import pytest

from firmware import header
from firmware.compiler import compile_graph
from firmware.program import Descriptor, Opcode
from rtl_gen.config import AccelConfig
from rtl_gen.regs import register_map

C_CHECK = r"""
#include <stdio.h>
#include "mnet_accel.h"
#define PUT(w, f, v) (w[MNET_DESC_##f##_WORD] |= ((uint32_t)(v) & MNET_DESC_##f##_MASK) << MNET_DESC_##f##_SHIFT)
int main(void) {
    uint32_t w[16] = {0};
    PUT(w, OPCODE, MNET_OP_DWCONV); PUT(w, LAYER, 7); PUT(w, IN_H, 14); PUT(w, IN_W, 13);
    PUT(w, STRIDE, 2); PUT(w, INPUT_ZP, -128); PUT(w, SHIFT, -9); PUT(w, MULTIPLIER, 1234567);
    w[15] = MNET_DESC_CHECK_MAGIC;
    for (int i = 0; i < 15; i++) w[15] ^= w[i];
    for (int i = 0; i < 16; i++) printf("%08x\n", w[i]);
    printf("%x %x %x\n", MNET_REG_STATUS, MNET_REG_LAYER_CYCLES(3), MNET_STATUS_ERROR_MASK);
    printf("%x %u\n", MNET_INPUT_ADDR, MNET_LAYER_COUNT);
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_header_compiles_and_matches_python(tmp_path, net_025):
    fw = compile_graph(net_025.graph, AccelConfig())
    (tmp_path / "mnet_accel.h").write_text(header.render(fw, {"input_zero_point": net_025.graph.input.zp}))
    (tmp_path / "check.c").write_text(C_CHECK)
    subprocess.run(["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-o", str(tmp_path / "check"),
                    str(tmp_path / "check.c")], check=True, cwd=tmp_path)
    lines = subprocess.run([str(tmp_path / "check")], check=True, capture_output=True,
                           text=True).stdout.split()
    d = Descriptor(opcode=Opcode.DWCONV, layer=7, in_h=14, in_w=13, stride=2, input_zp=-128,
                   shift=-9, multiplier=1234567, kernel=0, act_min=0, act_max=0)
    assert [int(x, 16) for x in lines[:16]] == list(struct.unpack("<16I", d.pack()))
    regs = {r.name: r.offset for r in register_map()}
    assert int(lines[16], 16) == regs["STATUS"]
    assert int(lines[17], 16) == regs["LAYER_CYCLES"] + 12
    assert int(lines[19], 16) == fw.regions["input"][0]
    assert int(lines[20]) == 26
