"""JSON Schema -> GBNF (llama.cpp grammar) for ``json_schema`` and ``response_format``.

Every text the grammar accepts is JSON valid against the schema; the grammar may be narrower
(see Restrictions). Unsupported features and invalid schemas raise ``UnsupportedSchemaError``.

Supported: ``type`` (string or list), ``properties``, ``required``, ``additionalProperties``,
``enum``, ``const``, ``items`` (schema, or draft-7 list + ``additionalItems``), ``prefixItems``,
``minItems``/``maxItems``, ``minLength``/``maxLength``, ``format`` (date, time, date-time, uuid,
email), ``pattern``, local ``$ref`` (``#``, ``#/$defs/..``, ``#/definitions/..``; recursion is
fine unless left-recursive), ``anyOf``/``oneOf`` (alternation), ``allOf`` (merged), numeric
``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum`` (draft-4 booleans too).
Annotations (``title``, ``description``, ``default``...) are ignored.

Patterns (ECMA subset): literals, escapes (``\\d \\w \\s``, negations, ``\\xHH \\uHHHH``...),
classes with ranges and ``^``, ``.``, groups (``(?:``, named), ``|``, ``* + ? {n} {n,} {n,m}``
(lazy ``?`` ignored); ``^``/``$`` only at the ends of top-level branches. Backreferences,
lookaround, word boundaries and ``\\p{..}`` are rejected.

Restrictions: properties come in declared order, extra ones (if allowed) last and never with
a declared name; with ``properties`` present, absent ``additionalProperties`` means none (as in
llama.cpp); whitespace between tokens is bounded (``ws``); at most 18 integer digits, 20
fraction digits, 3 exponent digits; counts capped at 2000; bounded numbers have no exponent
and a fraction ``I.f`` only when all of (I, I+1) is in bounds; integer bounds are exact;
pattern strings never hold control characters other than \\b\\f\\n\\r\\t; ``enum``/``const``
values are written as ``json.dumps(ensure_ascii=False)``; ``oneOf`` is not exclusive; other
formats are plain strings; dates skip Feb 29 and years before 1000.
"""
from __future__ import annotations

import json
import math
import re
from contextlib import contextmanager
from typing import Any, Iterator

from llamacy.api.limits import DEFAULT_LIMITS, check_json_depth
from llamacy.errors import InvalidRequestError, UnsupportedSchemaError

__all__ = ["json_schema_to_grammar", "compose_grammar", "any_json_object_grammar", "JSON_OBJECT_GRAMMAR"]

REPEAT_LIMIT = 2000  # libllama refuses larger repetition counts
MAX_INT_DIGITS = 18

_PRIMITIVES: dict[str, tuple[str, tuple[str, ...]]] = {
    "ws": (r'( [ \t] | "\n" [ \t]{0,12} )?', ()),
    "esc": (r'["\\/bfnrt] | "u" [0-9a-fA-F]{4}', ()),
    "char": (r'[^"\\\x00-\x1F\x7F] | "\\" esc', ("esc",)),
    "string": (r'"\"" char* "\""', ("char",)),
    "int-part": (r'"0" | [1-9] [0-9]{0,17}', ()),
    "integer": (r'"-"? int-part', ("int-part",)),
    "number": (r'"-"? int-part ( "." [0-9]{1,20} )? ( [eE] [-+]? [0-9]{1,3} )?', ("int-part",)),
    "frac": (r'"." [0-9]{0,19} [1-9] "0"{0,19}', ()),
    "boolean": (r'"true" | "false"', ()),
    "null": (r'"null"', ()),
    "value": (r"object | array | string | number | boolean | null",
              ("object", "array", "string", "number", "boolean", "null")),
    "object": (r'"{" ws ( string ws ":" ws value ws ( "," ws string ws ":" ws value ws )* )? "}"',
               ("ws", "string", "value")),
    "array": (r'"[" ws ( value ws ( "," ws value ws )* )? "]"', ("ws", "value")),
    "date": (r'[1-9] [0-9]{3} "-" ( ( "0" [13578] | "1" [02] ) "-"'
             r' ( "0" [1-9] | [12] [0-9] | "3" [01] )'
             r' | ( "0" [469] | "11" ) "-" ( "0" [1-9] | [12] [0-9] | "30" )'
             r' | "02-" ( "0" [1-9] | "1" [0-9] | "2" [0-8] ) )', ()),
    "time": (r'( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,6} )?'
             r' ( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )', ()),
    "date-time": (r'date "T" time', ("date", "time")),
    "uuid": (r'[0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" '
             r'[0-9a-fA-F]{12}', ()),
    "email": (r'[A-Za-z0-9._%+-]{1,64} "@" [A-Za-z0-9-]{1,63} ( "." [A-Za-z0-9-]{1,63} ){1,4}', ()),
}
_FORMATS = ("date", "time", "date-time", "uuid", "email")
_TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")

_UNSUPPORTED = (
    "patternProperties", "propertyNames", "dependentRequired", "dependentSchemas", "dependencies",
    "if", "then", "else", "not", "contains", "minContains", "maxContains", "multipleOf",
    "minProperties", "maxProperties", "unevaluatedProperties", "unevaluatedItems",
    "$dynamicRef", "$recursiveRef",
)
# keyword -> accepted Python types (bool is excluded from int/float separately)
_KEYWORD_TYPES: dict[str, tuple[type, ...]] = {
    "type": (str, list), "properties": (dict,), "required": (list,), "enum": (list,),
    "additionalProperties": (bool, dict), "items": (bool, dict, list), "prefixItems": (list,),
    "additionalItems": (bool, dict), "minItems": (int,), "maxItems": (int,),
    "minLength": (int,), "maxLength": (int,), "pattern": (str,), "format": (str,),
    "$ref": (str,), "anyOf": (list,), "oneOf": (list,), "allOf": (list,),
    "minimum": (int, float), "maximum": (int, float), "exclusiveMinimum": (int, float, bool),
    "exclusiveMaximum": (int, float, bool), "uniqueItems": (bool,),
    "$defs": (dict,), "definitions": (dict,),
}
_STRUCTURAL = {"$defs", "definitions", "$schema", "$id", "$anchor", "$comment", "title",
               "description", "default", "examples", "deprecated", "readOnly", "writeOnly",
               "nullable", "discriminator", "contentMediaType", "contentEncoding"}
