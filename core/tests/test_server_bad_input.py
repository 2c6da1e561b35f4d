"""Bad input to the store server: malformed or invalid bodies get 422 naming what was wrong, and write nothing.

The tests talk to a real server on 127.0.0.1 (the ``served`` fixture), shared by the server tests.
"""

from __future__ import annotations

import pytest
from conftest import make_span
from served_store import API, Served, error_of, started_rollout

import agentlightning as agl

# (path, raw body, words the message must contain): each is answered 422 ValidationError.
BAD_BODIES = [
    ("/rollouts", b"{not json", ["Invalid JSON"]),
    ("/rollouts", b'{"input": 1,}', ["Invalid JSON"]),
    ("/rollouts", b"\xff\xfe{}", ["Invalid JSON"]),
    ("/rollouts", b"", ["input", "Field required"]),
    ("/rollouts", b"[]", ["body", "object"]),
    ("/rollouts", b'"x"', ["body", "object"]),
    ("/rollouts", b'{"mode": "train"}', ["input", "Field required"]),
    ("/rollouts", b'{"input": 1, "config": {"max_attempts": "many"}}', ["config.max_attempts", "integer"]),
    ("/rollouts", b'{"input": 1, "config": {"max_attempts": 0}}', ["config.max_attempts"]),
    ("/rollouts", b'{"input": 1, "config": {"timeout_seconds": -1}}', ["config.timeout_seconds"]),
    ("/rollouts", b'{"input": 1, "config": {"retry_on": ["succeeded"]}}', ["config.retry_on", "succeeded"]),
    ("/rollouts", b'{"input": 1, "mode": "production"}', ["mode", "'train'"]),
    ("/rollouts", b'{"input": 1, "resources_id": "has space"}', ["resources_id"]),
    ("/rollouts", b'{"input": 1, "metadata": []}', ["metadata"]),
    ("/rollouts", b'{"input": 1, "priority": 3}', ["priority", "Extra inputs"]),
    ("/rollouts/batch", b'{"rollouts": [{"input": 1}, {"inptu": 2}]}', ["rollouts.1.input", "rollouts.1.inptu"]),
    ("/rollouts/start", b'{"rollout": {"input": 1}, "worker_id": ""}', ["worker_id"]),
    ("/rollouts/query", b'{"limit": -1}', ["limit"]),
    ("/rollouts/query", b'{"status": ["lost"]}', ["status.0"]),
    ("/rollouts/wait", b'{"rollout_ids": [], "timeout": 1e9}', ["timeout", "300"]),
    ("/rollouts/wait", b'{"rollout_ids": "ro-1"}', ["rollout_ids", "array"]),
    ("/spans", b'{"spans": [{"name": "x"}]}', ["spans.0.rollout_id", "spans.0.trace_id"]),
    ("/resources", b'{"resources": {"llm": {"resource_type": "llm"}}}', ["base_url", "model"]),
    ("/resources", b'{"resources": {"x": 5}}', ["resources.x"]),
]


