"""docker-compose.yml and .env.example, checked against speechq's settings and CLI.

No Docker engine runs here, so the compose file is read as YAML (anchors and `<<` merge
keys resolved by the loader, `${...}` interpolated as compose does) and every speechq
part of it goes through the same `build_parser()` and `Settings` the image runs.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from speechq.cli import build_parser
from speechq.settings import Settings
from storage.objects import S3ObjectStore, open_object_store

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_PATH = ROOT / "docker-compose.yml"
ENV_EXAMPLE_PATH = ROOT / ".env.example"

PROJECT_SERVICES = ("api", "worker", "audiobook-worker", "beat", "migrate")
WORKERS = ("worker", "audiobook-worker")
BACKING_SERVICES = ("postgres", "redis", "minio", "minio-init")
# Long-running services that must not start before the schema and the bucket exist.
WAITS_FOR_MIGRATE = ("api", *WORKERS, "beat")
DUMMY_PREFIX = "test-value-for-"

_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<braced>[^}]*)\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)", re.ASCII
)
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.S)
_ENV_LINE = re.compile(r"^(?P<comment>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


# -- reading the files the way compose and pydantic-settings do --------------------------------


def interpolate(text: str, environ: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:+alt}`, `${VAR+alt}`,
    `${VAR:?error}`, `${VAR?error}`, `$VAR` and `$$`. A required variable that is missing
    gets a dummy value, as an operator would have to supply one."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("bare"):
            return environ.get(match.group("bare"), "")
        spec = _BRACED.fullmatch(match.group("braced"))
        assert spec, f"unparsable interpolation {match.group(0)!r}"
        name, op, arg = spec.group("name", "op", "arg")
        value = environ.get(name)
        is_set = value is not None and (value != "" or not (op or "").startswith(":"))
        if op in ("-", ":-"):
            return value if is_set else interpolate(arg, environ)
        if op in ("+", ":+"):
            return interpolate(arg, environ) if is_set else ""
        if op in ("?", ":?"):
            return value if is_set else DUMMY_PREFIX + name.lower()
        return value or ""

    return _INTERPOLATION.sub(replace, text)


def interpolate_all(node: Any, environ: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, environ)
    if isinstance(node, dict):
        return {key: interpolate_all(value, environ) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_all(item, environ) for item in node]
    return node


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {name: "" if value is None else str(value) for name, value in env.items()}


def depends_on_of(service: dict[str, Any]) -> dict[str, str]:
    depends_on = service.get("depends_on") or {}
    if isinstance(depends_on, list):
        return dict.fromkeys(depends_on, "service_started")
    return {
        name: (spec or {}).get("condition", "service_started") for name, spec in depends_on.items()
    }


def volume_mounts_of(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (a named volume or a host path)."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts[volume["target"]] = volume.get("source", "")
        else:
            source, _, rest = volume.partition(":")
            mounts[rest.split(":")[0]] = source
    return mounts


def container_ports_of(service: dict[str, Any]) -> set[int]:
    ports = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.add(int(port["target"]))
        else:
            ports.add(int(str(port).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def parse_env_file(path: Path) -> list[tuple[str, str, bool]]:
    """(name, value, commented out) for every `NAME=value` line, active or `# NAME=`."""
    entries = []
    for line in path.read_text().splitlines():
        if match := _ENV_LINE.match(line.strip()):
            entries.append((match["name"], match["value"], bool(match["comment"])))
    return entries


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A Settings built from exactly `env`: no stray SPEECHQ_* variable, no .env file."""
    for name in list(os.environ):
        if name.startswith("SPEECHQ_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_PATH.read_text())


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any]) -> dict[str, Any]:
    # Interpolated against an empty environment: every default in the file is exercised.
    return interpolate_all(raw_compose, {})


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture
def production_settings(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> Settings:
    return settings_from(environment_of(services["api"]), monkeypatch)


# -- services and commands --------------------------------------------------------------------


def test_compose_defines_expected_services(services: dict[str, dict[str, Any]]) -> None:
    missing = set(PROJECT_SERVICES + BACKING_SERVICES) - set(services)
    assert not missing, f"docker-compose.yml lacks services {sorted(missing)}"


def test_project_services_build_one_image(services: dict[str, dict[str, Any]]) -> None:
    built = {name for name, service in services.items() if "build" in service}
    assert built == set(PROJECT_SERVICES)
    assert len({services[name].get("image") for name in PROJECT_SERVICES}) == 1
    for name in PROJECT_SERVICES:
        build = services[name]["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert (ROOT / context / dockerfile).is_file()
        assert "entrypoint" not in services[name], "the image's entrypoint is `speechq`"


def test_workers_consume_every_queue_once(services: dict[str, dict[str, Any]]) -> None:
    from worker.celery_app import celery_app

    declared = sorted(queue.name for queue in celery_app.conf.task_queues)
    parsed = {name: build_parser().parse_args(command_of(services[name])) for name in WORKERS}
    consumed = sorted(q for args in parsed.values() for q in args.queues.split(","))
    assert consumed == declared  # none left unread, none read by both
    books = parsed["audiobook-worker"]
    assert books.queues == "audiobook" and books.pool == "threads"


@pytest.mark.parametrize("name", PROJECT_SERVICES)
def test_project_service_command_parses(name: str, services: dict[str, dict[str, Any]]) -> None:
    command = command_of(services[name])
    try:
        args = build_parser().parse_args(command)
    except SystemExit as exc:
        message = f"`speechq {shlex.join(command)}` ({name}) is rejected by the CLI: {exc}"
        pytest.fail(message, pytrace=False)
    assert args.command == ("worker" if name in WORKERS else name)


def test_api_listens_on_its_published_port(services: dict[str, dict[str, Any]]) -> None:
    args = build_parser().parse_args(command_of(services["api"]))
    assert args.host == "0.0.0.0", "the API must listen beyond the container's loopback"
    assert args.port in container_ports_of(services["api"])


# -- environment and settings -----------------------------------------------------------------


def test_speechq_variables_are_settings_fields(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for variable in environment_of(service):
            if variable.startswith("SPEECHQ_"):
                field = variable.removeprefix("SPEECHQ_").lower()
                assert field in Settings.model_fields, f"{name}: {variable} is not a setting"


def test_project_services_share_one_environment(services: dict[str, dict[str, Any]]) -> None:
    api_env = environment_of(services["api"])
    for name in PROJECT_SERVICES:
        assert environment_of(services[name]) == api_env, f"{name}'s environment differs"


def test_master_key_is_required_not_written(raw_compose: dict[str, Any]) -> None:
    for name in PROJECT_SERVICES:
        value = environment_of(raw_compose["services"][name])["SPEECHQ_MASTER_KEY"]
        assert re.fullmatch(r"\$\{SPEECHQ_MASTER_KEY:\?[^}]*\}", value), value


def test_environment_builds_production_settings(
    production_settings: Settings, services: dict[str, dict[str, Any]]
) -> None:
    settings = production_settings
    assert settings.resolved_database_url.startswith("postgresql+psycopg://")
    assert settings.resolved_broker_url.startswith("redis://")
    assert settings.resolved_storage_url.startswith("s3://")
    assert settings.s3_endpoint_url
    assert settings.master_key == DUMMY_PREFIX + "speechq_master_key"
    assert not settings.is_embedded_database
    # beat writes its schedule under the data dir: it must be a volume, not the image.
    assert str(settings.data_dir) in volume_mounts_of(services["beat"])


def test_urls_name_services_that_exist(
    production_settings: Settings, services: dict[str, dict[str, Any]]
) -> None:
    for url, service in (
        (production_settings.resolved_database_url, "postgres"),
        (production_settings.resolved_broker_url, "redis"),
        (production_settings.s3_endpoint_url, "minio"),
    ):
        host = urlsplit(url).hostname
        assert host == service, f"{url} does not point at the {service} service"
        assert host in services


def test_database_url_matches_postgres_service(
    production_settings: Settings, services: dict[str, dict[str, Any]]
) -> None:
    url = urlsplit(production_settings.resolved_database_url)
    postgres = environment_of(services["postgres"])
    assert url.username == postgres["POSTGRES_USER"]
    assert url.password == postgres["POSTGRES_PASSWORD"]
    assert url.path.lstrip("/") == postgres.get("POSTGRES_DB", postgres["POSTGRES_USER"])


# -- start-up order ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", WAITS_FOR_MIGRATE)
def test_service_waits_for_migrate(name: str, services: dict[str, dict[str, Any]]) -> None:
    depends_on = depends_on_of(services[name])
    assert depends_on.get("migrate") == "service_completed_successfully"
    assert depends_on.get("redis") == "service_healthy"


@pytest.mark.parametrize("name", ("api", *WORKERS))
def test_service_waits_for_bucket(name: str, services: dict[str, dict[str, Any]]) -> None:
    assert depends_on_of(services[name]).get("minio-init") == "service_completed_successfully"


def test_migrate_waits_for_healthy_postgres(services: dict[str, dict[str, Any]]) -> None:
    assert depends_on_of(services["migrate"]).get("postgres") == "service_healthy"
    assert depends_on_of(services["minio-init"]).get("minio") == "service_healthy"


def test_depends_on_conditions_can_be_met(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for target, condition in depends_on_of(service).items():
            assert target in services, f"{name} depends on unknown service {target}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
            elif condition == "service_completed_successfully":
                # A restarting one-shot job would run again and again.
                restart = str(services[target].get("restart", "no"))
                assert restart in ("no", "on-failure") or restart.startswith("on-failure:")


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for source in volume_mounts_of(service).values():
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} mounts undeclared volume {source}"


# -- object storage ---------------------------------------------------------------------------


def test_storage_bucket_is_created_by_minio_init(
    production_settings: Settings,
    services: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in environment_of(services["api"]).items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    store = open_object_store(
        production_settings.resolved_storage_url,
        endpoint_url=production_settings.s3_endpoint_url,
        region_name=production_settings.s3_region,
    )
    assert isinstance(store, S3ObjectStore)

    script = " ".join(command_of(services["minio-init"]))
    alias = re.search(r"mc alias set (\S+) (\S+)", script)
    assert alias, f"minio-init sets no mc alias: {script}"
    assert alias[2] == production_settings.s3_endpoint_url
    made = re.findall(rf"mc mb (?:--\S+ )*{re.escape(alias[1])}/([\w.-]+)", script)
    assert store.bucket in made, f"minio-init creates {made}, not {store.bucket!r}"


def test_s3_credentials_match_minio_root_user(services: dict[str, dict[str, Any]]) -> None:
    speechq_env = environment_of(services["api"])
    for name in ("minio", "minio-init"):
        minio_env = environment_of(services[name])
        assert speechq_env["AWS_ACCESS_KEY_ID"] == minio_env["MINIO_ROOT_USER"]
        assert speechq_env["AWS_SECRET_ACCESS_KEY"] == minio_env["MINIO_ROOT_PASSWORD"]
    assert speechq_env.get("AWS_DEFAULT_REGION") or speechq_env.get("SPEECHQ_S3_REGION")


# -- .env.example -----------------------------------------------------------------------------


def test_env_example_names_every_settings_field() -> None:
    names = [name for name, _, _ in parse_env_file(ENV_EXAMPLE_PATH)]
    assert len(names) == len(set(names)), "a variable appears twice"
    expected = {f"SPEECHQ_{field.upper()}" for field in Settings.model_fields}
    speechq = {name for name in names if not name.startswith("AWS_")}
    assert speechq - expected == set(), "names that are not settings"
    assert expected - speechq == set(), "settings the file does not name"


def test_env_example_holds_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    # Copied to .env unchanged, it must leave speechq on its embedded default.
    defaults = settings_from({}, monkeypatch).model_dump()
    assert Settings(_env_file=ENV_EXAMPLE_PATH).model_dump() == defaults


def test_interpolate_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("$$HOME ${SET} $SET ${UNSET}", env) == "$HOME x x "
    assert interpolate("${EMPTY:-d} ${EMPTY-d} ${UNSET-d}", env) == "d  d"
    assert interpolate("${SET:+a} ${EMPTY:+a} ${EMPTY+a}", env) == "a  a"
    assert interpolate("${SET:?no} ${EMPTY:?no}", env) == f"x {DUMMY_PREFIX}empty"
