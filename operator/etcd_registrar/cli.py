"""`etcd-registrar` command line: run, ls, watch, crds, doctor."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import socket
import sys
from collections.abc import Iterable, Sequence
from typing import Any, get_args

from pydantic import ValidationError

from etcd_registrar import crd, logs
from etcd_registrar.config import Settings
from etcd_registrar.etcd import Etcd, EtcdError
from etcd_registrar.formats import FORMATS, RESERVED_PREFIX, Format
from etcd_registrar.leases import lease_records, read_record
from etcd_registrar.model import describe
from etcd_registrar.source import Defaults


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Settings field; unset flags fall back to ETCD_REGISTRAR_* or the default."""
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = f"ETCD_REGISTRAR_{name.upper()}"
        help_text = f"{field.description} [env {env}; default {field.default!r}]"
        if field.annotation is bool:
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif list in (getattr(field.annotation, "__origin__", None), *get_args(field.annotation)):
            parser.add_argument(flag, dest=name, action="append", help=help_text)
        else:
            parser.add_argument(flag, dest=name, help=help_text)


def load_settings(args: argparse.Namespace) -> Settings:
    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        flags = {n: "--" + n.replace("_", "-") for n in Settings.model_fields}
        sys.exit(f"etcd-registrar: invalid configuration: {describe(exc, flags)}")


GC_THRESHOLDS = (10_000, 10, 10)  # Python's defaults: (700, 10, 10)


def cmd_run(args: argparse.Namespace) -> int:
    import kopf

    from etcd_registrar import handlers  # noqa: F401 - registers the handlers with kopf

    settings = load_settings(args)
    logs.configure(settings.log_format)
    # The heap grows with the pods watched, and every full collection walks all of it (tens
    # of ms at 10,000 pods, in the middle of event handling): keep what exists now (modules,
    # classes) out of collections for good, and collect the young generation less often.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    kopf.run(
        standalone=True,
        clusterwide=not settings.namespace,
        namespaces=settings.namespace,
        memo=kopf.Memo(config=settings),
        # kopf would name itself after the user (getpass.getuser()), which crashes for a UID
        # with no passwd entry (runAsUser, OpenShift's arbitrary UIDs); a pod's host name is
        # its name.
        identity=socket.gethostname(),  # type: ignore[arg-type]  # a NewType kopf does not export
    )
    return 0


async def _ls(settings: Settings, service: str | None, as_json: bool) -> int:
    etcd = Etcd(settings.etcd())
    owner_prefix = lease_records(settings.owner_id)
    rows: list[dict[str, Any]] = []
    present: dict[str, int] = {}
    try:
        records, _ = await etcd.get_prefix(owner_prefix)
        if not records:
            present = await _owners(etcd)
        for record in records:
            try:
                namespace, name, _ = read_record(record, owner_prefix)
            except Exception as exc:  # not a record the operator wrote: say so, list the rest
                print(f"skipped {record.key}: {exc}", file=sys.stderr)
                continue
            if service and name != service:
                continue
            lease = await etcd.time_to_live(record.lease)
            values = await etcd.get_many(k for k in lease.keys if k != record.key)
            rows += [
                {
                    "namespace": namespace,
                    "service": name,
                    "key": kv.key,
                    "value": kv.value,
                    "lease": f"{kv.lease:x}",
                    "ttl": lease.ttl,
                }
                for kv in values.values()
            ]
    finally:
        await etcd.close()
    rows.sort(key=lambda r: (r["namespace"], r["service"], r["key"]))
    if not records:  # not an empty table: the owner ids that do hold something
        print(nothing_held(settings.owner_id, present), file=sys.stderr)
    if as_json:
        print(json.dumps(rows, indent=2))
    elif records:
        _table(rows, ["namespace", "service", "key", "value", "ttl"])
    return 0


