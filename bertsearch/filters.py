"""A small, safe metadata filter language, compiled to parameterised SQL.

Filters look like::

    year >= 2020 and lang = 'en'
    not (topic in ('Arts', 'History') or year < 1900)
    date between '2020-01-01' and '2021-06-30'
    author is null and tags is not null and rating > 4.5 and draft = false

Grammar (keywords are case-insensitive; precedence from loosest: ``or``, ``and``, ``not``, comparison)::

    filter     := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := unary ("and" unary)*
    unary      := "not" unary | "(" or_expr ")" | predicate
    predicate  := field op literal                        op: = == != <> < <= > >=
                | field ["not"] "in" "(" literal ("," literal)* ")"
                | field ["not"] "between" literal "and" literal      (inclusive)
                | field "is" ["not"] "null"
    literal    := number | string | "true" | "false"
    field      := part ("." part)*
    part       := identifier | `backtick quoted`

- Numbers: ``12``, ``-3``, ``4.5``, ``-1e-3`` (integers must fit in 64 bits).
- Strings: ``'single'`` or ``"double"`` quoted; a quote is written doubled (``'it''s'``) or with a
  backslash (``'it\\'s'``); other escapes are ``\\\\``, ``\\n``, ``\\t`` and ``\\r``.
- ``null`` is only valid in ``is null`` / ``is not null``; ``true``/``false`` only with ``=``, ``!=``
  and ``in``; ``between`` takes two numbers or two strings.
- Fields: a plain ``id``, ``title`` or ``updated_at`` is that column of the documents table (text;
  compared only with strings, never null). Every other name is a key of the document's metadata
  JSON object; a dotted name (``meta.author``) is a nested path. A backtick-quoted part (write a
  backtick inside as two) is always one literal metadata key: ```first name```, ```title``` (the
  metadata key, not the column), ```a.b``` (a key containing a dot).

Semantics (type-strict; :meth:`Filter.sql` and :meth:`Filter.matches` agree exactly):

- A comparison with a number matches only a JSON number (a Python int or float, never a bool), with
  a string only a JSON string, with true/false only that JSON boolean. A missing key or a JSON null
  never matches a comparison, ``!=`` included: ``x != v`` means "x has a value of v's type that
  differs from v". ``x in (...)`` matches if x equals any literal under these rules (lists may mix
  types); ``x not in (...)`` means "x has the type of one of the literals and equals none of them";
  ``x not between a and b`` means "x has the bounds' type and lies outside [a, b]".
- ``x is null`` is true when the key is missing or JSON null; ``is not null`` is the opposite.
- Every predicate is true or false (never SQL NULL), so ``not`` is plain negation:
  ``not (year > 3)`` matches documents without a year.
- Strings compare by code point (SQLite's BINARY collation on UTF-8). Dates are not a type of their
  own: write them as ISO-8601 strings (``'2021-06-30'``, ``'2021-06-30T12:00:00'``), which compare
  correctly as strings when written in the same format.
- Limits of SQLite's JSON functions: a NUL character (U+0000) in stored strings or keys is not supported,
  and integers beyond 64 bits in stored metadata are read by SQLite as floats.

The SQL never contains a user's value or name: values and JSON paths are ``?`` parameters. Plain keys
are read with ``json_extract(metadata, ?)`` and ``json_type(metadata, ?)`` on the path ``$."a"."b"``;
keys holding characters that JSON escapes (``"``, backslash, control characters), which SQLite paths
cannot spell reliably across versions, are looked up with ``json_each`` on the decoded key instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Union

from .errors import FILTER_HINT, BadFilter, BertsearchError  # noqa: F401 (BadFilter: importable from here too)
from .types import not_text

__all__ = ["BadFilter", "Filter", "Field", "fields", "Compare", "In", "Between", "IsNull", "Not", "And", "Or", "parse"]

HINT = FILTER_HINT
COLUMNS = ("id", "title", "updated_at")
KEYWORDS = frozenset({"and", "or", "not", "in", "between", "is", "null", "true", "false"})
OPERATORS = {"=": "=", "==": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
ORDERING = frozenset({"<", "<=", ">", ">="})

Literal = Union[bool, int, float, str]

_INT64 = 2**63
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_FIRST_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_NEXT_PART = re.compile(r"[A-Za-z0-9_-]+")
_SQL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r"}
_NUMBER_TYPES = "('integer','real')"


# ---------------------------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class _Token:
    kind: str  # name, kw, num, str, op, (, ), ",", end
    value: Any
    pos: int  # 0-based offset into the expression
    text: str  # the source text, for messages


def _tokenize(expr: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c.isspace():
            i += 1
        elif c in "(),":
            tokens.append(_Token(c, c, i, c))
            i += 1
        elif c in "=!<>":
            two = expr[i : i + 2]
            op = two if two in OPERATORS else c if c in OPERATORS else None
            if op is None:
                raise BadFilter(expr, f"unexpected {c!r}", i + 1)
            tokens.append(_Token("op", OPERATORS[op], i, op))
            i += len(op)
        elif c in "'\"":
            value, end = _scan_string(expr, i)
            tokens.append(_Token("str", value, i, expr[i:end]))
            i = end
        elif c.isdigit() or (c in "-." and _NUMBER.match(expr, i)):
            m = _NUMBER.match(expr, i)
            if m is None:
                raise BadFilter(expr, f"unexpected {c!r}", i + 1)
            tokens.append(_Token("num", _number(expr, m.group(), i), i, m.group()))
            i = m.end()
        elif c == "`" or _FIRST_PART.match(expr, i):
            parts, quoted, end = _scan_name(expr, i)
            text = expr[i:end]
            if not quoted and len(parts) == 1 and parts[0].lower() in KEYWORDS:
                tokens.append(_Token("kw", parts[0].lower(), i, text))
            else:
                tokens.append(_Token("name", (parts, quoted), i, text))
            i = end
        else:
            raise BadFilter(expr, f"unexpected {c!r}", i + 1)
    tokens.append(_Token("end", None, n, ""))
    return tokens


def _number(expr: str, text: str, pos: int) -> int | float:
    if re.fullmatch(r"-?\d+", text):
        value = int(text)
        if not -_INT64 <= value < _INT64:
            raise BadFilter(expr, f"integer {text} does not fit in 64 bits", pos + 1)
        return value
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise BadFilter(expr, f"number {text} is out of range", pos + 1)
    return number


def _scan_string(expr: str, start: int) -> tuple[str, int]:
    quote, out, i = expr[start], [], start + 1
    while i < len(expr):
        c = expr[i]
        if c == "\\":
            nxt = expr[i + 1 : i + 2]
            if nxt not in _ESCAPES:
                if not nxt:
                    break
                raise BadFilter(expr, f"unknown escape '\\{nxt}'", i + 1, "write \\\\ for a backslash")
            out.append(_ESCAPES[nxt])
            i += 2
        elif c == quote:
            if expr[i + 1 : i + 2] == quote:
                out.append(quote)
                i += 2
            else:
                return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    raise BadFilter(expr, "unclosed string starting", start + 1, f"missing closing {quote}")


def _scan_name(expr: str, start: int) -> tuple[tuple[str, ...], bool, int]:
    parts: list[str] = []
    quoted, i = False, start
    while True:
        if expr[i : i + 1] == "`":
            part, i = _scan_backtick(expr, i)
            quoted = True
        else:
            m = (_NEXT_PART if parts else _FIRST_PART).match(expr, i)
            if m is None:
                raise BadFilter(expr, "expected a name after '.'", i + 1)
            part, i = m.group(), m.end()
        parts.append(part)
        if expr[i : i + 1] != ".":
            return tuple(parts), quoted, i
        i += 1


def _scan_backtick(expr: str, start: int) -> tuple[str, int]:
    out, i = [], start + 1
    while i < len(expr):
        if expr[i] == "`":
            if expr[i + 1 : i + 2] == "`":
                out.append("`")
                i += 2
                continue
            if not out:
                raise BadFilter(expr, "empty `name`", start + 1)
            return "".join(out), i + 1
        out.append(expr[i])
        i += 1
    raise BadFilter(expr, "unclosed `name` starting", start + 1, "missing closing `")


# ------------------------------------------------------------------------------------------------- AST


def _kind(value: Any) -> str:
    """The JSON type class of a Python value: number, text, boolean, null or other."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "text"
    return "other"


