"""ESAP's paginated envelope for lists: `page` and `page_size` (50, at most 500), as DRF does.

`{description, version, requested_page, requested_page_size, default_page_size,
max_page_size, count, pages, links: {next, previous}, results}`; an invalid page is a 404.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import Request

from gateway.errors import NotFound

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
VERSION = "0.1.0"


@dataclass(frozen=True)
class Page:
    """One page of a list: which, how big, and where it starts."""

    number: int
    size: int
    count: int

    @property
    def pages(self) -> int:
        """How many pages the list has (one, even when empty, as DRF counts)."""
        return max(1, math.ceil(self.count / self.size))

    @property
    def offset(self) -> int:
        """Index of the page's first item."""
        return (self.number - 1) * self.size


def _page_size(text: str | None) -> int:
    """DRF's reading: a positive whole number, capped at the maximum; the default otherwise."""
    if text and text.isascii() and text.isdigit() and len(text) < 10 and int(text) > 0:
        return min(int(text), MAX_PAGE_SIZE)
    return DEFAULT_PAGE_SIZE


def page_of(request: Request, count: int) -> Page:
    """The page a request asks for; NotFound ("Invalid page.") for one that does not exist."""
    size = _page_size(request.query_params.get("page_size"))
    last = max(1, math.ceil(count / size))
    text = request.query_params.get("page", "1")
    if text == "last":
        return Page(last, size, count)
    if not (text.isascii() and text.isdigit() and len(text) < 10) or not 1 <= int(text) <= last:
        raise NotFound("Invalid page.")
    return Page(int(text), size, count)


def _link(request: Request, base: str, number: int | None) -> str | None:
    if number is None:
        return None
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "page"]
    if number > 1:
        query.append(("page", str(number)))
    return f"{base}{request.url.path}" + (f"?{urlencode(query)}" if query else "")


def envelope(request: Request, base: str, page: Page, description: str) -> dict[str, Any]:
    """The envelope of `page`, without its results; links are absolute, under `base`."""
    return {
        "description": description,
        "version": VERSION,
        "requested_page": page.number,
        "requested_page_size": page.size,
        "default_page_size": DEFAULT_PAGE_SIZE,
        "max_page_size": MAX_PAGE_SIZE,
        "count": page.count,
        "pages": page.pages,
        "links": {
            "next": _link(request, base, page.number + 1 if page.number < page.pages else None),
            "previous": _link(request, base, page.number - 1 if page.number > 1 else None),
        },
    }


def paged_json(request: Request, base: str, page: Page, description: str, results: bytes) -> bytes:
    """The envelope as JSON text with `results`, a JSON array already rendered."""
    head = json.dumps(envelope(request, base, page, description), ensure_ascii=False)
    return head[:-1].encode() + b',"results":' + results + b"}"


def paged_items(
    request: Request, base: str, items: list[Any], description: str, render: Callable[[Any], Any]
) -> dict[str, Any]:
    """The envelope of a list held in memory, each item of the page rendered."""
    page = page_of(request, len(items))
    chosen = items[page.offset : page.offset + page.size]
    return {
        **envelope(request, base, page, description),
        "results": [render(item) for item in chosen],
    }
