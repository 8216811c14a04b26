"""boards.paths on hand-built netlists: arrival times follow the delay model term by term,
and the ranking names each path's start and end registers."""
import json

from boards import paths
from boards.paths import (BRAM_CQ_NS, CARRY_IN_NS, CARRY_OUT_NS, CARRY_STEP_NS, FF_CQ_NS,
                          LUT_NS, route_ns)


def ff(d, q, name):
    return name, {"type": "TRELLIS_FF", "parameters": {},
                  "port_directions": {"CLK": "input", "DI": "input", "Q": "output"},
                  "connections": {"CLK": [1], "DI": [d], "Q": [q]}}


def lut(inputs, z, name):
    ports = dict(zip("ABCD", inputs))
    return name, {"type": "LUT4", "parameters": {},
                  "port_directions": {**{p: "input" for p in ports}, "Z": "output"},
                  "connections": {**{p: [b] for p, b in ports.items()}, "Z": [z]}}


def write_netlist(tmp_path, cells, names):
    netlist = {"modules": {"top": {
        "attributes": {"top": 1},
        "cells": dict(cells),
        "netnames": {name: {"bits": [bit]} for name, bit in names.items()}}}}
    path = tmp_path / "top.json"
    path.write_text(json.dumps(netlist))
    return str(path)


def test_arrival_is_the_sum_of_the_model_terms(tmp_path):
    # a (fanout 3: two LUTs and b's own input) -> LUT -> LUT -> b
    cells = [ff(20, 10, "a_reg"), lut([10, 10], 11, "l1"), lut([11, 10], 12, "l2"),
             ff(12, 20, "b_reg")]
    net = paths.Netlist(write_netlist(tmp_path, cells, {"a": 10, "x": 11, "y": 12, "b": 20}))
    t, end, bit = max(net.endpoints(), key=lambda e: e[0])
    expected = FF_CQ_NS + route_ns(3) + LUT_NS + route_ns(1) + LUT_NS + route_ns(1)
    assert abs(t - expected) < 1e-9
    assert end == "b_reg.DI" and net.trace(bit) == ["a", "x", "y"]


def test_block_ram_and_carry_chain_terms(tmp_path):
    bram = ("ram", {"type": "DP16KD", "parameters": {"REGMODE_A": "NOREG"},
                    "port_directions": {"CLKA": "input", "DOA0": "output"},
                    "connections": {"CLKA": [1], "DOA0": [30]}})
    carries = []
    for i in range(3):      # three CCU2C in a chain, the first fed by the block RAM
        carries.append((f"c{i}", {
            "type": "CCU2C", "parameters": {},
            "port_directions": {"A0": "input", "CIN": "input", "COUT": "output", "S0": "output"},
            "connections": {"A0": [30 if i == 0 else 2], "CIN": [40 + i - 1 if i else "0"],
                            "COUT": [40 + i], "S0": [50 + i]}}))
    cells = [bram, *carries, ff(52, 60, "sum_reg")]
    net = paths.Netlist(write_netlist(tmp_path, cells, {"d": 30, "s": 52, "q": 60}))
    t = dict((end, t) for t, end, _ in net.endpoints())["sum_reg.DI"]
    expected = (BRAM_CQ_NS + route_ns(1) + CARRY_IN_NS + 2 * CARRY_STEP_NS + CARRY_OUT_NS
                + route_ns(1))
    assert abs(t - expected) < 1e-9


def test_report_groups_by_register(tmp_path, capsys):
    cells = [ff(20, 10, "a_reg"), lut([10], 11, "l1"), ff(11, 20, "b_reg")]
    path = write_netlist(tmp_path, cells, {"a": 10, "x": 11, "b": 20})
    assert paths.main([path, "--min-ns", "0"]) == 0
    out = capsys.readouterr().out
    assert "a  ->  b_reg.DI" in out and "1 endpoint bits" in out
