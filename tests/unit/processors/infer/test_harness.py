"""infer run in process through the runner's real batch path.

Requests infer refuses before calling Triton (an unknown model, a request its model
cannot serve) need no server: each gets an error result and a dead letter. The
served path is tested against a real Triton in tests/integration/test_infer_flow.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from processors.infer.processor import PROCESSOR, REQUESTS, RESPONSES
from processors.infer.settings import InferSettings
from streams.runtime.testing import Harness
from streams.settings import Settings


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness[InferSettings, Any]]:
    config = InferSettings(device="cpu")
    with Harness(PROCESSOR, settings=Settings(), config=config) as harness:
        yield harness


def request(request_id: str, model: str, text: str = "hello") -> dict[str, Any]:
    return {
        "request_id": request_id,
        "tenant_id": "acme",
        "model": model,
        "input_text": text,
        "created_at": 1_700_000_000_000,
    }


def test_an_unknown_model_gets_an_error_result_and_a_dead_letter(
    harness: Harness[InferSettings, Any],
) -> None:
    records = [harness.record(REQUESTS, request("r1", "no-such-model"), key="r1")]
    out = harness.run(records)
    assert out.kinds() == ["UnknownModel"]
    letter = out.dead_letters[0]
    assert letter.raw == records[0].raw and letter.topic == "inference.requests.safe.dlq"
    # The model field is the producer's free text: named by the catalog, else "other".
    assert letter.info.details["model"] == "other"
    assert "no-such-model" not in letter.info.message
    [result] = out.values(RESPONSES)
    assert (result["request_id"], result["status"], result["error_code"]) == (
        "r1",
        "error",
        "unknown_model",
    )


def test_settings_reach_the_resources_once(harness: Harness[InferSettings, Any]) -> None:
    assert harness.ctx.resources.device == "cpu"
    assert harness.ctx.config.max_records_per_poll == 512
    assert PROCESSOR.batching is not None
    assert PROCESSOR.batching(harness.ctx.config) == (512, 50)
