"""Bounds on what one request may ask for, and the checks that need more than a comparison.

The server's flags fill a ``RequestLimits`` (defaults below, documented in the README); the
parsers refuse anything beyond them with a 400 naming the limit. Nesting is bounded because
both the JSON Schema converter and libllama's GBNF parser recurse: a grammar nested a
hundred thousand parentheses deep overflows the C stack and would kill the process.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llamacy.errors import InvalidRequestError
from llamacy.serving.tasks import CompletionParams

MAX_GRAMMAR_NESTING = 256   # parentheses in a GBNF grammar (libllama's parser recurses per level)


@dataclass(frozen=True)
class RequestLimits:
    max_n_probs: int = 100
    max_stop_strings: int = 64
    max_stop_length: int = 256          # characters per stop string
    max_grammar_bytes: int = 256 << 10  # a GBNF grammar, given or converted from a JSON schema
    max_schema_depth: int = 64          # nesting of a JSON schema (objects and arrays)
    max_embedding_inputs: int = 2048    # inputs in one embedding request


DEFAULT_LIMITS = RequestLimits()


def check_json_depth(value: Any, limit: int, field: str) -> None:
    """Refuse a JSON value nested deeper than ``limit`` containers (checked without recursion)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            children = v.values()
        elif isinstance(v, list):
            children = v
        else:
            continue
        if depth > limit:
            raise InvalidRequestError(f"'{field}' is nested more than {limit} levels deep (the limit, "
                                      f"--max-schema-depth)")
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


def gbnf_nesting(grammar: str) -> int:
    """The deepest parenthesis nesting of a GBNF grammar, outside literals, classes and comments."""
    depth = deepest = 0
    i, n = 0, len(grammar)
    while i < n:
        c = grammar[i]
        if c == '"' or c == "[":
            close = '"' if c == '"' else "]"
            i += 1
            while i < n and grammar[i] != close:
                i += 2 if grammar[i] == "\\" else 1
        elif c == "#":
            while i < n and grammar[i] not in "\r\n":
                i += 1
        elif c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif c == ")":
            depth -= 1
        i += 1
    return deepest


def check_grammar(grammar: str, limits: RequestLimits) -> None:
    """Refuse a grammar over the size limit or nested too deep for the engine's parser."""
    size = len(grammar.encode("utf-8", "surrogatepass"))
    if size > limits.max_grammar_bytes:
        raise InvalidRequestError(f"'grammar' is {size} bytes, more than the limit of {limits.max_grammar_bytes} "
                                  "(--max-grammar-size)")
    if "\x00" in grammar:
        raise InvalidRequestError("'grammar' must not contain NUL characters")
    if gbnf_nesting(grammar) > MAX_GRAMMAR_NESTING:
        raise InvalidRequestError(f"'grammar' nests parentheses more than {MAX_GRAMMAR_NESTING} levels deep")


def check_stop(stop: list[str], limits: RequestLimits) -> list[str]:
    if len(stop) > limits.max_stop_strings:
        raise InvalidRequestError(f"'stop' has {len(stop)} strings, more than the limit of {limits.max_stop_strings} "
                                  "(--max-stop-strings)")
    for s in stop:
        if len(s) > limits.max_stop_length:
            raise InvalidRequestError(f"'stop' has a string of {len(s)} characters, more than the limit of "
                                      f"{limits.max_stop_length} (--max-stop-length)")
    return stop


def check_completion_limits(params: CompletionParams, limits: RequestLimits) -> None:
    """Every bound a completion request must stay within (any API flavour, after parsing)."""
    if params.sampling.n_probs > limits.max_n_probs:
        raise InvalidRequestError(f"'n_probs' is {params.sampling.n_probs}, more than the limit of "
                                  f"{limits.max_n_probs} (--max-n-probs)")
    check_stop(params.stop, limits)
    if params.sampling.grammar:
        check_grammar(params.sampling.grammar, limits)
