"""TLS and mTLS: certificates made with the openssl CLI, servers started with --tls_cert/--tls_key and
--tls_client_ca."""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .server_harness import Assets, ServerProcess, run_client


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path           # an unrelated CA
    other_client_cert: Path  # a client certificate signed by the unrelated CA
    other_client_key: Path

    def credentials(self, client: bool = False, root: Path | None = None) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=(root or self.ca).read_bytes(),
            private_key=self.client_key.read_bytes() if client else None,
            certificate_chain=self.client_cert.read_bytes() if client else None)


def openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"openssl {' '.join(args)}: {done.stderr}"


def make_ca(d: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=d)


def make_leaf(d: Path, name: str, ca: str, extensions: str) -> None:
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    (d / f"{name}.ext").write_text(extensions)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture(scope="module")
def pki(assets: Assets) -> Pki:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command line tool is needed to make test certificates (apt-get install "
                    "openssl)", pytrace=False)
    d = assets.tmp / "pki"
    d.mkdir(exist_ok=True)
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_leaf(d, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
              "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    client_ext = "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
    make_leaf(d, "client", "ca", client_ext)
    make_leaf(d, "other-client", "other-ca", client_ext)
    return Pki(ca=d / "ca.pem", server_cert=d / "server.pem", server_key=d / "server.key",
               client_cert=d / "client.pem", client_key=d / "client.key", other_ca=d / "other-ca.pem",
               other_client_cert=d / "other-client.pem", other_client_key=d / "other-client.key")


@pytest.fixture(scope="module")
def tls_server(start_server, pki: Pki) -> ServerProcess:
    return start_server("tls", credentials=pki.credentials(),
                        extra_args=["--tls_cert", str(pki.server_cert), "--tls_key", str(pki.server_key)])


@pytest.fixture(scope="module")
def mtls_server(start_server, pki: Pki) -> ServerProcess:
    return start_server("mtls", credentials=pki.credentials(client=True),
                        extra_args=["--tls_cert", str(pki.server_cert), "--tls_key", str(pki.server_key),
                                    "--tls_client_ca", str(pki.ca)])


def caption(stubs, channel: grpc.Channel, assets: Assets):
    pb = stubs.pb2
    request = pb.CaptionRequest(image=pb.Image(encoded=assets.image("chelsea.webp").read_bytes()),
                                options=pb.Options(max_new_tokens=8, num_beams=1))
    return stubs.pb2_grpc.FlorenceStub(channel).Caption(request, timeout=30)


def assert_refused(stubs, channel: grpc.Channel, assets: Assets) -> None:
    with pytest.raises(grpc.RpcError) as e:
        caption(stubs, channel, assets)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE, (e.value.code(), e.value.details())


def test_tls_client_trusting_the_ca_is_served(tls_server: ServerProcess, pki: Pki, stubs, assets) -> None:
    response = caption(stubs, tls_server.channel(pki.credentials()), assets)
    assert response.result.usage.generated_tokens > 0
    health = health_pb2_grpc.HealthStub(tls_server.channel(pki.credentials()))
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
        health_pb2.HealthCheckResponse.SERVING


def test_tls_server_refuses_plaintext(tls_server: ServerProcess, stubs, assets) -> None:
    with grpc.insecure_channel(tls_server.address) as channel:
        assert_refused(stubs, channel, assets)


def test_tls_client_not_trusting_the_server_fails(tls_server: ServerProcess, pki: Pki, stubs, assets) -> None:
    assert_refused(stubs, tls_server.channel(pki.credentials(root=pki.other_ca)), assets)


def test_tls_client_example_with_ca(tls_server: ServerProcess, pki: Pki, assets: Assets) -> None:
    done = run_client(assets, "--server", tls_server.address, "--tls-ca", str(pki.ca), "--task", "caption",
                      "--num-beams", "1", "--max-new-tokens", "8", str(assets.image("astronaut.jpg")))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("task: caption  image: 512x512")
    # "localhost" is in the certificate's SANs too.
    done = run_client(assets, "--server", f"localhost:{tls_server.port}", "--tls-ca", str(pki.ca),
                      "--max-new-tokens", "4", "--num-beams", "1", str(assets.image("astronaut.jpg")))
    assert done.returncode == 0, done.stderr


def test_mtls_client_with_certificate_is_served(mtls_server: ServerProcess, pki: Pki, stubs, assets) -> None:
    response = caption(stubs, mtls_server.channel(pki.credentials(client=True)), assets)
    assert response.result.usage.generated_tokens > 0


def test_mtls_client_without_certificate_fails(mtls_server: ServerProcess, pki: Pki, stubs, assets) -> None:
    assert_refused(stubs, mtls_server.channel(pki.credentials(client=False)), assets)


def test_mtls_client_certificate_from_another_ca_fails(mtls_server: ServerProcess, pki: Pki, stubs,
                                                       assets) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes(),
                                               private_key=pki.other_client_key.read_bytes(),
                                               certificate_chain=pki.other_client_cert.read_bytes())
    assert_refused(stubs, mtls_server.channel(credentials), assets)


def test_mtls_refuses_plaintext(mtls_server: ServerProcess, stubs, assets) -> None:
    with grpc.insecure_channel(mtls_server.address) as channel:
        assert_refused(stubs, channel, assets)


def test_mtls_client_example(mtls_server: ServerProcess, pki: Pki, assets: Assets) -> None:
    base = ["--server", mtls_server.address, "--tls-ca", str(pki.ca), "--max-new-tokens", "4",
            "--num-beams", "1", "--timeout", "20", str(assets.image("astronaut.jpg"))]
    done = run_client(assets, *base, "--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key))
    assert done.returncode == 0, done.stderr
    done = run_client(assets, *base)
    assert done.returncode == 1 and done.stderr.startswith("error: UNAVAILABLE"), done.stderr
