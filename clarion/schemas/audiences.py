r"""Audiences: which of a client's users a campaign targets.

An audience is exactly one of:

- `{"all": true}`: every user of the client;
- `{"user_ids": ["u1", "u2", ...]}`: those users (at most 10,000 ids per request);
- `{"where": "<expression>"}`: the users for whom the expression is true.

The expression is parsed by the hand-written tokenizer and recursive-descent parser below
(user text is never given to eval, exec or ast) into a predicate over a UserProfile::

    expression := or
    or         := and ("or" and)*
    and        := unary ("and" unary)*
    unary      := "not" unary | primary
    primary    := "(" expression ")"
                | "has" attribute
                | field op literal
                | field "in" "[" [literal ("," literal)*] "]"
                | literal "in" "tags"
                | literal "in" attribute
    field      := "locale" | "timezone" | attribute
    attribute  := "attributes" ("." name | "[" string "]")+
    op         := "==" | "!=" | "<" | "<=" | ">" | ">="
    literal    := string | number | "true" | "false"
    string     := "..." or '...', with the escapes \\ \" \' \n \t \r \uXXXX
    number     := -?[0-9]+(.[0-9]+)?([eE][+-]?[0-9]+)?
    name       := a letter or _, then letters, digits, _ or -

`not` binds tighter than `and`, which binds tighter than `or`; keywords are lower case.
Examples::

    attributes.plan == "pro" and "beta" in tags
    locale in ["fr", "fr-CA"] or attributes.address.country == "FR"
    has attributes.last_order and attributes.orders >= 3 and not attributes.churned == true
    attributes["signup-source"] != 'ads'

Meaning: `attributes.a.b` is the value at key "b" of the object at key "a" (use the
bracket form for keys with other characters). Comparisons never mix types: a number is
only equal to or ordered against a number, a string against a string (by code point), a
boolean is only equal to a boolean; any other pair is not equal and not ordered. A missing
attribute (or a null) is equal to nothing, so `==`, `<`, `<=`, `>`, `>=` and `in [...]`
are false for it and `!=` is true; `has attributes.x` is true when the key is present,
whatever its value. `"x" in tags` is true when the user has tag x; `"x" in attributes.y`
when attribute y is a list holding x.

Limits: an expression has at most MAX_EXPRESSION_CHARS characters and nests parentheses
and `not` at most MAX_DEPTH deep. Anything else is an ExpressionError (a ValueError)
carrying the 0-based character position and a message; the API answers it with a 422
naming the field `audience.where`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec

from clarion.schemas.records import UserProfile
from clarion.schemas.validation import ID_ERROR, ValidationFailed, is_id

MAX_EXPRESSION_CHARS = 2000
MAX_DEPTH = 32
MAX_USER_IDS = 10_000

Predicate = Callable[[UserProfile], bool]
Literal = str | int | float | bool

_MISSING = object()
_WORD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_NUMBER_RE = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">")
_PUNCTUATION = "()[],."
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r"}


class ExpressionError(ValueError):
    """An audience expression that does not parse: where (0-based character position) and why."""

    field = "audience.where"

    def __init__(self, position: int, message: str) -> None:
        super().__init__(f"{message} (at position {position})")
        self.position = position
        self.message = message


class Audience(msgspec.Struct, kw_only=True):
    """Exactly one of: all of the client's users, a list of user ids, a `where` expression."""

    all: bool = False
    user_ids: list[str] | None = None
    where: str | None = None

    def __post_init__(self) -> None:
        chosen = [self.all, self.user_ids is not None, self.where is not None]
        if sum(chosen) != 1:
            raise ValueError("an audience is exactly one of all (true), user_ids or where")
        if self.user_ids is not None and not 1 <= len(self.user_ids) <= MAX_USER_IDS:
            raise ValueError(f"user_ids must list 1 to {MAX_USER_IDS} user ids")
        if self.where is not None and len(self.where) > MAX_EXPRESSION_CHARS:
            raise ValueError(f"where is over {MAX_EXPRESSION_CHARS} characters")


