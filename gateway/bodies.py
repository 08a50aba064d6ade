"""Request bodies as hostile clients send them: capped before they are read, parsed safely.

JSON and YAML nest at most 64 deep; YAML aliases (the "billion laughs") are refused.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import yaml
from fastapi import Request
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import BodyTimeout, BodyTooLarge, InvalidRequest

MAX_DEPTH = 64
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")


class BodyLimit:
    """ASGI middleware: 413 for a body over `limit` bytes, 408 for one slower than `seconds`.

    A declared Content-Length over the limit is answered at once; a chunked body is counted
    as it arrives and cut off at the limit.
    """

    def __init__(self, app: ASGIApp, limit: int, seconds: float = 60.0) -> None:
        self.app, self.limit, self.seconds = app, limit, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen, complete = 0, False
        deadline = asyncio.get_running_loop().time() + self.seconds

        async def counted() -> Message:
            nonlocal seen, complete
            if complete:  # the body is in: waits for a disconnect are not timed
                return await receive()
            left = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), max(left, 0.0))
            except TimeoutError:
                raise BodyTimeout(
                    f"the request body did not arrive within {self.seconds:g} s"
                ) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if seen > self.limit:
                    raise BodyTooLarge(self._text())
            return message

        await self.app(scope, counted, send)

    def _text(self) -> str:
        return f"the request body is larger than {self.limit} bytes"

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = PlainTextResponse(self._text(), status_code=413, headers={"Connection": "close"})
        await answer(scope, receive, send)


class _NoAliases(yaml.SafeLoader):
    """PyYAML's safe loader, refusing aliases: each one can multiply the document."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted", mark)
        return super().compose_node(parent, index)


def _depth(value: Any) -> int:
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if deepest > MAX_DEPTH:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, level + 1) for child in children)
    return deepest


def parse_json(raw: bytes | str) -> Any:
    """A JSON document; 400 when it is not JSON, not UTF-8 or nested too deep."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise InvalidRequest(f"the JSON body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError:
        raise InvalidRequest("the request body is not valid JSON") from None
    if _depth(value) > MAX_DEPTH:
        raise InvalidRequest(f"the JSON body nests deeper than {MAX_DEPTH} levels")
    return value


def parse_yaml(raw: bytes) -> Any:
    """A YAML document, without aliases or tags beyond YAML's own; 400 otherwise."""
    try:
        value = yaml.load(raw, Loader=_NoAliases)
    except RecursionError:
        raise InvalidRequest(f"the YAML body nests deeper than {MAX_DEPTH} levels") from None
    except yaml.composer.ComposerError as exc:
        raise InvalidRequest(f"the YAML body is refused: {exc.problem}") from None
    except yaml.YAMLError:
        raise InvalidRequest("the request body is not valid YAML") from None
    if _depth(value) > MAX_DEPTH:
        raise InvalidRequest(f"the YAML body nests deeper than {MAX_DEPTH} levels")
    return value


def media_type(request: Request) -> str:
    """The request's content type without parameters, lower case."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def json_body(request: Request) -> Any:
    """The request's JSON body (read under the gateway's size limit)."""
    return parse_json(await request.body())
