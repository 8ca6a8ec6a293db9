"""The OpenAPI 3.1 document of the API (docs/API.md), kept beside the code and checked against the router.

Request bodies and query parameters come from `api.shapes`, the declarations the handlers parse
with; this module adds the answers. Limits (lengths, patterns, paging) are the defaults of
`Config`; a server started with other settings enforces those instead. Errors share one `Error`
schema; the answers every operation can give (400 for malformed HTTP, 408, 413, 431, 500, 503,
505) are its `default` response.
"""

from __future__ import annotations

from typing import Any, get_args, get_type_hints, is_typeddict

from chat_trio import __version__
from chat_trio.api.shapes import MAX_ROOM_ID, Body, Query, Shapes
from chat_trio.config import Config
from chat_trio.store.records import JSON, ROLES, Author, Ban, Invite, Member, Message, Room, RoomChanges, User

_DEFAULTS = Config()
_SHAPES = Shapes(_DEFAULTS)
_BEARER: list[JSON] = [{"bearerAuth": []}]


# -- helpers -------------------------------------------------------------------------------------


def _ref(kind: str, name: str) -> JSON:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema(name: str) -> JSON:
    return _ref("schemas", name)


def _json(schema: JSON) -> JSON:
    return {"application/json": {"schema": schema}}


def _obj(properties: JSON, *, optional: tuple[str, ...] = (), **extra: Any) -> JSON:
    """A closed object schema: unknown properties are invalid, all but `optional` are required."""
    return {"type": "object", "required": [name for name in properties if name not in optional],
            "properties": properties, "additionalProperties": False, **extra}


def _string(min_len: int = 0, max_len: int | None = None, **extra: Any) -> JSON:
    schema: JSON = {"type": "string", "minLength": min_len, **extra}
    if max_len is not None:
        schema["maxLength"] = max_len
    return schema


def _list(items: JSON) -> JSON:
    return {"type": "array", "items": items}


def _header(description: str, schema: JSON) -> JSON:
    return {"description": description, "schema": schema}


def _ok(description: str, schema: JSON | None = None, headers: JSON | None = None) -> JSON:
    """A success response: a JSON body (or none) and optional headers."""
    response: JSON = {"description": description}
    if headers:
        response["headers"] = headers
    if schema is not None:
        response["content"] = _json(schema)
    return response


def _error(description: str, *codes: str, headers: JSON | None = None) -> JSON:
    """An error response: the shared Error body, its `code` narrowed to `codes` when given."""
    schema = _schema("Error")
    if codes:
        narrowed = {"error": {"properties": {"code": {"enum": list(codes)}}}}
        schema = {"allOf": [schema, {"properties": narrowed}]}
    return _ok(description, schema, headers)


def _param(name: str, where: str, description: str, schema: JSON, *, required: bool = False) -> JSON:
    return {"name": name, "in": where, "required": required or where == "path",
            "description": description, "schema": schema}


_PLAIN_TYPES: dict[Any, JSON] = {int: {"type": "integer"}, str: {"type": "string"},
                                 bool: {"type": "boolean"}, type(None): {"type": "null"}}
# Records that are components of their own: a property of one of these types is a $ref.
_COMPONENTS = {User: "User", Room: "Room", Message: "Message", Member: "Member", Invite: "Invite",
               Ban: "Ban"}


def _type_schema(hint: Any) -> JSON:
    """The JSON Schema of a record field's Python type."""
    if hint in _PLAIN_TYPES:
        return dict(_PLAIN_TYPES[hint])
    if hint in _COMPONENTS:
        return _schema(_COMPONENTS[hint])
    if is_typeddict(hint):
        return _answer(hint)
    options = get_args(hint)  # `str | None`
    if options and all(option in _PLAIN_TYPES for option in options):
        return {"type": [_PLAIN_TYPES[option]["type"] for option in options]}
    if len(options) == 2 and type(None) in options:  # `Author | None`
        return {"anyOf": [_type_schema(next(o for o in options if o is not type(None))), {"type": "null"}]}
    raise TypeError(f"no JSON Schema for {hint!r}")


def _answer(record: type, **refine: JSON) -> JSON:
    """The schema of an object the server answers with, from its record type (store/records.py):
    the record declares the properties, their types and that all are present; `refine` adds
    limits, formats and descriptions to named properties (a name the record lacks is an error,
    so the document cannot describe a field the server does not send)."""
    hints = get_type_hints(record)
    unknown = set(refine) - set(hints)
    if unknown:
        raise TypeError(f"{record.__name__} has no field {', '.join(sorted(unknown))}")
    properties = {}
    for name, hint in hints.items():
        base = _type_schema(hint)
        if "$ref" in base and name in refine:
            raise TypeError(f"{record.__name__}.{name} is a component; refine it there")
        if is_typeddict(hint) and name in refine:  # a nested record, refined by its own _answer
            if refine[name]["properties"].keys() != base["properties"].keys():
                raise TypeError(f"{record.__name__}.{name} is refined with other fields")
            base = refine.pop(name)
        properties[name] = {**base, **refine.get(name, {})}
    return _obj(properties, optional=tuple(sorted(getattr(record, "__optional_keys__", ()))))


