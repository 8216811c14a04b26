"""An accelerator built without the AddUnit (`AccelConfig.with_add` false) for networks with
no ADD layer: its config, its resource estimate and the boards' default configs, and the
refusal of a network with ADD layers in the model's terms. The RTL side (a network bit-exact,
an ADD descriptor stopping with UNSUPPORTED) is in `tests/test_rtl_accelerator.py`."""
import json
from dataclasses import asdict, replace
from types import SimpleNamespace

import pytest
from test_residual_add import residual_tflite

from boards.targets import LUT_BUDGET, LUT_PER_ADD_LANE, default_config, estimate, get_board
from firmware.compiler import compile_graph, needs_add_unit
from firmware.fit_check import check_model_fits, model_blockers
from quantize.tflite_graph import load_graph
from flow import cli
from rtl_gen.config import AccelConfig, ConfigError
from rtl_gen.sequencer import ProgramError, check_fits

NO_ADD = AccelConfig(pw_out=4, pw_in=4, dw_lanes=2, with_add=False)


def test_config_round_trip_and_default():
    cfg = replace(AccelConfig(), with_add=False)
    assert AccelConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert json.loads(cfg.to_json())["with_add"] is False
    # A config written before the field existed keeps the AddUnit, as it was built.
    old = {k: v for k, v in asdict(AccelConfig()).items() if k != "with_add"}
    assert AccelConfig.from_dict(old).with_add is True
    for bad in (0, 1, "false", None):
        with pytest.raises(ConfigError, match=f"with_add must be true or false, got {bad!r}"):
            AccelConfig(with_add=bad)


def test_estimate_leaves_out_the_add_unit():
    cfg = AccelConfig()
    with_add, without = estimate(cfg), estimate(replace(cfg, with_add=False))
    assert with_add.luts - without.luts == LUT_PER_ADD_LANE * cfg.dw_lanes
    assert (with_add.mult18, with_add.bram_blocks) == (without.mult18, without.bram_blocks)


def test_default_config_for_a_network_without_add():
    """The 85F's lanes stop at 4 either way: its DSPs and LUTs would take 8 (16x8 MACs + 8
    lanes = 144 of 156 MULT18X18D, the AddUnit's LUTs beside them), but 8 lanes do not
    route (`Board.max_dw_lanes`); 16x8 + 4 lanes = 136, 94% of them MACs."""
    board = get_board("ulx3s-85f")
    assert board.max_dw_lanes == 4
    cfg = default_config(board, needs_add=False)
    assert (cfg.pw_out, cfg.pw_in, cfg.dw_lanes, cfg.with_add) == (16, 8, 4, False)
    est = estimate(cfg)
    assert est.mult18 == 136 and est.luts <= LUT_BUDGET * board.luts
    assert cfg == replace(AccelConfig(clock_mhz=board.clock_mhz), with_add=False, dw_lanes=4)
    kept = default_config(board)                  # callers that don't say: with the AddUnit
    assert (kept.pw_out, kept.pw_in, kept.dw_lanes, kept.with_add) == (16, 8, 4, True)
    assert estimate(kept).luts <= LUT_BUDGET * board.luts
    assert default_config(board, needs_add=True) == kept
    # Without the routing cap the DSPs and LUTs would take 8 lanes.
    uncapped = default_config(replace(board, max_dw_lanes=None))
    assert uncapped.dw_lanes == 8 and estimate(uncapped).mult18 == 144


@pytest.fixture(scope="module")
def residual():
    return load_graph(residual_tflite())


def test_a_network_with_add_is_refused_naming_its_add_layers(residual):
    assert needs_add_unit(residual)
    fw = compile_graph(residual, NO_ADD)
    blockers = model_blockers(fw, residual)
    adds = [op for op in residual.ops if op.kind == "ADD"]
    assert len(blockers) == len(adds) == 2
    for line, op in zip(blockers, adds):
        assert line == (f"{op.describe()}: the accelerator was built without the ADD unit "
                        "(config with_add false): use a config with with_add true")
    assert "block1_add" in blockers[0]
    with pytest.raises(ProgramError, match=r"^model\.tflite: layer \d+ '[^']*block1_add[^']*' "
                       r"\(ADD\): the accelerator was built without the ADD unit"):
        check_model_fits(fw, residual, name="model.tflite")
    with pytest.raises(ProgramError, match=r"layer \d+ \(ADD\): the accelerator was built "
                       r"without the ADD unit \(config with_add=false\)"):
        check_fits(fw)
    # The same network on the config with the AddUnit runs.
    assert model_blockers(compile_graph(residual, replace(NO_ADD, with_add=True)), residual) == []


def test_gen_accel_picks_the_board_config_for_the_network(tmp_path):
    """--synth without --config: the seed network (MobileNet v1, no ADD) gets the board's
    config without the AddUnit at once; a --model is read only later, then keeps the AddUnit
    if it has an ADD layer and drops it otherwise."""
    seed = cli.parse_args(["--synth", "ulx3s-85f", "--out", str(tmp_path / "a")])
    plan = cli.plan_run(seed)
    assert plan.cfg == default_config("ulx3s-85f", needs_add=False)
    assert cli.config_for_model(seed, plan, None) is plan.cfg      # decided: no model read

    model = tmp_path / "m.tflite"
    model.write_bytes(b"not read when planning")
    args = cli.parse_args(["--synth", "ulx3s-85f", "--model", str(model),
                           "--out", str(tmp_path / "b")])
    plan = cli.plan_run(args)
    assert plan.cfg == default_config("ulx3s-85f")
    v1 = SimpleNamespace(ops=[SimpleNamespace(kind=k) for k in ("CONV_2D", "DEPTHWISE_CONV_2D")])
    v2 = SimpleNamespace(ops=v1.ops + [SimpleNamespace(kind="ADD")])
    assert cli.config_for_model(args, plan, v1) == default_config("ulx3s-85f", needs_add=False)
    assert cli.config_for_model(args, plan, v2) is plan.cfg

    config = tmp_path / "cfg.json"              # a --config is used as it is
    config.write_text(AccelConfig().to_json())
    args = cli.parse_args(["--synth", "ulx3s-85f", "--config", str(config), "--out",
                           str(tmp_path / "c")])
    plan = cli.plan_run(args)
    assert cli.config_for_model(args, plan, None) == AccelConfig() == plan.cfg


def test_gen_accel_refuses_add_on_a_config_without_it(tmp_path, capsys):
    model, config = tmp_path / "res.tflite", tmp_path / "no_add.json"
    model.write_bytes(residual_tflite())
    config.write_text(NO_ADD.to_json())
    code = cli.main(["--model", str(model), "--config", str(config), "--check-images", "1",
                     "--out", str(tmp_path / "build"), "-q"])
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err.startswith(f"gen-accel: error: {model}: layer 4 '")
    assert "block1_add" in err and "(ADD): the accelerator was built without the ADD unit" in err
    assert not (tmp_path / "build").exists()
