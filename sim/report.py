"""Layer-cycle report: per layer MACs, bytes moved, predicted compute / DMA / total cycles,
measured cycles, error and MAC utilization, as Markdown, CSV, JSON and a PNG chart.

Rows are plain dicts so any predictor and any simulator can feed it:
    {"layer", "op", "macs", "bytes", "predicted_compute", "predicted_dma", "predicted_total",
     "measured" (optional)}
MACs follow `quantize.summary.MAC_DEFINITION` (the same as layers.md), stated in the report.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from quantize.summary import MAC_DEFINITION

COLUMNS = ("layer", "op", "macs", "bytes", "predicted_compute", "predicted_dma",
           "predicted_total", "measured", "error_pct", "utilization_pct")


def complete(rows: list[dict], macs_per_cycle: int) -> tuple[list[dict], dict]:
    """Add error and utilization columns and a total row."""
    out = []
    for r in rows:
        r = dict(r)
        cycles = r.get("measured") or r["predicted_total"]
        r["error_pct"] = (100.0 * (r["predicted_total"] - r["measured"]) / r["measured"]
                          if r.get("measured") else None)
        r["utilization_pct"] = 100.0 * r["macs"] / (cycles * macs_per_cycle) if cycles else 0.0
        out.append(r)
    total = {"layer": "total", "op": ""}
    for k in ("macs", "bytes", "predicted_compute", "predicted_dma", "predicted_total"):
        total[k] = sum(r[k] for r in out)
    measured = [r.get("measured") for r in out]
    total["measured"] = sum(measured) if all(m is not None for m in measured) else None
    total["error_pct"] = (100.0 * (total["predicted_total"] - total["measured"]) / total["measured"]
                          if total["measured"] else None)
    cycles = total["measured"] or total["predicted_total"]
    total["utilization_pct"] = 100.0 * total["macs"] / (cycles * macs_per_cycle) if cycles else 0.0
    return out, total


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def markdown(rows: list[dict], total: dict, title: str, run: dict | None = None) -> str:
    head = ["layer", "op", "MACs", "bytes", "pred. compute", "pred. DMA", "pred. total",
            "measured", "error %", "MAC util. %"]
    lines = [f"# {title}", "", MAC_DEFINITION + " MAC util. % = MACs / (cycles x MAC units).",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows + [total]:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in COLUMNS) + " |")
    if run:
        lines += ["", f"Whole run (CYCLES register, including the last store): predicted "
                      f"{_fmt(run['predicted'])}, measured {_fmt(run.get('measured'))}."]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict], total: dict) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows + [total]:
        w.writerow({c: "" if r.get(c) is None else r.get(c) for c in COLUMNS})
    return buf.getvalue()


def chart(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 0.45), 4.5))
    ax.bar(x - 0.2, [r["predicted_total"] for r in rows], 0.4, label="predicted")
    if all(r.get("measured") for r in rows):
        ax.bar(x + 0.2, [r["measured"] for r in rows], 0.4, label="measured")
    ax.set_xticks(x, [f"{r['layer']} {r['op']}" for r in rows], rotation=70, fontsize=7)
    ax.set_ylabel("cycles")
    ax.set_title(title)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(rows: list[dict], macs_per_cycle: int, out_dir: Path, title: str = "Layer cycles",
          stem: str = "layer_cycles", run: dict | None = None) -> tuple[dict, list[str]]:
    """Write <stem>.md/.csv/.json/.png into out_dir; returns the total row and the file names.
    `run` ({"predicted", "measured"}) adds the whole-run cycle count."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, total = complete(rows, macs_per_cycle)
    names = [f"{stem}.{ext}" for ext in ("md", "csv", "json", "png")]
    (out_dir / names[0]).write_text(markdown(rows, total, title, run))
    (out_dir / names[1]).write_text(to_csv(rows, total))
    (out_dir / names[2]).write_text(json.dumps({"macs": MAC_DEFINITION, "layers": rows,
                                                "total": total, "run": run}, indent=1))
    chart(rows, out_dir / names[3], title)
    return total, names