def _render_literal(value: Literal) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    escaped = value.replace("\\", "\\\\").replace("'", "''")
    escaped = escaped.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    return f"'{escaped}'"


def _compare(left: Any, op: str, right: Any) -> bool:
    if op == "=":
        return left == right
    if op == "!=":
        return left != right
    if op == "<":
        return left < right
    if op == "<=":
        return left <= right
    if op == ">":
        return left > right
    return left >= right


_MISSING = object()


@dataclass(frozen=True)
class Field:
    """A column of the documents table (``column`` set) or a path of keys into the metadata object."""

    path: tuple[str, ...]
    column: str | None = None

    def __str__(self) -> str:
        if self.column:
            return self.column
        return ".".join(self._render_part(i, p) for i, p in enumerate(self.path))

    def _render_part(self, index: int, part: str) -> str:
        plain = (_FIRST_PART if index == 0 else _NEXT_PART).fullmatch(part)
        reserved = part.lower() in KEYWORDS or (len(self.path) == 1 and part in COLUMNS)
        if plain and not reserved:
            return part
        return "`" + part.replace("`", "``") + "`"

    def lookup(self, metadata: dict, columns: dict[str, str]) -> Any:
        """The field's value, or _MISSING."""
        if self.column:
            return columns[self.column]
        node: Any = metadata
        for key in self.path:
            if not isinstance(node, dict) or key not in node:
                return _MISSING
            node = node[key]
        return node

    def sql(self, table: str) -> tuple[str, list, str, list]:
        """(json type expression, its parameters, value expression, its parameters) for a metadata path."""
        meta = f"{table}metadata"
        container, params = meta, []
        plain: list[str] = []
        for i, key in enumerate(self.path):
            if json.dumps(key, ensure_ascii=False)[1:-1] == key:
                plain.append(key)
                continue
            if plain:  # walk the plain keys so far as JSON text
                container, params = f"({container} -> ?)", params + [_json_path(plain)]
                plain = []
            lookup = f"FROM json_each({container}) WHERE key = ?"
            if i == len(self.path) - 1:
                return (f"(SELECT type {lookup})", params + [key], f"(SELECT value {lookup})", params + [key])
            container, params = f"(SELECT value {lookup} AND type = 'object')", params + [key]
        path = _json_path(plain)
        return (f"json_type({container}, ?)", params + [path], f"json_extract({container}, ?)", params + [path])


