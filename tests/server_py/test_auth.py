"""Bearer-token auth (--auth_token_file): Florence calls need "authorization: Bearer <token>"; health and
reflection stay open for probes."""
from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from .server_harness import Assets, ServerProcess, run_client

TOKEN = "s3cret-token.with/odd+chars=="


@pytest.fixture(scope="module")
def auth_server(start_server, assets: Assets) -> ServerProcess:
    token_file = assets.tmp / "token.txt"
    token_file.write_text(TOKEN + "\n")
    return start_server("auth", extra_args=["--auth_token_file", str(token_file)])


def caption_request(stubs, assets: Assets):
    pb = stubs.pb2
    return pb.CaptionRequest(image=pb.Image(encoded=assets.image("coffee.png").read_bytes()),
                             options=pb.Options(max_new_tokens=8, num_beams=1))


@pytest.mark.parametrize("metadata", [
    None,
    [("authorization", "Bearer wrong-token")],
    [("authorization", f"Bearer {TOKEN}x")],
    [("authorization", f"Bearer {TOKEN[:-1]}")],
    [("authorization", TOKEN)],                # no scheme
    [("authorization", f"Basic {TOKEN}")],     # another scheme
    [("x-api-key", TOKEN)],                    # another header
], ids=["none", "wrong", "longer", "shorter", "no-scheme", "basic", "other-header"])
def test_calls_without_the_right_token_are_unauthenticated(auth_server: ServerProcess, stubs, assets,
                                                           metadata) -> None:
    stub = auth_server.stub(stubs)
    with pytest.raises(grpc.RpcError) as e:
        stub.Caption(caption_request(stubs, assets), metadata=metadata, timeout=30)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, (e.value.code(), e.value.details())


def test_streaming_calls_need_the_token_too(auth_server: ServerProcess, stubs, assets) -> None:
    pb = stubs.pb2
    request = pb.TaskRequest(task=pb.TASK_CAPTION, image=pb.Image(encoded=assets.image("coffee.png").read_bytes()),
                             options=pb.Options(max_new_tokens=4, num_beams=1))
    with pytest.raises(grpc.RpcError) as e:
        list(auth_server.stub(stubs).Run(request, timeout=30))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    events = list(auth_server.stub(stubs).Run(request, timeout=30,
                                               metadata=[("authorization", f"Bearer {TOKEN}")]))
    assert events[-1].WhichOneof("event") == "result"


def test_the_right_token_is_served(auth_server: ServerProcess, stubs, assets) -> None:
    response = auth_server.stub(stubs).Caption(caption_request(stubs, assets), timeout=30,
                                               metadata=[("authorization", f"Bearer {TOKEN}")])
    assert response.result.usage.generated_tokens > 0
    assert response.text == response.result.text


def test_health_and_reflection_need_no_token(auth_server: ServerProcess) -> None:
    health = health_pb2_grpc.HealthStub(auth_server.channel())
    for service in ("", "florence.v1.Florence"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
    assert "florence.v1.Florence" in ProtoReflectionDescriptorDatabase(auth_server.channel()).get_services()


def test_client_example_token(auth_server: ServerProcess, assets: Assets) -> None:
    base = ["--server", auth_server.address, "--max-new-tokens", "4", "--num-beams", "1",
            str(assets.image("astronaut.jpg"))]
    done = run_client(assets, *base, "--token", TOKEN)
    assert done.returncode == 0, done.stderr
    done = run_client(assets, *base)
    assert done.returncode == 1
    assert done.stderr.startswith("error: UNAUTHENTICATED: missing credentials"), done.stderr
    done = run_client(assets, *base, "--token", "nope")
    assert done.returncode == 1
    assert done.stderr.startswith("error: UNAUTHENTICATED: invalid bearer token"), done.stderr
