"""The `clarion` command: dev, worker, api, simulator, keys, users, dlq, topics."""

from __future__ import annotations

import argparse
import asyncio
import logging.config
import os
import sys
from pathlib import Path

from clarion.logs import LOGGING_CONFIG
from clarion.topology.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="clarion", description=__doc__, epilog=SETTINGS_NOTE)
    parser.add_argument("--version", action="version", version=f"clarion {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="embedded broker + Redis + simulator + API + worker, with a demo")
    dev.add_argument("--no-demo", action="store_true", help="skip the demo: just start the stack and serve")
    dev.add_argument("--exit", action="store_true", help="stop after the demo")
    dev.add_argument("--callbacks", action="store_true",
                     help="the simulator sends Twilio status callbacks and SES events (SNS) to the API's webhooks")
    worker = sub.add_parser("worker", help="a faust worker (needs CLARION_KAFKA)")
    worker.add_argument("--lanes", choices=("all", "critical", "promo"),
                        help="what it runs (default: $CLARION_LANES, else all); see clarion.agents")  # fmt: skip
    sub.add_parser("topics", help="print the topic catalog: partitions, key, value, who writes and reads each")
    sub.add_parser("api", help="the stateless HTTP API (needs CLARION_KAFKA)")
    keys = sub.add_parser("keys", help="API keys: create, list, revoke (needs CLARION_KAFKA)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="a new key for CLIENT_ID, printed once")
    create.add_argument("client_id", help="the client (tenant) the key acts for")
    create.add_argument("--scopes", default="send,users,templates,read",
                        help="comma-separated, of send, users, templates, read, metrics (default: send,users,"
                             "templates,read; metrics is for the operator's Prometheus: GET /metrics)")  # fmt: skip
    create.add_argument("--name", default="", help="a label to tell keys apart")
    keys_sub.add_parser("list", help="every key: id, client, scopes, created, revoked")
    revoke = keys_sub.add_parser("revoke", help="stop accepting a key")
    revoke.add_argument("key_id", help="the key's id, as `clarion keys list` prints it")
    users = sub.add_parser("users", help="users: import a JSON-lines file through the API")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    importing = users_sub.add_parser(
        "import", help="post FILE (one POST /users body per line) to POST /users/bulk; exit 1 if any line is rejected"
    )
    importing.add_argument("file", type=Path, help="JSON lines: one POST /users body per line")
    importing.add_argument("--key", default=os.environ.get("CLARION_API_KEY", ""),
                           help="an API key with the users scope (default: $CLARION_API_KEY)")  # fmt: skip
    importing.add_argument("--api", default="", help="the API's URL (default: http://<CLARION_API_HOST>:<port>)")
    importing.add_argument("--chunk-lines", type=int, default=5000, help="lines per request (default 5000)")
    dlq = sub.add_parser("dlq", help="dead letters: list, show, replay (needs CLARION_KAFKA; replay CLARION_REDIS)")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = dlq_sub.add_parser("list", help="one line per dead letter: id, time, source, reason, ids")
    listing.add_argument("--reason", help="only those whose reason contains this")
    show = dlq_sub.add_parser("show", help="one dead letter, whole")
    show.add_argument("id", help="<partition>:<offset>, as list prints it")
    again = dlq_sub.add_parser("replay", help="send dead letters again (a delivery keeps its id: never sent twice)")
    again.add_argument("ids", nargs="*", help="<partition>:<offset> ids")
    again.add_argument("--reason", help="every dead letter whose reason contains this")
    again.add_argument("--all", action="store_true", help="every dead letter")
    sim = sub.add_parser("simulator", help="the provider simulator")
    sim.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    sim.add_argument("--port", type=int, default=9900, help="port for every provider, APNs over HTTP/2 too "
                     "(default: 9900)")  # fmt: skip
    sim.add_argument("--latency-ms", type=float, default=0.0, help="added to every provider call (default: 0)")
    _describe_subcommands(parser)
    args = parser.parse_args(argv)

    if args.command == "worker":
        from clarion.topology.worker import WORKER_ARGS

        if args.lanes:
            os.environ["CLARION_LANES"] = args.lanes
        logging.config.dictConfig(LOGGING_CONFIG)
        if not asyncio.run(_broker_answered(Settings.from_env())):
            return  # stopped while waiting
        os.execvp(sys.executable, [sys.executable, *WORKER_ARGS])
    if args.command == "topics":
        print_catalog(Settings.from_env())
    elif args.command == "dlq":
        sys.exit(asyncio.run(_dlq(args, Settings.from_env())))
    elif args.command == "keys":
        sys.exit(asyncio.run(_keys(args, Settings.from_env())))
    elif args.command == "users":
        sys.exit(asyncio.run(_users_import(args, Settings.from_env())))
    elif args.command == "dev":
        asyncio.run(_dev(args))
    elif args.command == "api":
        import uvloop
        from aiohttp import web

        from clarion.web.api import create_api

        logging.config.dictConfig(LOGGING_CONFIG)
        settings = Settings.from_env()
        uvloop.install()
        # print=None: no text banner; the access log is clarion's own JSON line (web/metrics.py)
        logging.getLogger("clarion.api").info("API starting on %s:%s", settings.api_host, settings.api_port)
        web.run_app(create_api(settings), host=settings.api_host, port=settings.api_port, access_log=None,
                    print=None)  # fmt: skip
    elif args.command == "simulator":
        asyncio.run(_simulator(args))


SETTINGS_NOTE = "Settings come from CLARION_* environment variables (README: Configuration; topology/settings.py)."


async def _broker_answered(settings: Settings) -> bool:
    """Wait until the broker answers (its topics ensured); False when SIGINT or SIGTERM came first.

    faust gives up at once on a broker it cannot reach; a worker started before its broker waits, as the API does.
    """
    import signal

    from clarion.topology.admin import ensure_topics_when_reachable
    from clarion.topology.catalog import catalog

    specs = list(catalog(settings).values())
    waiting = asyncio.ensure_future(ensure_topics_when_reachable(settings.bootstrap_servers, specs))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, waiting.cancel)
    try:
        await waiting
        return True
    except asyncio.CancelledError:
        return False
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _describe_subcommands(parser: argparse.ArgumentParser) -> None:
    """Each subcommand's --help opens with its line from its parent's list, and ends with where settings come from."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, child in action.choices.items():
                child.description = child.description or helps.get(name)
                child.epilog = child.epilog or SETTINGS_NOTE
                _describe_subcommands(child)


def _version() -> str:
    """The installed package's version (pyproject.toml)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clarion")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


async def _simulator(args: argparse.Namespace) -> None:
    """The simulator until killed: HTTP/1.1 and HTTP/2 (APNs) on one port."""
    from clarion.providers.simulator import fcm, ses, start_simulator

    # the static FCM bearer workers are given (compose) is accepted besides the tokens the simulator issues
    fcm_bearer = Settings.from_env().fcm_bearer or fcm.STATIC_BEARER
    ses_keys = ses.options(Settings.from_env())  # and the SES keys they sign with
    _, runner = await start_simulator(
        args.host, args.port, latency_ms=args.latency_ms, fcm_bearer=fcm_bearer, **ses_keys
    )
    print(f"provider simulator on http://{args.host}:{args.port} (APNs over HTTP/2 on the same port)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def print_catalog(settings: Settings) -> None:
    from clarion.topology.catalog import READERS, WRITERS, catalog

    print("Keys pick partitions with Kafka's default partitioner, murmur2 (the Java client's, aiokafka's, faust's);")
    print("a record keyed client/user_id found on another partition (librdkafka's CRC32) is forwarded to its own.")
    print("Stages are clarion/agents/<stage>.py. Other writers: " + "; ".join(f"{k}: {v}" for k, v in WRITERS.items())
          + ". Other readers: " + "; ".join(f"{k}: {v}" for k, v in READERS.items()) + ".\n")
    print("| topic | partitions | key | value | cleanup | written by | read by | purpose |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in catalog(settings).values():
        policy = "compact" if spec.compacted else "delete"
        value = f"`{spec.value.__name__}`" + (" or an array of them" if spec.batched else "")
        print(f"| `{spec.topic}` | {spec.partitions} | {spec.key} | {value} | {policy} | "
              f"{', '.join(spec.writers)} | {', '.join(spec.readers)} | {spec.purpose} |")


async def _keys(args: argparse.Namespace, settings: Settings) -> int:
    from clarion.keys import create_key, list_keys, parse_scopes, revoke_key

    if args.keys_command == "create":
        try:
            key, record = await create_key(settings, args.client_id, parse_scopes(args.scopes), args.name)
        except ValueError as exc:
            print(f"clarion keys create: {exc}", file=sys.stderr)
            return 2
        print(f"key id: {record.key_id}  client: {record.client_id}  scopes: {','.join(record.scopes)}")
        print(f"api key: {key}")
        print("(shown once: only its hash is stored)")
    elif args.keys_command == "list":
        print("key_id            client_id         scopes                     created              revoked")
        for k in await list_keys(settings):
            revoked = _when(k.revoked_at) if k.revoked_at else "-"
            print(f"{k.key_id:<17} {k.client_id:<17} {','.join(k.scopes):<26} {_when(k.created_at):<20} {revoked}")
    elif args.keys_command == "revoke":
        record = await revoke_key(settings, args.key_id)
        if record is None:
            print(f"clarion keys revoke: no key {args.key_id!r}", file=sys.stderr)
            return 1
        print(f"revoked {record.key_id} (client {record.client_id})")
    return 0


async def _users_import(args: argparse.Namespace, settings: Settings) -> int:
    """0: every line accepted; 1: some rejected; 2: a usage error; 3: the API refused a request or is unreachable."""
    from clarion.users_import import SHOWN_ERRORS, ImportFailed, Progress, count_lines, import_users

    if not args.key:
        print("clarion users import: give an API key with --key or CLARION_API_KEY", file=sys.stderr)
        return 2
    if args.chunk_lines < 1:
        print("clarion users import: --chunk-lines must be at least 1", file=sys.stderr)
        return 2
    try:
        total = count_lines(args.file)
    except OSError as exc:
        print(f"clarion users import: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    host = settings.api_host if settings.api_host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    api = args.api or f"http://{host}:{settings.api_port}"
    progress = Progress(total)
    try:
        report = await import_users(args.file, api, args.key, args.chunk_lines, on_chunk=progress.show)
    except ImportFailed as exc:
        progress.close()
        print(f"clarion users import: {exc}", file=sys.stderr)
        return 3
    progress.close()
    print(f"{report.accepted} accepted, {report.rejected} rejected, of {report.lines} lines in {args.file}")
    for error in report.errors[:SHOWN_ERRORS]:
        print(f"line {error['line']}: {error['field']}: {error['error']}")
    if len(report.errors) >= SHOWN_ERRORS:
        print(f"(only the first {SHOWN_ERRORS} errors are shown)")
    return 1 if report.rejected else 0


async def _dlq(args: argparse.Namespace, settings: Settings) -> int:
    import orjson

    from clarion.dlq import read_letters, replay, select
    from clarion.schemas.records import asdict

    letters = await read_letters(settings)
    if args.dlq_command == "list":
        for item in select(letters, [], args.reason, args.reason is None):
            d = item.letter
            ids = " ".join(f"{k}={v}" for k, v in (("nid", d.notification_id), ("did", d.delivery_id)) if v)
            print(f"{item.id:<10} {_when(d.ts)}  {d.source_topic}  {d.reason[:100]}  {ids}")
    elif args.dlq_command == "show":
        found = [item for item in letters if item.id == args.id]
        if not found:
            print(f"clarion dlq show: no dead letter {args.id!r}", file=sys.stderr)
            return 1
        print(orjson.dumps({"id": args.id, **asdict(found[0].letter)}, option=orjson.OPT_INDENT_2).decode())
    else:
        if not (args.ids or args.reason or args.all):
            print("clarion dlq replay: name ids, --reason or --all", file=sys.stderr)
            return 2
        chosen = list(select(letters, args.ids, args.reason, args.all))
        report = await replay(settings, chosen)
        print(f"replayed {report.replayed}, skipped {report.skipped} (unreadable or unknown source), "
              f"{report.dead_released} delivery(ies) released from `dead` in the ledger")  # fmt: skip
    return 0


def _when(ts: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _dev(args: argparse.Namespace) -> None:
    from clarion.dev import run_dev

    await run_dev(demo=not args.no_demo, linger=not args.exit, callbacks=args.callbacks)


if __name__ == "__main__":
    main()
