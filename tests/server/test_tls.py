"""HTTPS with --ssl-key-file/--ssl-cert-file, against a self-signed certificate made here."""
from __future__ import annotations

import shutil
import socket
import ssl
import subprocess

import pytest
import requests

from helpers import ServerProcess, sse_events

# helpers.ServerProcess.wait_ready polls /health without verification
pytestmark = pytest.mark.filterwarnings("ignore:Unverified HTTPS request")


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return str(key), str(crt)


@pytest.fixture(scope="module")
def server(server_factory, cert):
    key, crt = cert
    return server_factory("-c", "256", "--ssl-key-file", key, "--ssl-cert-file", crt, scheme="https")


def test_health_over_https(server, cert):
    r = requests.get(server.url + "/health", verify=cert[1], timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_completion_over_https(server, cert):
    body = {"prompt": "The capital of France is", "n_predict": 6, "temperature": 0}
    r = requests.post(server.url + "/completion", json=body, verify=cert[1], timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["tokens_predicted"] == 6
    r = requests.post(server.url + "/completion", json={**body, "stream": True}, verify=cert[1], stream=True,
                      timeout=120)
    events = sse_events(r)
    assert events[-1]["stop"] is True


def test_untrusted_certificate_is_rejected_by_clients(server):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(server.url + "/health", timeout=30)     # the system CAs do not know it


def test_plain_http_is_not_served(server, cert):
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{server.port}/health", timeout=10)
    # and the server keeps serving TLS afterwards
    assert requests.get(server.url + "/health", verify=cert[1], timeout=30).status_code == 200


def test_tls_version_and_certificate(server, cert):
    ctx = ssl.create_default_context(cafile=cert[1])
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            assert tls.getpeercert()["subject"] == ((("commonName", "127.0.0.1"),),)


def test_key_without_cert_is_refused(cert):
    srv = ServerProcess("-c", "256", "--ssl-key-file", cert[0], wait=False)
    try:
        assert srv.proc.wait(30) != 0
        assert "ssl" in srv.log().lower()
    finally:
        srv.stop()


def test_bad_certificate_file_fails_to_start(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    srv = ServerProcess("-c", "256", "--ssl-key-file", str(bad), "--ssl-cert-file", str(bad), wait=False)
    try:
        assert srv.proc.wait(60) != 0
    finally:
        srv.stop()
