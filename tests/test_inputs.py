"""Job inputs from ESAP baskets: item kinds, and VO datasets fetched with pyvo over HTTP."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import pytest

from blocks.basket import parse_inputs
from blocks.vo import fetch_vo
from core.errors import FatalError
from tests.servers.vo import VoService


def test_basket_items_are_sorted_into_rucio_dids_and_vo_items() -> None:
    parsed = parse_inputs(
        [
            "esap:raw",
            {"archive": "rucio", "record": {"did": "cta:run1"}},
            {"archive": "rucio", "record": {"scope": "cta", "name": "run2"}},
            {"archive": "astron_vo", "record": {"access_url": "https://vo.example/a.fits"}},
            {"archive": "vo_reg", "record": {"datalink": "https://vo.example/links?ID=1"}},
        ]
    )
    assert parsed.dids == ["esap:raw", "cta:run1", "cta:run2"]
    assert [(v.index, v.archive, v.access_url, v.datalink) for v in parsed.vo] == [
        (4, "astron_vo", "https://vo.example/a.fits", None),
        (5, "vo_reg", None, "https://vo.example/links?ID=1"),
    ]


@pytest.mark.parametrize(
    ("item", "error"),
    [
        ({"archive": "zenodo", "record": {}}, "input 1: archive 'zenodo' is not supported"),
        ({"archive": "rucio", "record": {"name": "x"}}, "needs 'did' or 'scope' and 'name'"),
        ({"archive": "astron_vo", "record": {}}, "needs 'access_url' (or 'url') or 'datalink'"),
        (
            {"archive": "astron_vo", "record": {"access_url": "file:///etc/passwd"}},
            "access_url must be an http(s) URL",
        ),
        ({"archive": "rucio"}, "must be a DID string or a basket item"),
        (42, "must be a DID string or a basket item"),
    ],
)
def test_bad_basket_items_are_refused_by_number(item: Any, error: str) -> None:
    with pytest.raises(FatalError) as caught:
        parse_inputs([item])
    assert error in str(caught.value)


def test_access_urls_and_datalinks_are_fetched_with_their_checksums(
    vo: VoService, tmp_path: Path
) -> None:
    image = vo.file("obs/image.fits", b"SIMPLE  = T" * 100)
    cube = vo.file("obs/cube.fits", b"cube" * 50)
    links = vo.datalink(
        "links-1.xml", [("#this", cube, None), ("#preview", vo.file("p.png", b"png"), None)]
    )
    parsed = parse_inputs(
        [
            {"archive": "astron_vo", "record": {"access_url": image}},
            {"archive": "vo_reg", "record": {"datalink": links}},
        ]
    )
    fetched = fetch_vo(parsed.vo, tmp_path)
    assert [(f.name, f.size) for f in fetched] == [
        ("vo/1/image.fits", 1100),
        ("vo/2/cube.fits", 200),
    ]
    assert fetched[1].source == cube
    assert fetched[1].adler32 == f"{zlib.adler32(b'cube' * 50):08x}"
    assert (tmp_path / "vo/2/cube.fits").read_bytes() == b"cube" * 50
    assert not list(tmp_path.rglob("*.partial"))


def test_vo_failures_name_the_item_and_the_url(vo: VoService, tmp_path: Path) -> None:
    gone = f"{vo.url}/obs/never.fits"
    with pytest.raises(FatalError, match=r"input 1: .*never\.fits cannot be fetched.*404"):
        fetch_vo(parse_inputs([{"archive": "ivoa", "record": {"access_url": gone}}]).vo, tmp_path)
    refused = vo.datalink("links-2.xml", [("#this", None, "NotFoundFault: no such dataset")])
    with pytest.raises(FatalError, match="input 1: the DataLink service says: NotFoundFault"):
        fetch_vo(parse_inputs([{"archive": "ivoa", "record": {"datalink": refused}}]).vo, tmp_path)
    nothing = vo.datalink("links-3.xml", [("#preview", vo.file("q.png", b"png"), None)])
    with pytest.raises(FatalError, match="has no #this link"):
        fetch_vo(parse_inputs([{"archive": "ivoa", "record": {"datalink": nothing}}]).vo, tmp_path)
