"""etcd-registrar: keeps an etcd service registry in step with pod readiness.

Exit codes: 0 done; 1 a failure (etcd refused or unreachable, a doctor check failed);
2 a usage or configuration error (a bad flag or value, a file that cannot be read).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import logging
import os
import socket
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn, get_args, get_origin

from pydantic import ValidationError

from etcd_registrar import __version__, crd, logs
from etcd_registrar.claimstore import claim_record, parse_claim_key, recorded_owner
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
        elif Path in get_args(field.annotation):
            parser.add_argument(flag, dest=name, metavar="FILE", help=help_text)
        else:
            # Choices shown and completed, but checked by Settings: its error is one line.
            literal = get_origin(field.annotation) is Literal
            metavar = "{" + ",".join(get_args(field.annotation)) + "}" if literal else None
            parser.add_argument(flag, dest=name, metavar=metavar, help=help_text)


def usage_error(message: str) -> NoReturn:
    """One line on stderr and exit code 2, as argparse does for a bad flag."""
    print(f"etcd-registrar: {message}", file=sys.stderr)
    raise SystemExit(2)


def load_settings(args: argparse.Namespace) -> Settings:
    """The configuration the flags and ETCD_REGISTRAR_* give, validated."""
    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        flags = {n: "--" + n.replace("_", "-") for n in Settings.model_fields}
        usage_error(f"invalid configuration: {describe(exc, flags)}")


def command_settings(args: argparse.Namespace) -> Settings:
    """The configuration a command runs with here: valid, and its files readable."""
    settings = load_settings(args)
    missing = settings.missing_file()
    if missing:
        usage_error(f"invalid configuration: {missing}")
    logging.getLogger().setLevel(settings.log_level.upper())
    return settings


GC_THRESHOLDS = (10_000, 10, 10)  # Python's defaults: (700, 10, 10)


def cmd_run(args: argparse.Namespace) -> int:
    settings = command_settings(args)
    if settings.kubeconfig:
        # Before the Kubernetes client is imported: it reads $KUBECONFIG once, on import, as
        # its default, and kopf's login loads that default.
        os.environ["KUBECONFIG"] = str(settings.kubeconfig)
    # The operator's own API calls go through aiohttp (kube.py); kopf would import the
    # `kubernetes` client if it could (type hooks and a login `run` does not use): blocked,
    # the process holds 9.5 MiB less.
    sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]
    import kopf

    from etcd_registrar import handlers, kube  # noqa: F401 - registers the handlers with kopf

    logs.configure(settings.log_format, settings.log_level)
    log = logging.getLogger("etcd_registrar")
    log.info("etcd-registrar %s starting", __version__)
    try:
        server = kube.login(settings.kubeconfig).server
    except kube.LoginError as exc:
        usage_error(f"no Kubernetes credentials ({exc}): run in a pod, or pass --kubeconfig")
    # Before kopf starts: it would retry its failed start-up every 60 s with a traceback.
    log.info("API server %s answers (%s)", server, asyncio.run(_api_version(settings)))
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
    return asyncio.run(_ls(command_settings(args), args.service, args.json))


def cmd_watch(args: argparse.Namespace) -> int:
    settings = command_settings(args)
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
        parsed = parse_claim_key(kv.key)
        if parsed is None or owner not in (None, parsed[0]):
            continue
        owner_id, identity = parsed
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
    settings = command_settings(args)
    if args.action == "ls":
        return asyncio.run(_claims_ls(settings, args.owner_id, args.json))
    return asyncio.run(_claims_release(settings, args.range, args.yes))


def cmd_crds(_: argparse.Namespace) -> int:
    sys.stdout.write(crd.render())
    return 0


async def _api_version(settings: Settings) -> str:
    from etcd_registrar import kube

    api = kube.Kube(lambda: kube.login(settings.kubeconfig))
    try:
        return await api.wait_for_api_server()
    finally:
        await api.close()


def cmd_plan(args: argparse.Namespace) -> int:
    from etcd_registrar import kube, preview

    settings = command_settings(args)
    if settings.log_level == "info":  # the dry run's "would put" lines would repeat the plan
        logging.getLogger().setLevel(logging.WARNING)
    try:
        kube.login(settings.kubeconfig)
    except kube.LoginError as exc:
        usage_error(f"no Kubernetes credentials ({exc}): run in a pod, or pass --kubeconfig")
    print(
        f"# what `run` would write under owner id {settings.owner_id}, against etcd now "
        "(nothing is written)",
        file=sys.stderr,
    )
    credentials = functools.partial(kube.login, settings.kubeconfig)
    for line in asyncio.run(preview.plan(settings, credentials)).lines():
        print(line)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from etcd_registrar.doctor import run_checks

    return run_checks(command_settings(args))


BASH_COMPLETION = """\
# etcd-registrar completion for bash (zsh: autoload bashcompinit && bashcompinit first)
_etcd_registrar() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} command="" word
    for word in "${COMP_WORDS[@]:1:COMP_CWORD-1}"; do
        case $word in %(commands)s) command=$word; break;; esac
    done
    case "$command $prev" in
