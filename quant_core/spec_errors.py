"""Validation errors of a run spec as a person reads them: a union field (a number, or one value per token, or
one per ensemble member per token) gets one line, not one per alternative pydantic tried."""

from __future__ import annotations

import re

# a union field (a number, or one per token, ...) reports one error per alternative; these say only "not this shape"
_SHAPE_ERRORS = {"list_type", "float_type", "int_type", "float_parsing", "int_parsing", "dict_type", "string_type",
                 "bool_type", "bool_parsing"}
_UNION_TAG = re.compile(r"^(float|int|str|bool|list\[.*\]|dict\[.*\]|tuple\[.*\])$")


def merge_union_errors(errors: list[dict]) -> list[dict]:
    """The errors of a union field (the location up to its first alternative's tag) without those tags and, where
    any alternative says what is wrong with the value (e.g. "Input should be a finite number"), only those."""
    fields: dict[tuple, list[dict]] = {}
    for err in errors:
        loc = err["loc"]
        tag = next((i for i, p in enumerate(loc) if isinstance(p, str) and _UNION_TAG.match(p)), len(loc))
        stripped = tuple(p for p in loc if not (isinstance(p, str) and _UNION_TAG.match(p)))
        fields.setdefault(loc[:tag], []).append({**err, "loc": stripped})
    out = []
    for group in fields.values():
        telling = [e for e in group if e["type"] not in _SHAPE_ERRORS]
        if telling:
            out += list({e["loc"]: e for e in telling}.values())
            continue
        shapes = list(dict.fromkeys(e["msg"].removeprefix("Input should be ") for e in group))
        out.append({**group[0], "loc": min((e["loc"] for e in group), key=len),
                    "msg": "Input should be " + " or ".join(shapes)})
    return out
