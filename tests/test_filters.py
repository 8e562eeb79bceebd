"""The metadata filter language: parsing, errors, SQL safety, and SQL == Python on random documents."""

from __future__ import annotations

import json
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertsearch.errors import BertsearchError
from bertsearch.filters import (
    HINT,
    And,
    BadFilter,
    Between,
    Compare,
    Field,
    Filter,
    In,
    IsNull,
    Not,
    Or,
    parse,
)
from bertsearch.store.migrations import MIGRATIONS


def make_db(docs: list[dict]) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.executescript(MIGRATIONS[0])
    conn.executemany(
        "INSERT INTO documents(id, title, text, metadata, hash, updated_at) VALUES (?, ?, '', ?, '', ?)",
        [
            (d["id"], d.get("title", ""), json.dumps(d["metadata"], ensure_ascii=False), d.get("updated_at", ""))
            for d in docs
        ],
    )
    return conn


def sql_ids(conn: sqlite3.Connection, f: Filter) -> set[str]:
    where, params = f.sql()
    return {r[0] for r in conn.execute(f"SELECT id FROM documents WHERE {where}", params)}


def py_ids(docs: list[dict], f: Filter) -> set[str]:
    return {
        d["id"] for d in docs
        if f.matches(d["metadata"], id=d["id"], title=d.get("title", ""), updated_at=d.get("updated_at", ""))
    }


def doc(id: str, title: str = "", updated_at: str = "2024-01-01T00:00:00", **metadata) -> dict:
    return {"id": id, "title": title, "updated_at": updated_at, "metadata": metadata}


DOCS = [
    doc("d1", "Aurora", "2019-05-01", year=2019, lang="en", topic="Science", rating=4.8, draft=False,
        author="Ann"),
    doc("d2", "Piano", "2021-03-15", year=2021, lang="de", topic="Arts", rating=3, draft=True, tags=["x"]),
    doc("d3", "Volcano", "2020-06-30", year=1850, lang="en", topic="History", author=None),
    doc("d4", "Penicillin", "2022-01-01", year="2020", lang="EN", meta={"author": "Fleming", "n": 2}),
    doc("doc-17", "Aurora", "2023-11-11", source="old-feed", date="2020-07-04",
        **{"first name": "Bo", "meta.author": "dot"}),
    {"id": "d6", "title": "x' OR 1=1 --", "updated_at": "2020-01-01",
     "metadata": {'x") OR 1=1 --': 1, "title": "meta-title", "a\\b": "back", 'q"': {"x": 5}}},
]


@pytest.fixture(scope="module")
def conn():
    c = make_db(DOCS)
    yield c
    c.close()


def check(conn, expr: str) -> set[str]:
    """Parse, check SQL and Python agree, check the normalised text parses to the same filter; give the ids."""
    f = parse(expr)
    assert sql_ids(conn, f) == py_ids(DOCS, f), expr
    again = parse(str(f))
    assert again == f and str(again) == str(f)
    return py_ids(DOCS, f)


# ------------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    "expr, tree",
    [
        ("year >= 2020", Compare(Field(("year",)), ">=", 2020)),
        ("lang == 'en'", Compare(Field(("lang",)), "=", "en")),
        ('title <> "Aurora"', Compare(Field(("title",), "title"), "!=", "Aurora")),
        ("rating > -4.5", Compare(Field(("rating",)), ">", -4.5)),
        ("x = 1e3", Compare(Field(("x",)), "=", 1000.0)),
        ("draft = FALSE", Compare(Field(("draft",)), "=", False)),
        ("topic IN ('Arts', 2, true)", In(Field(("topic",)), ("Arts", 2, True))),
        ("topic not in ('Arts')", In(Field(("topic",)), ("Arts",), negated=True)),
        ("date between '2020-01-01' and '2021-06-30'", Between(Field(("date",)), "2020-01-01", "2021-06-30")),
        ("n NOT BETWEEN 1 AND 2.5", Between(Field(("n",)), 1, 2.5, negated=True)),
        ("author is null", IsNull(Field(("author",)))),
        ("tags Is Not Null", IsNull(Field(("tags",)), negated=True)),
        ("meta.author = 'x'", Compare(Field(("meta", "author")), "=", "x")),
        ("`first name` = 'Bo'", Compare(Field(("first name",)), "=", "Bo")),
        ("`a.b`.c-d.`e``f` = 1", Compare(Field(("a.b", "c-d", "e`f")), "=", 1)),
        ("`title` = 't'", Compare(Field(("title",)), "=", "t")),
        ("`and` = 1", Compare(Field(("and",)), "=", 1)),
        ("id.x = 1", Compare(Field(("id", "x")), "=", 1)),
        ("s = 'it''s'", Compare(Field(("s",)), "=", "it's")),
        ('s = "say \\"hi\\"\\n"', Compare(Field(("s",)), "=", 'say "hi"\n')),
        ("s = 'a\\\\b'", Compare(Field(("s",)), "=", "a\\b")),
    ],
)
def test_parse_constructs(expr, tree):
    f = parse(expr)
    assert f == tree
    assert parse(str(f)) == f


