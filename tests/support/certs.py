"""Certificates for the HTTPS tests, issued by a throwaway trustme CA and written as PEM files."""

from __future__ import annotations

from pathlib import Path

from selfieless.gateway.tls import CertPair


def write_pair(ca, folder: Path, name: str, *hosts: str, **kw) -> CertPair:
    """A certificate for ``hosts`` (chain in ``<name>.crt``, key in ``<name>.key``); ``kw`` go to
    ``issue_cert`` (``not_before``, ``not_after``)."""
    leaf = ca.issue_cert(*hosts, **kw)
    cert, key = Path(folder) / f"{name}.crt", Path(folder) / f"{name}.key"
    leaf.private_key_pem.write_to_path(str(key))
    cert.write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    return CertPair(str(cert), str(key))
