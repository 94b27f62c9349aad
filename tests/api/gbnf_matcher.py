"""A small GBNF recognizer for tests: parses the GBNF subset the schema converter emits
(literals, char classes, ``.``, rule refs, groups, ``|``, ``* + ? {m} {m,} {m,n}``, comments)
and decides whether a whole string matches ``root``.

Matching computes, for each (rule, position), the set of end positions, memoized — fine for
non-left-recursive grammars (libllama rejects left recursion too).
"""
from __future__ import annotations

from typing import Union

# AST: ("lit", str) | ("cls", negated, ranges) | ("any",) | ("ref", name)
#      | ("alt", [seq, ...]) | ("seq", [node, ...]) | ("rep", node, lo, hi|None)
Node = tuple
_ESCAPES = {"t": "\t", "r": "\r", "n": "\n", "\\": "\\", '"': '"', "[": "[", "]": "]", "-": "-"}


class GrammarSyntaxError(ValueError):
    pass


def _is_name_char(c: str) -> bool:
    return bool(c) and (c.isascii() and c.isalnum() or c == "-")


class Grammar:
    """``Grammar(text).matches(s)``: does ``s`` match the ``root`` rule entirely?"""

    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0
        self.rules: dict[str, Node] = {}
        self._parse()
        for name in self._refs(("alt", list(self.rules.values()))):
            if name not in self.rules:
                raise GrammarSyntaxError(f"undefined rule {name!r}")
        if "root" not in self.rules:
            raise GrammarSyntaxError("no root rule")

    # ---- parsing ----
    def _peek(self, k: int = 0) -> str:
        i = self.pos + k
        return self.text[i] if i < len(self.text) else ""

    def _space(self, newlines: bool) -> None:
        while self._peek() and (self._peek() in " \t#" or newlines and self._peek() in "\r\n"):
            if self._peek() == "#":
                while self._peek() and self._peek() not in "\r\n":
                    self.pos += 1
            else:
                self.pos += 1

    def _name(self) -> str:
        start = self.pos
        while _is_name_char(self._peek()):
            self.pos += 1
        if start == self.pos:
            raise GrammarSyntaxError(f"expected a name at {self.text[self.pos:self.pos + 20]!r}")
        return self.text[start:self.pos]

    def _parse(self) -> None:
        self._space(True)
        while self.pos < len(self.text):
            name = self._name()
            self._space(False)
            if self.text[self.pos:self.pos + 3] != "::=":
                raise GrammarSyntaxError(f"expected ::= after {name}")
            self.pos += 3
            self._space(True)
            if name in self.rules:
                raise GrammarSyntaxError(f"rule {name} defined twice")
            self.rules[name] = self._alternates(nested=False)
            if self._peek() and self._peek() not in "\r\n":
                rest = self.text[self.pos:self.pos + 20]
                raise GrammarSyntaxError(f"expected end of line at {rest!r}")
            self._space(True)

    def _alternates(self, nested: bool) -> Node:
        seqs = [self._sequence(nested)]
        while self._peek() == "|":
            self.pos += 1
            self._space(True)
            seqs.append(self._sequence(nested))
        return ("alt", seqs)

    def _char(self) -> str:
        c = self._peek()
        if c != "\\":
            self.pos += 1
            return c
        e = self._peek(1)
        width = {"x": 2, "u": 4, "U": 8}.get(e)
        if width:
            digits = self.text[self.pos + 2:self.pos + 2 + width]
            self.pos += 2 + width
            return chr(int(digits, 16))
        if e not in _ESCAPES:
            raise GrammarSyntaxError(f"unknown escape \\{e}")
        self.pos += 2
        return _ESCAPES[e]

    def _sequence(self, nested: bool) -> Node:
        items: list[Node] = []
        while True:
            c = self._peek()
            if c == '"':
                self.pos += 1
                text = []
                while self._peek() != '"':
                    if not self._peek():
                        raise GrammarSyntaxError("unterminated literal")
                    text.append(self._char())
                self.pos += 1
                items.append(("lit", "".join(text)))
            elif c == "[":
                self.pos += 1
                negated = self._peek() == "^"
                self.pos += negated
                ranges = []
                while self._peek() != "]":
                    if not self._peek():
                        raise GrammarSyntaxError("unterminated class")
                    lo = self._char()
                    hi = lo
                    if self._peek() == "-" and self._peek(1) != "]":
                        self.pos += 1
                        hi = self._char()
                    ranges.append((ord(lo), ord(hi)))
                self.pos += 1
                items.append(("cls", negated, ranges))
            elif c == ".":
                self.pos += 1
                items.append(("any",))
            elif c == "(":
                self.pos += 1
                self._space(True)
                inner = self._alternates(nested=True)
                if self._peek() != ")":
                    raise GrammarSyntaxError("expected )")
                self.pos += 1
                items.append(inner)
            elif _is_name_char(c):
                items.append(("ref", self._name()))
            elif c in ("*", "+", "?", "{"):
                if not items:
                    raise GrammarSyntaxError("nothing to repeat")
                items.append(self._repeat(items.pop()))
            else:
                break
            self._space(nested)
        return ("seq", items)

    def _repeat(self, node: Node) -> Node:
        c = self._peek()
        self.pos += 1
        if c != "{":
            lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
            return ("rep", node, lo, hi)
        end = self.text.index("}", self.pos)
        spec = self.text[self.pos:end].replace(" ", "")
        self.pos = end + 1
        if "," in spec:
            a, b = spec.split(",")
            return ("rep", node, int(a), int(b) if b else None)
        return ("rep", node, int(spec), int(spec))

    def _refs(self, node: Node) -> set[str]:
        kind = node[0]
        if kind == "ref":
            return {node[1]}
        if kind in ("alt", "seq"):
            return set().union(*(self._refs(n) for n in node[1])) if node[1] else set()
        if kind == "rep":
            return self._refs(node[1])
        return set()

    # ---- matching ----
    def matches(self, s: str, rule: str = "root") -> bool:
        self._s = s
        self._memo: dict[tuple[str, int], frozenset[int]] = {}
        return len(s) in self._match(("ref", rule), 0)

    def _match(self, node: Node, pos: int) -> frozenset[int]:
        s, kind = self._s, node[0]
        if kind == "lit":
            return frozenset([pos + len(node[1])]) if s.startswith(node[1], pos) else frozenset()
        if kind == "cls":
            if pos >= len(s):
                return frozenset()
            cp = ord(s[pos])
            inside = any(lo <= cp <= hi for lo, hi in node[2])
            return frozenset([pos + 1]) if inside != node[1] else frozenset()
        if kind == "any":
            return frozenset([pos + 1]) if pos < len(s) else frozenset()
        if kind == "ref":
            key = (node[1], pos)
            if key not in self._memo:
                self._memo[key] = frozenset()  # guards against (unexpected) left recursion
                self._memo[key] = self._match(self.rules[node[1]], pos)
            return self._memo[key]
        if kind == "alt":
            return frozenset().union(*(self._match(n, pos) for n in node[1]))
        if kind == "seq":
            cur = frozenset([pos])
            for item in node[1]:
                cur = frozenset().union(*(self._match(item, p) for p in cur)) if cur else cur
            return cur
        _, inner, lo, hi = node
        return self._match_rep(inner, pos, lo, hi)

    def _match_rep(self, inner: Node, pos: int, lo: int, hi: Union[int, None]) -> frozenset[int]:
        frontier, count = frozenset([pos]), 0
        while count < lo and frontier:
            frontier = frozenset().union(*(self._match(inner, p) for p in frontier))
            count += 1
        results = set(frontier)
        while frontier and (hi is None or count < hi):
            nxt = frozenset().union(*(self._match(inner, p) for p in frontier))
            count += 1
            frontier = nxt - results if hi is None else nxt
            results |= nxt
        return frozenset(results)
