"""The layer-cycle report computes errors and utilization from its rows and writes every format."""
import csv
import json

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