def _op(
    op_id: str,
    tag: str,
    summary: str,
    responses: JSON,
    *,
    description: str = "",
    security: list[JSON] | None = None,
    params: tuple[str, ...] = (),
    query: Query | None = None,
    body: Body | None = None,
    body_optional: bool = False,
    errors: tuple[str, ...] = (),
) -> JSON:
    """One operation. `params` and `errors` name entries of components. A `security` without an
    anonymous alternative adds the 401 answer, a `body` the 400 / 415 / 422 answers of
    `Request.json` and its validation, a `query` its parameters and their 400 / 422 answers. An
    entry of `responses` wins over a shared one."""
    op: JSON = {"operationId": op_id, "tags": [tag], "summary": summary}
    if description:
        op["description"] = description
    if security is not None:
        op["security"] = security
        if {} not in security:  # no anonymous alternative
            errors = ("Unauthorized", *errors)
    parameters = [_ref("parameters", name) for name in params]
    if query is not None:
        parameters += query.parameters()
        errors = ("BadQuery", "ValidationFailed", *errors)
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": not body_optional, "content": _json(body.schema())}
        errors = ("InvalidJSON", "UnsupportedMediaType", "ValidationFailed", *errors)
    errors = tuple(dict.fromkeys(errors))
    answers = {**{ERRORS[name][0]: _ref("responses", name) for name in errors}, **responses}
    op["responses"] = {**dict(sorted(answers.items())), "default": _ref("responses", "Error")}
    return op


# -- components ----------------------------------------------------------------------------------

_ID = {"type": "integer", "minimum": 1}
_COUNT = {"type": "integer", "minimum": 0}
_TIME = {"type": "string", "format": "date-time",
         "description": "RFC 3339 UTC with milliseconds, e.g. 2026-11-24T19:00:00.123Z"}
_USERNAME = _SHAPES.credentials.fields[0].schema()
_ROLE = {"enum": list(ROLES)}
_ROOM_EVENTS = ("join", "leave", "kick", "ban", "room_updated", "erase")
_NAME = _string(1, _DEFAULTS.room_name_max)
_TOPIC = _string(0, _DEFAULTS.topic_max)
_VISIBILITY = {"enum": ["public", "private"]}

SCHEMAS: JSON = {
    "Error": _obj(
        {"error": _obj({
            "code": {"type": "string", "description": "Machine-readable, e.g. validation_failed"},
            "message": {"type": "string", "description": "Human text; for 422 it names the field"},
            "retry_after_ms": {"type": "integer", "minimum": 1, "description": "Only with 429"},
            "field": {"type": "string", "description": "Only with 422: the offending field"},
        }, optional=("retry_after_ms", "field"))},
    ),
    "User": _answer(User, id=_ID, username=_USERNAME, created_at=_TIME,
                    admin={"description": "A server operator: may use /admin/* and act as owner in any room"},
                    deactivated={"description": "The account was closed: it cannot log in and its "
                                                "username stays taken"}),
    "Room": _answer(
        Room,
        id=_ID,
        name={**_NAME, "description": "A direct room's is the other user's username, as each of "
                                      "the two sees it"},
        topic=_TOPIC,
        created_by={**_ID, "description": "The creator's user id"},
        created_at=_TIME,
        member_count=_COUNT,
        last_seq={**_COUNT, "description": "Seq of the room's newest timeline entry (0: none yet)"},
        visibility={**_VISIBILITY, "description": "A private room is invisible (404) to anyone who "
                                                  "is neither a member nor invited"},
        kind={"enum": ["room", "direct"], "description": "`direct`: the one private room of a pair "
                                                         "of users (POST /direct)"},
        my_role={**_ROLE, "description": "The caller's role; present only when the caller is a member"},
        read_seq={**_COUNT, "description": "Only for a member: the caller's read marker (a new "
                                           "member starts at the room's last_seq; sending moves it "
                                           "to the message sent)"},
        unread={**_COUNT, "description": "Only for a member: text entries with seq > read_seq, "
                                         "not deleted, not the caller's"},
    ),
    "Message": _answer(
        Message,
        id=_ID,
        room_id=_ID,
        seq={**_ID, "description": "Dense per room (1, 2, 3, ...), assigned at commit: the only "
                                   "order, paging cursor and resume point a client needs"},
        author={**_answer(Author, id=_ID, username=_USERNAME),
                "description": "Who wrote it; for a room event, who acted"},
        text={**_string(0), "description": "A text entry's current text (after its latest edit, at "
                                            "most 4000 characters; \"\" once deleted or erased); for any "
                                            "other kind a human-readable summary, e.g. `alice "
                                            "joined`, `bob edited message 12`"},
        created_at=_TIME,
        txn_id={"minLength": 1, "maxLength": _DEFAULTS.txn_id_max},
        kind={"enum": ["text", "edit", "delete", *_ROOM_EVENTS],
              "description": "`text`: a message; `edit` / `delete`: a change to one; else a room "
                             "event. A client that does not know a kind can show `text`"},
        edited_at={"description": "Text entries only: when last edited (null: never)"},
        deleted={"description": "Text entries only: deleted (its text is erased: \"\")"},
        target_seq={**_ID, "description": "Edits and deletes only: the seq of the text entry changed"},
        new_text=_string(0, _DEFAULTS.text_max,
                         description="Edits only: the text it gave the message (\"\" once the "
                                     "message is deleted)"),
        subject={"description": "Room events only: the user acted on (who joined, left, was kicked "
                                "or banned, or whose messages were erased); null for `room_updated`"},
        changes={**_answer(RoomChanges, name=_NAME, topic=_TOPIC, visibility=_VISIBILITY),
                 "description": "`room_updated` only: the new values of the fields that changed"},
    ),
    "Member": _answer(
        Member,
        joined_at=_TIME,
        online={"description": "The user has an open websocket"},
        role={**_ROLE, "description": "Exactly one owner per room (a direct room has none: both are "
                                      "members)"},
    ),
    "Invite": _answer(Invite, room_id=_ID, created_at=_TIME),
    "Ban": _answer(Ban, reason={"maxLength": _DEFAULTS.reason_max}, created_at=_TIME),
}
_USER_FIELDS = SCHEMAS["User"]["properties"]
SCHEMAS["AdminUser"] = _obj({**_USER_FIELDS, "last_seen_at": {
    "type": ["string", "null"], "format": "date-time",
    "description": "When one of its tokens was last used (to within a minute), or it last logged in; "
                   "null if never"}})