def owners_in(keys: Iterable[str]) -> dict[str, int]:
    """The owner ids with bookkeeping under /etcd-registrar/, and how many leases each
    records, from the keys there."""
    owners: dict[str, int] = {}
    for key in keys:
        owner, _, rest = key.removeprefix(RESERVED_PREFIX + "/").partition("/")
        if owner and rest:
            owners[owner] = owners.get(owner, 0) + rest.startswith("leases/")
    return owners


def nothing_held(owner: str, present: dict[str, int]) -> str:
    """What to tell a user whose owner id holds nothing: which ones hold something."""
    if not present:
        return (
            f"owner id {owner!r} holds nothing, and no operator has written to this etcd "
            "(is --etcd-endpoints the operator's registry etcd?)"
        )
    found = ", ".join(f"{o} ({n} lease{'' if n == 1 else 's'})" for o, n in sorted(present.items()))
    return (
        f"owner id {owner!r} holds nothing in this etcd; owner ids present: {found}. "
        "Pass --owner-id (or ETCD_REGISTRAR_OWNER_ID); the chart's is in the operator's "
        "ETCD_REGISTRAR_OWNER_ID"
    )


async def _owners(etcd: Etcd) -> dict[str, int]:
    kvs, _ = await etcd.get_prefix(RESERVED_PREFIX + "/", keys_only=True)
    return owners_in(kv.key for kv in kvs)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max([len(c), *(len(str(r[c])) for r in rows)]) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip())


def service_prefix(service: str, fmt: Format, prefix: str | None, namespace: str = "") -> str:
    """The key prefix under which a consumer finds every endpoint of `service`."""
    return Defaults(format=fmt, prefix=prefix).layout.service_range(service, namespace or None)


async def _watch(settings: Settings, prefix: str) -> int:
    etcd = Etcd(settings.etcd())
    try:
        existing, revision = await etcd.get_prefix(prefix)
        if not existing:
            hint = nothing_held(settings.owner_id, await _owners(etcd))
            print(f"# nothing under {prefix!r} yet; {hint}", file=sys.stderr, flush=True)
        for kv in existing:
            print(f"PUT     {kv.key} {kv.value}", flush=True)
        async for event in etcd.watch_prefix(prefix, revision + 1):
            print(f"{event.kind:<7} {event.key} {event.value}".rstrip(), flush=True)
    finally:
        await etcd.close()
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    return asyncio.run(_ls(load_settings(args), args.service, args.json))


def cmd_watch(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    fmt = args.format or settings.default_format
    prefix = service_prefix(args.service, fmt, args.prefix or settings.default_prefix)
    print(f"# watching {prefix!r} (format {fmt})", file=sys.stderr, flush=True)
    try:
        return asyncio.run(_watch(settings, prefix))
    except KeyboardInterrupt:
        return 0


def cmd_crds(_: argparse.Namespace) -> int:
    sys.stdout.write(crd.render())
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from etcd_registrar.doctor import run_checks

    return run_checks(load_settings(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="etcd-registrar", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator")
    run.set_defaults(func=cmd_run)
    ls = sub.add_parser("ls", help="list what the operator holds in etcd")
    ls.add_argument("service", nargs="?", help="only this service")
    ls.add_argument("--json", action="store_true", help="JSON instead of a table")
    ls.set_defaults(func=cmd_ls)
    watch = sub.add_parser("watch", help="stream a service's keys as a consumer sees them")
    watch.add_argument("service")
    watch.add_argument("--format", choices=FORMATS, help="layout (default: --default-format)")
    watch.add_argument("--prefix", help="key prefix (default: the format's)")
    watch.set_defaults(func=cmd_watch)
    crds = sub.add_parser("crds", help="print the ServiceRegistration CRD")
    crds.set_defaults(func=cmd_crds)
    doctor = sub.add_parser("doctor", help="check API server and etcd access, say what is wrong")
    doctor.set_defaults(func=cmd_doctor)
    for command in (run, ls, watch, doctor):
        _add_settings_flags(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.func is not cmd_run:  # `run` logs through kopf's configuration
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return int(args.func(args))
    except EtcdError as exc:
        print(f"etcd-registrar: etcd: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