_OBJECT_KEYS = {"properties", "required", "additionalProperties"}
_ARRAY_KEYS = {"items", "prefixItems", "additionalItems", "minItems", "maxItems"}
_STRING_KEYS = {"minLength", "maxLength", "pattern", "format"}
_NUMBER_KEYS = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}

_TOKEN_RE = re.compile(r'[A-Za-z0-9-]+|"(?:[^"\\]|\\.)*"|\[(?:[^\]\\]|\\.)*\]')
# code points never emitted raw inside a JSON string (control, quote, backslash, DEL, surrogates)
_UNSAFE = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C), (0x7F, 0x7F), (0xD800, 0xDFFF)]
_SHORT_ESCAPES = {0x22: '\\"', 0x5C: "\\\\", 0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n",
                  0x0D: "\\r", 0x09: "\\t"}
# Shorthand classes as the intersection of ECMA and Python ``re`` meanings (jsonschema uses
# ``re``); their negations, and negated classes holding one, stay within ASCII.
_DIGIT = [(0x30, 0x39)]
_WORD = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
_SPACE = [(0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
          (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000)]
_ASCII = [(0x00, 0x7F)]
_LINE_END = [(0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)]


def _unsupported(feature: str) -> UnsupportedSchemaError:
    return UnsupportedSchemaError(f"unsupported JSON Schema feature: {feature}")


def _invalid(message: str) -> UnsupportedSchemaError:
    return UnsupportedSchemaError(f"invalid JSON Schema: {message}")


class _Unsatisfiable(UnsupportedSchemaError):
    """No instance can match; an ``anyOf`` branch like that is dropped."""


def _unsat(message: str) -> UnsupportedSchemaError:
    return _Unsatisfiable(f"invalid JSON Schema: {message}")


def _lit(text: str) -> str:
    """A GBNF string literal for ``text``."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _is_token(expr: str) -> bool:
    return _TOKEN_RE.fullmatch(expr) is not None


def _paren(expr: str) -> str:
    return expr if _is_token(expr) else f"( {expr} )"


def _sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-") or "x"


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# ---- character sets (lists of inclusive code point ranges) ----

def _norm(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, start = [], 0
    for lo, hi in _norm(ranges):
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= 0x10FFFF:
        out.append((start, 0x10FFFF))
    return out


def _subtract(ranges: list[tuple[int, int]], minus: list[tuple[int, int]]) -> list[tuple[int, int]]:
    keep = _complement(minus)
    return _norm([(max(a, c), min(b, d)) for a, b in ranges for c, d in keep
                  if max(a, c) <= min(b, d)])


def _class_char(cp: int) -> str:
    if 0x20 <= cp <= 0x7E and chr(cp) not in '\\]-[^"':
        return chr(cp)
    if cp < 0x100:
        return f"\\x{cp:02X}"
    return f"\\u{cp:04X}" if cp < 0x10000 else f"\\U{cp:08X}"


class _Converter:
    """Builds the rule set for one schema; ``rules`` keeps definition order."""

    def __init__(self, root: Any, root_name: str = "root") -> None:
        self.root = root
        self.root_name = root_name
        # every rule but the primitives starts with ``root_name``, so converters of several
        # schemas with distinct root names can share one grammar (see ``compose_grammar``)
        self.prefix = "" if root_name == "root" else root_name + "-"
        self.rules: dict[str, str | None] = {root_name: None}
        self._bodies: dict[str, str] = {}
        self._refs: dict[str, str] = {"#": root_name}
        self._pending: list[str] = ["#"]  # refs expanded since the last consumed token

    # ---- rule bookkeeping ----
    def fresh(self, hint: str) -> str:
        if not hint.startswith(self.root_name):
            hint = self.prefix + hint
        base = _sanitize(hint)
        name, i = base, 1
        while name in self.rules or name in _PRIMITIVES:
            i += 1
            name = f"{base}-{i}"
        return name

    def add_rule(self, hint: str, body: str) -> str:
        if body in self._bodies:
            return self._bodies[body]
        name = self.fresh(hint)
        self.rules[name] = body
        self._bodies[body] = name
        return name

    def token(self, expr: str, hint: str) -> str:
        return expr if _is_token(expr) else self.add_rule(hint, expr)

    def prim(self, name: str) -> str:
        if name not in self.rules:
            body, deps = _PRIMITIVES[name]
            self.rules[name] = body
            for dep in deps:
                self.prim(dep)
        return name

    def repeat(self, expr: str, lo: int, hi: int | None, hint: str) -> str:
        """``expr`` repeated lo..hi times (hi None: unbounded); ``expr`` must be atomic."""
        if lo > REPEAT_LIMIT:
            raise _unsupported(f"repetition count {lo} (above {REPEAT_LIMIT})")
        if hi is not None:
            if hi < lo:
                raise _invalid(f"minimum count {lo} above maximum {hi}")
            hi = min(hi, REPEAT_LIMIT)
        if (lo, hi) == (1, 1):
            return expr
        suffix = {(0, 1): "?", (0, None): "*", (1, None): "+"}.get((lo, hi))
        if suffix:
            return expr + suffix
        if not _is_token(expr):  # keep libllama's per-repetition rule budget small
            expr = self.add_rule(hint, expr[2:-2] if expr.startswith("( ") else expr)
        if lo == hi:
            return f"{expr}{{{lo}}}"
        return f"{expr}{{{lo},{'' if hi is None else hi}}}"

    @contextmanager
    def nested(self) -> Iterator[None]:
        """Children of a container start after a consumed token: recursion is fine there."""
        saved, self._pending = self._pending, []
        try:
            yield
        finally:
            self._pending = saved

    def child(self, name: str, key: str) -> str:
        return key if name == "root" else f"{name}-{key}"

    # ---- entry points ----
    def convert(self) -> str:
        self.rules[self.root_name] = self.expr(self.root, self.root_name)
        lines = [f"{name} ::= {body}" for name, body in self.rules.items()]
        return "\n".join(lines) + "\n"

    def visit(self, schema: Any, name: str) -> str:
        return self.token(self.expr(schema, name), name)

    def expr(self, schema: Any, name: str) -> str:
        """A GBNF rule body for ``schema`` (may hold a top-level alternation)."""
        if schema is True or schema == {}:
            return self.prim("value")
        if schema is False:
            raise _unsupported("schema 'false' (matches nothing)")
        if not isinstance(schema, dict):
            raise _invalid(f"a schema must be an object or a boolean, got {schema!r}")
        self.check(schema)
        schema = self.normalize(schema)
        rest = {k: v for k, v in schema.items() if k not in _STRUCTURAL}
        if "$ref" in rest:
            if len(rest) > 1:  # siblings of $ref apply too
                return self.expr({"allOf": [{"$ref": rest.pop("$ref")}, rest]}, name)
            return self.ref(rest["$ref"])
        if "allOf" in rest:
            parts = rest.pop("allOf") + ([rest] if rest else [])
            return self.expr(self.merge(parts), name)
        if "anyOf" in rest or "oneOf" in rest:
            if "anyOf" in rest and "oneOf" in rest:
                return self.expr(self.merge([{"anyOf": rest.pop("anyOf")}, rest]), name)
            branches = rest.pop("anyOf", None) or rest.pop("oneOf")
            if rest:
                branches = [self.merge([rest, b]) for b in branches]
            alts, error = [], None
            for i, branch in enumerate(branches):
                try:
                    alts.append(self.visit(branch, f"{name}-{i}"))
                except _Unsatisfiable as exc:
                    error = exc
            if not alts:
                raise error or _unsat("no satisfiable branch")
            return " | ".join(dict.fromkeys(alts))
        types = self.types(rest)
        if "const" in rest or "enum" in rest:
            values = [rest["const"]] if "const" in rest else rest["enum"]
            values = [v for v in values if types is None or any(_has_type(v, t) for t in types)]
            if not values:
                raise _unsat("no enum/const value matches the schema's type")
            return " | ".join(self.const(v) for v in values)
        if types is None:
            return self.prim("value")
        if len(types) > 1:
            return " | ".join(self.visit({**rest, "type": t}, f"{name}-{t}") for t in types)
        if types[0] in ("null", "boolean"):
            return self.prim(types[0])
        return getattr(self, "type_" + types[0])(rest, name)

    def check(self, schema: dict) -> None:
        for key in _UNSUPPORTED:
            if key in schema:
                raise _unsupported(repr(key))
        if schema.get("uniqueItems") is True:
            raise _unsupported("'uniqueItems'")
        for key, kinds in _KEYWORD_TYPES.items():
            if key not in schema:
                continue
            value: Any = schema[key]
            well_typed = isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))
            if not well_typed:
                raise _invalid(f"'{key}' must be {' or '.join(k.__name__ for k in kinds)}")
            if key in ("minItems", "maxItems", "minLength", "maxLength") and value < 0:
                raise _invalid(f"'{key}' must be non-negative")
        t = schema.get("type")
        for item in t if isinstance(t, list) else [t] if t is not None else []:
            if item not in _TYPES:
                raise _invalid(f"unknown type {item!r}")
        if "required" in schema and not all(isinstance(k, str) for k in schema["required"]):
            raise _invalid("'required' must list strings")
        for key in ("anyOf", "oneOf", "allOf", "enum"):
            if key in schema and not schema[key]:
                raise _invalid(f"'{key}' must not be empty")

    def normalize(self, schema: dict) -> dict:
        """Draft-4 boolean exclusive bounds become draft-6 numbers."""
        out = dict(schema)
        for excl, incl in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if isinstance(out.get(excl), bool):
                if out.pop(excl) and incl in out:
                    out[excl] = out.pop(incl)
        return out

    def types(self, schema: dict) -> list[str] | None:
        t = schema.get("type")
        if t is not None:
            return [t] if isinstance(t, str) else list(dict.fromkeys(t))
        keys = set(schema)
        for kind, group in (("object", _OBJECT_KEYS), ("array", _ARRAY_KEYS),
                            ("string", _STRING_KEYS), ("number", _NUMBER_KEYS)):
            if keys & group:
                return [kind]
        return None

    # ---- $ref / allOf ----
    def resolve(self, ref: str) -> Any:
        if ref == "#":
            return self.root
        if not ref.startswith("#/"):
            raise _unsupported(f"non-local $ref '{ref}'")
        node: Any = self.root
        for part in ref[2:].split("/"):
            part = re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m[1], 16)), part)
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise _invalid(f"unresolvable $ref '{ref}'")
        return node

    def ref(self, ref: str) -> str:
        if ref in self._refs:
            if ref in self._pending:
                raise _unsupported(f"left-recursive $ref '{ref}'")
            return self._refs[ref]
        target = self.resolve(ref)
        name = self.fresh(ref.rsplit("/", 1)[-1])
        self._refs[ref] = name
        self.rules[name] = None
        self._pending.append(ref)
        try:
            self.rules[name] = self.expr(target, name)
        finally:
            self._pending.pop()
        return name

    def deref(self, schema: Any) -> list[dict]:
        """``schema`` as a flat list of dicts for allOf merging (refs inlined one level)."""
        for _ in range(64):
            if schema is True:
                return []
            if schema is False:
                raise _unsupported("schema 'false' in allOf (matches nothing)")
            if not isinstance(schema, dict):
                raise _invalid(f"a schema must be an object or a boolean, got {schema!r}")
            self.check(schema)
            schema = {k: v for k, v in self.normalize(schema).items() if k not in _STRUCTURAL}
            if "allOf" in schema:
                rest = {k: v for k, v in schema.items() if k != "allOf"}
                return [d for s in schema["allOf"] + [rest] for d in self.deref(s)]
            if "$ref" not in schema:
                return [schema] if schema else []
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            if rest:
                return self.deref({"$ref": schema["$ref"]}) + self.deref(rest)
            schema = self.resolve(schema["$ref"])
        raise _unsupported("$ref cycle inside allOf")

    def merge(self, schemas: list[Any]) -> dict:
        """One schema equivalent to ``allOf: schemas`` (object keywords merged per property)."""
        parts = [d for s in schemas for d in self.deref(s)]
        out: dict[str, Any] = {}
        choices: list[list[Any]] = [p[k] for p in parts for k in ("anyOf", "oneOf") if k in p]
        for key in dict.fromkeys(k for p in parts for k in p):
            vals = [p[key] for p in parts if key in p]
            if key in ("anyOf", "oneOf", "properties", "additionalProperties", "const", "enum"):
                continue
            if key == "type":
                sets = [{v} if isinstance(v, str) else set(v) for v in vals]
                for s in sets:
                    s |= {"integer"} if "number" in s else set()
                common = set.intersection(*sets)
                if not common:
                    raise _unsat("allOf with conflicting 'type'")
                out["type"] = [t for t in _TYPES if t in common and
                               not (t == "integer" and "number" in common)]
            elif key == "required":
                out[key] = list(dict.fromkeys(k for v in vals for k in v))
            elif key in ("minLength", "minItems", "minimum", "exclusiveMinimum"):
                out[key] = max(vals)
            elif key in ("maxLength", "maxItems", "maximum", "exclusiveMaximum"):
                out[key] = min(vals)
            elif key == "items" and all(isinstance(v, dict) for v in vals):
                out[key] = vals[0] if len(vals) == 1 else {"allOf": vals}
            elif all(v == vals[0] for v in vals):
                out[key] = vals[0]
            else:
                raise _unsupported(f"allOf with conflicting '{key}'")
        enums = [[p["const"]] if "const" in p else p["enum"] for p in parts
                 if "const" in p or "enum" in p]
        if enums:
            out["enum"] = [v for v in enums[0] if all(_in_enum(v, e) for e in enums[1:])]
            if not out["enum"]:
                raise _unsat("allOf with disjoint 'enum'/'const'")
        self.merge_objects(parts, out)
        if choices:
            combos: list[list[Any]] = [[]]
            for options in choices:
                combos = [c + [o] for c in combos for o in options]
                if len(combos) > 256:
                    raise _unsupported("allOf of anyOf/oneOf with too many combinations")
            out = {"anyOf": [{"allOf": [dict(out)] + c} for c in combos]}
        return out

    def merge_objects(self, parts: list[dict], out: dict) -> None:
        names = list(dict.fromkeys(k for p in parts for k in p.get("properties", {})))
        props: dict[str, Any] = {}
        for key in names:
            subs: list[Any] = []
            for p in parts:
                if key in p.get("properties", {}):
                    subs.append(p["properties"][key])
                elif "additionalProperties" in p:
                    subs.append(p["additionalProperties"])
            if False in subs:
                if key in out.get("required", []):
                    raise _unsat(f"allOf forbids required property '{key}'")
                continue
            subs = [s for s in subs if s is not True]
            props[key] = subs[0] if len(subs) == 1 else {"allOf": subs} if subs else {}
        if any("properties" in p for p in parts):
            out["properties"] = props
        extras = [p["additionalProperties"] for p in parts if "additionalProperties" in p]
        if False in extras:
            out["additionalProperties"] = False
        elif any(isinstance(e, dict) for e in extras):
            dicts = [e for e in extras if isinstance(e, dict)]
            out["additionalProperties"] = dicts[0] if len(dicts) == 1 else {"allOf": dicts}
        elif extras:
            out["additionalProperties"] = True

    # ---- literals ----
    def const(self, value: Any) -> str:
        """A GBNF sequence matching exactly ``value`` (whitespace allowed inside containers)."""
        if isinstance(value, (dict, list)):
            self.prim("ws")
        if isinstance(value, dict):
            if not value:
                return '"{" ws "}"'
            items = [f'{_lit(_json_text(k))} ws ":" ws {self.const(v)} ws'
                     for k, v in value.items()]
            return '"{" ws ' + ' "," ws '.join(items) + ' "}"'
        if isinstance(value, list):
            if not value:
                return '"[" ws "]"'
            return '"[" ws ' + ' "," ws '.join(f"{self.const(v)} ws" for v in value) + ' "]"'
        return _lit(_json_text(value))

    # ---- types ----
    def type_string(self, schema: dict, name: str) -> str:
        lo, hi = schema.get("minLength", 0), schema.get("maxLength")
        has_len = "minLength" in schema or "maxLength" in schema
        fmt = schema.get("format")
        if "pattern" in schema:
            if has_len:
                raise _unsupported("'pattern' combined with 'minLength'/'maxLength'")
            body = _Pattern(self, schema["pattern"], f"{name}-pattern").convert()
        elif fmt in _FORMATS:
            if has_len:
                raise _unsupported(f"format '{fmt}' combined with 'minLength'/'maxLength'")
            body = self.prim(fmt)
        elif not has_len:
            return self.prim("string")
        else:
            body = self.repeat(self.prim("char"), lo, hi, f"{name}-char")
        return f'"\\"" {body} "\\""'

    def type_array(self, schema: dict, name: str) -> str:
        items = schema.get("items", True)
        prefix: list[Any] = schema.get("prefixItems", [])
        if isinstance(items, list):
            if "prefixItems" in schema:
                raise _invalid("'items' must not be a list when 'prefixItems' is present")
            prefix, items = items, schema.get("additionalItems", True)
        lo, hi = schema.get("minItems", 0), schema.get("maxItems")
        if items is False:
            hi = len(prefix) if hi is None else min(hi, len(prefix))
        if hi is not None and lo > hi:
            raise _invalid("'minItems' above the number of items allowed")
        ws = self.prim("ws")
        if hi == 0:
            return f'"[" {ws} "]"'
        with self.nested():
            elems = [f"{self.visit(s, f'{name}-{i}')} ws" for i, s in enumerate(prefix)]
            tail = self.visit(items, f"{name}-item") + " ws" if items is not False else ""
        n = len(prefix)
        elems = elems if hi is None else elems[:hi]
        body = ""  # what follows once every prefix item is written
        if tail and (hi is None or hi > n):
            t_lo, t_hi = max(lo - n, 0), None if hi is None else hi - n
            if n:
                body = self.repeat(f'( "," ws {tail} )', t_lo, t_hi, f"{name}-more")
            else:
                more = "" if t_hi == 1 else self.repeat(
                    f'( "," ws {tail} )', max(t_lo - 1, 0), None if t_hi is None else t_hi - 1,
                    f"{name}-more")
                body = f"{tail} {more}".strip()
                body = body if t_lo else f"( {body} )?"
        for i in range(len(elems) - 1, -1, -1):
            seq = (f'"," ws {elems[i]}' if i else elems[i]) + (f" {body}" if body else "")
            body = seq if i < lo else f"( {seq} )?"
        return f'"[" ws {body} "]"' if body else '"[" ws "]"'

    def type_object(self, schema: dict, name: str) -> str:
        props: dict[str, Any] = schema.get("properties", {})
        required = list(dict.fromkeys(schema.get("required", [])))
        extra = schema.get("additionalProperties", None if "properties" in schema else True)
        if "properties" not in schema and not required and extra is True:
            return self.prim("object")
        ws = self.prim("ws")
        members: list[tuple[str, bool]] = []
        with self.nested():
            for key, sub in list(props.items()) + [(k, extra if isinstance(extra, dict) else True)
                                                   for k in required if k not in props]:
                if sub is False or (key not in props and extra is False):
                    if key in required:
                        raise _unsat(f"required property '{key}' is forbidden")
                    continue
                value = self.visit(sub, self.child(name, key))
                members.append((f'{_lit(_json_text(key))} {ws} ":" ws {value} ws', key in required))
            extra_kv = ""
            if extra not in (None, False):
                sub_name = self.child(name, "additional")
                value = self.visit(extra, sub_name)
                key_rule = self.key_excluding(list(props) + required, f"{sub_name}-key")
                extra_kv = self.token(f'{key_rule} ws ":" ws {value} ws', f"{sub_name}-kv")
        more = f'( "," ws {extra_kv} )*' if extra_kv else ""
        n = len(members)
        first_req = next((i for i, (_, req) in enumerate(members) if req), n)

        def piece(i: int) -> str:  # member i, written after an earlier member
            kv, req = members[i]
            return f'"," ws {kv}' if req else f'( "," ws {kv} )?'

        # rests[i]: members i.. after an earlier one; the opening alternatives share them
        base = min(first_req + 1, n)
        rests = {base: " ".join([piece(i) for i in range(base, n)] + ([more] if more else []))}
        for i in range(base - 1, 0, -1):
            body = f"{piece(i)} {rests[i + 1]}".strip()
            rests[i] = self.token(body, f"{name}-rest{i}") if base > 2 else body
        alts = [f"{members[i][0]} {rests.get(i + 1, '')}".strip() for i in range(base)]
        if first_req == n and extra_kv:
            alts.append(f"{extra_kv} {more}")
        if not alts:
            return f'"{{" {ws} "}}"'
        inner = " | ".join(alts)
        if first_req == n:
            inner = f"( {inner} )?"
        elif len(alts) > 1:
            inner = f"( {inner} )"
        return f'"{{" ws {inner} "}}"'

    def key_excluding(self, keys: list[str], name: str) -> str:
        """A JSON string rule that matches any key except ``keys``."""
        if not keys:
            return self.prim("string")
        self.prim("char")
        trie: dict = {}
        for key in keys:
            node = trie
            for unit in re.findall(r"\\u[0-9a-fA-F]{4}|\\.|.", _json_text(key)[1:-1], re.S):
                node = node.setdefault(unit, {})
            node[""] = {}  # end marker

        def node_expr(node: dict) -> str:
            units = [u for u in node if u]
            alts = [f"{_lit(u)} {_paren(node_expr(node[u]))}" for u in units]
            singles = "".join(_class_char(ord(u)) for u in units if len(u) == 1)
            alts.append(f'[^{singles}"\\\\\\x00-\\x1F\\x7F] char* "\\""')
            if all(len(u) == 1 for u in units):
                alts.append('"\\\\" esc char* "\\""')
            if "" not in node:
                alts.append('"\\""')
            return " | ".join(alts)

        return self.add_rule(name, f'"\\"" ( {node_expr(trie)} )')

    def type_integer(self, schema: dict, name: str) -> str:
        lo, hi = _int_bounds(schema)
        if lo is None and hi is None:
            return self.prim("integer")
        return self.token(self.int_range(lo, hi), name)

    def int_range(self, lo: int | None, hi: int | None) -> str:
        """Canonical JSON integers in [lo, hi] (None: unbounded, digit count capped)."""
        if lo is not None and hi is not None and lo > hi:
            raise _unsat(f"empty integer range [{lo}, {hi}]")
        alts = []
        if hi is None or hi >= 0:
            alts.append(_nat_range(max(lo or 0, 0), hi))
        if lo is None or lo < 0:
            neg_lo = 1 if hi is None or hi >= 0 else -hi
            alts.append(f'"-" {_paren(_nat_range(neg_lo, None if lo is None else -lo))}')
        return " | ".join(alts)

    def type_number(self, schema: dict, name: str) -> str:
        if not set(schema) & _NUMBER_KEYS:
            return self.prim("number")
        ilo, ihi = _int_bounds(schema)
        alts = []
        if ilo is None or ihi is None or ilo <= ihi:  # integers, also written as "I.0"
            alts.append(f'{_paren(self.int_range(ilo, ihi))} ( "." "0"{{1,20}} )?')
        flo = max([schema[k] for k in ("minimum", "exclusiveMinimum") if k in schema], default=None)
        fhi = min([schema[k] for k in ("maximum", "exclusiveMaximum") if k in schema], default=None)
        frac = self.prim("frac")
        pos_lo = 0 if flo is None else max(0, math.ceil(flo))  # I.f in (I, I+1) within bounds
        pos_hi = None if fhi is None else math.floor(fhi) - 1
        if pos_hi is None or pos_lo <= pos_hi:
            alts.append(f"{_paren(_nat_range(pos_lo, pos_hi))} {frac}")
        neg_lo = 0 if fhi is None else max(0, math.ceil(-fhi))  # -(I.f) in (-(I+1), -I)
        neg_hi = None if flo is None else math.floor(-flo) - 1
        if neg_hi is None or neg_lo <= neg_hi:
            alts.append(f'"-" {_paren(_nat_range(neg_lo, neg_hi))} {frac}')
        if not alts:
            raise _unsat("number bounds leave no value")
        return self.token(" | ".join(alts), name)


def _has_type(value: Any, t: str) -> bool:
    if t == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)
                or isinstance(value, float) and value.is_integer())
    return {"null": value is None, "boolean": isinstance(value, bool),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "string": isinstance(value, str), "array": isinstance(value, list),
            "object": isinstance(value, dict)}[t]


def _in_enum(value: Any, values: list[Any]) -> bool:
    return any(v == value and isinstance(v, bool) == isinstance(value, bool) for v in values)


def _int_bounds(schema: dict) -> tuple[int | None, int | None]:
    """Inclusive integer bounds from the four numeric keywords."""
    lows = [math.ceil(schema["minimum"])] if "minimum" in schema else []
    if "exclusiveMinimum" in schema:
        lows.append(math.floor(schema["exclusiveMinimum"]) + 1)
    highs = [math.floor(schema["maximum"])] if "maximum" in schema else []
    if "exclusiveMaximum" in schema:
        highs.append(math.ceil(schema["exclusiveMaximum"]) - 1)
    return max(lows, default=None), min(highs, default=None)


def _same_length_range(x: str, y: str) -> str:
    """Digit strings of equal length between x and y (inclusive)."""
    n = len(x) - 1
    if x == y:
        return f'"{x}"'
    if x == "0" * (n + 1) and y == "9" * (n + 1):
        return "[0-9]" + (f"{{{n + 1}}}" if n else "")
    if x[0] == y[0]:
        return f'"{x[0]}" {_paren(_same_length_range(x[1:], y[1:]))}'
    alts = []
    start, end = int(x[0]), int(y[0])
    if x[1:] != "0" * n:
        alts.append(f'"{x[0]}" {_paren(_same_length_range(x[1:], "9" * n))}')
        start += 1
    if y[1:] != "9" * n:
        end -= 1
    if start <= end:
        digits = f'"{start}"' if start == end else f"[{start}-{end}]"
        alts.append(digits + (" [0-9]" + (f"{{{n}}}" if n > 1 else "") if n else ""))
    if y[1:] != "9" * n:
        alts.append(f'"{y[0]}" {_paren(_same_length_range("0" * n, y[1:]))}')
    return " | ".join(alts)


def _nat_range(a: int, b: int | None) -> str:
    """Non-negative integers in [a, b] without leading zeros (b None: up to 18 digits)."""
    if b is None:
        b = max(a, 10 ** MAX_INT_DIGITS - 1)
    alts, full = [], []  # full: digit counts whose whole range is included
    for length in range(len(str(a)), len(str(b)) + 1):
        first = 0 if length == 1 else 10 ** (length - 1)
        lo, hi = max(a, first), min(b, 10 ** length - 1)
        if length > 1 and lo == first and hi == 10 ** length - 1:
            full.append(length)
        else:
            alts.append(_same_length_range(str(lo).zfill(length), str(hi)))
    if full:
        lo_n, hi_n = full[0] - 1, full[-1] - 1
        count = "" if lo_n == hi_n == 1 else f"{{{lo_n}}}" if lo_n == hi_n else f"{{{lo_n},{hi_n}}}"
        alts.append(f"[1-9] [0-9]{count}")
    return " | ".join(alts)


class _Pattern:
    """Converts a regex (ECMA subset) into a GBNF sequence over JSON-escaped string content."""

    def __init__(self, conv: _Converter, pattern: str, name: str) -> None:
        self.conv, self.p, self.pos, self.name = conv, pattern, 0, name
        self.shorthand = False  # a \\d \\w \\s (or negation) seen in the current class

    def fail(self, what: str) -> UnsupportedSchemaError:
        return _unsupported(f"{what} in pattern {self.p!r}")

    def convert(self) -> str:
        expr = self.alternation(top=True)
        if self.pos < len(self.p):
            raise _invalid(f"unbalanced ')' in pattern {self.p!r}")
        return expr

    def peek(self, k: int = 0) -> str:
        return self.p[self.pos + k] if self.pos + k < len(self.p) else ""

    def alternation(self, top: bool) -> str:
        branches = [self.sequence(top)]
        while self.peek() == "|":
            self.pos += 1
            branches.append(self.sequence(top))
        filled = [b for b in branches if b]
        if len(filled) == len(branches):
            return branches[0] if len(branches) == 1 else "( " + " | ".join(branches) + " )"
        return f"( {' | '.join(filled)} )?" if filled else ""

    def sequence(self, top: bool) -> str:
        items: list[tuple[str, str]] = []  # ("lit", json-escaped text) or ("expr", atomic gbnf)
        anchored_start = anchored_end = False
        while self.peek() and self.peek() not in "|)":
            c = self.peek()
            if c == "^":
                if not (top and not items and not anchored_start):
                    raise self.fail("'^' not at the start")
                anchored_start, self.pos = True, self.pos + 1
                continue
            if c == "$":
                if not (top and self.peek(1) in ("", "|")):
                    raise self.fail("'$' not at the end")
                anchored_end, self.pos = True, self.pos + 1
                continue
            kind, text = self.atom()
            quant = self.quantifier()
            if quant and text:
                atomic = _lit(text) if kind == "lit" else text
                kind, text = "expr", self.conv.repeat(atomic, *quant, f"{self.name}-rep")
            if kind == "lit" and items and items[-1][0] == "lit":
                items[-1] = ("lit", items[-1][1] + text)
            elif text:
                items.append((kind, text))
        parts = [_lit(t) if k == "lit" else t for k, t in items]
        if top and not parts and not (anchored_start and anchored_end):
            return self.dot() + "*"
        if top and not anchored_start:
            parts.insert(0, self.dot() + "*")
        if top and not anchored_end:
            parts.append(self.dot() + "*")
        return " ".join(parts)

    def dot(self) -> str:
        return self.charset(_complement(_LINE_END), "dot")

    def charset(self, ranges: list[tuple[int, int]], hint: str) -> str:
        """An atomic GBNF expression for one character of ``ranges``, JSON-escaped."""
        ranges = _norm(ranges)
        safe = _subtract(ranges, _UNSAFE)
        alts = []
        if safe:
            alts.append("[" + "".join(_class_char(a) + ("" if a == b else "-" + _class_char(b))
                                      for a, b in safe) + "]")
        alts += [_lit(esc) for cp, esc in _SHORT_ESCAPES.items()
                 if any(a <= cp <= b for a, b in ranges)]
        if not alts:
            raise self.fail("character class with no encodable character")
        return alts[0] if len(alts) == 1 else self.conv.add_rule(hint, " | ".join(alts))

    def atom(self) -> tuple[str, str]:
        c = self.peek()
        self.pos += 1
        if c == "(":
            if self.peek() == "?":
                m = re.match(r"\?(:|P?<[A-Za-z_][A-Za-z0-9_]*>)", self.p[self.pos:])
                if not m:
                    lookaround = self.peek(1) in "=!<"
                    raise self.fail("lookaround or group flags" if lookaround else "group syntax")
                self.pos += m.end()
            inner = self.alternation(top=False)
            if self.peek() != ")":
                raise _invalid(f"missing ')' in pattern {self.p!r}")
            self.pos += 1
            return "expr", _paren(inner) if inner else ""
        if c == "[":
            return "expr", self.charset(self.char_class(), f"{self.name}-char")
        if c == ".":
            return "expr", self.dot()
        if c in "*+?" or (c == "{" and re.match(r"\d+(,\d*)?\}", self.p[self.pos:])):
            raise _invalid(f"nothing to repeat in pattern {self.p!r}")
        if c == "{" and re.match(r",\d*\}", self.p[self.pos:]):
            raise self.fail("quantifier '{,n}' (ECMA and Python differ)")
        if c == "\\":
            ranges = self.escape(in_class=False)
            if len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
                c = chr(ranges[0][0])
            else:
                return "expr", self.charset(ranges, f"{self.name}-char")
        if 0xD800 <= ord(c) <= 0xDFFF:
            raise self.fail("surrogate code point")
        return "lit", _json_text(c)[1:-1]

    def quantifier(self) -> tuple[int, int | None] | None:
        c = self.peek()
        m = re.match(r"\{(\d+)(,(\d*))?\}", self.p[self.pos:]) if c == "{" else None
        if c in ("*", "+", "?"):
            self.pos += 1
            quant: tuple[int, int | None] = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
        elif m:
            self.pos += m.end()
            lo = int(m[1])
            quant = (lo, lo if m[2] is None else int(m[3]) if m[3] else None)
        else:
            return None
        if self.peek() == "?":  # lazy: same language
            self.pos += 1
        elif self.peek() == "+":
            raise self.fail("possessive quantifier")
        return quant

    def escape(self, in_class: bool) -> list[tuple[int, int]]:
        """Parses the escape after a consumed backslash; returns its code point ranges."""
        c = self.peek()
        if not c:
            raise _invalid(f"trailing backslash in pattern {self.p!r}")
        self.pos += 1
        classes = {"d": _DIGIT, "w": _WORD, "s": _SPACE}
        if c.lower() in classes:
            self.shorthand = True
            r = classes[c.lower()]
            return r if c.islower() else _subtract(_ASCII, r)
        simple = {"t": 9, "n": 10, "r": 13, "f": 12, "v": 11}
        if c in simple:
            return [(simple[c], simple[c])]
        if c == "0" and not self.peek().isdigit():
            return [(0, 0)]
        if c == "b" and in_class:
            return [(8, 8)]
        hexes = {"x": 2, "u": 4}
        if c in hexes:
            digits = self.p[self.pos:self.pos + hexes[c]]
            if len(digits) != hexes[c] or not re.fullmatch(r"[0-9A-Fa-f]+", digits):
                raise _invalid(f"bad \\{c} escape in pattern {self.p!r}")
            self.pos += hexes[c]
            return [(int(digits, 16), int(digits, 16))]
        if c.isdigit() or c == "k":
            raise self.fail("backreference")
        if c in "bB":
            raise self.fail("word boundary")
        if c.isalnum():
            raise self.fail(f"escape '\\{c}'")
        return [(ord(c), ord(c))]

    def char_class(self) -> list[tuple[int, int]]:
        negate = self.peek() == "^"
        self.pos += negate
        self.shorthand = False
        ranges: list[tuple[int, int]] = []
        if self.peek() == "]":
            raise self.fail("empty character class")
        while self.peek() != "]":
            if not self.peek():
                raise _invalid(f"unterminated character class in pattern {self.p!r}")
            lo = self.class_atom()
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.pos += 1
                hi = self.class_atom()
                if len(lo) != 1 or len(hi) != 1 or lo[0][0] != lo[0][1] or hi[0][0] != hi[0][1]:
                    raise self.fail("class escape as a range bound")
                if hi[0][0] < lo[0][0]:
                    raise _invalid(f"reversed range in pattern {self.p!r}")
                ranges.append((lo[0][0], hi[0][0]))
            else:
                ranges += lo
        self.pos += 1
        if not negate:
            return _norm(ranges)
        return _subtract(_ASCII, ranges) if self.shorthand else _complement(ranges)

    def class_atom(self) -> list[tuple[int, int]]:
        c = self.peek()
        self.pos += 1
        if c == "\\":
            return self.escape(in_class=True)
        if c == "[" and self.peek() == ":":
            raise self.fail("POSIX class")
        return [(ord(c), ord(c))]


def json_schema_to_grammar(schema: dict | bool, max_depth: int = DEFAULT_LIMITS.max_schema_depth) -> str:
    """A complete GBNF grammar (root rule ``root``) accepting JSON valid against ``schema``.
    A schema nested deeper than ``max_depth`` (or whose $ref chains recurse as deep) → 400."""
    check_json_depth(schema, max_depth, "json_schema")
    try:
        return _Converter(schema).convert()
    except RecursionError:
        raise InvalidRequestError(f"'json_schema' is too deeply nested: its $ref chains go deeper than the "
                                  f"converter allows (nesting is limited to {max_depth} levels)") from None


def compose_grammar(root: str, schemas: dict[str, Any], primitives: tuple[str, ...] = (),
                    rules: dict[str, str] | None = None, *, field: str = "schema",
                    max_depth: int = DEFAULT_LIMITS.max_schema_depth) -> str:
    """A grammar whose ``root`` rule body is the GBNF ``root``, in which each key of ``schemas``
    names a rule matching JSON valid against that schema; ``primitives`` (``ws``, ``string``,
    ...) and the extra ``rules`` (name → body) are available to ``root`` too. Schema keys must be
    distinct and not prefixes of each other's rule names (e.g. ``tool-0``, ``tool-1``). ``field``
    names the schemas in errors."""
    rules = {"root": root, **(rules or {})}
    for name, schema in schemas.items():
        check_json_depth(schema, max_depth, field)
        conv = _Converter(schema, root_name=name)
        try:
            conv.convert()
        except RecursionError:
            raise InvalidRequestError(f"'{field}' is too deeply nested: its $ref chains go deeper than the "
                                      f"converter allows (nesting is limited to {max_depth} levels)") from None
        for prim in primitives:
            conv.prim(prim)
        for rule, body in conv.rules.items():
            if rules.setdefault(rule, body) != body:
                raise ValueError(f"grammar rule {rule!r} defined twice")
    if not schemas:
        conv = _Converter({})
        for prim in primitives:
            conv.prim(prim)
        rules.update((k, v) for k, v in conv.rules.items() if k != "root")
    return "\n".join(f"{name} ::= {body}" for name, body in rules.items()) + "\n"


def any_json_object_grammar() -> str:
    """The grammar for ``response_format: {"type": "json_object"}`` without a schema."""
    return json_schema_to_grammar({"type": "object"})


JSON_OBJECT_GRAMMAR = any_json_object_grammar()