@pytest.mark.parametrize(("path", "raw", "words"), BAD_BODIES)
async def test_bad_bodies_get_422_naming_what_was_wrong_and_write_nothing(
    served: Served, path: str, raw: bytes, words: list[str]
) -> None:
    before = await served.counts()
    response = await served.http.post(API + path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["type"] == "ValidationError"
    for word in words:
        assert word in error["message"], error["message"]
    assert error["details"] and all({"loc", "msg", "type"} <= set(d) for d in error["details"])
    assert await served.counts() == before


async def test_a_refused_update_changes_nothing(served: Served) -> None:
    got = await started_rollout(served)
    rollout_path = f"{API}/rollouts/{got.rollout_id}"
    attempt_path = f"{rollout_path}/attempts/{got.attempt.attempt_id}"
    bad = await served.http.patch(rollout_path, json={"metadata": {"k": 1}, "config": {"max_attempts": "many"}})
    assert bad.status_code == 422 and "config.max_attempts" in error_of(bad)["message"]

    await served.store.update_attempt(got.rollout_id, got.attempt.attempt_id, status=agl.AttemptStatus.FAILED)
    before = (await served.store.get_rollout_by_id(got.rollout_id), await served.store.query_attempts(got.rollout_id))
    assert before[0].status == agl.RolloutStatus.FAILED
    # Valid changes sent with a forbidden transition are refused as a whole.
    refused = await served.http.patch(rollout_path, json={"metadata": {"k": 1}, "mode": "val", "status": "running"})
    assert refused.status_code == 409 and error_of(refused)["type"] == "InvalidStatusTransition"
    refused = await served.http.patch(
        attempt_path, json={"worker_id": "w2", "metadata": {"k": 1}, "status": "succeeded"}
    )
    assert refused.status_code == 409
    error = error_of(refused)
    assert error["type"] == "InvalidStatusTransition" and "already ended as 'failed'" in error["message"]
    after = (await served.store.get_rollout_by_id(got.rollout_id), await served.store.query_attempts(got.rollout_id))
    assert after == before


async def test_a_span_batch_with_one_bad_span_stores_none_of_it(served: Served) -> None:
    got = await started_rollout(served)
    rid, aid = got.rollout_id, got.attempt.attempt_id
    good = [make_span(rid, aid, f"good{i}").model_dump(mode="json") for i in range(3)]
    spans_before = (await served.counts())[1]

    invalid = {**make_span(rid, aid, "bad").model_dump(mode="json"), "span_id": "not-hex"}
    response = await served.http.post(API + "/spans", json={"spans": [*good, invalid]})
    assert response.status_code == 422
    assert "spans.3.span_id" in error_of(response)["message"]

    wrong_attribute = {**make_span(rid, aid, "bad").model_dump(mode="json"), "attributes": {"mixed": [1, "a"]}}
    response = await served.http.post(API + "/spans", json={"spans": [*good, wrong_attribute]})
    assert response.status_code == 422 and "spans.3.attributes.mixed" in error_of(response)["message"]

    unknown_attempt = make_span(rid, "at-missing", "bad").model_dump(mode="json")
    response = await served.http.post(API + "/spans", json={"spans": [*good, unknown_attempt]})
    assert response.status_code == 404
    error = error_of(response)
    assert error["type"] == "AttemptNotFound" and "at-missing" in error["message"]

    other = await started_rollout(served)
    foreign = make_span(other.rollout_id, other.attempt.attempt_id, "other").model_dump(mode="json")
    mismatched = {**make_span(rid, aid, "bad").model_dump(mode="json"), "rollout_id": other.rollout_id}
    response = await served.http.post(API + "/spans", json={"spans": [foreign, *good, mismatched]})
    assert response.status_code == 404 and error_of(response)["type"] == "AttemptNotFound"

    spans = await served.http.get(f"{API}/rollouts/{rid}/spans")
    assert spans.status_code == 200 and spans.json() == []
    assert (await served.http.get(f"{API}/rollouts/{other.rollout_id}/spans")).json() == []
    assert (await served.counts())[1] == spans_before
    # The attempt was not touched by the refused batches either.
    assert (await served.store.query_attempts(rid))[0].status == agl.AttemptStatus.PREPARING

    # The same good spans on their own are stored, numbered in order.
    response = await served.http.post(API + "/spans", json={"spans": good})
    assert response.status_code == 200 and response.json() == {"sequence_ids": [1, 2, 3]}
    stored = (await served.http.get(f"{API}/rollouts/{rid}/spans")).json()
    assert [span["name"] for span in stored] == ["good0", "good1", "good2"]


# "a/b", "." and ".." could not be fetched by id (clients split or resolve them away), "latest" names the newest
# version in GET /resources/latest, and a rollout's resources_id could not name the others.
@pytest.mark.parametrize("resources_id", ["a/b", ".", "..", "latest", "has space", "ü", ""])
async def test_resources_ids_that_could_not_be_used_are_refused(served: Served, resources_id: str) -> None:
    body = {"resources": {"p": {"resource_type": "prompt_template", "template": "x"}}, "resources_id": resources_id}
    before = await served.counts()
    response = await served.http.post(API + "/resources", json=body)
    assert response.status_code == 422 and "resources_id" in error_of(response)["message"]
    assert await served.counts() == before
