"""Reads which table and which item an audited PartiQL statement names, from the statement text CloudTrail logs;
and redacts a statement the way CloudTrail does, for the local recorder.

CloudTrail logs key literals as written and redacts every other literal as `***(Redacted)`, so the unredacted
equalities of a WHERE clause (or of an INSERT's VALUE) are the key attributes. Anything this reader does not
understand (OR, IN, parameters, functions) yields no key rather than a guess. Pure, never executes anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<redacted>\*\*\*\(Redacted\))
    | (?P<string>'(?:[^']|'')*')
    | (?P<quoted>"(?:[^"]|"")*")
    | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<punct><>|!=|<=|>=|[=<>(),.{}:\[\]?*+\-/|])
    )""",
    re.VERBOSE,
)

_REDACTED = object()


REDACTED = "***(Redacted)"


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    start: int = 0
    end: int = 0

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.upper() in words


@dataclass(frozen=True)
class StatementTarget:
    """The table a statement names (None when unreadable) and its item key (None when it names no single item)."""

    table_name: str | None
    key: dict[str, object] | None


def read_statement_target(statement: str) -> StatementTarget:
    """The table and the key named by a logged PartiQL statement, as far as they can be read without guessing."""
    tokens = _tokenize(statement)
    if tokens is None or not tokens:
        return StatementTarget(None, None)
    verb = tokens[0].text.upper() if tokens[0].kind == "word" else ""
    if verb == "INSERT":
        return _read_insert(tokens)
    if verb == "UPDATE":
        table, rest = _read_table(tokens, 1)
    elif verb in ("SELECT", "DELETE", "EXISTS"):
        table, rest = _read_table(tokens, _index_after(tokens, "FROM"))
    else:
        return StatementTarget(None, None)
    if table is None:
        return StatementTarget(None, None)
    if rest is None:  # an index (`"Table"."Index"`) names no single item
        return StatementTarget(table, None)
    where = _index_after(tokens, "WHERE", start=rest)
    if where < 0:
        return StatementTarget(table, None)
    end = _index_of(tokens, "RETURNING", start=where)
    return StatementTarget(table, _read_equalities(tokens[where : end if end >= 0 else len(tokens)]))


def _tokenize(statement: str) -> list[_Token] | None:
    tokens: list[_Token] = []
    position = 0
    text = statement.rstrip().rstrip(";")
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            return None
        kind = match.lastgroup or ""
        tokens.append(_Token(kind, match.group(kind), match.start(kind), match.end(kind)))
        position = match.end()
    return tokens


def _index_of(tokens: list[_Token], word: str, start: int = 0) -> int:
    for index in range(start, len(tokens)):
        if tokens[index].is_word(word):
            return index
    return -1


def _index_after(tokens: list[_Token], word: str, start: int = 0) -> int:
    index = _index_of(tokens, word, start)
    return index + 1 if index >= 0 else -1


def _identifier(token: _Token) -> str | None:
    if token.kind == "quoted":
        return token.text[1:-1].replace('""', '"')
    if token.kind == "word":
        return token.text
    return None


def _read_table(tokens: list[_Token], index: int) -> tuple[str | None, int | None]:
    """The table name at `index`, and where the statement continues (None after an index name)."""
    if index < 0 or index >= len(tokens):
        return None, None
    table = _identifier(tokens[index])
    if table is None:
        return None, None
    following = index + 1
    if following < len(tokens) and tokens[following].text == ".":
        return table, None
    return table, following


def _literal(token: _Token) -> object | None:
    if token.kind == "redacted":
        return _REDACTED
    if token.kind == "string":
        return token.text[1:-1].replace("''", "'")
    if token.kind == "number":
        try:
            return Decimal(token.text)
        except InvalidOperation:
            return None
    return None


def _read_equalities(tokens: list[_Token]) -> dict[str, object] | None:
    """`a = 'x' AND b = 1 AND c = ***(Redacted)` gives {a: 'x', b: 1}; any other shape gives None."""
    key: dict[str, object] = {}
    index = 0
    while index + 2 < len(tokens):
        name = _identifier(tokens[index])
        value = _literal(tokens[index + 2])
        if name is None or tokens[index + 1].text != "=" or value is None or name in key:
            return None
        if value is not _REDACTED:
            key[name] = value
        index += 3
        if index == len(tokens):
            return key or None
        if not tokens[index].is_word("AND"):
            return None
        index += 1
    return None


def _read_insert(tokens: list[_Token]) -> StatementTarget:
    """`INSERT INTO T VALUE {'a': 'x', 'b': ***(Redacted)}` gives table T and key {a: 'x'}."""
    table, rest = _read_table(tokens, _index_after(tokens, "INTO"))
    if table is None or rest is None or rest + 1 >= len(tokens) or not tokens[rest].is_word("VALUE"):
        return StatementTarget(table, None)
    body = tokens[rest + 1 :]
    if not body or body[0].text != "{" or body[-1].text != "}":
        return StatementTarget(table, None)
    key: dict[str, object] = {}
    index = 1
    while index + 2 < len(body):
        name_token, colon, value_token = body[index], body[index + 1], body[index + 2]
        value = _literal(value_token)
        if name_token.kind != "string" or colon.text != ":" or value is None:
            return StatementTarget(table, None)
        if value is not _REDACTED:
            key[name_token.text[1:-1].replace("''", "'")] = value
        index += 3
        if body[index].text == "}":
            return StatementTarget(table, key or None)
        if body[index].text != ",":
            return StatementTarget(table, None)
        index += 1
    return StatementTarget(table, None)


def redact_statement(statement: str, key_attributes: frozenset[str]) -> str:
    """The statement with every literal redacted except the values of key attributes (`key = 'x'`, `'key': 'x'`).

    A statement that cannot be read is redacted whole, never logged with its values.
    """
    tokens = _tokenize(statement)
    if tokens is None:
        return REDACTED
    pieces: list[str] = []
    position = 0
    for index, token in enumerate(tokens):
        if token.kind not in ("string", "number"):
            continue
        is_attribute_name = index + 1 < len(tokens) and tokens[index + 1].text == ":"
        if is_attribute_name or _names_key_attribute(tokens, index, key_attributes):
            continue
        pieces += [statement[position : token.start], REDACTED]
        position = token.end
    pieces.append(statement[position:])
    return "".join(pieces)


def _names_key_attribute(tokens: list[_Token], index: int, key_attributes: frozenset[str]) -> bool:
    """True for the literal of `key = literal` or `'key': literal`, where `key` is a key attribute."""
    if index < 2 or tokens[index - 1].text not in ("=", ":"):
        return False
    name_token = tokens[index - 2]
    if tokens[index - 1].text == ":":
        name = name_token.text[1:-1].replace("''", "'") if name_token.kind == "string" else None
    else:
        name = _identifier(name_token)
    return name in key_attributes