SCHEMAS["Session"] = _obj({
    "id": {"type": "string", "minLength": 1, "maxLength": 16,
           "description": "A short public id (never the token or its hash), for DELETE /me/sessions/{id}"},
    "created_at": {**_TIME, "description": "When it logged in"},
    "last_seen_at": {**_TIME, "description": "When it was last used, to within a minute"},
    "client": {"type": "string", "maxLength": 256, "description": "The User-Agent it logged in with"},
    "current": {"type": "boolean", "description": "The token of this request"},
})
SCHEMAS["Export"] = _obj({
    "exported_at": _TIME,
    "user": _schema("User"),
    "memberships": _list(_obj({"room": _schema("Room"), "joined_at": _TIME, "role": _ROLE})),
    "invites": _list(_schema("Invite")),
    "messages": _list(_schema("Message")),
}, description="Everything the server holds about the caller, messages last (oldest first)")

_RETRY_AFTER = {"Retry-After": _header("Whole seconds to wait", {"type": "integer", "minimum": 1})}
_WWW_AUTHENTICATE = {"WWW-Authenticate": _header("Bearer realm=\"chat_trio\"", {"type": "string"})}

# Shared error answers: name → (status, response). Operations list them by name.
ERRORS: dict[str, tuple[str, JSON]] = {
    "InvalidJSON": ("400", _error("The body is not valid JSON or not a JSON object", "invalid_json")),
    "BadQuery": ("400", _error("The query string is not valid UTF-8", "bad_request")),
    "Unauthorized": ("401", _error("Missing, invalid, expired or revoked token", "unauthorized",
                                   headers=_WWW_AUTHENTICATE)),
    "NotMember": ("403", _error("The caller is not a member of the room", "forbidden")),
    "RoleTooLow": ("403", _error("The caller's role is too low for this, or the target's role is "
                                 "not lower than the caller's", "forbidden")),
    "RoomNotFound": ("404", _error("No such room, or a private room the caller is neither a "
                                   "member of nor invited to (its existence is not revealed)",
                                   "not_found")),
    "NotEditable": ("409", _error("Only text entries that are not deleted can be edited or deleted",
                                  "not_editable")),
    "TargetNotFound": ("404", _error("No such room (as above), no such user, or the user is not a "
                                     "member", "not_found")),
    "AdminsOnly": ("403", _error("The caller is not a server admin", "forbidden")),
    "UserNotFound": ("404", _error("No such user", "not_found")),
    "UnsupportedMediaType": ("415", _error("The body is not Content-Type: application/json",
                                           "unsupported_media_type")),
    "ValidationFailed": ("422", _error("A field or parameter is invalid, missing or unknown; "
                                       "`message` and `field` name it", "validation_failed")),
    "RateLimited": ("429", _error("Too many requests: retry after `Retry-After` seconds "
                                  "(`error.retry_after_ms` milliseconds)", "rate_limited",
                                  headers=_RETRY_AFTER)),
}

RESPONSES: JSON = {
    **{name: response for name, (_status, response) in ERRORS.items()},
    "Error": _error(
        "Any other error: 400 for malformed HTTP (the connection closes), 405 with `Allow` for a "
        "method a path does not have (HEAD wherever GET is), 408 for a slow request (a head, or a "
        "body slower than 1024 B/s on average), 413 for a body over the limit (64 KiB), 431 for a "
        "head over the limit (16 KiB), 500 internal (no traceback), 503 unavailable (too many "
        "connections, in all or from one address, a write the store could not commit, or with "
        "--workers a worker that could not catch up with writes acknowledged before the request "
        "within --catch-up-timeout; with `Retry-After`), 505 http_version_not_supported (an HTTP "
        "version other than 1.x). A call that takes no body accepts an empty body or `{}`: any "
        "other is 400 `invalid_json`, 415 or 422 like a body of a call that takes one"),
}

PARAMETERS: JSON = {
    "SessionId": _param("session_id", "path", "A session's public id (GET /me/sessions)",
                        {"type": "string", "minLength": 1, "maxLength": 64}),
    "AssetName": _param("name", "path", "File name, e.g. app.js", {"type": "string"}, required=True),
    "Seq": _param("seq", "path", "The message's seq in its room; anything but a decimal integer is 404",
                  {"type": "integer", "minimum": 0, "maximum": MAX_ROOM_ID}),
    "RoomId": _param("room_id", "path", "The room's id; anything but a decimal integer is 404",
                     {"type": "integer", "minimum": 0, "maximum": MAX_ROOM_ID}),
    "UserId": _param("user_id", "path", "A user's id; anything but a decimal integer is 404",
                     {"type": "integer", "minimum": 0, "maximum": MAX_ROOM_ID}),
}

COMPONENTS: JSON = {
    "schemas": SCHEMAS,
    "responses": RESPONSES,
    "parameters": PARAMETERS,
    "securitySchemes": {
        "bearerAuth": {"type": "http", "scheme": "bearer",
                       "description": "A token from POST /login; default lifetime 30 days"},
    },
}


# -- operations ----------------------------------------------------------------------------------

_USER_BODY = _obj({"user": _schema("User")})
_PASSWORD_401 = _error("Missing, invalid, expired or revoked token (`unauthorized`), or the current "
                       "password is wrong (`invalid_credentials`)", "unauthorized", "invalid_credentials",
                       headers=_WWW_AUTHENTICATE)
