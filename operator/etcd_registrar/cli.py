"""`etcd-registrar` command line: run, ls, watch, crds, doctor, claims."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import socket
import sys
from collections.abc import Sequence
from typing import Any, get_args

from pydantic import ValidationError

from etcd_registrar import crd, logs
from etcd_registrar.claimstore import claim_record, recorded_owner
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
    try:
        records, _ = await etcd.get_prefix(owner_prefix)
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
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        _table(rows, ["namespace", "service", "key", "value", "ttl"])
    return 0


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


async def _claims_ls(settings: Settings, owner: str | None, as_json: bool) -> int:
    """Every claim recorded in etcd (of one owner id, or of all that share the etcd)."""
    etcd = Etcd(settings.etcd())
    try:
        records, _ = await etcd.get_prefix(f"{RESERVED_PREFIX}/")
    finally:
        await etcd.close()
    rows: list[dict[str, Any]] = []
    for kv in records:
        owner_id, found, identity = kv.key.removeprefix(f"{RESERVED_PREFIX}/").partition("/claims/")
        if not found or "/" in owner_id or owner not in (None, owner_id):
            continue
        try:
            namespace = recorded_owner(kv.value)
        except ValueError as exc:
            print(f"skipped {kv.key}: {exc}", file=sys.stderr)
            continue
        rows.append({"owner_id": owner_id, "range": identity, "namespace": namespace})
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        _table(rows, ["owner_id", "range", "namespace"])
    return 0


async def _claims_release(settings: Settings, identity: str, confirmed: bool) -> int:
    key = claim_record(settings.owner_id, identity)
    etcd = Etcd(settings.etcd())
    try:
        record = (await etcd.get_many([key])).get(key)
        if record is None:
            print(
                f"no claim on {identity!r} is recorded for owner id {settings.owner_id!r} "
                "(`etcd-registrar claims ls` lists them all)",
                file=sys.stderr,
            )
            return 1
        try:
            question = (
                f"release the claim of namespace {recorded_owner(record.value)} on {identity}"
            )
        except ValueError:
            question = f"release the unreadable claim record {key}"
        if not (confirmed or _confirm(question)):
            print("not released", file=sys.stderr)
            return 2
        await etcd.delete(key)
    finally:
        await etcd.close()
    print(
        f"released {identity}. An operator records it again while its namespace still has "
        "a registration or pod there: to move a name in use, assign it with the Namespace "
        "annotation etcd-registrar.io/claims (docs/tenancy.md)."
    )
    return 0


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        print(f"{question}? Not asked without a terminal: add --yes", file=sys.stderr)
        return False
    return input(f"{question}? [y/N] ").strip().lower() in ("y", "yes")


def cmd_claims(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if args.action == "ls":
        return asyncio.run(_claims_ls(settings, args.owner_id, args.json))
    return asyncio.run(_claims_release(settings, args.range, args.yes))


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
    claims = sub.add_parser("claims", help="an administrator's view of service claims")
    actions = claims.add_subparsers(dest="action", required=True)
    claims_ls = actions.add_parser("ls", help="the claims recorded in etcd (all owner ids)")
    claims_ls.add_argument("--json", action="store_true", help="JSON instead of a table")
    release = actions.add_parser("release", help="delete one claim record of --owner-id")
    release.add_argument("range", help="the claimed key range, e.g. /services/payments/")
    release.add_argument("--yes", action="store_true", help="release without asking")
    for action in (claims_ls, release):
        action.set_defaults(func=cmd_claims)
    for command in (run, ls, watch, doctor, claims_ls, release):
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