def test_precedence():
    a, b, c = (Compare(Field((k,)), "=", 1) for k in "abc")
    assert parse("a = 1 or b = 1 and c = 1") == Or((a, And((b, c))))
    assert parse("(a = 1 or b = 1) and c = 1") == And((Or((a, b)), c))
    assert parse("not a = 1 and b = 1") == And((Not(a), b))
    assert parse("not (a = 1 and b = 1)") == Not(And((a, b)))
    assert parse("not not a = 1") == Not(Not(a))
    assert parse("a = 1 and (b = 1 and c = 1)") == And((a, b, c))  # flattened
    assert str(parse("(a = 1 or b = 1) and not (c = 1 or a = 1)")) == "(a = 1 or b = 1) and not (c = 1 or a = 1)"
    assert str(parse("((a = 1))")) == "a = 1"


def test_normalised_text():
    f = parse("NOT (Topic IN ('Arts',\"History\") OR year<1900)  AND draft==TRUE and x <> 'it''s'")
    assert str(f) == "not (Topic in ('Arts', 'History') or year < 1900) and draft = true and x != 'it''s'"
    assert parse(str(f)) == f


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "expr, problem, column",
    [
        ("year >> 3", "unexpected '>'", 7),
        ("year = 3 >", "unexpected '>'", 10),
        ("year ! 3", "unexpected '!'", 6),
        ("x @ 3", "unexpected '@'", 3),
        ("lang = 'en", "unclosed string", 8),
        ('lang = "en', "unclosed string", 8),
        ("`lang = 'en'", "unclosed `name`", 1),
        ("(year = 3 or lang = 'en'", "unclosed '('", 1),
        ("x in (1, 2", "unclosed '('", 6),
        ("(a = 1 b", "unexpected 'b'", 8),
        ("author = null", "null is not a value", 10),
        ("x in (1, null)", "null is not a value", 10),
        ("year = 3 lang", "unexpected 'lang'", 10),
        ("year = 3 )", "unexpected ')'", 10),
        ("year = 3 and", "unexpected end of filter", 13),
        ("year", "unexpected end of filter", 5),
        ("= 3", "unexpected '='", 1),
        ("x is 3", "unexpected '3'", 6),
        ("x < true", "true/false compared with '<'", 3),
        ("x between 1 and 'z'", "bad bounds for 'between'", 3),
        ("x = 'a\\q'", "unknown escape", 7),
        ("x = 99999999999999999999", "integer 99999999999999999999 does not fit in 64 bits", 5),
        ("a..b = 1", "expected a name after '.'", 3),
        ("x in ()", "unexpected ')'", 7),
    ],
)
def test_errors_point_at_the_column(expr, problem, column):
    with pytest.raises(BadFilter) as info:
        parse(expr)
    message = str(info.value)
    assert isinstance(info.value, BertsearchError)
    assert message.startswith(f'bad filter "{expr}": {problem}')
    assert f"at column {column}" in message
    assert info.value.column == column
    assert message.endswith(HINT) and "\n" not in message


def test_error_message_matches_the_documented_example():
    with pytest.raises(BadFilter, match=r'^bad filter "year >> 3": unexpected \'>\' at column 7\b'):
        parse("year >> 3")


@pytest.mark.parametrize("expr", ["", "   ", "\n\t"])
def test_empty_expression(expr):
    with pytest.raises(BadFilter, match="empty"):
        parse(expr)


def test_multiline_expression_error_stays_on_one_line():
    with pytest.raises(BadFilter) as info:
        parse("year = 3\nand >")
    assert "\n" not in str(info.value) and "at column 14" in str(info.value)


# ------------------------------------------------------------------------------------ semantics, SQL


