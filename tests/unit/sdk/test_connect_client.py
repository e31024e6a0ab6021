"""Connector files, placeholders and the `sluice connect` CLI against a fake worker."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from streams.cli import connect as connect_cli
from streams.cli import main
from streams.sdk.connect_client import ConnectClient, ConnectError, load_connector, substitute
from streams.settings import PROJECT_ROOT, Settings
from tests.support.audit import Recorded

CONNECTORS = PROJECT_ROOT / "connectors"


@pytest.fixture
def settings() -> Settings:
    return Settings()


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(document))
    return path


# -- placeholders ---------------------------------------------------------------------
def test_placeholders_take_vars_then_environment_then_defaults():
    values = {"SLUICE_A": "a"}
    assert substitute("${SLUICE_A}-${SLUICE_B:-b}", values, "x") == "a-b"
    assert substitute("${SLUICE_B:-${SLUICE_A}/x}", values, "x") == "a/x"
    assert substitute("${SLUICE_B:-}", values, "x") == ""


def test_connects_own_config_providers_pass_through():
    text = "${file:/etc/secrets.properties:pg.password} ${env:PGPASSWORD}"
    assert substitute(text, {}, "x") == text


def test_a_missing_placeholder_is_named_with_the_fix():
    with pytest.raises(ConnectError) as error:
        substitute("${SLUICE_PG_PASSWORD} ${SLUICE_Z:-${SLUICE_Q}}", {}, "f.json")
    message = str(error.value)
    assert "SLUICE_PG_PASSWORD, SLUICE_Q" in message
    assert "--var SLUICE_PG_PASSWORD=<value>" in message


def test_load_connector_renders_overrides_and_name(tmp_path, settings):
    path = write(
        tmp_path,
        {
            "name": "orig",
            "config": {"file": "${SLUICE_PROJECT_ROOT}/x", "topic": "raw.a", "tasks.max": 1},
        },
    )
    connector = load_connector(
        path, settings, overrides={"topic": "raw.b"}, name="other", environ={}
    )
    assert connector.name == "other"
    assert connector.config == {
        "file": f"{settings.project_root}/x",
        "topic": "raw.b",
        "tasks.max": "1",
    }


def test_variables_beat_the_environment(tmp_path, settings):
    path = write(tmp_path, {"name": "n", "config": {"p": "${SLUICE_PG_PORT:-5432}"}})
    env = {"SLUICE_PG_PORT": "6000"}
    assert load_connector(path, settings, environ=env).config["p"] == "6000"
    assert (
        load_connector(path, settings, environ=env, variables={"SLUICE_PG_PORT": "7000"}).config[
            "p"
        ]
        == "7000"
    )


def test_flat_config_shape_is_accepted(tmp_path, settings):
    path = write(tmp_path, {"name": "flat", "connector.class": "X"})
    connector = load_connector(path, settings, environ={})
    assert connector == connector.__class__("flat", {"connector.class": "X"})


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ({"config": {"a": "b"}}, "no connector name"),
        ({"name": "n", "config": {"a": ["x"]}}, "comma-separated"),
        ([1, 2], "must hold a JSON object"),
        ({"name": "n", "config": "x"}, '"config" must be a JSON object'),
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path, settings, document, words):
    with pytest.raises(ConnectError, match=words):
        load_connector(write(tmp_path, document), settings, environ={})


def test_invalid_json_names_the_line(tmp_path, settings):
    path = tmp_path / "bad.json"
    path.write_text('{\n "name": "x",\n}')
    with pytest.raises(ConnectError, match=r"not valid JSON.*line 3"):
        load_connector(path, settings, environ={})


@pytest.mark.parametrize("path", sorted(CONNECTORS.glob("*.json")), ids=lambda p: p.name)
def test_shipped_connector_files_render(path, settings):
    connector = load_connector(
        path, settings, variables={"SLUICE_PG_PASSWORD": "secret"}, environ={}
    )
    assert connector.name == path.stem
    assert "${SLUICE" not in json.dumps(connector.config)
    assert connector.config["errors.tolerance"] == "all"
    assert connector.config["errors.log.enable"] == "true"
    assert connector.config["topic" if "file" in path.stem else "transforms.route.replacement"] == (
        "raw.support_tickets"
    )


def test_shipped_file_connector_reads_the_sample_dataset(settings):
    connector = load_connector(CONNECTORS / "support-tickets-file.json", settings, environ={})
    assert Path(connector.config["file"]) == (
        settings.schemas_dir / "datasets" / "support_tickets" / "sample.jsonl"
    )


def test_postgres_connector_keeps_deletes(settings):
    config = load_connector(
        CONNECTORS / "support-tickets-postgres.json",
        settings,
        variables={"SLUICE_PG_PASSWORD": "x"},
        environ={},
    ).config
    assert config["transforms.unwrap.delete.tombstone.handling.mode"] == "rewrite"
    assert "op" in config["transforms.unwrap.add.fields"].split(",")


# -- the CLI against a fake worker ----------------------------------------------------
def fake_worker(
    routes: dict[tuple[str, str], httpx.Response], requests: list[tuple[str, str]]
) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        requests.append((request.method, request.url.path))
        response = routes.get((request.method, request.url.path))
        return response or httpx.Response(404, json={"error_code": 404, "message": "nope"})

    return httpx.MockTransport(handle)


@pytest.fixture
def audit_trail(monkeypatch) -> Recorded:
    """The commands' audit events, kept in memory (the real trail needs a cluster)."""
    trail = Recorded()
    monkeypatch.setattr(connect_cli, "Auditor", trail)
    return trail