def _json_path(keys: list[str]) -> str:
    return "$" + "".join(f'."{k}"' for k in keys)


class Filter:
    """A parsed filter: turn it into SQL with :meth:`sql`, test a document with :meth:`matches`."""

    def sql(self, *, table: str = "") -> tuple[str, list]:
        """A boolean (0/1, never NULL) SQL expression over the documents table, and its parameters.

        Column names are unqualified unless ``table`` (an SQL name or alias of the documents table) is given.
        """
        if table and not _SQL_NAME.fullmatch(table):
            raise ValueError(f"table must be a plain SQL name, got {table!r}")
        params: list = []
        text = self._sql(f"{table}." if table else "", params)
        return text, params

    def matches(self, metadata: dict, *, id: str = "", title: str = "", updated_at: str = "") -> bool:
        """Whether a document with this metadata and these columns passes the filter (same rules as the SQL)."""
        return self._matches(metadata, {"id": id, "title": title, "updated_at": updated_at})

    def _sql(self, table: str, params: list) -> str:
        raise NotImplementedError

    def _matches(self, metadata: dict, columns: dict[str, str]) -> bool:
        raise NotImplementedError


def _typed_sql(field: Field, table: str, params: list, kind: str, test: str, values: list) -> str:
    """SQL that is 1 when the field has JSON type class ``kind`` and its value passes ``test`` (V stands for it)."""
    if field.column:
        if kind != "text":
            return "0"
        params.extend(values)
        return _column_test(field, table, test)
    type_sql, type_params, value_sql, value_params = field.sql(table)
    params.extend(type_params)
    type_test = f"IN {_NUMBER_TYPES}" if kind == "number" else "= 'text'"
    head, _, tail = test.partition("V")
    params.extend(value_params)
    params.extend(values)
    return f"(CASE WHEN {type_sql} {type_test} THEN {head}{value_sql}{tail} ELSE 0 END)"


