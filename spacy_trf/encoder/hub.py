"""Whether the Hugging Face Hub can be reached, found out in seconds.

Without network huggingface_hub retries each file for about half a minute before it falls back
to its cache or fails; one TCP connection tells the same at once.
"""

import os
import socket
from typing import Any
from urllib.parse import urlparse

from huggingface_hub import constants, try_to_load_from_cache

from .. import defaults

PROXY_VARIABLES = (
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
)


def hub_offline() -> bool:
    """Whether huggingface_hub is in offline mode (HF_HUB_OFFLINE)."""
    return bool(constants.is_offline_mode())


def hub_reachable(timeout: float = defaults.HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hub endpoint (HF_ENDPOINT) opens within ``timeout``.

    Behind a proxy the answer is left to huggingface_hub (True), since only the proxy connects.
    """
    if any(os.environ.get(var) for var in PROXY_VARIABLES):
        return True
    url = urlparse(constants.ENDPOINT)
    if not url.hostname:
        return True
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def in_hub_cache(name: str, hub_kwargs: dict[str, Any]) -> bool:
    """Whether the hub id's config.json is in the local Hugging Face cache."""
    try:
        found = try_to_load_from_cache(
            name,
            "/".join(filter(None, [hub_kwargs.get("subfolder"), "config.json"])),
            cache_dir=hub_kwargs.get("cache_dir"),
            revision=hub_kwargs.get("revision"),
        )
    except ValueError:  # not a valid repo id
        return False
    return isinstance(found, str)
