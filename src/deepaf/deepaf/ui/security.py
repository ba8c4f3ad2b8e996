"""Access control of the dashboard (no web framework): the token and the command rate limit.

The page moves hardware, so a dashboard reachable from other machines (`--host 0.0.0.0`) needs
a token, printed at start and checked on every HTTP and WebSocket request (header, `?token=`
query or the cookie the page sets), compared in constant time. On loopback without a token,
the Host header must name the loopback (a DNS-rebinding page cannot reach the stage).
Commands are rate-limited per client with a token bucket.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable, Mapping

#: Header, query parameter and cookie that carry the token.
TOKEN_HEADER = "X-DeepAf-Token"
TOKEN_QUERY = "token"
TOKEN_COOKIE = "deepaf_token"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def make_token() -> str:
    """A fresh random token (32 URL-safe characters)."""
    return secrets.token_urlsafe(24)


def is_loopback(host: str) -> bool:
    """Whether a listen address or Host header name (port allowed) is this machine only."""
    name = host.strip()
    if name.startswith("["):  # [::1]:8080
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:  # 127.0.0.1:8080, localhost:8080
        name = name.split(":", 1)[0]
    if name.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def token_required(host: str, token: str | None) -> bool:
    """Whether requests must carry a token: always off loopback, and whenever one is set.

    Raises:
        ValueError: listening beyond loopback without a token.
    """
    if not is_loopback(host) and not token:
        raise ValueError(f"--host {host} is reachable from other machines: a token is required")
    return bool(token)


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented token with the expected one."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def presented_token(
    headers: Mapping[str, str], query: Mapping[str, str], cookies: Mapping[str, str]
) -> str | None:
    """The token a request carries: `X-DeepAf-Token` or `Authorization: Bearer`, `?token=`,
    or the cookie (first found)."""
    value = headers.get(TOKEN_HEADER)
    if value:
        return value
    auth = headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return query.get(TOKEN_QUERY) or cookies.get(TOKEN_COOKIE) or None


def check_request(
    expected: str | None,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    cookies: Mapping[str, str],
) -> str | None:
    """Why a request is refused (None when it may proceed).

    With a token: it must be presented. Without one (loopback only): the Host header must be
    the loopback, and a cross-site Origin is refused.
    """
    origin = headers.get("Origin", "")
    host = headers.get("Host", "")
    if origin and host and origin.split("://", 1)[-1].rstrip("/") != host:
        return f"cross-origin request from {origin} refused"
    if expected:
        if not token_matches(presented_token(headers, query, cookies), expected):
            return "missing or wrong token (give it as ?token=..., or the X-DeepAf-Token header)"
        return None
    if host and not is_loopback(host):
        return f"Host {host!r} is not this machine's loopback"
    return None


class RateLimiter:
    """Token bucket per client: at most `rate` commands/s sustained, `burst` at once.

    Args:
        rate: commands per second refilled.
        burst: bucket size.
        clock: monotonic seconds (tests pass their own).
        max_clients: clients remembered (the least recently seen are forgotten).
    """

    def __init__(
        self,
        rate: float = 5.0,
        burst: int = 10,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 1024,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate {rate} must be > 0 and burst {burst} >= 1")
        self.rate, self.burst, self._clock = float(rate), int(burst), clock
        self._max = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last time)

    def check(self, key: str) -> float | None:
        """Take one command for `key`: None when allowed, else seconds until one is allowed."""
        now = self._clock()
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)  # most recent last
        while len(self._buckets) > self._max:
            del self._buckets[next(iter(self._buckets))]
        return None if allowed else (1.0 - tokens) / self.rate