def _column_test(field: Field, table: str, test: str) -> str:
    head, _, tail = test.partition("V")
    return f"coalesce({head}{table}{field.column}{tail}, 0)"


def _type_in(field: Field, table: str, params: list, types: list[str]) -> str:
    """SQL that is 1 when the field's JSON type is one of ``types`` (constants of ours, never user text)."""
    if field.column or not types:
        return "0"
    type_sql, type_params, _, _ = field.sql(table)
    params.extend(type_params)
    listed = ",".join(f"'{t}'" for t in types)
    return f"coalesce({type_sql} IN ({listed}), 0)"


@dataclass(frozen=True)
class Compare(Filter):
    field: Field
    op: str  # one of = != < <= > >=
    value: Literal

    def __str__(self) -> str:
        return f"{self.field} {self.op} {_render_literal(self.value)}"

    def _sql(self, table: str, params: list) -> str:
        if isinstance(self.value, bool):
            wanted = self.value if self.op == "=" else not self.value
            return _type_in(self.field, table, params, ["true" if wanted else "false"])
        op = "<>" if self.op == "!=" else self.op
        return _typed_sql(self.field, table, params, _kind(self.value), f"V {op} ?", [self.value])

    def _matches(self, metadata: dict, columns: dict[str, str]) -> bool:
        value = self.field.lookup(metadata, columns)
        if _kind(value) != _kind(self.value):
            return False
        return _compare(value, self.op, self.value)


@dataclass(frozen=True)
class In(Filter):
    field: Field
    values: tuple[Literal, ...]
    negated: bool = False

    def __str__(self) -> str:
        listed = ", ".join(_render_literal(v) for v in self.values)
        return f"{self.field} {'not in' if self.negated else 'in'} ({listed})"

    def _sql(self, table: str, params: list) -> str:
        parts = []
        for kind in ("number", "text"):
            values = [v for v in self.values if _kind(v) == kind]
            if values:
                marks = ", ".join("?" * len(values))
                test = f"V {'NOT IN' if self.negated else 'IN'} ({marks})"
                parts.append(_typed_sql(self.field, table, params, kind, test, values))
        bools = {"true" if v else "false" for v in self.values if isinstance(v, bool)}
        if bools:
            wanted = ({"true", "false"} - bools) if self.negated else bools
            parts.append(_type_in(self.field, table, params, sorted(wanted)))
        return "(" + " OR ".join(parts) + ")" if len(parts) > 1 else parts[0]

    def _matches(self, metadata: dict, columns: dict[str, str]) -> bool:
        value = self.field.lookup(metadata, columns)
        kind = _kind(value)
        same = [v for v in self.values if _kind(v) == kind]
        if not same:
            return False
        hit = any(value == v for v in same)
        return not hit if self.negated else hit


@dataclass(frozen=True)
class Between(Filter):
    field: Field
    low: Literal
    high: Literal
    negated: bool = False

    def __str__(self) -> str:
        word = "not between" if self.negated else "between"
        return f"{self.field} {word} {_render_literal(self.low)} and {_render_literal(self.high)}"

    def _sql(self, table: str, params: list) -> str:
        test = f"V {'NOT BETWEEN' if self.negated else 'BETWEEN'} ? AND ?"
        return _typed_sql(self.field, table, params, _kind(self.low), test, [self.low, self.high])

    def _matches(self, metadata: dict, columns: dict[str, str]) -> bool:
        value = self.field.lookup(metadata, columns)
        if _kind(value) != _kind(self.low):
            return False
        inside = self.low <= value <= self.high
        return not inside if self.negated else inside