_ROOM_BODY = _obj({"room": _schema("Room")})
_MESSAGE_BODY = _obj({"message": _schema("Message")})

_WS_DESCRIPTION = """\
Upgrades to a websocket on the same port. Frames are JSON text.

**Auth**: the `Authorization: Bearer` header, or (browsers cannot set headers) a first frame
`{"type": "auth", "token"}` within 10 s. The token is checked after the upgrade: a missing,
invalid or revoked one is never an HTTP 401, the socket closes with 1008 instead. Then the
server sends `{"type": "hello", "user", "heartbeat_s"}` (`user` is a `User`).

**Upgrade**: HTTP/1.1, `Upgrade: websocket`, `Connection: Upgrade`, one `Sec-WebSocket-Key` (base64
of 16 bytes) and `Sec-WebSocket-Version: 13`, else 400; a version other than 13 is 426
`upgrade_required` with `Sec-WebSocket-Version: 13` (RFC 6455 §4.2.2). A browser `Origin` must
equal this server's (scheme, host and port) or one of `--ws-origins`, else 403. A user holding
`--max-websockets-per-user` sockets (default 32) is refused with 429 `rate_limited` when the token
is in the header, or closed with 1008 "too many websockets" after an `auth` frame. Every refusal
uses the error format and closes the connection.

| client → server | server → client |
|---|---|
| `{"type":"subscribe","room_id","after"?}` | `{"type":"subscribed","room_id","last_seq"}`, then every \
message with seq > after in order, then live ones. If more than 1000 are missed: \
`{"type":"gap","room_id","after","last_seq"}` and the client pages over REST |
| `{"type":"unsubscribe","room_id"}` | `{"type":"unsubscribed","room_id"}` |
| `{"type":"send","room_id","text","txn_id"?,"ref"?}` | `{"type":"ack","ref","message"}` after commit \
(idempotent as REST) |
| `{"type":"typing","room_id"}` | others get `{"type":"typing","room_id","user"}` (ephemeral, dropped \
first under pressure, and beyond `--ws-typing-rate` per user) |
| `{"type":"ping"}` | `{"type":"pong"}` |
| (the caller moved their read marker: `PUT /rooms/{room_id}/read`) | `{"type":"read","room_id",\
"read_seq"}` on each of the user's websockets, subscribed or not |
| anything invalid | `{"type":"error","code","message","ref"?}`; the connection stays open |

Live frame: `{"type":"message","message"}` (`message` is a `Message`). Per room a subscriber sees
each seq once, in order, without gaps (except an announced `gap`). `ref` (a string of at most 64
characters, or an integer) is echoed in `ack` (null when not given) and `error`. Error codes are
those of REST: `invalid_json`, `bad_request`, `validation_failed`, `not_found`, `rate_limited`
(too many frames). A user who stops being a member gets `{"type":"unsubscribed","room_id","reason"}`
(`reason`: `left`, `kicked` or `banned`), after the room's entry that says so.

**v2 frames** (server → client): every timeline entry (a message or a room event: `join`, `leave`,
`kick`, `ban`, `room_updated`) arrives as a `message` frame. `{"type":"room","event":"created"|"updated",
"room"}` goes to every connected user who can see the room (public: everyone; private: its
members), the room shaped for each (their `my_role`, a direct room's name); `{"type":"invite",
"invite"}` (an `Invite` with its `room`) to the invitee; `{"type":"presence","room_id","user",
"online"}` to a room's subscribers when a member's first websocket opens or last one closes. For
a private room the caller may not see, `subscribe`, `send` and `typing` answer `not_found`, as
for a room that does not exist.

**Close codes**: 1001 server shutting down, 1008 auth failed / not a member, 1009 frame too big,
4001 token revoked (logout, a password change or reset, an ended session, a closed account) or
expired, 4008 too slow (its bounded queue filled: reconnect and resume with
`after`). The server pings every `heartbeat_s` and drops a peer that does not answer.
"""