def audience_from_body(value: Any) -> Audience:
    """Check the `audience` of a request body.

    ValidationFailed (answered 400) names `audience`, `audience.user_ids` or `audience.where`
    for a wrong shape; an ExpressionError (answer 422, field `audience.where`) for a `where`
    that does not parse.
    """
    if not isinstance(value, dict):
        raise ValidationFailed([{"field": "audience", "error": _SHAPE}])
    # null leaves a form out, and so does "all": false; nothing else does (0 == False, but 0 is not false)
    chosen = [name for name in ("all", "user_ids", "where") if value.get(name) is not None and
              not (name == "all" and value[name] is False)]  # fmt: skip
    if len(chosen) != 1 or (chosen == ["all"] and value["all"] is not True):
        raise ValidationFailed([{"field": "audience", "error": _SHAPE}])
    if unknown := sorted(k for k in value if k not in ("all", "user_ids", "where"))[:5]:
        raise ValidationFailed([{"field": "audience", "error": f"unknown field(s) {unknown}; {_SHAPE}"}])
    if chosen == ["all"]:
        return Audience(all=True)
    if chosen == ["user_ids"]:
        ids = value["user_ids"]
        if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_USER_IDS:
            raise ValidationFailed([{"field": "audience.user_ids", "error": f"must list 1 to {MAX_USER_IDS} ids"}])
        if not all(is_id(i) for i in ids):
            raise ValidationFailed([{"field": "audience.user_ids", "error": f"each id {ID_ERROR}"}])
        return Audience(user_ids=list(dict.fromkeys(ids)))
    where = value["where"]
    if not isinstance(where, str):
        raise ValidationFailed([{"field": "audience.where", "error": "must be a string (an expression)"}])
    parse_where(where)
    return Audience(where=where)


_SHAPE = 'must be exactly one of {"all": true}, {"user_ids": [...]} or {"where": "<expression>"}'


def compile_audience(audience: Audience, client_id: str | None = None) -> Predicate:
    """A predicate that is true for the users in `audience`.

    With `client_id`, it is also false for every other client's users (a users table holds
    every client's users; an audience is always one client's).
    """
    if audience.all:
        chosen: Predicate = _always
    elif audience.user_ids is not None:
        ids = frozenset(audience.user_ids)

        def chosen(user: UserProfile) -> bool:
            return user.user_id in ids

    else:
        chosen = parse_where(audience.where or "")
    if client_id is None:
        return chosen

    def of_client(user: UserProfile) -> bool:
        return user.client_id == client_id and chosen(user)

    return of_client


def _always(user: UserProfile) -> bool:
    return True


def parse_where(text: str) -> Predicate:
    """Parse an expression (see the module's grammar) into a predicate; ExpressionError when it does not parse."""
    if not isinstance(text, str):
        raise ExpressionError(0, "the expression must be a string")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(MAX_EXPRESSION_CHARS, f"the expression is over {MAX_EXPRESSION_CHARS} characters")
    return _Parser(_tokenize(text)).parse()


# -- tokens ------------------------------------------------------------------------------------------


class _Token(msgspec.Struct, frozen=True):
    kind: str  # "word", "string", "number", "op", one of _PUNCTUATION, or "end"
    text: str  # as written (words, operators, punctuation)
    pos: int
    value: Literal | None = None  # strings and numbers: the literal's value


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
        elif ch in _PUNCTUATION:
            tokens.append(_Token(ch, ch, i))
            i += 1
        elif ch in "\"'":
            value, end = _string(text, i)
            tokens.append(_Token("string", text[i:end], i, value))
            i = end
        elif ch in "-0123456789":
            match = _NUMBER_RE.match(text, i)
            if match is None:
                raise ExpressionError(i, "unexpected '-': a number is written -12 or -1.5")
            written = match.group()
            value = float(written) if match.group(1) or match.group(2) else int(written)
            tokens.append(_Token("number", written, i, value))
            i = match.end()
        elif match := _WORD_RE.match(text, i):
            tokens.append(_Token("word", match.group(), i))
            i = match.end()
        elif op := next((op for op in _OPERATORS if text.startswith(op, i)), None):
            tokens.append(_Token("op", op, i))
            i += len(op)
        elif ch == "=":
            raise ExpressionError(i, "unexpected '=': compare with ==")
        elif ch == "!":
            raise ExpressionError(i, "unexpected '!': write not, or != to compare")
        else:
            raise ExpressionError(i, f"unexpected character {ch!r}")
    tokens.append(_Token("end", "", n))
    return tokens