@dataclass(frozen=True)
class IsNull(Filter):
    field: Field
    negated: bool = False

    def __str__(self) -> str:
        return f"{self.field} is {'not ' if self.negated else ''}null"

    def _sql(self, table: str, params: list) -> str:
        if self.field.column:
            return "1" if self.negated else "0"
        type_sql, type_params, _, _ = self.field.sql(table)
        params.extend(type_params)
        return f"(coalesce({type_sql}, 'null') {'<>' if self.negated else '='} 'null')"

    def _matches(self, metadata: dict, columns: dict[str, str]) -> bool:
        value = self.field.lookup(metadata, columns)
        missing = value is _MISSING or value is None
        return not missing if self.negated else missing


@dataclass(frozen=True)
class Not(Filter):
    operand: Filter

    def __str__(self) -> str:
        inner = str(self.operand)
        return f"not ({inner})" if isinstance(self.operand, (And, Or)) else f"not {inner}"

    def _sql(self, table: str, params: list) -> str:
        return f"(NOT {self.operand._sql(table, params)})"

    def _matches(self, metadata: dict, columns: dict[str, str]) -> bool:
        return not self.operand._matches(metadata, columns)


@dataclass(frozen=True)
class And(Filter):
    operands: tuple[Filter, ...]

    def __str__(self) -> str:
        return " and ".join(f"({o})" if isinstance(o, (Or, And)) else str(o) for o in self.operands)

    def _sql(self, table: str, params: list) -> str:
        return "(" + " AND ".join(o._sql(table, params) for o in self.operands) + ")"

    def _matches(self, metadata: dict, columns: dict[str, str]) -> bool:
        return all(o._matches(metadata, columns) for o in self.operands)


@dataclass(frozen=True)
class Or(Filter):
    operands: tuple[Filter, ...]

    def __str__(self) -> str:
        return " or ".join(f"({o})" if isinstance(o, Or) else str(o) for o in self.operands)

    def _sql(self, table: str, params: list) -> str:
        return "(" + " OR ".join(o._sql(table, params) for o in self.operands) + ")"

    def _matches(self, metadata: dict, columns: dict[str, str]) -> bool:
        return any(o._matches(metadata, columns) for o in self.operands)


def fields(flt: Filter) -> list[Field]:
    """The fields a filter names, in the order written (each once)."""
    out: list[Field] = []
    stack = [flt]
    while stack:
        node = stack.pop(0)
        if isinstance(node, Not):
            stack.insert(0, node.operand)
        elif isinstance(node, (And, Or)):
            stack[:0] = list(node.operands)
        elif getattr(node, "field", None) is not None and node.field not in out:
            out.append(node.field)
    return out


# ---------------------------------------------------------------------------------------------- parser


def parse(expr: str) -> Filter:
    """Parse a filter expression; raises BadFilter, pointing at the column, when it does not parse."""
    if not expr or not expr.strip():
        raise BadFilter(expr or "", "empty expression")
    if not_text(expr):
        raise BadFilter(expr, "not UTF-8 text (a byte that could not be decoded); give the filter as UTF-8")
    return _Parser(expr).parse()


