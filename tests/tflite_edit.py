"""Edit a .tflite through its flatbuffer schema (TFLite's object API): unpack, change any
field, pack again. The malformed-model tests and the fuzz test build their models this way."""
from __future__ import annotations

import copy


def schema():
    from tensorflow.lite.python import schema_py_generated
    return schema_py_generated


def unpack(tflite: bytes):
    """The whole model as mutable objects (ModelT)."""
    s = schema()
    return s.ModelT.InitFromObj(s.Model.GetRootAs(tflite, 0))


def pack(model) -> bytes:
    import flatbuffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def edited(tflite: bytes, edit) -> bytes:
    """`tflite` after `edit(model)` changed its unpacked model in place."""
    model = copy.deepcopy(unpack(tflite))
    edit(model)
    return pack(model)


def tensor_index(model, name_prefix: str) -> int:
    """The index of the first tensor whose name starts with `name_prefix`."""
    tensors = model.subgraphs[0].tensors
    return next(i for i, t in enumerate(tensors) if t.name.decode().startswith(name_prefix))
