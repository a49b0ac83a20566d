"""`quant configs ...`: the configuration store's versions, what is live, a universe's history, exports.

Apart from quant_core.cli so the command module stays short; the store, the live timeline and the tables are
imported inside the handlers, so `quant --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quant_core.store import ConfigurationStore, StoredConfiguration


def _jsonable(obj):
    if isinstance(obj, datetime):
        return obj.isoformat()
    return str(obj)


def _universes(store: ConfigurationStore, wanted: str | None = None) -> list[str]:
    """Universes with at least one version (the store is the source: quant_core has no registry path here);
    `wanted` must be one of them, else ValueError with a close-match hint."""
    import difflib

    known = sorted({c.universe_key for c in store.list_configurations()})
    if wanted is None:
        return known
    if wanted not in known:
        if not known:
            raise ValueError(f"unknown universe {wanted!r}: no versions are stored yet in {store.url} (a retrain "
                             "writes them; pass --url for another store)")
        close = difflib.get_close_matches(wanted, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown universe {wanted!r}: no stored version names it{hint}; stored universes: "
                         f"{', '.join(known)}")
    return [wanted]


def _exported(cfg: StoredConfiguration) -> dict:
    """A version as `configs export` prints it: every stored field; a version stored before its numerical
    environment was recorded (migration 0004) says so instead of null."""
    from quant_core.provenance import NOT_RECORDED

    data = asdict(cfg)
    if data.get("environment") is None:
        data["environment"] = NOT_RECORDED
    return data


def _export_live(store: ConfigurationStore, universe: str) -> dict:
    """The live version as `configs export ID` prints it, plus what the trader needs to run it ("live")."""
    from quant_core.live.breakers import BREAKERS
    from quant_core.live.status import live_status
    from quant_core.reporting import breaker_order

    status = live_status(store, universe)
    cfg = store.get_configuration(status.configuration_id) if status.configuration_id is not None else None
    if cfg is None:
        raise ValueError(f"universe {universe!r} has no live version ({status.why}); "
                         "`quant configs history` shows its events")
    # The limits the timeline applied (the universe's, in the readings); the version's own for any not read.
    limits = {**cfg.circuit_breakers, **{n: r["limit"] for n, r in status.breakers.items()}}
    breakers = {n: {"limit": limits[n], "action": BREAKERS[n].action if n in BREAKERS else None}
                for n in breaker_order(limits)}
    return {**_exported(cfg), "live": {"since": status.live_since, "stage": status.stage, "paused": status.paused,
                                    "breakers": breakers}}


def cmd_configs(args: argparse.Namespace) -> int:
    from quant_core.store import ConfigurationStore

    store = ConfigurationStore(args.url)
    try:
        if args.action == "list":
            return _configs_list(store, args)
        if args.action == "live":
            from quant_core.live.status import live_status
            from quant_core.reporting import format_live

            statuses = [live_status(store, u).to_dict() for u in _universes(store, args.universe)]
            print(json.dumps(statuses, indent=2, default=_jsonable) if args.json else format_live(statuses))
            return 0
        if args.action == "history":
            from quant_core.live.status import history
            from quant_core.reporting import format_history

            universe = _universes(store, args.universe)[0]
            h = history(store, universe)
            print(json.dumps(h, indent=2, default=_jsonable) if args.json else format_history(h))
            return 0
        if args.live is not None:
            universe = _universes(store, args.live)[0]
            print(json.dumps(_export_live(store, universe), indent=2, default=_jsonable))
            return 0
        cfg = store.get_configuration(args.id)
        if cfg is None:
            print(f"no configuration with id {args.id}; `quant configs list` shows the ids", file=sys.stderr)
            return 2
        print(json.dumps(_exported(cfg), indent=2, default=_jsonable))
        return 0
    finally:
        store.dispose()


def _configs_list(store: ConfigurationStore, args: argparse.Namespace) -> int:
    """Versions with their current stage (the last stage event) and whether each is live now."""
    from quant_core.live.status import current_stages, live_periods
    from quant_core.reporting import configuration_rows, format_table
    from quant_core.store.records import parse_stage

    wanted = parse_stage(args.stage, "--stage") if args.stage else None
    if args.universe is not None:
        _universes(store, args.universe)  # an unknown name is an error, not an empty table
    configs = store.list_configurations(universe_key=args.universe)
    stages, live = {}, set()
    for universe in sorted({c.universe_key for c in configs}):
        events = store.timeline_events(universe)
        stages.update(current_stages(events))
        live.update(p.configuration_id for p in live_periods(events) if p.until is None)
    if wanted is not None:
        configs = [c for c in configs if stages.get(c.id, c.lifecycle_stage) == wanted]
    print(format_table(configuration_rows(configs, stages, live)))
    return 0


def add_configs_parser(sub: argparse._SubParsersAction) -> None:
    """The `configs` command and its subcommands, every option described (`quant configs X --help`)."""
    c = sub.add_parser("configs", help="stored configurations: versions, what is live, history, export",
                       description="The configuration store's versions (one per retrain of a universe's window): "
                       "list them, see what is live, read a universe's history, export one for live trading.")
    c_sub = c.add_subparsers(dest="action", required=True)
    url = argparse.ArgumentParser(add_help=False)
    url.add_argument("--url", help="SQLAlchemy URL of the store (default: $QUANT_DATABASE_URL, else the embedded "
                     "SQLite under $QUANT_HOME)")
    one = ("only this universe name (as in the registry, e.g. sweep_binance_btc_usdt_1h); a name with no stored "
           "version is an error that suggests the closest")

    def configs_parser(name: str, text: str) -> argparse.ArgumentParser:
        return c_sub.add_parser(name, parents=[url], help=text, description=text[0].upper() + text[1:] + ".")

    cl = configs_parser("list", "every version with its current stage and whether it is live now")
    cl.add_argument("--stage", help="only versions whose current stage is this: DISCOVERY, VALIDATION, MATURE or "
                    "RETIRED (any case)")
    cl.add_argument("--universe", help=one)
    cv = configs_parser("live", "per universe: the live version, its forward performance and circuit breakers "
                        "(or why nothing is live)")
    cv.add_argument("--universe", help=one)
    cv.add_argument("--json", action="store_true", help="the LiveStatus records as JSON")
    ch = configs_parser("history", "one universe's versions, events (stage changes, live/off, trips, pauses) and "
                        "live periods")
    ch.add_argument("universe", help="the universe name (`quant configs live` lists those with versions)")
    ch.add_argument("--json", action="store_true", help="as JSON")
    ce = configs_parser("export", "one configuration as JSON, for live trading (with its provenance: data hash, "
                        "code version, seed and the numerical environment it was trained on)")
    which = ce.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", type=int, metavar="ID", help="a version id (`quant configs list`)")
    which.add_argument("--live", metavar="UNIVERSE", help="the universe's live version, with its live state and "
                       "circuit-breaker limits")
    c.set_defaults(func=cmd_configs)
