"""Every request body and query string of the API, declared once.

The handlers parse requests with these declarations (each failure a 422 naming the field) and
`api.openapi` builds the document's request schemas and query parameters from the same objects,
so a limit or a rule cannot differ between the two. `Shapes(config)` builds them with the
server's limits at start; the document uses `Config()`'s defaults.

Patterns are written once in the common subset of Python's `re` and ECMA-262 (what JSON Schema
uses): character classes with `\\uXXXX` escapes.

Adding a call: declare its `Body` / `Query` on `Shapes`, parse with `shapes.x.read(request)` in
the handler (or wrap it in `bodyless` when it takes no body), and pass `body=` / `query=` to its
operation in `api.openapi`. The websocket `send` frame reuses `new_message`'s fields.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from chat_trio.api import validate
from chat_trio.config import Config
from chat_trio.http.router import Handler
from chat_trio.http.types import Request, Response
from chat_trio.store.records import JSON

# Characters no text may contain: C0 controls other than \t and \n, DEL and C1.
CONTROL = "\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f"
# What room names and topics refuse besides: line breaks (\n, U+2028, U+2029; the others are
# controls), zero-width characters and bidi marks, embeddings, overrides and isolates.
LINE_BREAKS = "\\u000a\\u2028\\u2029"
ZERO_WIDTH = "\\u200b-\\u200d\\u2060\\ufeff"
BIDI = "\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069"
TXN_ID = "[!-~]*"  # printable ASCII

# Characters that render as nothing although Unicode does not class them as spaces or formats.
_FILLERS = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u180e\u2800\u3164\uffa0")
_INVISIBLE_CATEGORIES = frozenset(("Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me", "Cn", "Co"))


def visible(value: str) -> bool:
    """Whether `value` shows anything: a name made only of spaces, format characters, combining
    marks or fillers (U+3164 and friends) is blank."""
    return any(ch not in _FILLERS and unicodedata.category(ch) not in _INVISIBLE_CATEGORIES
               for ch in value)


# -- fields of a JSON body -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Str:
    """A string field. `refuse` is a character class (see the module doc) the value must not
    contain, with the reason given when it does; `pattern` one the whole value must match.
    `nfc` stores the value NFC-normalised (its length is checked before and after); `nonblank`
    refuses a value that shows nothing (`visible`)."""

    name: str
    max_len: int
    min_len: int = 1
    pattern: str | None = None
    refuse: tuple[str, str] | None = None
    required: bool = True
    nullable: bool = False
    nfc: bool = False
    nonblank: bool = False
    description: str = ""

    def parse(self, body: JSON) -> str | None:
        value = body.get(self.name)
        if value is None:
            if self.required:
                raise validate.invalid(self.name, "is required")
            return None
        if not isinstance(value, str):
            raise validate.invalid(self.name, "must be a string")
        value = self._length(value)
        if self.nfc:
            value = self._length(unicodedata.normalize("NFC", value))
        if self.refuse is not None and re.search(f"[{self.refuse[0]}]", value):
            raise validate.invalid(self.name, f"must not contain {self.refuse[1]}")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise validate.invalid(self.name, f"must match ^{self.pattern}$")
        if self.nonblank and not visible(value):
            raise validate.invalid(self.name, "must not be blank")
        return value

    def _length(self, value: str) -> str:
        if not self.min_len <= len(value) <= self.max_len:
            raise validate.invalid(self.name, f"must be {self.min_len} to {self.max_len} characters")
        return value

    def schema(self) -> JSON:
        schema: JSON = {"type": ["string", "null"] if self.nullable else "string",
                        "minLength": self.min_len, "maxLength": self.max_len}
        pattern = self.pattern or (f"[^{self.refuse[0]}]*" if self.refuse else None)
        if pattern is not None:
            schema["pattern"] = f"^{pattern}$"
        if self.description:
            schema["description"] = self.description
        return schema


@dataclass(frozen=True, slots=True)
class Integer:
    """An integer field (JSON booleans are not integers)."""

    name: str
    low: int
    high: int
    required: bool = True
    description: str = ""

    def parse(self, body: JSON) -> int | None:
        value = body.get(self.name)
        if value is None:
            if self.required:
                raise validate.invalid(self.name, "is required")
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not self.low <= value <= self.high:
            raise validate.invalid(self.name, f"must be an integer from {self.low} to {self.high}")
        return value

    def schema(self) -> JSON:
        schema: JSON = {"type": "integer", "minimum": self.low, "maximum": self.high}
        if self.description:
            schema["description"] = self.description
        return schema


@dataclass(frozen=True, slots=True)
class Ref:
    """A websocket frame's `ref`: echoed in its `ack` or `error`; a short string or an integer."""

    name: str = "ref"
    max_len: int = 64
    required: bool = False

    def parse(self, body: JSON) -> str | int | None:
        value = body.get(self.name)
        if value is None or (isinstance(value, str) and len(value) <= self.max_len) or (
                isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise validate.invalid(self.name,
                               f"must be a string of at most {self.max_len} characters or an integer")

    def schema(self) -> JSON:
        return {"type": ["string", "integer"], "maxLength": self.max_len}


@dataclass(frozen=True, slots=True)
class Bool:
    """A JSON boolean field (no 0/1 or "true": a typo must not silently mean false)."""

    name: str
    required: bool = True
    description: str = ""

    def parse(self, body: JSON) -> bool | None:
        value = body.get(self.name)
        if isinstance(value, bool) or (value is None and not self.required):
            return value
        raise validate.invalid(self.name, "is required" if value is None else "must be true or false")

    def schema(self) -> JSON:
        schema: JSON = {"type": "boolean"}
        if self.description:
            schema["description"] = self.description
        return schema


@dataclass(frozen=True, slots=True)
class Choice:
    """A string field that is one of `options`."""

    name: str
    options: tuple[str, ...]
    required: bool = True
    nullable: bool = False
    description: str = ""

    def parse(self, body: JSON) -> str | None:
        value = body.get(self.name)
        if value is None and self.required:
            raise validate.invalid(self.name, "is required")
        if value is None or value in self.options:
            return None if value is None else str(value)
        raise validate.invalid(self.name, f"must be one of {', '.join(self.options)}")

    def schema(self) -> JSON:
        schema: JSON = {"enum": [*self.options, None] if self.nullable else list(self.options)}
        if self.description:
            schema["description"] = self.description
        return schema


Field = Str | Integer | Ref | Bool | Choice


@dataclass(frozen=True, slots=True)
class Body:
    """A JSON object body: these fields and no others. Without fields, a call that takes no
    body: it accepts an empty body or `{}` and refuses anything else like any other body."""

    fields: tuple[Field, ...] = ()
    at_least_one: bool = False  # of the fields, all optional, one must be given (not null)

    def read(self, request: Request) -> JSON:
        """The declared fields' values (None for an absent optional one)."""
        values = self.values(self.decode(request))
        if self.at_least_one and all(value is None for value in values.values()):
            names = ", ".join(f.name for f in self.fields)
            raise validate.invalid(self.fields[0].name, f"give at least one of {names}")
        return values

    def decode(self, request: Request) -> JSON:
        """The body as a JSON object with no unknown fields, its values not checked yet."""
        if not self.fields and not request.body:
            return {}
        body = request.json()
        validate.only(body, tuple(f.name for f in self.fields))
        return body

    def values(self, body: JSON) -> JSON:
        """Each field's checked (and normalised) value; other keys of `body` are ignored."""
        return {f.name: f.parse(body) for f in self.fields}

    def schema(self) -> JSON:
        schema: JSON = {"type": "object", "required": [f.name for f in self.fields if f.required],
                        "properties": {f.name: f.schema() for f in self.fields},
                        "additionalProperties": False}
        if self.at_least_one:
            schema["minProperties"] = 1
        return schema


# -- query parameters ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Int:
    name: str
    low: int
    high: int
    default: int | None = None
    description: str = ""

    def parse(self, query: dict[str, str]) -> int | None:
        return validate.query_int(query, self.name, low=self.low, high=self.high, default=self.default)

    def schema(self) -> JSON:
        schema: JSON = {"type": "integer", "minimum": self.low, "maximum": self.high}
        if self.default is not None:
            schema["default"] = self.default
        return schema


@dataclass(frozen=True, slots=True)
class Seconds:
    name: str
    high: float
    description: str = ""

    def parse(self, query: dict[str, str]) -> float | None:
        return validate.query_seconds(query, self.name, high=self.high)

    def schema(self) -> JSON:
        return {"type": "number", "minimum": 0, "maximum": self.high}


@dataclass(frozen=True, slots=True)
class Flag:
    name: str
    description: str = ""

    def parse(self, query: dict[str, str]) -> bool:
        return validate.query_bool(query, self.name)

    def schema(self) -> JSON:
        return {"type": "boolean", "default": False}


@dataclass(frozen=True, slots=True)
class Text:
    """A string parameter of at most `max_len` characters (code points), at least `min_len`, all
    in the character class `chars` when one is given."""

    name: str
    max_len: int
    chars: str | None = None
    description: str = ""
    min_len: int = 0
    required: bool = False

    def parse(self, query: dict[str, str]) -> str | None:
        raw = query.get(self.name)
        if raw is None:
            if self.required:
                raise validate.invalid(self.name, "is required")
            return None
        if not self.min_len <= len(raw) <= self.max_len:
            raise validate.invalid(self.name, f"must be {self.min_len} to {self.max_len} characters")
        if self.chars is not None and not re.fullmatch(f"[{self.chars}]*", raw):
            raise validate.invalid(self.name, f"must be at most {self.max_len} of [{self.chars}]")
        return raw

    def schema(self) -> JSON:
        schema: JSON = {"type": "string", "minLength": self.min_len, "maxLength": self.max_len}
        if self.chars is not None:
            schema["pattern"] = f"^[{self.chars}]*$"
        return schema


@dataclass(frozen=True, slots=True)
class Query:
    """A query string's parameters, each optional; an unknown one is refused like an unknown body
    field (422 naming it), so a misspelt `befor=` is not silently a different page."""

    params: tuple[Int | Seconds | Flag | Text, ...]

    def read(self, request: Request) -> JSON:
        query = request.query
        for name in query:
            if not any(p.name == name for p in self.params):
                raise validate.invalid(name[:64], "unknown query parameter")
        return {p.name: p.parse(query) for p in self.params}

    def parameters(self) -> list[JSON]:
        return [{"name": p.name, "in": "query", "required": isinstance(p, Text) and p.required,
                 "description": p.description, "schema": p.schema()} for p in self.params]


# -- the API's shapes ----------------------------------------------------------------------------

MAX_CURSOR = 2**62  # before / after of message history
MAX_ROOM_ID = 2**63 - 1  # the router's `int` converter
NO_BODY = Body()
_NAME_REFUSE = (CONTROL + LINE_BREAKS + ZERO_WIDTH + BIDI,
                "control characters, line breaks, zero-width characters or bidi controls")
_TEXT_REFUSE = (CONTROL, "control characters other than newline and tab")


class Shapes:
    """The bodies and queries of every call, with `config`'s limits."""

    def __init__(self, c: Config) -> None:
        self.credentials = Body((
            Str("username", c.username_max, c.username_min, pattern="[A-Za-z0-9_.-]*",
                description="Unique ignoring case"),
            Str("password", c.password_max, c.password_min),
        ))
        name = Str("name", c.room_name_max, refuse=_NAME_REFUSE, nfc=True, nonblank=True,
                   description="Stored NFC-normalised; unique among public rooms ignoring case and "
                               "compatibility forms (NFKC casefold); not blank (invisible characters "
                               "do not count); no control characters, line breaks, zero-width "
                               "characters or bidi controls")
        topic = Str("topic", c.topic_max, 0, refuse=_NAME_REFUSE, required=False, nullable=True, nfc=True,
                    description="Default empty; null is the same as leaving it out. Stored "
                                "NFC-normalised; refuses the same characters as `name`")
        visibility = Choice("visibility", ("public", "private"), required=False, nullable=True,
                            description="Default public; a private room is invisible to anyone who "
                                        "is neither a member nor invited")
        self.new_room = Body((name, topic, visibility))
        self.room_update = Body((dataclasses.replace(name, required=False, nullable=True,
                                                     description="Null or absent: unchanged"),
                                 dataclasses.replace(topic, description="Null or absent: unchanged"),
                                 dataclasses.replace(visibility, description="Null or absent: unchanged")),
                                at_least_one=True)
        user_id = Integer("user_id", 1, MAX_ROOM_ID)
        self.target = Body((user_id,))
        self.moderation = Body((user_id, Str("reason", c.reason_max, 0, refuse=_TEXT_REFUSE, required=False,
                                             nullable=True, nfc=True,
                                             description="Shown in the room's timeline entry")))
        self.role = Body((Choice("role", ("owner", "moderator", "member"),
                                 description="`owner` hands the room over: the caller becomes a moderator"),))
        self.new_message = Body((
            Str("text", c.text_max, refuse=_TEXT_REFUSE, nfc=True,
                description="Stored NFC-normalised; no control characters other than newline and tab"),
            Str("txn_id", c.txn_id_max, pattern=TXN_ID, required=False, nullable=True,
                description="Idempotency key per user and room, printable ASCII (`!` to `~`); "
                            "null is the same as leaving it out"),
        ))
        self.list_rooms = Query((
            Flag("joined", "Only rooms the caller is a member of "
                           "(`true`/`1`; `false`/`0`/empty for all, case-insensitive)"),
            Int("after", 0, MAX_ROOM_ID, description="Rooms with id > after (the last id of the "
                                                     "previous page)"),
            Int("limit", 1, 500, 100, "Page size"),
        ))
        # Accounts over their lifetime, and the operators' calls
        self.change_password = Body((
            Str("password", c.password_max, description="The current password"),
            Str("new_password", c.password_max, c.password_min),
        ))
        erase = Bool("erase", required=False,
                     description="Also erase every message text the account wrote (default false)")
        self.close_account = Body((Str("password", c.password_max, description="The current password"),
                                   erase))
        self.new_user = Body((*self.credentials.fields,
                              Bool("admin", required=False, description="A server operator (default false)")))
        self.reset_password = Body((Str("new_password", c.password_max, c.password_min),))
        self.set_admin = Body((Bool("admin"),))
        self.deactivate = Body((erase,))
        self.list_users = Query((
            Text("q", c.username_max, "A-Za-z0-9_.-", "Usernames starting with this, ignoring case"),
            Int("after", 0, MAX_ROOM_ID, description="Users with id > after (the last id of the "
                                                     "previous page)"),
            Int("limit", 1, 500, 100, "Page size"),
        ))
        self.list_all_rooms = Query(tuple(p for p in self.list_rooms.params if p.name != "joined"))
        self.backup = Body((Str("path", 4096, refuse=(CONTROL, "control characters"),
                                description="Absolute path of the copy to write; must not exist"),))
        # Websocket frames (besides `type`): the same declarations, checked by api/websocket.py.
        room_id = Integer("room_id", 1, MAX_ROOM_ID)
        self.frames = {
            "subscribe": Body((room_id, Integer("after", 0, MAX_CURSOR, required=False), Ref())),
            "unsubscribe": Body((room_id, Ref())),
            "send": Body((room_id, *self.new_message.fields, Ref())),
            "typing": Body((room_id, Ref())),
            "ping": Body((Ref(),)),
        }
        self.history = Query((
            Int("before", 0, MAX_CURSOR, description="The newest `limit` messages with seq < before"),
            Int("after", 0, MAX_CURSOR, description="The oldest `limit` messages with seq > after"),
            Int("limit", 1, 100, 50, "Page size"),
            Seconds("wait", 30.0, "Seconds to long-poll; only together with `after`"),
        ))
        self.read_marker = Body((
            Integer("seq", 0, MAX_CURSOR, description="Read up to this seq: a lower one than the "
                                                      "marker is ignored, a higher one than the "
                                                      "room's last_seq is clamped to it"),
        ))
        self.search = Query((
            Text("q", 200, min_len=1, required=True,
                 description="Words to find (letters and digits; everything else separates "
                             "them): each matches a word it is a prefix of, ignoring case and "
                             "accents, and all must match. Never a query language"),
            Int("room_id", 1, MAX_ROOM_ID, description="Only this room (the caller must be a member)"),
            Int("before", 1, MAX_CURSOR, description="Only messages with id < before (the last "
                                                     "message id of the previous page)"),
            Int("limit", 1, 50, 20, "Page size"),
        ))


@lru_cache(maxsize=8)
def shapes_for(config: Config) -> Shapes:
    """The shapes for a server's settings, built once."""
    return Shapes(config)


def bodyless(handler: Handler) -> Handler:
    """`handler` for a call that takes no body: anything but an empty body or `{}` is refused
    (400 / 415 / 422) before it runs."""

    async def checked(request: Request) -> Response:
        NO_BODY.read(request)
        return await handler(request)

    return checked

