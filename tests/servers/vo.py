"""A VO service on loopback: files, and DataLink VOTables pointing at them, over plain HTTP.

Stands in for an ESAP archive (astron_vo, vo_reg) so basket items can be fetched for real.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

DATALINK = """<?xml version="1.0" encoding="UTF-8"?>
<VOTABLE version="1.3" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">
 <RESOURCE type="results">
  <TABLE>
   <FIELD name="ID" datatype="char" arraysize="*" ucd="meta.id;meta.main"/>
   <FIELD name="access_url" datatype="char" arraysize="*" ucd="meta.ref.url"/>
   <FIELD name="service_def" datatype="char" arraysize="*" ucd="meta.ref"/>
   <FIELD name="error_message" datatype="char" arraysize="*" ucd="meta.code.error"/>
   <FIELD name="description" datatype="char" arraysize="*" ucd="meta.note"/>
   <FIELD name="semantics" datatype="char" arraysize="*" ucd="meta.code"/>
   <FIELD name="content_type" datatype="char" arraysize="*" ucd="meta.code.mime"/>
   <FIELD name="content_length" datatype="long" unit="byte" ucd="phys.size;meta.file"/>
   <DATA><TABLEDATA>
{rows}
   </TABLEDATA></DATA>
  </TABLE>
 </RESOURCE>
</VOTABLE>
"""


class _Handler(SimpleHTTPRequestHandler):
    service: VoService

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.service.hosts.append(self.headers.get("Host", ""))
        target = self.service.redirects.get(self.path)
        if target is None:
            super().do_GET()
            return
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()


@dataclass
class VoService:
    """Files under `root`, served at `url`; the Host header of every request, in `hosts`."""

    root: Path
    url: str
    redirects: dict[str, str] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)

    def redirect(self, name: str, target: str) -> str:
        """Answer `name` with a redirect to `target`; the URL of `name`."""
        self.redirects[f"/{name}"] = target
        return f"{self.url}/{name}"

    def file(self, name: str, data: bytes) -> str:
        """Publish `data` as `name`; its access URL."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return f"{self.url}/{name}"

    def datalink(self, name: str, links: list[tuple[str, str | None, str | None]]) -> str:
        """Publish a DataLink response of (semantics, access_url, error_message) rows."""
        rows = []
        for index, (semantics, access_url, error) in enumerate(links):
            cells = [f"ivo://esap.test/{name}?{index}", access_url or "", "", error or ""]
            cells += ["", semantics, "application/octet-stream", "0"]
            rows.append("    <TR>" + "".join(f"<TD>{escape(c)}</TD>" for c in cells) + "</TR>")
        return self.file(name, DATALINK.format(rows="\n".join(rows)).encode())


@contextmanager
def vo_service(root: Path, port: int = 0) -> Iterator[VoService]:
    """Serve `root` over HTTP on loopback (`port`, or a free one) for the duration."""
    root.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    service = VoService(root, f"http://127.0.0.1:{server.server_address[1]}")
    bound = type("Handler", (_Handler,), {"service": service})
    server.RequestHandlerClass = functools.partial(bound, directory=str(root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        server.shutdown()
        server.server_close()
