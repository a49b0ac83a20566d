"""Reading the YAML files people write by hand (run specs, the registry): one loader, one error.

PyYAML reports a syntax error as a multi-line exception whose position is buried in a `Mark`; a person
editing a file needs the file, the line and column, what is wrong and the line itself, in a message the
CLI prints without a traceback and definitions loading shows as is. Every load of a user's YAML file goes
through `load_yaml_file` so those messages read the same everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

_GENERIC_FIX = ("fix: correct the YAML there (close every bracket and quote, indent with spaces, write "
                "`key: value` with a space after the colon)")


class YamlFileError(ValueError):
    """A YAML file that cannot be read or parsed; `line` and `column` (1-based) locate the problem."""

    def __init__(self, message: str, path: Path, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        self.column = column


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based (line, column) of a character index."""
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _quote(lines: list[str], line: int) -> str:
    """'  3 | fees: [0.1' for a 1-based line that exists and is not blank, else ''."""
    if 1 <= line <= len(lines) and lines[line - 1].strip():
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in lines[line - 1].rstrip())
        return f"\n  {line} | {shown}"
    return ""


def _fix(exc: yaml.MarkedYAMLError) -> str:
    """The likeliest fix for the common slips; the generic advice otherwise."""
    problem, context = exc.problem or "", exc.context or ""
    if "'\\t'" in problem:
        return "fix: indent with spaces - YAML does not allow tabs for indentation"
    if "flow sequence" in context or "flow mapping" in context:
        opener = "[" if "sequence" in context else "{"
        closer = "]" if opener == "[" else "}"
        return f"fix: close the {opener} with {closer} (or separate the items with commas)"
    if "quoted scalar" in context:
        return "fix: close the quote (a quote inside a quoted value is doubled: 'it''s' or escaped: \"a \\\" b\")"
    if "<block end>" in problem:
        return "fix: check the indentation - the keys of one mapping (and the items of one list) start in one column"
    if "mapping values are not allowed" in problem:
        return "fix: quote a value that holds ': ' (key: 'a: b'), or put the nested mapping on its own indented lines"
    return _GENERIC_FIX


def _syntax_error(exc: yaml.MarkedYAMLError, what: str, path: Path, text: str) -> YamlFileError:
    lines = text.splitlines()
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
    where = f", line {line}, column {column}" if line is not None else ""
    problem = exc.problem or exc.context or "invalid YAML"
    opened = ""
    quoted = _quote(lines, line) if line is not None else ""
    if exc.context and exc.problem and exc.context_mark is not None:
        ctx_line, ctx_col = exc.context_mark.line + 1, exc.context_mark.column + 1
        opened = f" ({exc.context} that starts at line {ctx_line}, column {ctx_col})"
        quoted = quoted or _quote(lines, ctx_line)
    elif exc.context and exc.problem:
        opened = f" ({exc.context})"
    message = f"{what} {path}{where}: YAML syntax error: {problem}{opened}{quoted}\n{_fix(exc)}"
    return YamlFileError(message, path, line, column)


def load_yaml_file(path: str | Path, what: str = "YAML file") -> Any:
    """The file's YAML (safe_load), or YamlFileError naming `what` and the file, line and column.

    `what` names the file's role for the message ("run spec file", "registry file"). Bytes are decoded
    here (UTF-8, BOM allowed) rather than by PyYAML so an undecodable byte is placed by line and column too.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise YamlFileError(f"{what} {path} does not exist", path) from None
    except OSError as exc:
        raise YamlFileError(f"{what} {path}: cannot read it ({exc.strerror or exc})", path) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        prefix = raw[: exc.start].decode("utf-8-sig", errors="replace")
        line, column = _position(prefix, len(prefix))
        raise YamlFileError(
            f"{what} {path}, line {line}, column {column}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
            "fix: save the file as UTF-8",
            path, line, column,
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, what, path, text) from None
    except yaml.reader.ReaderError as exc:
        line, column = _position(text, exc.position)
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        raise YamlFileError(
            f"{what} {path}, line {line}, column {column}: character {char!r} is not allowed in YAML "
            f"({exc.reason}){_quote(text.splitlines(), line)}\nfix: delete it or write it as an escape in a "
            "double-quoted string",
            path, line, column,
        ) from None
    except yaml.YAMLError as exc:  # any other PyYAML error: still no traceback, still the file
        raise YamlFileError(f"{what} {path}: invalid YAML: {exc}\n{_GENERIC_FIX}", path) from None