@pytest.mark.parametrize(
    "expr, ids",
    [
        ("year >= 2020 and lang = 'en'", set()),
        ("year >= 2020", {"d2"}),
        ("year >= 2019 and lang = 'en'", {"d1"}),
        ("year = '2020'", {"d4"}),
        ("year = 2020", set()),
        ("source = 'old-feed'", {"doc-17"}),
        ("not (topic in ('Arts', 'History') or year < 1900)", {"d1", "d4", "doc-17", "d6"}),
        ("topic in ('Arts', 'History')", {"d2", "d3"}),
        ("topic not in ('Arts', 'History')", {"d1"}),
        ("date between '2020-01-01' and '2021-06-30'", {"doc-17"}),
        ("updated_at between '2020-01-01' and '2021-06-30'", {"d2", "d3", "d6"}),
        ("updated_at < '2020'", {"d1"}),
        ("author is null", {"d2", "d3", "d4", "doc-17", "d6"}),
        ("author is not null", {"d1"}),
        ("tags is not null", {"d2"}),
        ("id = 'doc-17'", {"doc-17"}),
        ("id = 17", set()),
        ("id in ('d1', 2, 'd3')", {"d1", "d3"}),
        ("id not in ('d1', 2)", {"d2", "d3", "d4", "doc-17", "d6"}),
        ("id between 1 and 5", set()),
        ("id is null", set()),
        ("id is not null", {d["id"] for d in DOCS}),
        ('title != "Aurora"', {"d2", "d3", "d4", "d6"}),
        ("`title` = 'meta-title'", {"d6"}),
        ("rating > 4.5 and draft = false", {"d1"}),
        ("rating >= 3", {"d1", "d2"}),
        ("rating = 3.0", {"d2"}),
        ("draft = true", {"d2"}),
        ("draft != true", {"d1"}),
        ("draft != 1", set()),
        ("draft in (true, false)", {"d1", "d2"}),
        ("draft not in (true)", {"d1"}),
        ("lang != 'en'", {"d2", "d4"}),
        ("not lang = 'en'", {"d2", "d4", "doc-17", "d6"}),
        ("not (year > 3)", {"d4", "doc-17", "d6"}),
        ("year not between 1900 and 2020", {"d2", "d3"}),
        ("lang > 'E'", {"d1", "d2", "d3", "d4"}),
        ("lang < 'e'", {"d2", "d4"}),
        ("tags = 'x'", set()),
        ("tags is null", {"d1", "d3", "d4", "doc-17", "d6"}),
    ],
)
def test_semantics_sql_and_python_agree(conn, expr, ids):
    assert check(conn, expr) == ids


@pytest.mark.parametrize(
    "expr, ids",
    [
        ("meta.author = 'Fleming'", {"d4"}),
        ("meta.n between 1 and 2", {"d4"}),
        ("meta.author is not null", {"d4"}),
        ("meta.missing is null", {d["id"] for d in DOCS}),
        ("`meta.author` = 'dot'", {"doc-17"}),
        ("`meta`.`author` = 'Fleming'", {"d4"}),
        ("meta is not null", {"d4"}),
        ("meta = 'Fleming'", set()),
        ("year.x is null", {d["id"] for d in DOCS}),  # a path through a scalar is missing
        ("`first name` = 'Bo'", {"doc-17"}),
        ("`a\\b` = 'back'", {"d6"}),
        ('`q"`.x = 5', {"d6"}),
        ('`q"`.x.y is null', {d["id"] for d in DOCS}),
        ('`q"` is not null', {"d6"}),
        ('not `q"`.x < 5', {d["id"] for d in DOCS}),
    ],
)
def test_nested_and_odd_keys(conn, expr, ids):
    assert check(conn, expr) == ids


# ---------------------------------------------------------------------------------------- injection


@pytest.mark.parametrize(
    "expr, ids",
    [
        ("title = 'x'' OR 1=1 --'", {"d6"}),
        ("title = 'x'' OR 1=1 -'", set()),
        ("title = \"' OR 1=1 --\"", set()),
        ("lang = 'en'' OR ''1''=''1'", set()),
        ("lang = '); DROP TABLE documents; --'", set()),
        ("lang in ('x', '1) OR (1=1')", set()),
        ('`x") OR 1=1 --` = 1', {"d6"}),
        ('`x") OR 1=1 --` is null', {"d1", "d2", "d3", "d4", "doc-17"}),
        ('`") OR 1=1 --` = 1', set()),
        ("`$` = 1 or `$.lang` = 'en' or `lang[0]` is not null or `*` = 1", set()),
        ("`'); DROP TABLE documents; --` is null", {d["id"] for d in DOCS}),
        ("`\\\"` is null", {d["id"] for d in DOCS}),
    ],
)
def test_injection_is_inert(conn, expr, ids):
    assert check(conn, expr) == ids
    f = parse(expr)
    text, params = f.sql()
    for value in params:
        if isinstance(value, str) and ("OR" in value or "DROP" in value):
            assert value not in text
    assert "DROP" not in text and "1=1" not in text
    assert conn.execute("SELECT count(*) FROM documents").fetchone()[0] == len(DOCS)