%(values)s
    esac
    case $command in
%(flags)s
    esac
}
complete -F _etcd_registrar etcd-registrar kubectl-etcd_registrar
"""


def completion_script(parser: argparse.ArgumentParser) -> str:
    """A bash completion script: the commands, their flags, and a flag's choices or files."""
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    commands: dict[str, argparse.ArgumentParser] = {"*": parser, **sub.choices}
    values, flags = [], []
    for name, command in commands.items():
        words = list(sub.choices) if name == "*" else []
        for action in command._actions:
            if not action.option_strings:  # a positional: its choices, if it has any
                words += list(action.choices or ()) if name != "*" else []
                continue
            words += [o for o in action.option_strings if o.startswith("--")]
            metavar = action.metavar if isinstance(action.metavar, str) else ""
            choices = action.choices or (metavar[1:-1].split(",") if metavar[:1] == "{" else ())
            if choices:
                reply = f'compgen -W "{" ".join(choices)}" -- "$cur"'
            elif action.metavar == "FILE":
                reply = 'compgen -f -- "$cur"'
            else:
                continue
            case = f"{name} {action.option_strings[0]}"
            values.append(f'        "{case}") COMPREPLY=($({reply})); return;;')
        flags.append(f'        {name}) COMPREPLY=($(compgen -W "{" ".join(words)}" -- "$cur"));;')
    return BASH_COMPLETION % {
        "commands": "|".join(sub.choices),
        "values": "\n".join(values),
        "flags": "\n".join([*flags[1:], flags[0]]),  # "*" last: bash takes the first match
    }


def cmd_completion(args: argparse.Namespace) -> int:
    sys.stdout.write(completion_script(build_parser()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="etcd-registrar",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    plan = sub.add_parser(
        "plan", help="what the operator would write, diffed against etcd; then exit"
    )
    plan.set_defaults(func=cmd_plan)
    completion = sub.add_parser(
        "completion",
        help="print a bash completion script: source <(etcd-registrar completion bash)",
    )
    completion.add_argument("shell", choices=["bash"])
    completion.set_defaults(func=cmd_completion)
    claims = sub.add_parser("claims", help="an administrator's view of service claims")
    actions = claims.add_subparsers(dest="action", required=True)
    claims_ls = actions.add_parser("ls", help="the claims recorded in etcd (all owner ids)")
    claims_ls.add_argument("--json", action="store_true", help="JSON instead of a table")
    release = actions.add_parser("release", help="delete one claim record of --owner-id")
    release.add_argument("range", help="the claimed key range, e.g. /services/payments/")
    release.add_argument("--yes", action="store_true", help="release without asking")
    for action in (claims_ls, release):
        action.set_defaults(func=cmd_claims)
    for command in (run, ls, watch, doctor, plan, claims_ls, release):
        _add_settings_flags(command)
    every = (parser, run, ls, watch, crds, doctor, plan, claims, claims_ls, release, completion)
    for command in every:
        command.add_argument("--version", action="version", version=f"etcd-registrar {__version__}")
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
