"""YAML files people write by hand (run specs, the registry) fail with the file, line and column and what is
wrong - never with a PyYAML traceback - through the CLI, the Python API and definitions loading alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from quant_core.cli import main
from quant_core.data.price_file import shipped_prices_path
from quant_core.runspec import load_run_spec
from quant_core.spec import RunSpecError
from quant_core.universe import RegistryError, load_registry

SPEC_WITH_UNCLOSED_LIST = """rule: momentum
tokens: [USDC, BTC, ETH]
fees: [0.1
"""

REGISTRY_WITH_UNCLOSED_MAPPING = """markets:
  - {exchange: shipped, symbol: BTC/USD, timeframe: 1d
universes: []
"""


def _no_yaml_internals(text: str) -> None:
    assert "Traceback" not in text
    assert "yaml.parser" not in text and "yaml.scanner" not in text and "ParserError" not in text


def test_run_spec_with_unclosed_bracket_names_file_line_and_column(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_WITH_UNCLOSED_LIST)
    with pytest.raises(RunSpecError) as err:
        load_run_spec(spec)
    msg = str(err.value)
    assert str(spec) in msg
    assert "line 4, column 1" in msg  # where PyYAML gave up: the end of the file
    assert "expected ',' or ']'" in msg
    assert "line 3, column 7" in msg  # where the unclosed [ opened
    assert "fees: [0.1" in msg  # the offending line, quoted
    assert "fix:" in msg
    _no_yaml_internals(msg)


def test_cli_prints_the_yaml_error_without_a_traceback(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_WITH_UNCLOSED_LIST)
    code = main(["simulate", str(spec), "--prices", str(shipped_prices_path()), "--out", str(tmp_path / "o.csv")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and str(spec) in err and "line 4, column 1" in err
    _no_yaml_internals(err)


@pytest.mark.parametrize(
    "text,where,needle",
    [
        (REGISTRY_WITH_UNCLOSED_MAPPING, "line 3, column 10", "expected ',' or '}'"),
        ("markets:\n\t- {exchange: shipped, symbol: BTC/USD, timeframe: 1d}\n", "line 2, column 1", "tab"),
        ("markets: []\nuniverses: 'x\n", "line 3, column 1", "quoted scalar"),
    ],
)
def test_registry_syntax_error_names_file_line_and_column(tmp_path, text, where, needle):
    path = tmp_path / "registry.yaml"
    path.write_text(text)
    with pytest.raises(RegistryError) as err:
        load_registry(path)
    msg = str(err.value)
    assert str(path) in msg and where in msg and needle in msg and "fix:" in msg
    _no_yaml_internals(msg)


def test_definitions_loading_fails_with_the_message(tmp_path, monkeypatch):
    """Definitions are built from `current_registry()` ($QUANT_REGISTRY): a syntax error there is the message."""
    from quant_assets.registry import current_registry

    path = tmp_path / "registry.yaml"
    path.write_text(REGISTRY_WITH_UNCLOSED_MAPPING)
    monkeypatch.setenv("QUANT_REGISTRY", str(path))
    with pytest.raises(RegistryError, match=r"line 3, column 10") as err:
        current_registry()
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "data,where,needle",
    [
        (b"a: 1\nb: \xff\n", "line 2, column 4", "not UTF-8"),
        (b"a: 1\nb: \x07\n", "line 2, column 4", "character"),
    ],
)
def test_unreadable_characters_name_the_place(tmp_path, data, where, needle):
    from quant_core.yaml_files import YamlFileError, load_yaml_file

    path = tmp_path / "f.yaml"
    path.write_bytes(data)
    with pytest.raises(YamlFileError) as err:
        load_yaml_file(path, "run spec file")
    msg = str(err.value)
    assert str(path) in msg and where in msg and needle in msg
    assert (err.value.line, err.value.column) == tuple(int(x) for x in where.split("line ")[1].split(", column "))


def test_a_directory_is_not_a_yaml_file(tmp_path):
    from quant_core.yaml_files import YamlFileError, load_yaml_file

    with pytest.raises(YamlFileError, match="cannot read"):
        load_yaml_file(tmp_path, "registry file")


def test_good_yaml_loads(tmp_path):
    from quant_core.yaml_files import load_yaml_file

    path = Path(tmp_path / "ok.yaml")
    path.write_text("\ufeffa: [1, 2]\n")
    assert load_yaml_file(path) == {"a": [1, 2]}
