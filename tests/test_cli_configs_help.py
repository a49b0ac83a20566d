"""Issue 18 item 16: `quant configs` and its subcommands describe every option; an unknown --universe is named
as such, with the closest stored name, and exits non-zero instead of printing an empty table."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import pytest

from quant_core.cli import build_parser, main
from quant_core.lifecycle import LifecycleStage
from quant_core.store import ConfigurationStore, NewConfiguration

SUBCOMMANDS = ("list", "live", "history", "export")


def _configs_parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = build_parser()
    top = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    configs = top.choices["configs"]
    sub = next(a for a in configs._actions if isinstance(a, argparse._SubParsersAction))
    return configs, dict(sub.choices)


def test_every_configs_option_and_argument_has_help():
    configs, subs = _configs_parsers()
    assert set(subs) == set(SUBCOMMANDS)
    assert configs.description, "quant configs --help: say what the command group is for"
    for name, p in subs.items():
        assert p.description, f"quant configs {name} --help has no description"
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            label = "/".join(action.option_strings) or action.dest
            assert action.help and action.help != argparse.SUPPRESS, f"quant configs {name}: {label} has no help"


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help_prints_the_descriptions(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["configs", name, "--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps help text
    assert "--url" in out and "QUANT_DATABASE_URL" in out
    if name in ("list", "live"):
        assert "--universe" in out and "universe name" in out


def test_configs_help_lists_each_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["configs", "--help"])
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out
    assert "live trading" in out


def _store_with(url: str, *universes: str) -> None:
    d = datetime(2024, 1, 1, tzinfo=UTC)
    with ConfigurationStore(url) as store:
        for u in universes:
            store.add_version(NewConfiguration(
                universe_key=u, strategy="momentum", method="optuna", exchanges=["shipped"], symbols=["BTC/USD"],
                timeframe="1d", parameters={"k_per_day": {"BTC": 1.0}}, metrics={"walk_forward": {"oos_sharpe": 0.7}},
                lifecycle_stage=LifecycleStage.DISCOVERY, stage_reason="r", stage_evidence={}, sample_size=4,
                train_start=d, train_end=d.replace(month=3), test_start=d.replace(month=3),
                test_end=d.replace(month=4), data_hash="h", code_version="v", seed=0, run_spec={}))


@pytest.mark.parametrize("command", [["list", "--universe"], ["live", "--universe"], ["history"]])
def test_unknown_universe_is_named_with_the_closest(command, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    _store_with(url, "sweep_binance_btc_usdt_1h", "momentum_btc_eth_usdc_1d")
    capsys.readouterr()
    code = main(["configs", *command, "sweep_binance_btc_usd_1h", "--url", url])
    out, err = capsys.readouterr()
    assert code != 0 and "no configurations stored" not in out
    assert "unknown universe 'sweep_binance_btc_usd_1h'" in err
    assert "did you mean 'sweep_binance_btc_usdt_1h'?" in err
    # a known universe still lists
    assert main(["configs", *command, "sweep_binance_btc_usdt_1h", "--url", url]) == 0
    assert "sweep_binance_btc_usdt_1h" in capsys.readouterr().out


def test_unknown_universe_in_an_empty_store_says_nothing_is_stored(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    assert main(["configs", "list", "--universe", "nope", "--url", url]) != 0
    err = capsys.readouterr().err
    assert "unknown universe 'nope'" in err and "no versions are stored" in err
