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

import math
import re
from contextlib import contextmanager
from typing import Any, Iterator

from llamacy.api.limits import DEFAULT_LIMITS, check_json_depth
from llamacy.errors import InvalidRequestError
from llamacy.api.gbnf_parts import (_class_char, _invalid, _is_token, _json_text, _lit, _nat_range, _paren,
                                     _Pattern, _unsupported)
from llamacy.api.schema_allof import TYPES as _TYPES, Unsatisfiable as _Unsatisfiable
from llamacy.api.schema_allof import merge_parts, unsat as _unsat

__all__ = ["json_schema_to_grammar", "compose_grammar", "any_json_object_grammar", "JSON_OBJECT_GRAMMAR"]

REPEAT_LIMIT = 2000  # libllama refuses larger repetition counts

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

def _sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-") or "x"


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
        """One schema equivalent to ``allOf: schemas`` (refs inlined: ``schema_allof``)."""
        return merge_parts([d for s in schemas for d in self.deref(s)])

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


def _int_bounds(schema: dict) -> tuple[int | None, int | None]:
    """Inclusive integer bounds from the four numeric keywords."""
    lows = [math.ceil(schema["minimum"])] if "minimum" in schema else []
    if "exclusiveMinimum" in schema:
        lows.append(math.floor(schema["exclusiveMinimum"]) + 1)
    highs = [math.floor(schema["maximum"])] if "maximum" in schema else []
    if "exclusiveMaximum" in schema:
        highs.append(math.ceil(schema["exclusiveMaximum"]) - 1)
    return max(lows, default=None), min(highs, default=None)


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