def test_sql_shape_is_parameterised():
    text, params = parse("year >= 2020 and lang = 'en'").sql()
    assert "2020" not in text and "en" not in text.replace("THEN", "").replace("END", "")
    assert params == ['$."year"', '$."year"', 2020, '$."lang"', '$."lang"', "en"]
    assert text.count("?") == len(params)


def test_sql_qualified_table():
    f = parse("id = 'a' and year > 1")
    text, params = f.sql(table="d")
    assert "d.id" in text and "d.metadata" in text
    conn = make_db([doc("a", year=2), doc("b", year=2)])
    rows = conn.execute(f"SELECT d.id FROM documents d JOIN documents e ON e.rowid = d.rowid WHERE {text}", params)
    assert [r[0] for r in rows] == ["a"]
    with pytest.raises(ValueError):
        f.sql(table="d; DROP TABLE x")


def test_predicates_are_never_sql_null(conn):
    exprs = ["year > 3", "x in (1, 'a')", "x is null", "id = 1", "meta.n between 0 and 9", '`q"`.x = 5', "draft = true"]
    for expr in exprs:
        text, params = parse(expr).sql()
        values = [r[0] for r in conn.execute(f"SELECT {text} FROM documents", params)]
        assert set(values) <= {0, 1}, expr


# ------------------------------------------------------------------------------------------ property

KEYS = ["a", "b", "c"]
ALPHABET = "abAB é'\"\\%_-"
numbers = st.one_of(st.integers(-4, 4), st.integers(-12, 12).map(lambda i: i / 4))
strings = st.text(ALPHABET, max_size=3)
scalars = st.one_of(numbers, strings, st.booleans(), st.none())


@st.composite
def metadata(draw) -> dict:
    md = {}
    for key in KEYS:
        if draw(st.booleans()):
            md[key] = draw(scalars)
    choice = draw(st.integers(0, 3))
    if choice == 1:
        md["m"] = {"x": draw(scalars)} if draw(st.booleans()) else {}
    elif choice == 2:
        md["m"] = draw(scalars)
    if draw(st.integers(0, 4)) == 0:
        md['q"'] = {"x": draw(scalars)}
    return md


@st.composite
def documents(draw) -> list[dict]:
    n = draw(st.integers(0, 8))
    return [
        {
            "id": f"{i}{draw(strings)}",
            "title": draw(strings),
            "updated_at": draw(st.sampled_from(["2020-01-01", "2021-06-30", "2024"])),
            "metadata": draw(metadata()),
        }
        for i in range(n)
    ]


fields = st.sampled_from(
    [Field((k,)) for k in KEYS]
    + [Field(("m", "x")), Field(("m",)), Field(("z",)), Field(('q"', "x")), Field(("title",))]
    + [Field((c,), c) for c in ("id", "title", "updated_at")]
)
literals = st.one_of(numbers, strings, st.booleans())


@st.composite
def leaves(draw) -> Filter:
    field = draw(fields)
    kind = draw(st.integers(0, 3))
    if kind == 0:
        value = draw(literals)
        ops = ["=", "!="] if isinstance(value, bool) else ["=", "!=", "<", "<=", ">", ">="]
        return Compare(field, draw(st.sampled_from(ops)), value)
    if kind == 1:
        return In(field, tuple(draw(st.lists(literals, min_size=1, max_size=3))), draw(st.booleans()))
    if kind == 2:
        bounds = draw(st.one_of(st.tuples(numbers, numbers), st.tuples(strings, strings)))
        return Between(field, *bounds, negated=draw(st.booleans()))
    return IsNull(field, draw(st.booleans()))


filters = st.recursive(
    leaves(),
    lambda inner: st.one_of(
        inner.map(Not),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs))),
    ),
    max_leaves=6,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=documents(), tree=filters)
def test_sql_equals_python_oracle(docs, tree):
    text = str(tree)
    f = parse(text)
    assert str(parse(str(f))) == str(f)
    conn = make_db(docs)
    try:
        expected = py_ids(docs, f)
        assert expected == py_ids(docs, tree)  # the text says what the tree says
        assert sql_ids(conn, f) == expected, (text, f.sql())
    finally:
        conn.close()


def test_filters_that_match_nothing_and_everything():
    docs = [doc("1", a=1), doc("2", a="x"), doc("3")]
    conn = make_db(docs)
    for expr, ids in [("a = 2", set()), ("a > 1 and a < 1", set()), ("a != 1 and a != 'x'", set()),
                      ("a is null or a is not null", {"1", "2", "3"}), ("not (a = 1 and a = 'x')", {"1", "2", "3"})]:
        f = parse(expr)
        assert sql_ids(conn, f) == py_ids(docs, f) == ids, expr
