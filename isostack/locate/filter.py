"""The span filter expression language: ``duration > 1s && net.peer.ip = 10.244.3.17``.

Grammar (a hand-written recursive-descent parser; it is small enough that a parser generator
would be more code to read than this)::

    expr    := or
    or      := and ( "||" and )*
    and     := unary ( "&&" unary )*
    unary   := "!" unary | "(" expr ")" | compare
    compare := FIELD OP VALUE
    OP      := "=" | "==" | "!=" | ">" | ">=" | "<" | "<=" | "~" | "!~"
    VALUE   := 'single' | "double" quoted | a bare word (no spaces, parentheses, & or |)

Fields are span columns under the OpenTelemetry attribute names of every semantic-convention
generation (``net.peer.ip``, ``net.sock.peer.addr`` and ``network.peer.address`` all mean the
normalised ``peer_addr`` column), plus ``duration``/``self_time``/``hop_gap`` with units (ns, us,
ms, s, m, h; a bare number is nanoseconds). Any other dotted name is looked up in the span's
attributes, then its resource attributes (JSON text columns).

:func:`compile_filter` turns an expression into a SQL ``WHERE`` fragment over the columns the
slow-hop finder exposes and a dict of bound (named) parameters: user values never enter the SQL text.
Errors are :class:`FilterError` naming the 1-based column of the offending token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from isostack.errors import UsageError
from isostack.records import normalise_addr

_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
             "m": 60_000_000_000, "min": 60_000_000_000, "h": 3_600_000_000_000}


@dataclass(frozen=True)
class Field:
    """How one filter name maps onto a column: its SQL expression and value type."""

    sql: str
    type: str  # "duration" (ns, units allowed), "int", "str", "addr" (normalised IP text), "kind", "status"


_ADDR_PEER = Field("peer_addr", "addr")
_ADDR_LOCAL = Field("local_addr", "addr")
_PORT_PEER = Field("peer_port", "int")
_PORT_LOCAL = Field("local_port", "int")

FIELDS: dict[str, Field] = {
    "duration": Field("duration_ns", "duration"),
    "self_time": Field("self_time_ns", "duration"),
    "hop_gap": Field("hop_gap_ns", "duration"),
    "name": Field("name", "str"),
    "operation": Field("name", "str"),
    "span.name": Field("name", "str"),
    "kind": Field("kind", "kind"),
    "span.kind": Field("kind", "kind"),
    "status": Field("status_code", "status"),
    "status.code": Field("status_code", "status"),
    "otel.status_code": Field("status_code", "status"),
    "trace_id": Field("trace_id", "str"),
    "span_id": Field("span_id", "str"),
    "service": Field("service_name", "str"),
    "service.name": Field("service_name", "str"),
    "peer.service": Field("peer_name", "str"),
    "server.address": Field("peer_name", "str"),
    "net.peer.name": Field("peer_name", "str"),
    "host.name": Field("host_name", "str"),
    "container.id": Field("container_id", "str"),
    "process.pid": Field("process_pid", "int"),
    "k8s.namespace.name": Field("k8s_namespace", "str"),
    "k8s.pod.name": Field("k8s_pod_name", "str"),
    "http.status_code": Field("http_status_code", "int"),
    "http.response.status_code": Field("http_status_code", "int"),
    "net.transport": Field("net_transport", "str"),
    "network.transport": Field("net_transport", "str"),
    # every generation of the network coordinates lands in the same normalised columns
    "net.peer.ip": _ADDR_PEER,
    "net.sock.peer.addr": _ADDR_PEER,
    "network.peer.address": _ADDR_PEER,
    "net.peer.port": _PORT_PEER,
    "net.sock.peer.port": _PORT_PEER,
    "network.peer.port": _PORT_PEER,
    "net.host.ip": _ADDR_LOCAL,
    "net.sock.host.addr": _ADDR_LOCAL,
    "network.local.address": _ADDR_LOCAL,
    "net.host.port": _PORT_LOCAL,
    "net.sock.host.port": _PORT_LOCAL,
    "network.local.port": _PORT_LOCAL,
}

_KINDS = {"SERVER", "CLIENT", "INTERNAL", "PRODUCER", "CONSUMER", "UNSPECIFIED"}
_STATUSES = {"UNSET", "OK", "ERROR"}
_OPS = {"=": "=", "==": "=", "!=": "<>", ">": ">", ">=": ">=", "<": "<", "<=": "<=", "~": "~", "!~": "!~"}


class FilterError(UsageError):
    """A filter expression that does not parse or type-check; ``column`` is 1-based."""

    def __init__(self, expression: str, column: int, expected: str) -> None:
        # one line (the CLI's error convention): the expression with a marker at the column
        marked = expression[:column - 1] + "⟨here⟩" + expression[column - 1:]
        super().__init__(f"--where column {column}: {expected}: {marked!r}")
        self.column = column
        self.expected = expected


@dataclass(frozen=True)
class Token:
    kind: str  # "name" "op" "value" "and" "or" "not" "lparen" "rparen" "end"
    text: str
    column: int  # 1-based
    quoted: bool = False


_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
# a bare value may not start with an operator character: "duration >> 1s" is an error, not ">"
_BARE_RE = re.compile(r"[^\s()&|'\"=<>!~][^\s()&|'\"]*")
_OP_RE = re.compile(r"==|!=|>=|<=|!~|=|>|<|~")


def tokenize(expression: str) -> list[Token]:
    """Split an expression into tokens. A value is read only right after an operator."""
    tokens: list[Token] = []
    i, n = 0, len(expression)
    while i < n:
        ch = expression[i]
        if ch.isspace():
            i += 1
            continue
        col = i + 1
        prev = tokens[-1].kind if tokens else ""
        if prev == "op":
            if ch in "'\"":
                end = expression.find(ch, i + 1)
                if end < 0:
                    raise FilterError(expression, col, f"closing {ch} for the string started here")
                tokens.append(Token("value", expression[i + 1:end], col, quoted=True))
                i = end + 1
                continue
            m = _BARE_RE.match(expression, i)
            if not m:
                raise FilterError(expression, col, "a value after the operator")
            tokens.append(Token("value", m.group(), col))
            i = m.end()
            continue
        if expression.startswith("&&", i):
            tokens.append(Token("and", "&&", col))
            i += 2
        elif expression.startswith("||", i):
            tokens.append(Token("or", "||", col))
            i += 2
        elif ch == "(":
            tokens.append(Token("lparen", ch, col))
            i += 1
        elif ch == ")":
            tokens.append(Token("rparen", ch, col))
            i += 1
        elif prev == "name" and (m := _OP_RE.match(expression, i)):
            tokens.append(Token("op", m.group(), col))
            i = m.end()
        elif ch == "!":
            tokens.append(Token("not", ch, col))
            i += 1
        elif m := _NAME_RE.match(expression, i):
            tokens.append(Token("name", m.group(), col))
            i = m.end()
        else:
            raise FilterError(expression, col, f"a field name, '(', '!', '&&' or '||', not {ch!r}")
    tokens.append(Token("end", "", n + 1))
    return tokens


class _Compiler:
    """Recursive descent over the tokens, emitting SQL text and bound parameters together."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.tokens = tokenize(expression)
        self.pos = 0
        self.params: dict[str, object] = {}

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def take(self, kind: str, expected: str) -> Token:
        tok = self.peek()
        if tok.kind != kind:
            found = "the end of the expression" if tok.kind == "end" else repr(tok.text)
            raise FilterError(self.expression, tok.column, f"expected {expected}, found {found}")
        self.pos += 1
        return tok

    def parse(self) -> str:
        sql = self.parse_or()
        self.take("end", "'&&', '||' or the end of the expression")
        return sql

    def parse_or(self) -> str:
        parts = [self.parse_and()]
        while self.peek().kind == "or":
            self.pos += 1
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def parse_and(self) -> str:
        parts = [self.parse_unary()]
        while self.peek().kind == "and":
            self.pos += 1
            parts.append(self.parse_unary())
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def parse_unary(self) -> str:
        tok = self.peek()
        if tok.kind == "not":
            self.pos += 1
            # coalesce: NOT over a NULL (absent attribute) should still select the span
            return f"(NOT coalesce({self.parse_unary()}, FALSE))"
        if tok.kind == "lparen":
            self.pos += 1
            inner = self.parse_or()
            self.take("rparen", "')'")
            return inner
        return self.parse_compare()

    def parse_compare(self) -> str:
        name = self.take("name", "a field name (e.g. duration, service.name, net.peer.ip)")
        op_tok = self.take("op", "an operator (= != > >= < <= ~ !~)")
        value = self.take("value", "a value")
        op = _OPS[op_tok.text]
        field = FIELDS.get(name.text)
        if field is None:
            if "." not in name.text:
                raise FilterError(self.expression, name.column,
                                  f"unknown field {name.text!r}; known: {', '.join(sorted(FIELDS))}, "
                                  "or any dotted attribute name")
            return self.attribute(name.text, op, op_tok, value)
        return self.column(field, op, op_tok, value)

    def bind(self, v: object) -> str:
        # named parameters ($f0, $f1 ...) so the fragment can sit anywhere in a larger statement
        name = f"f{len(self.params)}"
        self.params[name] = v
        return "$" + name

    def regex(self, sql: str, op: str, value: Token) -> str:
        try:
            re.compile(value.text)
        except re.error as exc:
            raise FilterError(self.expression, value.column, f"a valid regular expression ({exc})") from exc
        test = f"regexp_matches(CAST({sql} AS VARCHAR), {self.bind(value.text)})"
        return test if op == "~" else f"(NOT coalesce({test}, FALSE))"

    def column(self, field: Field, op: str, op_tok: Token, value: Token) -> str:
        if op in ("~", "!~"):
            return self.regex(field.sql, op, value)
        if field.type in ("duration", "int"):
            n = parse_duration_ns(value.text) if field.type == "duration" else _parse_int(value.text)
            if n is None:
                want = ("a duration such as 250ms, 1.5s, 800us or 1200000 (ns)" if field.type == "duration"
                        else "an integer")
                raise FilterError(self.expression, value.column, f"{want}, not {value.text!r}")
            return f"({field.sql} {op} {self.bind(n)})"
        text = value.text
        if field.type == "addr":
            text = normalise_addr(text)
        elif field.type == "kind":
            text = text.upper().removeprefix("SPAN_KIND_")
            if text not in _KINDS:
                raise FilterError(self.expression, value.column, f"a span kind ({', '.join(sorted(_KINDS))})")
        elif field.type == "status":
            text = text.upper().removeprefix("STATUS_CODE_")
            if text not in _STATUSES:
                raise FilterError(self.expression, value.column, f"a status ({', '.join(sorted(_STATUSES))})")
        if op not in ("=", "<>"):
            raise FilterError(self.expression, op_tok.column,
                              f"'=', '!=', '~' or '!~' for a text field, not {op_tok.text!r}")
        return f"({field.sql} {op} {self.bind(text)})"

    def attribute(self, key: str, op: str, op_tok: Token, value: Token) -> str:
        # JSON path with the key quoted: attribute keys contain dots, which are not path separators.
        path = self.bind('$."' + key.replace('"', '\\"') + '"')
        sql = f"coalesce(json_extract_string(attributes_json, {path}), json_extract_string(resource_json, {path}))"
        if op in ("~", "!~"):
            return self.regex(sql, op, value)
        if op in ("=", "<>"):
            return f"({sql} {op} {self.bind(value.text)})"
        number = parse_duration_ns(value.text)
        if number is None:
            raise FilterError(self.expression, value.column, f"a number to compare with {op_tok.text!r}")
        return f"(TRY_CAST({sql} AS DOUBLE) {op} {self.bind(float(number))})"


def _parse_int(text: str) -> int | None:
    try:
        return int(text, 0)
    except ValueError:
        return None


_DURATION_RE = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|min|m|h)?$")


def parse_duration_ns(text: str) -> int | None:
    """``1s`` → 1_000_000_000; ``250ms``, ``800us``, ``1.5s``, ``15m``; a bare number is ns. None if not one."""
    m = _DURATION_RE.match(text.strip())
    if not m:
        return None
    number, unit = m.group(1), m.group(2) or "ns"
    return int(round(float(number) * _UNITS_NS[unit]))


def compile_filter(expression: str) -> tuple[str, dict[str, object]]:
    """Compile a filter expression to ``(sql_where_fragment, params)`` with ``$f0``-style named placeholders.

    The fragment refers to span columns (``duration_ns``, ``peer_addr``, ``service_name`` …) and to
    ``self_time_ns`` and ``hop_gap_ns``, which the slow-hop finder computes. Raises
    :class:`FilterError` (a usage error, exit 2) pointing at the offending column.
    """
    if not expression.strip():
        raise FilterError(expression, 1, "a non-empty expression")
    compiler = _Compiler(expression)
    return compiler.parse(), compiler.params
