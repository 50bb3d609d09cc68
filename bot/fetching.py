"""Fetching pages and feeds politely and safely: public http(s) only, one request per host at a
time, a time limit, a size cap, and redirects followed by hand so each hop is checked too."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from embeddings import (
    FetchError,
    UnsafeAddressError,
)

USER_AGENT = "newsqa/0.1 (feed reader)"


@dataclass(frozen=True)
class FetchPolicy:
    """How far a fetch may go: private addresses, seconds, bytes and redirects."""

    allow_private: bool = False
    timeout: float = 20.0
    max_bytes: int = 5_000_000
    max_redirects: int = 5


@dataclass(frozen=True)
class Response:
    """A page or feed as fetched; status 304 means "not modified" and has no body."""

    url: str
    status: int
    body: bytes
    content_type: str
    etag: str | None = None
    last_modified: str | None = None


@dataclass
class Fetcher:
    """An HTTP client that keeps to a `FetchPolicy`."""

    policy: FetchPolicy = field(default_factory=FetchPolicy)
    client: httpx.AsyncClient = field(
        default_factory=lambda: httpx.AsyncClient(headers={"User-Agent": USER_AGENT})
    )
    _hosts: defaultdict[str, asyncio.Lock] = field(
        default_factory=lambda: defaultdict(asyncio.Lock)
    )

    async def get(self, url: str, headers: dict[str, str] | None = None) -> Response:
        """GET `url`, following redirects; `FetchError` names what went wrong."""
        seen: set[str] = set()
        for _ in range(self.policy.max_redirects + 1):
            seen.add(url)
            response = await self._get_once(url, headers or {})
            if not isinstance(response, str):
                return response
            url = response
            if url in seen:
                raise FetchError(f"{url} redirects in a loop")
        raise FetchError(f"{url} redirects more than {self.policy.max_redirects} times")

    async def _get_once(self, url: str, headers: dict[str, str]) -> Response | str:
        """The response, or the address a redirect points to."""
        address = await check_address(url, self.policy.allow_private)
        async with self._hosts[urlsplit(url).hostname or ""]:
            try:
                async with asyncio.timeout(self.policy.timeout):
                    return await self._request(url, headers, address)
            except TimeoutError as error:
                seconds = self.policy.timeout
                raise FetchError(f"{url} did not answer within {seconds:g} s") from error
            except httpx.HTTPError as error:
                raise FetchError(f"{url} could not be fetched ({error!r})") from error

    async def _request(
        self, url: str, headers: dict[str, str], address: str | None
    ) -> Response | str:
        target, headers, extensions = _pinned(url, headers, address)
        request = self.client.stream("GET", target, headers=headers, extensions=extensions)
        async with request as response:
            if response.is_redirect and "location" in response.headers:
                return urljoin(url, response.headers["location"])
            if response.status_code >= 400:
                raise FetchError(f"{url} answered HTTP {response.status_code}")
            body = await self._body(url, response)
            return Response(
                url=url,
                status=response.status_code,
                body=body,
                content_type=response.headers.get("content-type", ""),
                etag=response.headers.get("etag"),
                last_modified=response.headers.get("last-modified"),
            )

    async def _body(self, url: str, response: httpx.Response) -> bytes:
        """The body, read no further than the size cap."""
        cap = self.policy.max_bytes
        if int(response.headers.get("content-length") or 0) > cap:
            raise FetchError(f"{url} is larger than {cap:,} bytes")
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > cap:
                raise FetchError(f"{url} is larger than {cap:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        await self.client.aclose()


async def check_address(url: str, allow_private: bool) -> str | None:
    """The address to connect to for `url` when it may be fetched: http(s), and unless
    `allow_private`, every address the host resolves to is public (no loopback, private,
    link-local, multicast or reserved address, so a page cannot make the server fetch from
    inside its network). None with `allow_private`: the host is resolved as usual."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeAddressError(f"{url} is not an http(s) address")
    host = parts.hostname
    if allow_private:
        return None
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as error:
        raise FetchError(f"{host} cannot be resolved ({error})") from error
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not _public(address):
            raise UnsafeAddressError(f"{url} resolves to {address}, which is not public")
    return str(infos[0][4][0])


def _pinned(
    url: str, headers: dict[str, str], address: str | None
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The request for `url` sent to the checked `address`, with the host's name in the Host
    header and for TLS: resolving the name again could give an address never checked."""
    if address is None:
        return url, headers, {}
    parts = urlsplit(url)
    netloc = f"[{address}]" if ":" in address else address
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    host = parts.netloc.rsplit("@", 1)[-1]
    target = urlunsplit(parts._replace(netloc=netloc))
    return target, {**headers, "Host": host}, {"sni_hostname": parts.hostname}


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )
