"""openapi.yaml is a valid OpenAPI 3.1 document, and its schemas reject what they should."""

from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

SPEC, _ = read_from_filename(str(Path(__file__).resolve().parents[1] / "openapi.yaml"))
RESULT = {
    "detectid": 1,
    "cnn_score": 0.9,
    "umap": [0.1, 0.2],
    "svm_score": 1.5,
    "decision": "real",
    "stage": "cnn",
    "flags": [],
}


def schema(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", **SPEC})


def test_document_is_valid_openapi_31():
    validate(SPEC)
    assert SPEC["openapi"].startswith("3.1")


def test_score_response_schema_accepts_a_result_and_rejects_drift():
    assert schema("ScoreResponse").is_valid({**RESULT, "model_version": "1.0.0"})
    assert not schema("ScoreResponse").is_valid(RESULT)  # model_version missing
    assert not schema("ScoreResponse").is_valid({**RESULT, "model_version": "1", "extra": 1})
    assert not schema("ScoreResponse").is_valid({**RESULT, "model_version": "1", "cnn_score": 2})


@pytest.mark.parametrize(
    ("item", "valid"),
    [
        (RESULT, True),
        (
            {
                "detectid": "x",
                "error": {
                    "type": "about:blank",
                    "title": "Invalid input",
                    "status": 422,
                    "detail": "d",
                    "index": 0,
                },
            },
            True,
        ),
        (
            {
                "detectid": "x",
                "error": {"type": "about:blank", "title": "t", "status": 422, "detail": "d"},
            },
            False,
        ),  # item errors carry their index
        ({**RESULT, "decision": "maybe"}, False),
    ],
)
def test_batch_items_are_a_result_or_an_indexed_error(item, valid):
    assert schema("BatchResponse").is_valid({"model_version": "1", "results": [item]}) is valid