class _Parser:
    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.tokens = _tokenize(expr)
        self.i = 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def advance(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def is_kw(self, *words: str) -> bool:
        return self.tok.kind == "kw" and self.tok.value in words

    def fail(self, expected: str = "", tok: _Token | None = None) -> BadFilter:
        tok = tok or self.tok
        what = "end of filter" if tok.kind == "end" else repr(tok.text)
        detail = f"expected {expected}" if expected else ""
        return BadFilter(self.expr, f"unexpected {what}", tok.pos + 1, detail)

    def expect_kw(self, word: str) -> None:
        if not self.is_kw(word):
            raise self.fail(f"'{word}'")
        self.advance()

    def parse(self) -> Filter:
        node = self.or_expr()
        if self.tok.kind != "end":
            raise self.fail("'and', 'or' or the end of the filter")
        return node

    def or_expr(self) -> Filter:
        operands = [self.and_expr()]
        while self.is_kw("or"):
            self.advance()
            operands.append(self.and_expr())
        return _flatten(Or, operands)

    def and_expr(self) -> Filter:
        operands = [self.unary()]
        while self.is_kw("and"):
            self.advance()
            operands.append(self.unary())
        return _flatten(And, operands)

    def unary(self) -> Filter:
        if self.is_kw("not"):
            self.advance()
            return Not(self.unary())
        if self.tok.kind == "(":
            opening = self.advance()
            node = self.or_expr()
            if self.tok.kind == "end":
                raise BadFilter(self.expr, "unclosed '('", opening.pos + 1, "no matching ')'")
            if self.tok.kind != ")":
                raise self.fail(f"')' to close the '(' at column {opening.pos + 1}")
            self.advance()
            return node
        return self.predicate()

    def predicate(self) -> Filter:
        if self.tok.kind != "name":
            raise self.fail("a field name, 'not' or '('")
        field = self.field(self.advance())
        if self.tok.kind == "op":
            op_tok = self.advance()
            value = self.literal()
            if isinstance(value, bool) and op_tok.value in ORDERING:
                problem = f"true/false compared with {op_tok.text!r}"
                raise BadFilter(self.expr, problem, op_tok.pos + 1, "use =, != or in")
            return Compare(field, op_tok.value, value)
        if self.is_kw("is"):
            self.advance()
            negated = self.is_kw("not")
            if negated:
                self.advance()
            if not self.is_kw("null"):
                raise self.fail("'null' or 'not null' after 'is'")
            self.advance()
            return IsNull(field, negated)
        negated = self.is_kw("not")
        if negated:
            self.advance()
            if not self.is_kw("in", "between"):
                raise self.fail("'in' or 'between' after 'not'")
        if self.is_kw("in"):
            self.advance()
            return In(field, self.literal_list(), negated)
        if self.is_kw("between"):
            start = self.advance()
            low = self.literal()
            self.expect_kw("and")
            high = self.literal()
            kinds = {_kind(low), _kind(high)}
            if len(kinds) != 1 or not kinds <= {"number", "text"}:
                raise BadFilter(self.expr, "bad bounds for 'between'", start.pos + 1, "give two numbers or two strings")
            return Between(field, low, high, negated)
        raise self.fail("an operator: = != < <= > >= in, not in, between, is null")

    def field(self, tok: _Token) -> Field:
        parts, quoted = tok.value
        if not quoted and len(parts) == 1 and parts[0] in COLUMNS:
            return Field(parts, column=parts[0])
        return Field(parts)

    def literal(self) -> Literal:
        tok = self.tok
        if tok.kind in ("num", "str"):
            self.advance()
            return tok.value
        if tok.kind == "kw" and tok.value in ("true", "false"):
            self.advance()
            return tok.value == "true"
        if tok.kind == "kw" and tok.value == "null":
            raise BadFilter(self.expr, "null is not a value", tok.pos + 1, "write 'is null' or 'is not null'")
        raise self.fail("a value: a number, a 'string', true or false")

    def literal_list(self) -> tuple[Literal, ...]:
        if self.tok.kind != "(":
            raise self.fail("'(' to start the list")
        opening = self.advance()
        values = [self.literal()]
        while self.tok.kind == ",":
            self.advance()
            values.append(self.literal())
        if self.tok.kind == "end":
            raise BadFilter(self.expr, "unclosed '('", opening.pos + 1, "no matching ')'")
        if self.tok.kind != ")":
            raise self.fail("',' or ')'")
        self.advance()
        return tuple(values)


def _flatten(cls: type, operands: list[Filter]) -> Filter:
    if len(operands) == 1:
        return operands[0]
    flat: list[Filter] = []
    for o in operands:
        flat.extend(o.operands if isinstance(o, cls) else (o,))
    return cls(tuple(flat))