def _string(text: str, start: int) -> tuple[str, int]:
    """The string literal opening at `start`: its value, and the index after its closing quote."""
    quote, i, out = text[start], start + 1, []
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        escape = text[i + 1 : i + 2]
        if escape in _ESCAPES:
            out.append(_ESCAPES[escape])
            i += 2
        elif escape == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2 : i + 6]):
            out.append(chr(int(text[i + 2 : i + 6], 16)))
            i += 6
        else:
            raise ExpressionError(i, "unknown escape in a string: use \\\\ \\\" \\' \\n \\t \\r or \\uXXXX")
    raise ExpressionError(start, "a string is not closed")


# -- parser ------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.i = 0
        self.depth = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.i]

    def next(self) -> _Token:
        token = self.tokens[self.i]
        if token.kind != "end":
            self.i += 1
        return token

    def at(self, kind: str, text: str | None = None) -> bool:
        return self.token.kind == kind and (text is None or self.token.text == text)

    def expect(self, kind: str, what: str) -> _Token:
        if not self.at(kind):
            raise self.error(f"expected {what}")
        return self.next()

    def error(self, message: str, token: _Token | None = None) -> ExpressionError:
        token = token or self.token
        found = "the end of the expression" if token.kind == "end" else repr(token.text[:40])
        return ExpressionError(token.pos, f"{message}, found {found}")

    def parse(self) -> Predicate:
        if self.at("end"):
            raise self.error("expected an expression")
        predicate = self.or_()
        if not self.at("end"):
            raise self.error("expected and, or, or the end of the expression")
        return predicate

    def or_(self) -> Predicate:
        terms = [self.and_()]
        while self.at("word", "or"):
            self.next()
            terms.append(self.and_())
        if len(terms) == 1:
            return terms[0]
        return lambda user: any(term(user) for term in terms)

    def and_(self) -> Predicate:
        terms = [self.unary()]
        while self.at("word", "and"):
            self.next()
            terms.append(self.unary())
        if len(terms) == 1:
            return terms[0]
        return lambda user: all(term(user) for term in terms)

    def unary(self) -> Predicate:
        if self.at("word", "not"):
            self.deeper()
            self.next()
            inner = self.unary()
            self.depth -= 1
            return lambda user: not inner(user)
        return self.primary()

    def deeper(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"nested deeper than {MAX_DEPTH} (parentheses and not)")

    def primary(self) -> Predicate:
        token = self.token
        if token.kind == "(":
            self.deeper()
            self.next()
            inner = self.or_()
            self.expect(")", "')'")
            self.depth -= 1
            return inner
        if token.kind == "word" and token.text == "has":
            self.next()
            get = self.attribute()
            return lambda user: get(user) is not _MISSING
        if token.kind in ("string", "number") or (token.kind == "word" and token.text in ("true", "false")):
            return self.membership()
        if token.kind == "word" and token.text in ("locale", "timezone", "attributes"):
            return self.comparison()
        if token.kind == "word" and token.text == "tags":
            raise self.error('tags can only be tested as "tag" in tags')
        raise self.error("expected a test such as attributes.plan == \"pro\", \"tag\" in tags, has, not or (")

    def literal(self) -> Literal:
        token = self.token
        if token.kind in ("string", "number"):
            self.next()
            assert token.value is not None
            return token.value
        if token.kind == "word" and token.text in ("true", "false"):
            self.next()
            return token.text == "true"
        raise self.error("expected a string, number, true or false")

    def membership(self) -> Predicate:
        """literal in tags | literal in attributes...."""
        value = self.literal()
        if not self.at("word", "in"):
            raise self.error("expected in after a literal (a literal goes on the right of a comparison)")
        self.next()
        if self.at("word", "tags"):
            if not isinstance(value, str):
                raise self.error("tags are strings: test a string in tags", self.tokens[self.i - 2])
            self.next()
            return lambda user: value in user.tags
        if not self.at("word", "attributes"):
            raise self.error("expected tags or attributes.<name> after in")
        get = self.attribute()

        def holds(user: UserProfile) -> bool:
            found = get(user)
            return isinstance(found, list) and any(_equal(item, value) for item in found)

        return holds

    def comparison(self) -> Predicate:
        """field op literal | field in [literal, ...]."""
        get = self.field()
        if self.at("word", "in"):
            self.next()
            self.expect("[", "'[' (a list of literals)")
            values: list[Literal] = []
            if not self.at("]"):
                values.append(self.literal())
                while self.at(","):
                    self.next()
                    values.append(self.literal())
            self.expect("]", "',' or ']'")
            return lambda user: (found := get(user)) is not _MISSING and any(_equal(found, v) for v in values)
        if not self.at("op"):
            raise self.error("expected ==, !=, <, <=, >, >= or in")
        op = self.next().text
        written = self.token
        value = self.literal()
        if op not in ("==", "!=") and isinstance(value, bool):
            raise ExpressionError(written.pos, f"booleans are not ordered: compare them with == or !=, not {op}")
        return _compare(get, op, value)

    def field(self) -> Callable[[UserProfile], Any]:
        token = self.token
        if token.kind == "word" and token.text == "locale":
            self.next()
            return lambda user: user.locale
        if token.kind == "word" and token.text == "timezone":
            self.next()
            return lambda user: user.timezone
        return self.attribute()

    def attribute(self) -> Callable[[UserProfile], Any]:
        """attributes.a.b or attributes["a"]: a getter returning the value or _MISSING."""
        if not self.at("word", "attributes"):
            raise self.error("expected attributes.<name>")
        self.next()
        path: list[str] = []
        while self.at(".") or self.at("["):
            if self.next().kind == ".":
                path.append(self.expect("word", "an attribute name after '.'").text)
            else:
                key = self.expect("string", 'a quoted attribute name, as in attributes["name"]')
                path.append(str(key.value))
                self.expect("]", "']'")
        if not path:
            raise self.error("expected .<name> after attributes")
        if len(path) == 1:
            name = path[0]
            return lambda user: user.attributes.get(name, _MISSING)

        def get(user: UserProfile) -> Any:
            value: Any = user.attributes
            for step in path:
                if not isinstance(value, dict) or step not in value:
                    return _MISSING
                value = value[step]
            return value

        return get


def _kind(value: Any) -> str | None:
    """The type a comparison accepts: "bool", "number" or "str"; None for anything else (null, lists, objects)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "str"
    return None


def _equal(found: Any, value: Literal) -> bool:
    kind = _kind(found)
    return kind is not None and kind == _kind(value) and found == value


def _compare(get: Callable[[UserProfile], Any], op: str, value: Literal) -> Predicate:
    if op == "==":
        return lambda user: _equal(get(user), value)
    if op == "!=":
        return lambda user: not _equal(get(user), value)
    kind = _kind(value)
    ordered = {"<": _lt, "<=": _le, ">": _gt, ">=": _ge}[op]

    def compare(user: UserProfile) -> bool:
        found = get(user)
        return _kind(found) == kind and ordered(found, value)

    return compare


def _lt(a: Any, b: Any) -> bool:
    return bool(a < b)


def _le(a: Any, b: Any) -> bool:
    return bool(a <= b)


def _gt(a: Any, b: Any) -> bool:
    return bool(a > b)


def _ge(a: Any, b: Any) -> bool:
    return bool(a >= b)
