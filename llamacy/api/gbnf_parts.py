"""GBNF building blocks for ``json_schema``: string literals, character sets and classes, integer
ranges as digit rules, and regular expressions (the ECMA subset JSON Schema ``pattern`` uses) as
sequences over JSON-escaped string content — what a pattern may hold is in ``json_schema``'s
docstring ("Patterns")."""
from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from llamacy.errors import UnsupportedSchemaError

MAX_INT_DIGITS = 18    # an integer range's open end: at most this many digits

if TYPE_CHECKING:
    from llamacy.api.json_schema import _Converter

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


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


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
