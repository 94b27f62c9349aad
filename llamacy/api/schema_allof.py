"""allOf for the JSON Schema -> GBNF converter (``json_schema``): the flat list of schemas an
``allOf`` stands for (refs already inlined by the converter) merged into one equivalent schema —
types intersected, bounds tightened, ``required`` united, ``enum``/``const`` intersected,
object keywords merged per property, ``anyOf``/``oneOf`` of the parts multiplied out into one
``anyOf`` (at most 256 combinations). A merge that no instance can match raises
``Unsatisfiable`` (an ``anyOf`` branch like that is dropped); one the converter cannot express,
``UnsupportedSchemaError``."""
from __future__ import annotations

from typing import Any

from llamacy.api.gbnf_parts import _unsupported
from llamacy.errors import UnsupportedSchemaError

TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")


class Unsatisfiable(UnsupportedSchemaError):
    """No instance can match; an ``anyOf`` branch like that is dropped."""


def unsat(message: str) -> UnsupportedSchemaError:
    return Unsatisfiable(f"invalid JSON Schema: {message}")


def in_enum(value: Any, values: list[Any]) -> bool:
    """``value`` is one of ``values`` (JSON equality: true is not 1)."""
    return any(v == value and isinstance(v, bool) == isinstance(value, bool) for v in values)


def merge_parts(parts: list[dict]) -> dict:
    """One schema equivalent to ``allOf: parts`` (object keywords merged per property)."""
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
                raise unsat("allOf with conflicting 'type'")
            out["type"] = [t for t in TYPES if t in common and
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
        out["enum"] = [v for v in enums[0] if all(in_enum(v, e) for e in enums[1:])]
        if not out["enum"]:
            raise unsat("allOf with disjoint 'enum'/'const'")
    _merge_objects(parts, out)
    if choices:
        combos: list[list[Any]] = [[]]
        for options in choices:
            combos = [c + [o] for c in combos for o in options]
            if len(combos) > 256:
                raise _unsupported("allOf of anyOf/oneOf with too many combinations")
        out = {"anyOf": [{"allOf": [dict(out)] + c} for c in combos]}
    return out


def _merge_objects(parts: list[dict], out: dict) -> None:
    """``properties`` and ``additionalProperties`` of the parts into ``out``: each property's
    schemas (its own, or a part's additionalProperties) as one allOf; a property some part
    forbids is left out (unsatisfiable when required)."""
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
                raise unsat(f"allOf forbids required property '{key}'")
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