PATHS: dict[str, JSON] = {
    "/healthz": {"get": _op("healthz", "Service", "Health check: can this server accept writes", {
        "200": _ok("Serving, and accepting writes", _obj({"status": {"const": "ok"}})),
        "503": _error("This server would refuse every write (reads may still be served): its "
                      "writer has stopped after a failure, the PostgreSQL database is unreachable, "
                      "or (with `--workers`) the worker's supervisor is gone; `message` says "
                      "which. A load balancer should send its traffic elsewhere",
                      "unavailable", headers=_RETRY_AFTER)},
        description="Judged from state the server already holds: no write, no database query and "
                    "(with `--workers`) no call to the supervisor, which tells its workers when "
                    "its writer or database changes state.")},
    "/openapi.json": {"get": _op("openapi", "Service", "This document", {
        "200": _ok("OpenAPI 3.1", {"type": "object"})})},
    "/": {"get": _op("webClient", "Service", "The built-in web chat client", {
        "200": {"description": "The page (served with a strict Content-Security-Policy)",
                "content": {"text/html": {"schema": {"type": "string"}}}}})},
    "/static/{name}": {"get": _op("webAsset", "Service", "A script or stylesheet of the web client", {
        "200": {"description": "The file",
                "content": {"text/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}}}},
        "404": _error("No such file", "not_found")},
        params=("AssetName",))},
    "/metrics": {"get": _op("metrics", "Service", "Prometheus metrics", {
        "200": {"description": "Prometheus text format 0.0.4: requests by route, method and status "
                               "(labels from fixed sets: route patterns or `unmatched`, standard "
                               "methods or `other`, `unparsed` for refusals of the HTTP layer), request "
                               "latency, open connections and websockets, messages committed, "
                               "group-commit batch sizes, store queue depth, worker threads in use",
                "content": {"text/plain": {"schema": {"type": "string"}}}}})},
    "/register": {"post": _op(
        "register", "Accounts", "Create an account", {
            "201": _ok("Created", _USER_BODY),
            "403": _error("Registration is closed (`--registration closed`): admins create accounts",
                          "registration_closed"),
            "409": _error("The username is taken (ignoring case)", "username_taken")},
        body=_SHAPES.credentials, errors=("RateLimited",),
        description="Passwords are hashed with argon2id; longer than 1024 characters is rejected "
                    "before hashing. Registrations are counted per client address (default 20 in "
                    "600 s, `--register-limit`); beyond that, 429 with `Retry-After`.")},
    "/login": {"post": _op(
        "login", "Accounts", "Get a token", {
            "200": _ok("Logged in", _obj({"token": {"type": "string"}, "expires_at": _TIME,
                                          "user": _schema("User")})),
            "401": _error("Wrong username or password: the same body (and similar time) for an "
                          "unknown user and a wrong password", "invalid_credentials",
                          headers=_WWW_AUTHENTICATE),
            "403": _error("The account is deactivated (only said after the right password)",
                          "deactivated")},
        body=_SHAPES.credentials, errors=("RateLimited",),
        description="Answers 429 with `Retry-After` when an address logs in too often (valid or "
                    "not), after repeated failures for a username from one address or from an "
                    "address across usernames, while a username guessed from many addresses is in "
                    "exponential backoff (never for addresses it signed in from), or when a user "
                    "logs in too often. A user keeps at most 100 live tokens: a login beyond that "
                    "revokes the oldest (its websockets close with 4001).")},
    "/logout": {"post": _op(
        "logout", "Accounts", "Revoke the token", {"204": _ok("Revoked")}, security=_BEARER,
        description="The token stops working at once and its websockets are closed (4001).")},
    "/me": {
        "get": _op("me", "Accounts", "The caller", {"200": _ok("The caller", _USER_BODY)}, security=_BEARER),
        "delete": _op(
            "closeAccount", "Accounts", "Close (deactivate) the caller's account", {
                "204": _ok("Deactivated"),
                "401": _PASSWORD_401,
                "409": _error("The caller is the last admin: promote another first", "last_admin")},
            security=_BEARER, body=_SHAPES.close_account, errors=("RateLimited",),
            description="Every token of the account is revoked (its websockets close with 4001), it "
                        "leaves every room (a `leave` entry each), it can no longer log in (403 "
                        "`deactivated`) and its username stays taken. With `erase: true` every text "
                        "entry it wrote shows `deleted: true` and `text: \"\"` from then on, the text "
                        "gone from the database file and its WAL (overwritten, then checkpointed), "
                        "and each room it wrote in gets an `erase` entry (`subject`: the user). "
                        "Backups made before keep it. A wrong password counts as a failed login."),
    },
    "/me/password": {"put": _op(
        "changePassword", "Accounts", "Change the caller's password", {
            "204": _ok("Changed"), "401": _PASSWORD_401},
        security=_BEARER, body=_SHAPES.change_password, errors=("RateLimited",),
        description="Every other token of the user is revoked at once (their websockets close with "
                    "4001); the token of this request stays. A wrong current password answers 401 "
                    "`invalid_credentials` and counts as a failed login (429 after repeated ones).")},
    "/me/sessions": {"get": _op(
        "listSessions", "Accounts", "The caller's sessions (live tokens)", {
            "200": _ok("Oldest first", _obj({"sessions": _list(_schema("Session"))}))},
        security=_BEARER)},
    "/me/sessions/{session_id}": {"delete": _op(
        "endSession", "Accounts", "End one of the caller's sessions", {
            "204": _ok("Its token is revoked; its websockets close with 4001"),
            "404": _error("The caller has no session with that id", "not_found")},
        security=_BEARER, params=("SessionId",))},
    "/me/export": {"get": _op(
        "exportAccount", "Accounts", "Everything the server holds about the caller", {
            "200": _ok("One JSON document, streamed (chunked)", _schema("Export"), headers={
                "Content-Disposition": _header("attachment; filename=\"chat_trio-USERNAME.json\"",
                                               {"type": "string"})})},
        security=_BEARER,
        description="The user, its memberships and invites, and every message it wrote with its "
                    "current text (the right of access and portability). Streamed a page at a "
                    "time, so its size is not limited by the server's memory.")},
    "/admin/users": {
        "get": _op("adminListUsers", "Admin", "List users, a page at a time", {
            "200": _ok("A page of users ordered by id", _obj({
                "users": _list(_schema("AdminUser")), "has_more": {"type": "boolean"}}))},
            security=_BEARER, query=_SHAPES.list_users, errors=("AdminsOnly",),
            description="`q`: only usernames starting with it (ignoring case)."),
        "post": _op("adminCreateUser", "Admin", "Create an account", {
            "201": _ok("Created", _USER_BODY),
            "409": _error("The username is taken (ignoring case)", "username_taken")},
            security=_BEARER, body=_SHAPES.new_user, errors=("AdminsOnly",),
            description="Works with `--registration closed` too."),
    },
    "/admin/users/{user_id}/password": {"put": _op(
        "adminSetPassword", "Admin", "Reset a user's password", {
            "204": _ok("Set; every token of the user is revoked (websockets close with 4001)")},
        security=_BEARER, params=("UserId",), body=_SHAPES.reset_password,
        errors=("AdminsOnly", "UserNotFound"))},
    "/admin/users/{user_id}/admin": {"put": _op(
        "adminSetAdmin", "Admin", "Promote or demote a user", {
            "200": _ok("The user as it is now", _USER_BODY),
            "409": _error("`last_admin`: no active admin would remain; `deactivated`: a closed "
                          "account cannot be promoted", "last_admin", "deactivated")},
        security=_BEARER, params=("UserId",), body=_SHAPES.set_admin,
        errors=("AdminsOnly", "UserNotFound"))},
    "/admin/users/{user_id}/deactivate": {"post": _op(
        "adminDeactivate", "Admin", "Close a user's account", {
            "204": _ok("Deactivated (or already was), as DELETE /me"),
            "409": _error("The user is the last active admin", "last_admin")},
        security=_BEARER, params=("UserId",), body=_SHAPES.deactivate, body_optional=True,
        errors=("AdminsOnly", "UserNotFound"))},
    "/admin/rooms": {"get": _op(
        "adminListRooms", "Admin", "List every room, a page at a time", {
            "200": _ok("A page of rooms ordered by id", _obj({
                "rooms": _list(_schema("Room")), "has_more": {"type": "boolean"}}))},
        security=_BEARER, query=_SHAPES.list_all_rooms, errors=("AdminsOnly",))},
    "/admin/backup": {"post": _op(
        "adminBackup", "Admin", "Write a consistent copy of the database", {
            "200": _ok("Written", _obj({"path": {"type": "string"}, "bytes": _COUNT})),
            "403": _error("Not over the local admin socket (an admin's token is not enough)", "forbidden"),
            "409": _error("The file exists", "conflict")},
        security=_BEARER, body=_SHAPES.backup,
        description="Only over the local admin socket (`--admin-socket`), where requests need no "
                    "token: `python -m chat_trio admin backup PATH`. sqlite's online backup copies "
                    "one snapshot while the server keeps writing.")},
    "/rooms": {
        "post": _op("createRoom", "Rooms", "Create a room", {
            "201": _ok("Created; the creator is its first member", _ROOM_BODY),
            "409": _error("A room with that name exists (ignoring case)", "room_name_taken")},
            security=_BEARER, body=_SHAPES.new_room, errors=("RateLimited",),
            description="Room creation is rate limited per user (429 with `Retry-After`)."),
        "get": _op("listRooms", "Rooms", "List rooms, a page at a time", {
            "200": _ok("A page of rooms ordered by id", _obj({
                "rooms": _list(_schema("Room")),
                "has_more": {"type": "boolean", "description": "More rooms exist after this page: "
                                                               "ask again with `after` = its last id"}}))},
            security=_BEARER, query=_SHAPES.list_rooms,
            description="The first `limit` rooms with id > `after` (default 0), all rooms or with "
                        "`joined=true` only the caller's."),
    },
    "/rooms/{room_id}": {
        "get": _op(
            "getRoom", "Rooms", "Show a room", {"200": _ok("The room", _ROOM_BODY)},
            security=_BEARER, params=("RoomId",), errors=("RoomNotFound",)),
        "patch": _op(
            "updateRoom", "Rooms", "Rename a room, change its topic or visibility", {
                "200": _ok("The room as it is now", _ROOM_BODY),
                "409": _error("A public room with that name exists", "room_name_taken")},
            security=_BEARER, params=("RoomId",), body=_SHAPES.room_update,
            errors=("RoomNotFound", "RoleTooLow"),
            description="Moderators and the owner. Only the fields given (not null) that differ "
                        "from the room's count: each change is one `room_updated` timeline entry "
                        "with the new values in `changes`, and a `room` frame (`updated`) to "
                        "everyone who can see the room; a body that changes nothing adds neither. "
                        "At least one field is required (else 422). A direct room cannot be "
                        "changed (403)."),
    },
    "/rooms/{room_id}/join": {"post": _op(
        "joinRoom", "Rooms", "Join a room", {
            "200": _ok("Joined (or already a member)", _ROOM_BODY),
            "403": _error("The caller is banned from this (public) room", "banned")},
        security=_BEARER, params=("RoomId",), errors=("RoomNotFound",),
        description="Idempotent: joining a room one is in answers the same and adds nothing. A "
                    "private room needs an invite, which the join consumes (without one it is "
                    "404, as is any call on it); a direct room is joined only through POST "
                    "/direct. A join is a `join` timeline entry. Whoever joins a room with no "
                    "members becomes its owner.")},
    "/rooms/{room_id}/leave": {"post": _op(
        "leaveRoom", "Rooms", "Leave a room", {"204": _ok("Left (or was not a member)")},
        security=_BEARER, params=("RoomId",), errors=("RoomNotFound",),
        description="Idempotent (a repeat adds nothing). A leave is a `leave` timeline entry; the "
                    "caller's websocket subscriptions to the room end with `unsubscribed` "
                    "(`reason`: `left`). An owner who leaves hands the room to its "
                    "longest-standing moderator, or else its longest-standing member.")},
    "/rooms/{room_id}/members": {"get": _op(
        "listMembers", "Rooms", "List a room's members", {
            "200": _ok("Members by join time", _obj({"members": _list(_schema("Member"))}))},
        security=_BEARER, params=("RoomId",), errors=("RoomNotFound", "NotMember"))},
    "/rooms/{room_id}/members/{user_id}/role": {"put": _op(
        "setRole", "Moderation", "Set a member's role", {
            "200": _ok("The member with their new role", _obj({"member": _schema("Member")}))},
        security=_BEARER, params=("RoomId", "UserId"), body=_SHAPES.role,
        errors=("TargetNotFound", "RoleTooLow"),
        description="The owner only. `owner` hands the room over: the caller becomes a moderator. "
                    "The owner's own role cannot be set (403); a direct room has no roles (403).")},
    "/rooms/{room_id}/invites": {"post": _op(
        "invite", "Moderation", "Invite a user", {
            "201": _ok("Invited (or already invited: the pending invite)",
                       _obj({"invite": _schema("Invite")})),
            "403": _error("The caller's role is too low, the room is direct, or the user is banned",
                          "forbidden", "banned"),
            "409": _error("The user is a member already (`already_member`), or its account is "
                          "deactivated (`deactivated`)", "already_member", "deactivated")},
        security=_BEARER, params=("RoomId",), body=_SHAPES.target, errors=("TargetNotFound", "RateLimited"),
        description="Moderators and the owner, into any room but a direct one. The invitee gets "
                    "an `invite` frame; the room becomes visible to them until they join "
                    "(consuming the invite) or decline. Invites are rate limited per user (default "
                    "1/s, bursts of 20; 429 with `Retry-After`): each may reach someone else.")},
    "/rooms/{room_id}/invites/{user_id}": {"delete": _op(
        "uninvite", "Moderation", "Withdraw or decline an invite", {
            "204": _ok("No invite pending any more (also if there was none)")},
        security=_BEARER, params=("RoomId", "UserId"), errors=("RoomNotFound", "RoleTooLow"),
        description="Moderators and the owner withdraw; the invitee declines their own.")},
    "/invites": {"get": _op(
        "listInvites", "Moderation", "The caller's pending invites", {
            "200": _ok("Oldest room first, each with the room as the invitee sees it",
                       _obj({"invites": _list(_schema("Invite"))}))},
        security=_BEARER)},
    "/rooms/{room_id}/kick": {"post": _op(
        "kick", "Moderation", "Remove a member", {"204": _ok("Removed")},
        security=_BEARER, params=("RoomId",), body=_SHAPES.moderation,
        errors=("TargetNotFound", "RoleTooLow"),
        description="A moderator or the owner, over a member of a lower role. The user stops being "
                    "a member at commit: a `kick` timeline entry (with the reason in its text), "
                    "their subscriptions end with `unsubscribed` (`reason`: `kicked`), a pending "
                    "long-poll of theirs answers 403 (404 for a private room), and they may come "
                    "back by joining (a public room) or by invite.")},
    "/rooms/{room_id}/bans": {
        "post": _op(
            "ban", "Moderation", "Ban a user", {"204": _ok("Banned (or was already)")},
            security=_BEARER, params=("RoomId",), body=_SHAPES.moderation,
            errors=("TargetNotFound", "RoleTooLow"),
            description="A moderator or the owner, over anyone of a lower role, member or not. A "
                        "member is removed as by a kick (`unsubscribed` with `reason`: `banned`); "
                        "a pending invite is withdrawn. A `ban` timeline entry records it. The "
                        "user cannot join or be invited until unbanned."),
        "get": _op(
            "listBans", "Moderation", "A room's bans", {
                "200": _ok("Oldest first", _obj({"bans": _list(_schema("Ban"))}))},
            security=_BEARER, params=("RoomId",), errors=("RoomNotFound", "RoleTooLow"),
            description="Moderators and the owner."),
    },
    "/rooms/{room_id}/bans/{user_id}": {"delete": _op(
        "unban", "Moderation", "Lift a ban", {"204": _ok("Not banned (also if they were not)")},
        security=_BEARER, params=("RoomId", "UserId"), errors=("RoomNotFound", "RoleTooLow"),
        description="Moderators and the owner.")},
    "/direct": {"post": _op(
        "openDirect", "Rooms", "Open the direct room with a user", {
            "201": _ok("Created", _ROOM_BODY),
            "200": _ok("It existed; whichever of the two had left is a member again", _ROOM_BODY),
            "404": _error("No such user", "not_found"),
            "409": _error("The user's account is deactivated", "deactivated")},
        security=_BEARER, body=_SHAPES.target,
        description="The one direct room of the pair (`kind` direct, private, both members with "
                    "role `member`, named after the other user as each sees it), also when both "
                    "ask at once. Nobody else can join or be invited, and it has no kicks, bans "
                    "or role changes. A user cannot open one with themselves (422).")},
    "/rooms/{room_id}/messages": {
        "post": _op(
            "sendMessage", "Messages", "Send a message", {
                "201": _ok("Committed", _MESSAGE_BODY),
                "200": _ok("This user already sent `txn_id` to this room: nothing is created and "
                           "the original message is answered", _MESSAGE_BODY)},
            security=_BEARER, params=("RoomId",), body=_SHAPES.new_message,
            errors=("RoomNotFound", "NotMember", "RateLimited"),
            description="Answers 201 once the message is committed. Sending again with the same "
                        "`txn_id` (same user, same room) creates nothing and answers 200 with the "
                        "original message, also when the two requests race. Sends are rate limited "
                        "per user (429 with `Retry-After`); a retry whose `txn_id` already "
                        "committed is answered 200 even then, since it writes nothing."),
        "get": _op(
            "listMessages", "Messages", "Page through a room's history", {
                "200": _ok("A page, ascending by seq", _obj({
                    "messages": _list(_schema("Message")),
                    "has_more": {"type": "boolean",
                                 "description": "More messages exist beyond this page in the "
                                                "direction asked"}}))},
            security=_BEARER, params=("RoomId",), query=_SHAPES.history,
            errors=("RoomNotFound", "NotMember"),
            description="No cursor: the newest `limit` messages; `before=S`: the newest `limit` "
                        "with seq < S; `after=S`: the oldest `limit` with seq > S (`before` and "
                        "`after` together are 422). `has_more` says whether more exist beyond the "
                        "page in the direction asked (older without a cursor or with `before`, "
                        "newer with `after`).\n\n`wait=T` (only with `after`, else 422) long-polls: "
                        "if nothing is newer than S, the request is held until a message arrives "
                        "or T seconds pass, then answers `messages: []`. A caller that left the "
                        "room while waiting gets 403."),
    },
    "/rooms/{room_id}/messages/{seq}": {
        "patch": _op(
            "editMessage", "Messages", "Edit one's message", {
                "200": _ok("The edit entry (kind `edit`, `target_seq`, `new_text`): a timeline entry "
                           "with the room's next seq", _MESSAGE_BODY),
                "404": _error("No such room, or no entry with that seq", "not_found")},
            security=_BEARER, params=("RoomId", "Seq"), body=_SHAPES.new_message,
            errors=("NotMember", "NotEditable", "RateLimited"),
            description="Only the message's author may edit it (403 otherwise), and only a text entry "
                        "that is not deleted (409 `not_editable`). The text follows the rules of "
                        "sends. The message's `text` becomes the new one and its `edited_at` the "
                        "edit's time, in history and in every later live frame; the edit itself "
                        "reaches subscribers as a `message` frame. Idempotent by `txn_id` like a "
                        "send (the same `txn_id` answers the same edit entry; one used for another "
                        "message is 422). An edit counts as a send for the rate limit."),
        "delete": _op(
            "deleteMessage", "Messages", "Delete a message", {
                "200": _ok("The delete entry (kind `delete`, `target_seq`): a timeline entry with the "
                           "room's next seq", _MESSAGE_BODY),
                "404": _error("No such room, or no entry with that seq", "not_found")},
            security=_BEARER, params=("RoomId", "Seq"), errors=("NotMember", "NotEditable"),
            description="The author, a moderator or the owner may delete a message (403 for other "
                        "members), and only a text entry that is not deleted (409 `not_editable`). "
                        "The stored text is erased, not hidden: the message shows `\"text\": \"\"` "
                        "and `deleted: true`, the edits made to it `\"new_text\": \"\"`, and search "
                        "forgets it at the same commit."),
    },
    "/rooms/{room_id}/read": {"put": _op(
        "markRead", "Messages", "Move the caller's read marker", {
            "200": _ok("The marker after the call", _obj({"read_seq": _COUNT}))},
        security=_BEARER, params=("RoomId",), body=_SHAPES.read_marker,
        errors=("RoomNotFound", "NotMember"),
        description="Moves the marker forward only: a seq at or below it is ignored (not an "
                    "error), one above the room's `last_seq` is clamped to it. When it moves, "
                    "every websocket of the caller gets `{\"type\":\"read\",\"room_id\","
                    "\"read_seq\"}`, so another device clears its badge.")},
    "/search": {"get": _op(
        "search", "Messages", "Search the messages of the caller's rooms", {
            "200": _ok("Matching messages, newest first", _obj({
                "results": _list(_obj({
                    "message": _schema("Message"),
                    "highlights": _list({"type": "array", "items": _COUNT, "minItems": 2, "maxItems": 2,
                                         "description": "[start, end) in code points of `text`"}),
                })),
                "has_more": {"type": "boolean", "description": "More results exist: ask again with "
                                                               "`before` = the last message id"}}))},
        security=_BEARER, query=_SHAPES.search, errors=("RoomNotFound", "NotMember"),
        description="Full-text search over the current text of the text messages in the rooms "
                    "the caller is a member of (or, with `room_id`, that one: 404 if it does not "
                    "exist, 403 if the caller is not a member). `q` is split into words (runs of "
                    "letters and digits): each must match the start of a word of the text, "
                    "ignoring case and accents. Nothing in `q` is a query language: quotes, `*`, "
                    "`OR`, `NEAR`, `-` and `column:` are plain text or separators; a `q` with no "
                    "letter or digit finds nothing. A repeated word, or one another word of `q` "
                    "starts with, is left out; more than 16 different words is 422. Results are "
                    "newest first (by message id); page with `before`. `highlights` are the "
                    "matching words of `text`.")},
    "/ws": {"get": _op(
        "websocket", "Websocket", "Open the websocket", {
            "101": _ok("Switching Protocols: the connection is a websocket from here on", headers={
                "Upgrade": _header("websocket", {"const": "websocket"}),
                "Sec-WebSocket-Accept": _header("The handshake answer (RFC 6455)", {"type": "string"})}),
            "400": _error("Not a valid websocket upgrade (RFC 6455 §4.2.1: HTTP/1.1, Upgrade, "
                          "Connection, one 16-byte Sec-WebSocket-Key, a Sec-WebSocket-Version)",
                          "bad_request"),
            "426": _error("A Sec-WebSocket-Version other than 13 (RFC 6455 §4.2.2): upgrade to "
                          "websocket version 13", "upgrade_required", headers={
                              "Sec-WebSocket-Version": _header("The version this server speaks",
                                                               {"const": "13"}),
                              "Upgrade": _header("websocket", {"const": "websocket"})}),
            "403": _error("A browser's Origin is neither this host nor one of the allowed origins",
                          "forbidden")},
        security=[*_BEARER, {}], description=_WS_DESCRIPTION)},
}


def document() -> JSON:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "chat_trio",
            "version": __version__,
            "description": "Chat rooms over REST and a websocket on one port. Bodies are JSON "
                           "(UTF-8, `Content-Type: application/json`); unknown body fields are 422. "
                           "Every non-2xx answer has the `Error` body. Limits shown are the "
                           "server's defaults, all configurable.",
        },
        "tags": [{"name": name} for name in ("Accounts", "Rooms", "Moderation", "Messages", "Websocket",
                                             "Admin", "Service")],
        "paths": PATHS,
        "components": COMPONENTS,
    }
