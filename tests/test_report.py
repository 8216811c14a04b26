"""The layer-cycle report computes errors and utilization from its rows and writes every format."""
import csv
import json
import types

import pytest

from quantize.summary import MAC_DEFINITION, layer_table, layer_table_markdown
from sim import report

ROWS = [
    {"layer": 0, "op": "CONV", "macs": 1000, "bytes": 64, "predicted_compute": 90,
     "predicted_dma": 20, "predicted_total": 110, "measured": 100},
    {"layer": 1, "op": "DWCONV", "macs": 300, "bytes": 32, "predicted_compute": 40,
     "predicted_dma": 10, "predicted_total": 45, "measured": 50},
]


def test_report_files_and_numbers(tmp_path):
    total, names = report.write(ROWS, macs_per_cycle=16, out_dir=tmp_path, title="t")
    assert sorted(names) == sorted(["layer_cycles.md", "layer_cycles.csv", "layer_cycles.json",
                                    "layer_cycles.png"])
    assert total["measured"] == 150 and total["predicted_total"] == 155
    assert abs(total["error_pct"] - 100 * 5 / 150) < 1e-9
    assert abs(total["utilization_pct"] - 100 * 1300 / (150 * 16)) < 1e-9
    data = json.loads((tmp_path / "layer_cycles.json").read_text())
    assert [round(r["error_pct"], 6) for r in data["layers"]] == [10.0, -10.0]
    rows = list(csv.DictReader((tmp_path / "layer_cycles.csv").open()))
    assert rows[-1]["layer"] == "total" and rows[0]["measured"] == "100"
    assert "| total |" in (tmp_path / "layer_cycles.md").read_text()
    assert (tmp_path / "layer_cycles.png").read_bytes()[:4] == b"\x89PNG"


def test_report_without_measurements(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "measured"} for r in ROWS]
    total, _ = report.write(rows, 16, tmp_path)
    assert total["measured"] is None and total["error_pct"] is None


def test_report_states_the_mac_definition(tmp_path):
    report.write(ROWS, 16, tmp_path)
    assert MAC_DEFINITION in (tmp_path / "layer_cycles.md").read_text()
    assert json.loads((tmp_path / "layer_cycles.json").read_text())["macs"] == MAC_DEFINITION


@pytest.mark.parametrize("act_kib", [64, 16], ids=["untiled", "tiled"])
def test_cycle_report_and_layer_table_count_the_same_macs(net_025, act_kib, tmp_path):
    """The seed network (alpha 0.25): layers.md (`quantize.summary`) and the cycle report that
    gen-accel writes (`flow.cli.write_layer_report`, rows from `sim.perf_model`) agree on
    every layer's MACs and on the total, tiled into bands or not; MEAN counts none, and the
    dense layer, a CONV descriptor in the firmware, is labelled FULLY_CONNECTED."""
    from firmware.compiler import compile_graph
    from flow import cli
    from rtl_gen.config import AccelConfig

    fw = compile_graph(net_025.graph, AccelConfig(act_buffer_bytes=act_kib * 1024),
                       base=0x8000_0000)
    table = layer_table(net_025.graph)
    assert MAC_DEFINITION in layer_table_markdown(table)
    out = types.SimpleNamespace(staging=tmp_path, files=[])
    total = cli.write_layer_report(out, fw, None)
    assert "report/layer_cycles.json" in out.files
    rows = json.loads((tmp_path / "report" / "layer_cycles.json").read_text())["layers"]
    assert len(rows) == len(fw.descriptors) - 1 > (26 if act_kib == 16 else 25)

    per_op = {}
    for op_index, row in zip(fw.layer_ops, rows, strict=True):
        per_op[op_index] = per_op.get(op_index, 0) + row["macs"]
    assert per_op == {r["index"]: r["macs"] for r in table if r["op"] != "RESHAPE"}
    assert total["macs"] == sum(r["macs"] for r in table) == 29_546_816
    assert [r["macs"] for r in table if r["op"] in ("MEAN", "SOFTMAX")] == [0, 0]

    kinds = {r["index"]: r["op"] for r in table}
    for op_index, row in zip(fw.layer_ops, rows):
        label = row["op"].split()[0]            # "DWCONV 2/3" for a band
        expected = {"CONV_2D": "CONV", "DEPTHWISE_CONV_2D": "DWCONV"}.get(kinds[op_index],
                                                                          kinds[op_index])
        assert label == expected, (op_index, row)
    assert "| FULLY_CONNECTED |" in (tmp_path / "report" / "layer_cycles.md").read_text()
