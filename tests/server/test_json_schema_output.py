"""json_schema / response_format constrain real generations: every output validates."""
from __future__ import annotations

import json

import jsonschema
import pytest

SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 20},
                                      "age": {"type": "integer", "minimum": 0, "maximum": 120}},
     "required": ["name", "age"], "additionalProperties": False},
    {"type": "array", "items": {"type": "string", "enum": ["red", "green", "blue"]}, "minItems": 2, "maxItems": 4},
    {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"},
                                      "when": {"type": "string", "format": "date"}},
     "required": ["id", "when"]},
    {"type": "object", "properties": {"phone": {"type": "string", "pattern": "^[0-9]{3}-[0-9]{4}$"}},
     "required": ["phone"]},
    {"$defs": {"pt": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                      "required": ["x", "y"]}},
     "type": "object", "properties": {"a": {"$ref": "#/$defs/pt"}, "b": {"$ref": "#/$defs/pt"}},
     "required": ["a", "b"]},
    {"anyOf": [{"type": "null"}, {"type": "number", "minimum": -5, "maximum": 5}]},
    {"type": "string", "minLength": 10, "maxLength": 100},
]


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("-c", "4096", "-np", "2")


@pytest.mark.parametrize("schema", SCHEMAS, ids=[f"schema{i}" for i in range(len(SCHEMAS))])
def test_completion_output_validates(server, schema):
    for seed in (1, 2):
        r = server.post("/completion", json={"prompt": "Here is some JSON data:\n", "json_schema": schema,
                                             "n_predict": 200, "temperature": 0.7, "seed": seed})
        assert r.status_code == 200, r.text
        res = r.json()
        assert res["stopped_limit"] is False, res["content"]
        jsonschema.validate(json.loads(res["content"]), schema, format_checker=jsonschema.FormatChecker())


def test_unsupported_schema_feature_is_400(server):
    r = server.post("/completion", json={"prompt": "x", "json_schema": {"type": "object",
                                                                        "patternProperties": {"^a": {}}}})
    assert r.status_code == 400
    assert "patternProperties" in r.json()["error"]["message"]
    r = server.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}],
                                                  "response_format": {"type": "json_schema",
                                                                      "json_schema": {"schema": {"not": {}}}}})
    assert r.status_code == 400 and "not" in r.json()["error"]["message"]
    r = server.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}],
                                                  "response_format": {"type": "xml"}})
    assert r.status_code == 400 and "response_format" in r.json()["error"]["message"]
