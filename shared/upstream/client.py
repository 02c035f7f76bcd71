"""The single door to `tabpfn-client`.

The client fixes its server URL when it is first imported (its HTTP client is
a class attribute), so the environment must say where the upstream is before
any `tabpfn_client` module loads. Everything in this project imports the
client through `load_client()`.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

from shared.core.config import get_settings


def load_client() -> SimpleNamespace:
    os.environ.setdefault("TABPFN_CLIENT_API_URL", get_settings().tabpfn_api_url)
    from tabpfn_client import api_models, errors, models
    from tabpfn_client.client import ServiceClient

    return SimpleNamespace(
        ServiceClient=ServiceClient, api_models=api_models, errors=errors, models=models
    )
