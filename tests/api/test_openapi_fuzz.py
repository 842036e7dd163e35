"""schemathesis over the whole OpenAPI document: for every operation, bounded and
derandomized examples (valid and invalid) sent with a valid write key or admin token. The
API never answers a server error, and every status it answers is one the document lists
for that operation."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import status_code_conformance

from momently.api import create_app
from momently.domain.credentials import KeyKind
from momently.services import Services
from momently.settings import Settings

# Operations authenticated by the public write key (the SDKs' and the widget's); every other
# operation gets the admin token.
WRITE_KEY_TAGS = {"ingest", "in-app", "push"}
EXAMPLES = 25  # per operation: about a minute of one core for the whole document


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, str]]]:
    db = Path(tmp_path_factory.mktemp("fuzz")) / "momently.db"
    services = Services.build(Settings(database_url=f"sqlite:///{db}", run_engine=False))
    now = services.clock.now()
    ws = services.workspaces.create("fuzz", name="Fuzz", now=now)
    write = services.workspaces.issue_key(ws.id, KeyKind.WRITE, label="fuzz", now=now)
    admin = services.workspaces.issue_key(ws.id, KeyKind.ADMIN, label="fuzz", now=now)
    services.start()
    try:
        yield (
            create_app(services, manage_services=False),
            {
                "write": "Basic " + base64.b64encode(f"{write.secret}:".encode()).decode(),
                "admin": f"Bearer {admin.secret}",
            },
        )
    finally:
        services.close()


def fuzz(operation: Any, headers: dict[str, str]) -> None:
    """Bounded, derandomized examples of one operation; raises the first failure found."""

    # valid and invalid cases mixed: an operation with nothing to make invalid (no
    # parameters, or only optional strings) still gets its valid ones
    @given(
        case=st.one_of(
            operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE),
        )
    )
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failure is reported
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=[not_a_server_error, status_code_conformance])

    check()


@pytest.mark.timeout(600)  # about a minute alone; a loaded machine takes longer
def test_every_operation_answers_a_documented_status_and_never_a_server_error(
    api: tuple[Any, dict[str, str]],
) -> None:
    app, authorization = api
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: dict[str, str] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        tags = set(operation.tags or ())
        headers = {"Authorization": authorization["write" if tags & WRITE_KEY_TAGS else "admin"]}

        try:
            fuzz(operation, headers)
        except (Exception, FailureGroup) as exc:
            failures[operation.label] = f"{type(exc).__name__}: {exc}"
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())


def test_the_document_lists_our_error_statuses(api: tuple[Any, dict[str, str]]) -> None:
    doc = api[0].openapi()
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert "422" not in responses, (method, path)  # malformed parameters answer 400
            params = {p["name"] for p in operation.get("parameters", [])}
            if "Authorization" in params:
                assert "401" in responses, (method, path)
            if params:
                assert "invalid_request" in responses["400"]["description"], (method, path)
    assert {"code", "message"} <= set(doc["components"]["schemas"]["ErrorBody"]["properties"])
