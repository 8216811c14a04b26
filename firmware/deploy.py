"""A gen-accel build folder as the host driver needs it: the DDR image and where things are
in it (``firmware/memory_map.json``), and how to turn an image into the input region's bytes.

The input layout (channel padding, the host-made im2col patches of a first KxK conv) is the
compiler's business: `Deployment.load` recompiles the build's ``model.tflite`` with its
``config.json`` and refuses a folder whose ``ddr_image.bin`` differs from what that gives, so
the driver can never write an input laid out for another build.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class BuildError(ValueError):
    """A build folder that is missing, incomplete or inconsistent (one line)."""


@dataclass
class Deployment:
    folder: Path
    fw: object                  # firmware.compiler.Firmware, recompiled from the build
    graph: object               # quantize.tflite_graph.Graph
    memory_map: dict

    @property
    def image(self) -> bytes:
        return bytes(self.fw.image)

    @property
    def base(self) -> int:
        return self.fw.base

    @property
    def program_addr(self) -> int:
        return self.fw.program_addr

    @property
    def segments(self) -> list[tuple[int, bytes]]:
        """The parts of the DDR image a device needs before a run: the parameters and the
        layer program. The rest (input, activations, output) is rewritten by every run (the
        host writes the whole input region, each layer its whole output region), so a bridge
        need not carry it: over a board's UART that halves the load of the seed network."""
        out = []
        for name in ("params", "program"):
            addr, n = self.fw.regions[name]
            out.append((addr, bytes(self.fw.image[addr - self.base: addr - self.base + n])))
        return out

    @property
    def input_addr(self) -> int:
        return self.fw.regions["input"][0]

    @property
    def output(self):
        """The output tensor's placement (addr, shape, stored channels) from memory_map.json."""
        want = self.fw.output_tensor
        (entry,) = [t for t in self.memory_map["tensors"] if t["tensor"] == want]
        return entry

    @property
    def num_classes(self) -> int:
        return int(self.output["shape"][-1])

    @property
    def descriptors(self) -> list[dict]:
        """memory_map.json's entry for each descriptor but END (LAYER_CYCLES[i]'s layer)."""
        return self.memory_map["descriptors"]

    @classmethod
    def load(cls, folder: str | Path) -> "Deployment":
        from firmware.compiler import compile_graph
        from quantize.tflite_graph import UnsupportedModelError, load_graph
        from rtl_gen.config import AccelConfig, ConfigError
        folder = Path(folder)
        if not folder.is_dir():
            raise BuildError(f"{folder}: no such build folder (run gen-accel --out {folder})")
        need = ["model.tflite", "config.json", "firmware/memory_map.json",
                "firmware/ddr_image.bin"]
        missing = [n for n in need if not (folder / n).is_file()]
        if missing:
            raise BuildError(f"{folder}: not a gen-accel build (missing {', '.join(missing)})")
        try:
            cfg = AccelConfig.from_dict(json.loads((folder / "config.json").read_text()))
            memory_map = json.loads((folder / "firmware/memory_map.json").read_text())
            graph = load_graph(folder / "model.tflite")
            fw = compile_graph(graph, cfg, base=int(memory_map["base"]))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise BuildError(f"{folder}: unreadable build file ({type(e).__name__}: {e})") \
                from None
        except (ConfigError, UnsupportedModelError) as e:
            raise BuildError(f"{folder}: {e}") from None
        from quantize.input_norm import CHOICES
        norm = memory_map.get("input_norm", "cifar")
        if norm not in CHOICES[1:]:
            raise BuildError(f"{folder}: firmware/memory_map.json: input_norm {norm!r} is not "
                             f"one of {', '.join(CHOICES[1:])}")
        if bytes(fw.image) != (folder / "firmware/ddr_image.bin").read_bytes():
            raise BuildError(f"{folder}: firmware/ddr_image.bin is not what model.tflite and "
                             "config.json compile to (edited, or from another version); "
                             "rebuild it with gen-accel")
        return cls(folder, fw, graph, memory_map)

    def input_bytes(self, x_int8: np.ndarray) -> bytes:
        """The input region's bytes for one int8 NHWC input."""
        from firmware.executor import host_input
        return host_input(self.fw, x_int8)

    def quantize_image(self, path: str | Path) -> np.ndarray:
        """An image file as the model's int8 input: RGB, fitted to the input size the way
        gen-accel fits its check images (center crop, nearest resize where smaller), then
        preprocessed as the build's check images were (memory_map.json's input_norm: the
        seed's standardization or a pixel range; builds from before it: standardization)
        and quantized with the input's scale and zero point."""
        from PIL import Image, UnidentifiedImageError

        from quantize.convert import quantize_images
        from quantize.pipeline import fit_to_input, takes_images
        if not takes_images(self.graph):
            raise BuildError(f"{self.folder}: the model's input {tuple(self.graph.input.shape)} "
                             "is not an RGB image; give an int8 .npy tensor instead")
        try:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB"), np.uint8)
        except FileNotFoundError:
            raise BuildError(f"{path}: no such image file") from None
        except (UnidentifiedImageError, OSError) as e:
            raise BuildError(f"{path}: not an image file ({e})") from None
        g = self.graph.input
        fitted = fit_to_input(rgb[None], g.shape[1], g.shape[2])
        return quantize_images(fitted, g.scale[0], g.zp,
                               self.memory_map.get("input_norm", "cifar"))

    def load_tensor(self, path: str | Path) -> np.ndarray:
        """An int8 input tensor from a .npy file, checked against the model's input shape."""
        try:
            x = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise BuildError(f"{path}: no such file") from None
        except (ValueError, OSError) as e:
            raise BuildError(f"{path}: not a .npy array ({e})") from None
        shape = tuple(self.graph.input.shape)
        if x.dtype != np.int8 or x.size != int(np.prod(shape)):
            raise BuildError(f"{path}: need int8 of shape {shape}, got {x.dtype} {x.shape}")
        return x.reshape(shape)
