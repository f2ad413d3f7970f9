"""Generated requests from each service's OpenAPI document: nothing may produce a 5xx.

schemathesis builds valid (positive) and schema-breaking (negative) requests for every documented
route; only `_crash`, whose job is to make the replica fail, is left out.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from support.databases import fresh_database
from support.processes import ServiceProcess


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    with fresh_database("sqlite", tmp) as url:
        users = ServiceProcess("users", url, tmp).wait_healthy()
        acts = ServiceProcess("acts", url, tmp, users_url=users.url).wait_healthy()
        yield {"users": users, "acts": acts}
        acts.stop()
        users.stop()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
@pytest.mark.parametrize("service", ["users", "acts"])
def test_no_server_errors_from_generated_requests(services, service, mode):
    base = services[service].url
    schema = schemathesis.openapi.from_url(base + "/openapi.json").exclude(path_regex="_crash")
    failures: list[str] = []
    statuses: set[int] = set()

    @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def exercise(case):
        response = case.call(base_url=base, timeout=30)
        statuses.add(response.status_code)
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path} {case.body!r:.200} -> "
                            f"{response.status_code} {response.text[:200]}")

    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= (3 if service == "users" else 10)
    for operation in operations:
        try:
            given(operation.as_strategy(generation_mode=mode))(exercise)()
        except Unsatisfiable:
            # Nothing in this route's schema can be broken (no body; any string is a valid path name).
            assert mode is GenerationMode.NEGATIVE, operation.label
    assert not failures, "\n".join(failures[:10])
    assert any(400 <= s < 500 for s in statuses), statuses  # invalid input was generated and refused
    assert services[service].healthy()
