"""openapi.yaml is a valid OpenAPI 3.1 document, and its schemas reject what they should."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

from service import flags, oip

DOCUMENT = Path(__file__).resolve().parents[1] / "openapi.yaml"
SPEC, _ = read_from_filename(str(DOCUMENT))
RESULT = {
    "detectid": 1,
    "cnn_score": 0.9,
    "umap": [0.1, 0.2],
    "svm_score": 1.5,
    "decision": "real",
    "stage": "cnn",
    "novelty": 0.97,
    "flags": ["novel"],
}


def schema(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", **SPEC})


def test_document_is_valid_openapi_31():
    validate(SPEC)
    assert SPEC["openapi"].startswith("3.1")


def keyed(node: object, path: str = "") -> Iterator[tuple[str, str, object]]:
    """Every (path, key, value) of a parsed YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from keyed(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from keyed(value, f"{path}/{index}")


def test_plain_pyyaml_reads_every_bound_as_a_number():
    """YAML 1.1 (PyYAML's safe_load, what most tools use) reads 3.4e38 as a string: a float
    needs a dot and a signed exponent (3.4e+38). The whole document must validate so read."""
    document = yaml.safe_load(DOCUMENT.read_text())
    validate(document)
    bounds = {
        f"{path}/{key}": value
        for path, key, value in keyed(document)
        if key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
    }
    assert "/components/schemas/Pixel/maximum" in bounds
    wrong = {where: value for where, value in bounds.items() if not is_number(value)}
    assert not wrong, f"bounds that are not numbers under PyYAML: {wrong}"
    assert bounds["/components/schemas/Pixel/minimum"] == -3.4e38
    assert bounds["/components/schemas/Pixel/maximum"] == 3.4e38
    assert document == SPEC  # openapi-spec-validator's own reader sees the same document


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def test_score_response_schema_accepts_a_result_and_rejects_drift():
    assert schema("ScoreResponse").is_valid({**RESULT, "model_version": "1.0.0"})
    assert not schema("ScoreResponse").is_valid(RESULT)  # model_version missing
    assert not schema("ScoreResponse").is_valid({**RESULT, "model_version": "1", "extra": 1})
    assert not schema("ScoreResponse").is_valid({**RESULT, "model_version": "1", "cnn_score": 2})


@pytest.mark.parametrize(
    ("change", "valid"),
    [
        ({}, True),
        ({"novelty": 0.0, "flags": []}, True),
        ({"novelty": 1.0, "flags": ["mostly_masked", "novel"]}, True),
        ({"novelty": 1.2}, False),
        ({"novelty": -0.1}, False),
        ({"novelty": "0.5"}, False),
        ({"flags": ["novelty"]}, False),
    ],
)
def test_results_carry_novelty_in_0_1_and_the_novel_flag(change, valid):
    assert schema("ScoreResponse").is_valid({**RESULT, **change, "model_version": "1"}) is valid
    assert (
        schema("BatchResponse").is_valid({"model_version": "1", "results": [{**RESULT, **change}]})
        is valid
    )


def test_novelty_is_required():
    without = {key: value for key, value in RESULT.items() if key != "novelty"}
    assert not schema("ScoreResponse").is_valid({**without, "model_version": "1"})


def test_documented_names_are_the_services():
    """The flags the service can set and the OIP outputs it can send, no more, no fewer."""
    components = SPEC["components"]["schemas"]
    service_flags = {
        flags.MOSTLY_MASKED,
        flags.SKY_RESIDUAL_WINDOW,
        flags.OUTSIDE_TRUSTED_RANGE,
        flags.NOVEL,
    }
    assert set(components["Flag"]["enum"]) == service_flags
    assert components["OipOutputName"]["enum"] == list(oip.OUTPUTS)
    assert "novelty" in components["OipOutputName"]["enum"]
    assert "novelty_threshold" in components["Model"]["required"]


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
