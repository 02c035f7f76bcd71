"""Webhook deliveries share one TLS context, and it still verifies receivers."""

from __future__ import annotations

import ssl

from worker.webhooks import tls_context


def test_the_shared_context_verifies_certificates_and_host_names():
    context = tls_context()
    assert context is tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    # The CA bundle is loaded: an empty store would refuse every receiver.
    assert context.cert_store_stats()["x509_ca"] > 0