@pytest.fixture
def use_worker(monkeypatch, audit_trail):
    requests: list[tuple[str, str]] = []

    def install(routes):
        transport = fake_worker(routes, requests)
        monkeypatch.setattr(
            ConnectClient,
            "from_settings",
            classmethod(lambda cls, s: cls("http://worker:8083", 5, transport)),
        )
        return requests

    return install


RUNNING = {
    "name": "support-tickets-file",
    "connector": {"state": "RUNNING", "worker_id": "w:8083"},
    "tasks": [{"id": 0, "state": "RUNNING", "worker_id": "w:8083"}],
    "type": "source",
}


def test_apply_shows_the_workers_refusal(use_worker):
    refusal = {
        "error_code": 400,
        "message": "Connector configuration is invalid and contains the following 1 error(s):\n"
        'Missing required configuration "topic" which has no default value.',
    }
    use_worker(
        {("PUT", "/connectors/support-tickets-file/config"): httpx.Response(400, json=refusal)}
    )
    result = CliRunner().invoke(
        main, ["connect", "apply", str(CONNECTORS / "support-tickets-file.json")]
    )
    assert result.exit_code == 1
    assert "refused connector 'support-tickets-file'" in result.output
    assert 'Missing required configuration "topic"' in result.output


def test_apply_reports_created_and_running(use_worker, audit_trail):
    use_worker(
        {
            ("PUT", "/connectors/support-tickets-file/config"): httpx.Response(201, json={}),
            ("GET", "/connectors/support-tickets-file/status"): httpx.Response(200, json=RUNNING),
        }
    )
    result = CliRunner().invoke(
        main, ["connect", "apply", str(CONNECTORS / "support-tickets-file.json")]
    )
    assert result.exit_code == 0, result.output
    assert "support-tickets-file created" in result.output
    assert "RUNNING" in result.output
    [(action, target, outcome, details)] = audit_trail.events
    assert (action, target, outcome) == ("connect.apply", "support-tickets-file", "ok")
    assert details["change"] == "created" and details["state"] == "RUNNING"


def test_apply_that_cannot_be_audited_never_reaches_the_worker(use_worker, audit_trail):
    requests = use_worker({})
    audit_trail.unavailable = True
    result = CliRunner().invoke(
        main, ["connect", "apply", str(CONNECTORS / "support-tickets-file.json")]
    )
    assert result.exit_code == 1
    assert "cannot write to the audit topic" in result.output
    assert requests == [] and audit_trail.events == []


def test_apply_shows_the_trace_of_a_failed_task(use_worker):
    failed = RUNNING | {
        "tasks": [
            {
                "id": 0,
                "state": "FAILED",
                "worker_id": "w",
                "trace": "org.apache.kafka.connect.errors.ConnectException: "
                "Couldn't obtain connection\n\tat x\nCaused by: PSQLException: refused",
            }
        ]
    }
    use_worker(
        {
            ("PUT", "/connectors/support-tickets-file/config"): httpx.Response(200, json={}),
            ("GET", "/connectors/support-tickets-file/status"): httpx.Response(200, json=failed),
        }
    )
    result = CliRunner().invoke(
        main, ["connect", "apply", str(CONNECTORS / "support-tickets-file.json")]
    )
    assert result.exit_code == 1
    assert "updated" in result.output
    assert "Couldn't obtain connection" in result.output
    assert "sluice connect restart support-tickets-file" in result.output


def test_missing_placeholder_is_a_plain_error(use_worker, monkeypatch):
    monkeypatch.delenv("SLUICE_PG_PASSWORD", raising=False)
    use_worker({})
    result = CliRunner().invoke(
        main, ["connect", "apply", str(CONNECTORS / "support-tickets-postgres.json")]
    )
    assert result.exit_code == 1
    assert "SLUICE_PG_PASSWORD" in result.output and "--var" in result.output
    assert "Traceback" not in result.output


def test_bad_set_option_is_refused(use_worker):
    use_worker({})
    result = CliRunner().invoke(
        main,
        ["connect", "apply", str(CONNECTORS / "support-tickets-file.json"), "--set", "novalue"],
    )
    assert result.exit_code == 2
    assert "is not KEY=VALUE" in result.output


def test_delete_of_an_unknown_connector_says_how_to_list(use_worker, audit_trail):
    use_worker({})
    result = CliRunner().invoke(main, ["connect", "delete", "ghost"])
    assert result.exit_code == 1
    assert "no connector named 'ghost'" in result.output
    assert "sluice connect status" in result.output
    [(action, target, outcome, details)] = audit_trail.events
    assert (action, target, outcome) == ("connect.delete", "ghost", "failed")
    assert details["error_class"] == "ConnectError"


def test_status_lists_connectors_and_fails_on_a_failed_one(use_worker):
    broken = RUNNING | {"name": "b", "connector": {"state": "FAILED", "trace": "boom"}}
    use_worker(
        {
            ("GET", "/connectors"): httpx.Response(
                200, json={"a": {"status": RUNNING | {"name": "a"}}, "b": {"status": broken}}
            )
        }
    )
    result = CliRunner().invoke(main, ["connect", "status"])
    assert result.exit_code == 1
    assert "RUNNING" in result.output and "FAILED" in result.output
    assert "b failed" in result.output and "boom" in result.output


def test_no_worker_says_to_start_the_stack():
    client = ConnectClient("http://127.0.0.1:9", 2)
    with pytest.raises(ConnectError, match="sluice up"):
        client.statuses()


def test_the_url_in_messages_has_no_password() -> None:
    assert ConnectClient("http://ops:hunter2@connect:8083/").shown_url == (
        "http://ops:***@connect:8083"
    )
