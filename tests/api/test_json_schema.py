"""Tests for llamacy.api.json_schema: JSON Schema -> GBNF.

Each table case lists instances that must be accepted and rejected; gbnf_matcher (a small
GBNF recognizer) runs the generated grammar on their JSON text, and jsonschema cross-checks
that the "valid" ones really are valid and the "invalid" ones really are not.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gbnf_matcher import Grammar
from llamacy.api.json_schema import (
    JSON_OBJECT_GRAMMAR, any_json_object_grammar, json_schema_to_grammar,
)
from llamacy.errors import InvalidRequestError, UnsupportedSchemaError

DRAFT7 = "http://json-schema.org/draft-07/schema#"


@dataclass
class Case:
    id: str
    schema: Any
    valid: list[Any]
    invalid: list[Any] = field(default_factory=list)


def texts(value: Any) -> list[str]:
    """The JSON texts a model might write for ``value``: default, compact and indented."""
    return [json.dumps(value, ensure_ascii=False),
            json.dumps(value, ensure_ascii=False, separators=(",", ":")),
            json.dumps(value, ensure_ascii=False, indent=2)]


def validator(schema: Any) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema if isinstance(schema, dict) else {})
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


INT, STR = {"type": "integer"}, {"type": "string"}
POINT = {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
         "required": ["x", "y"], "additionalProperties": False}

CASES = [
    Case("any", {}, [0, -1.5e-7, "s", None, True, [], {}, [1, {"a": [None, {"b": "c"}]}]]),
    Case("any-true", True, [{"k": [1, 2]}, "x"]),
    Case("string", {"type": "string"},
         ["", "abc", 'quote " and \\ backslash', "tab\tnew\nline", "é 日本 🙂", "ctl\u0001"],
         [1, None, ["a"]]),
    Case("string-length", {"type": "string", "minLength": 2, "maxLength": 4},
         ["ab", "abcd", 'a"', "日本"], ["a", "abcde", ""]),
    Case("enum", {"enum": ["red", "green", 1, None, [1, 2], {"k": "v"}, 'q"uote']},
         ["red", "green", 1, None, [1, 2], {"k": "v"}, 'q"uote'],
         ["blue", 2, [2, 1], {"k": "w"}, "Red"]),
    Case("enum-typed", {"type": "string", "enum": ["a", "b", 3]}, ["a", "b"], [3, "c"]),
    Case("const", {"const": {"a": [1, "x"], "b": None}}, [{"a": [1, "x"], "b": None}],
         [{"a": [1, "x"]}, {"a": [1, "y"], "b": None}]),
    Case("type-list", {"type": ["string", "null"]}, ["x", None], [1, False]),
    Case("boolean", {"type": "boolean"}, [True, False], [0, "true", None]),
    Case("null", {"type": "null"}, [None], [0, "null", False]),
    Case("integer", {"type": "integer"}, [0, -7, 123456789, -10**17], [1.5, "1", True]),
    Case("integer-bounds", {"type": "integer", "minimum": -15, "maximum": 1234},
         [-15, 0, 9, 10, 1234], [-16, 1235, 5000, -100]),
    Case("integer-exclusive", {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 100},
         [1, 50, 99], [0, 100, -1]),
    Case("integer-draft4", {"$schema": "http://json-schema.org/draft-04/schema#", "type": "integer",
                            "minimum": 5, "exclusiveMinimum": True}, [6, 700], [5, 4, -6]),
    Case("number", {"type": "number"}, [0, -1.5, 3.14e10, 1e-7, 12, -0.0],
         ["1", None, [1]]),
    Case("number-unit", {"type": "number", "minimum": 0, "maximum": 1},
         [0, 1, 0.5, 0.25, 0.999, 1.0, 0.0],
         [-0.5, 1.5, 2, -1]),
    Case("number-mixed", {"type": "number", "exclusiveMinimum": -2.5, "maximum": 3},
         [-2, -1.5, 2.75, 3, 0], [-2.5, -3, 3.5, 3.01, 4]),
    Case("number-low", {"type": "number", "minimum": -1}, [-1, -0.5, 0, 7.25, 1e5], [-1.5, -2]),
    Case("object-required", {"type": "object", "properties": {
        "a": {"type": "string"}, "b": {"type": "integer"}, "c": {"type": "boolean"}},
        "required": ["b"]},
        [{"b": 1}, {"a": "x", "b": 1}, {"b": 1, "c": True}, {"a": "x", "b": 2, "c": False}],
        [{}, {"a": "x"}, {"b": "1"}, {"a": 1, "b": 1}]),
    Case("object-optional", {"type": "object", "properties": {
        "a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": "integer"}}},
        [{}, {"a": 1}, {"b": 1}, {"c": 1}, {"a": 1, "b": 2}, {"a": 1, "c": 3}, {"b": 2, "c": 3},
         {"a": 1, "b": 2, "c": 3}], [{"a": "1"}, {"c": None}]),
    Case("object-closed", {"type": "object", "properties": {"a": {"type": "integer"}},
                           "required": ["a"], "additionalProperties": False},
         [{"a": 1}], [{"a": 1, "b": 2}, {}, {"b": 2}]),
    Case("object-additional-schema", {"type": "object", "properties": {"a": {"type": "integer"}},
                                      "additionalProperties": {"type": "string"}},
         [{}, {"a": 1}, {"x": "y"}, {"a": 1, "x": "y", "ab": "z", "": "e"}],
         [{"x": 1}, {"a": "s"}, {"a": 1, "b": 2}]),
    Case("object-additional-true", {"type": "object", "required": ["id"],
                                    "additionalProperties": True},
         [{"id": 1}, {"id": "x", "other": [1]}], [{}, {"other": 1}]),
    Case("object-any", {"type": "object"}, [{}, {"a": {"b": [1]}}], [[], "x", None]),
    Case("object-odd-keys", {"type": "object", "properties": {
        'we"ird\\key': {"type": "integer"}, "é": {"type": "integer"}, "a b": {"const": 1}},
        "required": ['we"ird\\key']},
        [{'we"ird\\key': 1}, {'we"ird\\key': 1, "é": 2, "a b": 1}], [{"é": 2}, {}]),
    Case("nested", {"type": "object", "properties": {
        "name": {"type": "string"},
        "address": {"type": "object", "properties": {
            "city": STR, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["city"]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
        "required": ["name", "address"]},
        [{"name": "n", "address": {"city": "c"}},
         {"name": "n", "address": {"city": "c", "zip": "12345"}, "tags": ["a", "b", "c"]}],
        [{"name": "n"}, {"name": "n", "address": {"city": "c", "zip": "1234"}},
         {"name": "n", "address": {"city": "c"}, "tags": ["a", "b", "c", "d"]}]),
    Case("array-any", {"type": "array"}, [[], [1, "a", None, [2]]], [{}, "[]"]),
    Case("array-bounds", {"type": "array", "items": INT, "minItems": 2, "maxItems": 4},
         [[1, 2], [1, 2, 3], [1, 2, 3, 4]], [[], [1], [1, 2, 3, 4, 5], [1, "a"]]),
    Case("array-max1", {"type": "array", "items": {"type": "integer"}, "maxItems": 1},
         [[], [7]], [[1, 2]]),
    Case("array-empty", {"type": "array", "maxItems": 0}, [[]], [[1]]),
    Case("prefix-closed", {"type": "array", "prefixItems": [STR, INT],
                           "items": False},
         [[], ["a"], ["a", 1]], [[1], ["a", 1, 2], ["a", "b"]]),
    Case("prefix-tail", {"type": "array", "prefixItems": [{"type": "string"}],
                         "items": {"type": "integer"}, "minItems": 2, "maxItems": 3},
         [["a", 1], ["a", 1, 2]], [["a"], ["a", 1, 2, 3], ["a", "b"], [1, 1]]),
    Case("prefix-open", {"type": "array", "prefixItems": [INT, INT]},
         [[], [1], [1, 2], [1, 2, "x", None]], [["x"], [1, "y"]]),
    Case("items-list-draft7", {"$schema": DRAFT7, "type": "array", "items": [{"type": "integer"}],
                               "additionalItems": {"type": "string"}},
         [[], [1], [1, "a", "b"]], [["a"], [1, 2]]),
    Case("date", {"type": "string", "format": "date"}, ["2024-01-31", "1999-12-01", "2023-02-28"],
         ["2024-13-01", "2024-02-30", "24-01-01", "2024-1-1", 20240101]),
    Case("time", {"type": "string", "format": "time"},
         ["12:34:56Z", "23:59:59.123+02:00", "00:00:00-05:30"],
         ["24:00:00Z", "12:60:00Z", "1:2:3Z"]),
    Case("date-time", {"type": "string", "format": "date-time"},
         ["2024-05-06T07:08:09Z", "2000-10-31T23:59:59.5+01:00"],
         ["2024-05-06 07:08:09Z", "2024-05-06T07:08Z", "2024-05-06"]),
    Case("uuid", {"type": "string", "format": "uuid"},
         ["123e4567-e89b-12d3-a456-426614174000", "00000000-0000-0000-0000-000000000000"],
         ["123e4567e89b12d3a456426614174000", "123e4567-e89b-12d3-a456-42661417400"]),
    Case("email", {"type": "string", "format": "email"}, ["a.b+c@host.example.org", "x@y.z"],
         ["no-at-sign", 1]),
    Case("format-unknown", {"type": "string", "format": "hostname"}, ["example.com"], [1]),
    Case("pattern-basic", {"type": "string", "pattern": "^[a-z]{2,3}-\\d+$"},
         ["ab-1", "xyz-123"], ["a-1", "abcd-1", "ab-", "AB-1"]),
    Case("pattern-alt-group", {"type": "string", "pattern": "^(foo|bar)+baz?$"},
         ["foobarba", "foobaz", "barba"], ["baz", "fooba_", "foo"]),
    Case("pattern-unanchored", {"type": "string", "pattern": "abc"}, ["abc", "xxabcyy"],
         ["ab", "acb"]),
    Case("pattern-escapes", {"type": "string", "pattern": '^a\\.b\\\\c"d\\te$'}, ['a.b\\c"d\te'],
         ["a.b\\cxd\te", "aXb\\c\"d\te"]),
    Case("pattern-dot", {"type": "string", "pattern": "^.{2}$"}, ["ab", 'a"', "\\\\"],
         ["abc", "a", "a\n"]),
    Case("pattern-negated", {"type": "string", "pattern": "^[^a-c]+$"}, ["xyz", 'x"y', "d\\"],
         ["xay", ""]),
    Case("pattern-counts", {"type": "string", "pattern": "^(ab){2,}x{0,2}y{3}$"},
         ["ababyyy", "abababxxyyy"], ["abyyy", "ababxxxyyy", "ababyy"]),
    Case("pattern-classes", {"type": "string", "pattern": "^\\w+@\\w+\\.(com|org)$"},
         ["me@host.com", "a_1@b.org"], ["me@host.net", "m e@host.com"]),
    Case("pattern-unicode", {"type": "string", "pattern": "^[é-ü]+\\u00e9?$"}, ["éü", "ñé"],
         ["e", "ý"]),
    Case("pattern-branch-anchors", {"type": "string", "pattern": "^a|b$"}, ["abc", "xxb", "a"],
         ["xa", "bx"]),
    Case("pattern-optional-group",
         {"type": "string", "pattern": "^(?:\\+1 )?[0-9]{3}(?P<ext>x\\d)?$"},
         ["+1 555", "555", "555x1"], ["+2 555", "55"]),
    Case("pattern-empty", {"type": "string", "pattern": "^$"}, [""], ["a"]),
    Case("ref-defs", {"$defs": {"Pos": POINT}, "type": "array", "items": {"$ref": "#/$defs/Pos"}},
         [[], [{"x": 1, "y": 2}]], [[{"x": 1}], [{"x": 1, "y": 2, "z": 3}]]),
    Case("ref-definitions", {"definitions": {"s": {"type": "string", "maxLength": 2}},
                             "$schema": DRAFT7, "properties": {"a": {"$ref": "#/definitions/s"}},
                             "required": ["a"]}, [{"a": "xy"}], [{"a": "xyz"}, {}]),
    Case("ref-recursive", {"$defs": {"node": {"type": "object", "properties": {
        "v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
        "required": ["v"]}}, "$ref": "#/$defs/node"},
        [{"v": 1}, {"v": 1, "kids": [{"v": 2, "kids": [{"v": 3}]}, {"v": 4}]}],
        [{"v": 1, "kids": [{"w": 2}]}, {"kids": []}]),
    Case("ref-root", {"type": "object",
                      "properties": {"next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}},
                      "required": ["next"]},
         [{"next": None}, {"next": {"next": {"next": None}}}], [{"next": {}}, {}]),
    Case("ref-siblings", {"$defs": {"S": {"type": "string"}}, "$ref": "#/$defs/S", "maxLength": 3},
         ["abc", ""], ["abcd", 1]),
    Case("anyof", {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 2}]},
         [1, "ab"], ["abc", None, 1.5]),
    Case("oneof-tagged", {"oneOf": [
        {"type": "object", "properties": {"kind": {"const": "circle"}, "r": {"type": "number"}},
         "required": ["kind", "r"], "additionalProperties": False},
        {"type": "object", "properties": {"kind": {"const": "rect"}, "w": {"type": "number"}},
         "required": ["kind", "w"], "additionalProperties": False}]},
        [{"kind": "circle", "r": 1.5}, {"kind": "rect", "w": 2}],
        [{"kind": "circle", "w": 1}, {"kind": "square", "r": 1}]),
    Case("anyof-with-base", {"type": "object", "properties": {"a": INT, "b": INT},
                             "anyOf": [{"required": ["a"]}, {"required": ["b"]}]},
         [{"a": 1}, {"b": 2}, {"a": 1, "b": 2}], [{}, {"a": "x"}]),
    Case("allof-objects", {"allOf": [
        {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
        {"properties": {"b": {"type": "integer"}}, "required": ["b"]}]},
        [{"a": "x", "b": 1}], [{"a": "x"}, {"b": 1}, {"a": 1, "b": 1}]),
    Case("allof-ref-inherit", {"$defs": {"Base": {"type": "object", "properties": {"id": INT},
                                                  "required": ["id"]}},
                               "allOf": [{"$ref": "#/$defs/Base"},
                                         {"properties": {"name": {"type": "string"}}}]},
         [{"id": 1}, {"id": 1, "name": "n"}], [{"name": "n"}, {"id": "1"}]),
    Case("allof-bounds",
         {"allOf": [{"type": "integer", "minimum": 0}, {"maximum": 10}, {"minimum": 3}]},
         [3, 10], [2, 11, -1]),
    Case("allof-anyof", {"allOf": [{"anyOf": [{"type": "integer"}, {"type": "string"}]},
                                   {"anyOf": [{"type": "string"}, {"type": "null"}]}]},
         ["x"], [1, None]),
]


def _ids(cases: list[Case]) -> list[str]:
    return [c.id for c in cases]


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_table_valid(case: Case) -> None:
    grammar = Grammar(json_schema_to_grammar(case.schema))
    check = validator(case.schema)
    for value in case.valid:
        assert check.is_valid(value), f"test bug: {value!r} is not valid"
        for text in texts(value):
            assert grammar.matches(text), f"rejected valid {text!r}"


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_table_invalid(case: Case) -> None:
    grammar = Grammar(json_schema_to_grammar(case.schema))
    check = validator(case.schema)
    for value in case.invalid:
        assert not check.is_valid(value), f"test bug: {value!r} is valid"
        for text in texts(value):
            assert not grammar.matches(text), f"accepted invalid {text!r}"


# Valid JSON the grammar rejects on purpose (documented restrictions of the converter).
NARROWER = [
    ({"type": "object", "properties": {"a": {}}}, {"a": 1, "extra": 2}),
    ({"type": "object", "properties": {"a": {}, "b": {}}}, {"b": 1, "a": 2}),
    ({"type": "number", "minimum": 0.5}, 0.7),
    ({"type": "number", "minimum": 0, "maximum": 1}, 1e-5),  # no exponent when bounded
    ({"type": "integer"}, 10 ** 19),
    ({"type": "string", "format": "date"}, "2024-02-29"),
    ({"type": "string", "pattern": "^\\w$"}, "é"),  # \\w is ASCII (ECMA), re's is Unicode
    ({"type": "string", "pattern": "^a$"}, "a\n"),  # re's $ also matches before a final newline
    ({"type": "object", "additionalProperties": INT, "properties": {"a": {}}}, {"x": 1, "a": 1}),
]


@pytest.mark.parametrize("schema,value", NARROWER)
def test_documented_restrictions(schema: dict, value: Any) -> None:
    assert validator(schema).is_valid(value)
    assert not Grammar(json_schema_to_grammar(schema)).matches(json.dumps(value))


NOT_JSON = ["", "{", "[1,]", "{'a': 1}", "NaN", "01", "1.", ".5", "+1", '"\\x"', '"a\nb"', "tru",
            "{} {}", '{"a" 1}', "[1 2]", '"\\u12"', "-", "1e", "[,]", "Infinity"]


def _no_constants(name: str) -> None:
    raise ValueError(name)


@pytest.mark.parametrize("text", NOT_JSON)
def test_any_rejects_non_json(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text, parse_constant=_no_constants)
    assert not Grammar(json_schema_to_grammar({})).matches(text)


def test_no_leading_or_trailing_whitespace() -> None:
    grammar = Grammar(json_schema_to_grammar({}))
    assert grammar.matches("[1]") and not grammar.matches(" [1]") and not grammar.matches("[1] ")


PATTERNS = ["^a*b?$", "^(ab|c)+$", "a.c", "^[^ab]{2}$", "^\\w\\W?$", "^[\\d\\\\\"]+$", "c$",
            "^(a|)(b{1,2}|c)$", "^[a-c]{2,}$", "^.?\\.?$", "^(?:a\\s)?\"$", "^\\S\\D$", "^[^\\w]$",
            "^(a(b(c)?)?)$", "b|^c"]
ALPHABET = ["a", "b", "c", "1", " ", '"', "\\", ".", "\t"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_pattern_agrees_with_re(pattern: str) -> None:
    """Every string of up to 3 characters over ALPHABET: grammar accepts iff re.search matches."""
    grammar = Grammar(json_schema_to_grammar({"type": "string", "pattern": pattern}))
    compiled = re.compile(pattern)
    strings = [""] + ALPHABET
    strings += [x + y for x in ALPHABET for y in ALPHABET]
    strings += [x + y + z for x in ALPHABET[:6] for y in ALPHABET[:6] for z in ALPHABET[:6]]
    for text in strings:
        expected = compiled.search(text) is not None
        assert grammar.matches(json.dumps(text)) == expected, text


def test_ascii_escaped_strings_accepted() -> None:
    grammar = Grammar(json_schema_to_grammar({"type": "array", "items": {"type": "string"}}))
    assert grammar.matches(json.dumps(["é 日本 🙂", "\u0000\u001f\\/"]))  # ensure_ascii
    assert grammar.matches('["\\/\\b\\f\\u00E9"]')


@pytest.mark.parametrize("lo,hi", [(0, 0), (7, 7), (-1, 1), (5, 99), (10, 1000), (-250, -100),
                                   (123, 4567), (None, 42), (-42, None), (99, None), (None, -7),
                                   (-1000, 999), (1, 9), (0, 10)])
def test_integer_ranges_exhaustive(lo: int | None, hi: int | None) -> None:
    schema: dict[str, Any] = {"type": "integer"}
    if lo is not None:
        schema["minimum"] = lo
    if hi is not None:
        schema["maximum"] = hi
    grammar = Grammar(json_schema_to_grammar(schema))
    start = (lo if lo is not None else (hi or 0) - 300) - 120
    stop = (hi if hi is not None else (lo or 0) + 300) + 120
    for n in range(start, stop + 1):
        expected = (lo is None or n >= lo) and (hi is None or n <= hi)
        assert grammar.matches(str(n)) == expected, n
    assert not grammar.matches("-0") and not grammar.matches("007")


@settings(max_examples=60, deadline=None)
@given(st.integers(-10**6, 10**6), st.integers(0, 10**5), st.integers(-10**6, 10**6))
def test_integer_ranges_random(lo: int, width: int, n: int) -> None:
    hi = lo + width
    grammar = Grammar(json_schema_to_grammar({"type": "integer", "minimum": lo, "maximum": hi}))
    for m in (n, lo, hi, lo - 1, hi + 1, (lo + hi) // 2):
        assert grammar.matches(str(m)) == (lo <= m <= hi), m


# DEL (\x7f) is a control character the grammar never emits raw (JSON would allow it); no lone
# surrogates: they are not text a model can write (nor encodable as UTF-8).
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x7f"), max_size=8)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**15, 10**15) | TEXT
    | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: abs(f) < 1e300),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=10)


@settings(max_examples=80, deadline=None)
@given(JSON_VALUES)
def test_any_value_accepts_random_json(value: Any) -> None:
    grammar = Grammar(json_schema_to_grammar({}))
    for text in texts(value) + [json.dumps(value)]:
        assert grammar.matches(text), text


# ---- structure of the output ----

def rules_of(gbnf: str) -> dict[str, str]:
    return dict(line.split(" ::= ", 1) for line in gbnf.splitlines() if line)


def test_structure_root_and_names() -> None:
    schema = CASES[_ids(CASES).index("nested")].schema
    gbnf = json_schema_to_grammar(schema)
    rules = rules_of(gbnf)
    assert gbnf.startswith("root ::= ")
    assert all(re.fullmatch(r"[A-Za-z0-9-]+", name) for name in rules)
    assert {"address", "address-zip", "tags"} <= set(rules)  # named after property paths
    assert sum(1 for line in gbnf.splitlines() if line.startswith("string ::=")) == 1
    Grammar(gbnf)  # every referenced rule is defined


def test_structure_enum_literals() -> None:
    rules = rules_of(json_schema_to_grammar({"enum": ["red", 'q"', 3, None, True]}))
    assert rules["root"] == '"\\"red\\"" | "\\"q\\\\\\"\\"" | "3" | "null" | "true"'


def test_structure_compact_shared_rules() -> None:
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(10)},
              "required": [f"p{i}" for i in range(10)]}
    gbnf = json_schema_to_grammar(schema)
    assert len(gbnf.splitlines()) == 5  # root, ws, string, char, esc
    same = {"type": "object", "properties": {"a": {"enum": ["x", "y"]}, "b": {"enum": ["x", "y"]}}}
    assert "b ::=" not in json_schema_to_grammar(same)  # identical bodies are shared


def test_structure_property_names_sanitized() -> None:
    gbnf = json_schema_to_grammar({"properties": {
        "a b/c": {"enum": [1, 2]}, "root": {"enum": [3, 4]}, "string": {"enum": [5, 6]}}})
    rules = rules_of(gbnf)
    assert {"a-b-c", "root-2", "string-2"} <= set(rules)


def test_whitespace_is_bounded() -> None:
    grammar = Grammar(json_schema_to_grammar({"type": "array"}))
    assert grammar.matches("[ ]") and grammar.matches("[\n  1,\n  2\n]")
    assert not grammar.matches("[" + " " * 2 + "]")
    assert not grammar.matches("[\n" + " " * 13 + "]")
    assert not grammar.matches("[\n\n]")


def test_strings_exclude_raw_control_and_quotes() -> None:
    grammar = Grammar(json_schema_to_grammar({"type": "string", "maxLength": 5}))
    for bad in ['"a"b"', '"a\\"', '"\x00"', '"\x1f"', '"a\tb"', '"\\q"']:
        assert not grammar.matches(bad), bad


def test_json_object_grammar() -> None:
    assert JSON_OBJECT_GRAMMAR == any_json_object_grammar()
    grammar = Grammar(JSON_OBJECT_GRAMMAR)
    assert grammar.matches('{"a": [1, {"b": null}], "c": "d"}') and grammar.matches("{}")
    for text in ["[]", "1", '"x"', "null", "{"]:
        assert not grammar.matches(text)


def test_large_counts() -> None:
    rules = rules_of(json_schema_to_grammar({"type": "string", "maxLength": 5000}))
    assert "char{0,2000}" in rules["root"]  # capped at libllama's repetition limit
    with pytest.raises(UnsupportedSchemaError, match="repetition count 3000"):
        json_schema_to_grammar({"type": "string", "minLength": 3000})


# ---- unsupported and invalid schemas ----

UNSUPPORTED = [
    ({"type": "object", "patternProperties": {"^a": {}}}, "'patternProperties'"),
    ({"propertyNames": {"maxLength": 3}}, "'propertyNames'"),
    ({"if": {"type": "string"}, "then": {"maxLength": 2}}, "'if'"),
    ({"not": {"type": "string"}}, "'not'"),
    ({"type": "array", "contains": {"type": "integer"}}, "'contains'"),
    ({"type": "integer", "multipleOf": 3}, "'multipleOf'"),
    ({"type": "array", "uniqueItems": True}, "'uniqueItems'"),
    ({"type": "object", "minProperties": 1}, "'minProperties'"),
    ({"dependentRequired": {"a": ["b"]}}, "'dependentRequired'"),
    ({"unevaluatedProperties": False}, "'unevaluatedProperties'"),
    ({"items": {"$dynamicRef": "#meta"}}, "'\\$dynamicRef'"),
    ({"type": "string", "pattern": "^(a)\\1$"}, "backreference"),
    ({"type": "string", "pattern": "^(?<n>a)\\k<n>$"}, "backreference"),
    ({"type": "string", "pattern": "^(?=a)a$"}, "lookaround"),
    ({"type": "string", "pattern": "^(?!a).$"}, "lookaround"),
    ({"type": "string", "pattern": "(?<=a)b"}, "lookaround"),
    ({"type": "string", "pattern": "\\bword"}, "word boundary"),
    ({"type": "string", "pattern": "^\\p{L}$"}, "escape '\\\\p'"),
    ({"type": "string", "pattern": "a^b"}, "'\\^' not at the start"),
    ({"type": "string", "pattern": "(a$)"}, "'\\$' not at the end"),
    ({"type": "string", "pattern": "^a*+$"}, "possessive"),
    ({"type": "string", "pattern": "^a{,3}$"}, "quantifier '\\{,n\\}'"),
    ({"type": "string", "pattern": "^[a-z]+$", "maxLength": 4}, "'pattern' combined"),
    ({"$ref": "http://example.com/s.json"}, "non-local \\$ref"),
    ({"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}, {"type": "null"}]}}, "$ref": "#/$defs/a"},
     "left-recursive"),
    (False, "'false'"),
]


@pytest.mark.parametrize("schema,feature", UNSUPPORTED)
def test_unsupported_features_named(schema: Any, feature: str) -> None:
    expected = "unsupported JSON Schema feature: .*" + feature
    with pytest.raises(UnsupportedSchemaError, match=expected):
        json_schema_to_grammar(schema)


INVALID = [
    ({"type": "strin"}, "unknown type"),
    ({"type": 5}, "'type' must be"),
    ({"properties": []}, "'properties' must be dict"),
    ({"required": "a"}, "'required' must be list"),
    ({"required": [1]}, "'required' must list strings"),
    ({"type": "string", "minLength": -1}, "'minLength' must be non-negative"),
    ({"type": "string", "maxLength": "3"}, "'maxLength' must be int"),
    ({"enum": []}, "'enum' must not be empty"),
    ({"anyOf": {}}, "'anyOf' must be list"),
    ({"items": 3}, "'items' must be"),
    ({"minimum": True}, "'minimum' must be"),
    ({"type": "string", "pattern": 5}, "'pattern' must be str"),
    ({"type": "array", "minItems": 3, "maxItems": 2}, "minItems"),
    ({"type": "integer", "minimum": 5, "maximum": 4}, "empty integer range"),
    ({"$ref": "#/$defs/missing"}, "unresolvable \\$ref '#/\\$defs/missing'"),
    ({"type": "object", "properties": {"a": {"$ref": "#/definitions/x"}}}, "unresolvable"),
    ({"allOf": [{"type": "string"}, {"type": "integer"}]}, "conflicting 'type'"),
    ({"type": "string", "pattern": "^(a"}, "missing '\\)'"),
    ({"allOf": [{"properties": {"a": {}}, "required": ["a"]}, {"additionalProperties": False}]},
     "allOf forbids required property 'a'"),
    ({"type": "string", "pattern": "^*a$"}, "nothing to repeat"),
    ({"type": "string", "pattern": "[z-a]"}, "reversed range"),
    ("string", "must be an object or a boolean"),
]


@pytest.mark.parametrize("schema,message", INVALID)
def test_invalid_schemas(schema: Any, message: str) -> None:
    with pytest.raises(UnsupportedSchemaError, match=message) as info:
        json_schema_to_grammar(schema)
    assert isinstance(info.value, InvalidRequestError) and info.value.status == 400
