"""C header for host drivers: the register map (from firmware.contract), the layer-program format
(from firmware.program) and one build's memory map. Everything is generated from the same
tables the RTL and the compiler use, so the three cannot drift apart."""
from __future__ import annotations

from pathlib import Path

from .contract import ACCEL_ID, REGMAP_VERSION, register_fields, register_map

from .program import DESCRIPTOR_BYTES, FIELDS, CHECK_MAGIC, Flags, Opcode


C_DRIVER = Path(__file__).with_name("c")


def c_driver_files() -> dict[str, str]:
    """The C driver's sources (``mnet_accel.c``, ``mnet_driver.h``), which gen-accel writes
    next to the build's ``mnet_accel.h``."""
    return {p.name: p.read_text() for p in sorted(C_DRIVER.iterdir())
            if p.suffix in (".c", ".h")}


def _c_name(s: str) -> str:
    return s.upper().replace(" ", "_")


def _comment(text: str) -> str:
    return text.replace("*/", "* /")


def render(firmware=None, model_info: dict | None = None) -> str:
    out = ["/* mobilenet-accel host interface. Generated; do not edit. */",
           "#ifndef MNET_ACCEL_H", "#define MNET_ACCEL_H", "", "#include <stdint.h>", "",
           "/* ---- AXI4-Lite control registers (byte offsets) ---- */",
           f"#define MNET_ACCEL_ID 0x{ACCEL_ID:08X}u  /* the ID register's value */",
           f"#define MNET_REGMAP_VERSION 0x{REGMAP_VERSION:08X}u  /* major << 16 | minor << 8 "
           "| patch */"]
    for r in register_map():
        name = f"MNET_REG_{_c_name(r.name)}"
        if r.count > 1:
            out.append(f"#define {name}(i) (0x{r.offset:03X}u + 4u * (uint32_t)(i))  "
                       f"/* {r.access}, {r.count} entries: {_comment(r.description)} */")
            out.append(f"#define {name}_COUNT {r.count}u")
        else:
            out.append(f"#define {name} 0x{r.offset:03X}u  /* {r.access}: {_comment(r.description)} */")
    out.append("")
    for f in register_fields():
        base = f"MNET_{_c_name(f.register)}_{_c_name(f.name)}"
        mask = ((1 << f.width) - 1) << f.lsb
        out.append(f"#define {base}_SHIFT {f.lsb}u")
        out.append(f"#define {base}_MASK 0x{mask:08X}u  /* {f.access}: {_comment(f.description)} */")
    out += ["", "/* ---- Layer program: 16 little-endian 32-bit words per descriptor ---- */",
            f"#define MNET_DESC_BYTES {DESCRIPTOR_BYTES}u",
            f"#define MNET_DESC_CHECK_MAGIC 0x{CHECK_MAGIC:08X}u  /* word 15 = magic ^ words 0..14 */"]
    for op in Opcode:
        out.append(f"#define MNET_OP_{op.name} {int(op)}u")
    for name in ("IM2COL", "FLOAT_REQUANT", "MEAN_CONTINUE", "MEAN_PARTIAL"):
        out.append(f"#define MNET_FLAG_{name} 0x{getattr(Flags, name):02X}u")
    for name, word, lo, width, signed in FIELDS:
        base = f"MNET_DESC_{_c_name(name)}"
        out.append(f"#define {base}_WORD {word}u")
        out.append(f"#define {base}_SHIFT {lo}u")
        out.append(f"#define {base}_MASK 0x{(1 << width) - 1:X}u{'  /* signed */' if signed else ''}")
    if firmware is not None:
        out += ["", "/* ---- This build's DDR memory map (absolute byte addresses) ---- */",
                f"#define MNET_DDR_BASE 0x{firmware.base:08X}u  /* where the DDR image starts */"]
        for region, (addr, size) in firmware.regions.items():
            out.append(f"#define MNET_{_c_name(region)}_ADDR 0x{addr:08X}u")
            out.append(f"#define MNET_{_c_name(region)}_BYTES {size}u")
        out.append(f"#define MNET_DDR_IMAGE_BYTES {len(firmware.image)}u")
        out.append(f"#define MNET_LAYER_COUNT {len(firmware.descriptors) - 1}u")
    for key, value in (model_info or {}).items():
        literal = f"{value!r}f" if isinstance(value, float) else f"{value}"
        out.append(f"#define MNET_{_c_name(key)} {literal}")
    out += ["", "#endif /* MNET_ACCEL_H */", ""]
    return "\n".join(out)
