"""grpc.health.v1 and server reflection on the real server."""
from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from .server_harness import ServerProcess

SERVICE = "florence.v1.Florence"


def test_health_is_not_serving_until_the_model_is_ready(server: ServerProcess) -> None:
    # The Watch opened as soon as the port file appeared (before the model finished loading and warming up)
    # saw NOT_SERVING (or, at worst, a refused connection) first, and SERVING last.
    seen = server.startup_health
    assert seen[-1] == "SERVING", seen
    assert len(seen) >= 2 and seen[0] in ("NOT_SERVING", "UNAVAILABLE"), seen
    assert set(seen[:-1]) <= {"NOT_SERVING", "UNAVAILABLE"}, seen


@pytest.mark.parametrize("service", ["", SERVICE])
def test_health_check_serves_overall_and_florence(server: ServerProcess, service: str) -> None:
    stub = health_pb2_grpc.HealthStub(server.channel())
    response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_health_check_of_an_unknown_service_is_not_found(server: ServerProcess) -> None:
    stub = health_pb2_grpc.HealthStub(server.channel())
    with pytest.raises(grpc.RpcError) as e:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_florence_and_resolves_its_file(server: ServerProcess) -> None:
    db = ProtoReflectionDescriptorDatabase(server.channel())
    services = db.get_services()
    assert SERVICE in services
    assert "grpc.health.v1.Health" in services

    pool = descriptor_pool.DescriptorPool(db)
    service = pool.FindServiceByName(SERVICE)
    assert service.file.name == "florence/v1/florence.proto"
    assert service.file.package == "florence.v1"
    methods = {m.name: m for m in service.methods}
    assert set(methods) == {"Caption", "Detect", "Ocr", "Segment", "DescribeRegion", "Run", "RunStream",
                            "RunMulti"}
    assert methods["Run"].server_streaming and not methods["Run"].client_streaming
    assert methods["RunStream"].server_streaming and methods["RunStream"].client_streaming
    assert methods["Detect"].input_type.full_name == "florence.v1.DetectRequest"
    # The message types resolve through the same file descriptor.
    detection = pool.FindMessageTypeByName("florence.v1.Detection")
    assert [f.name for f in detection.fields] == ["box", "label", "confidence"]
    assert pool.FindEnumTypeByName("florence.v1.Task").values_by_name["TASK_OBJECT_DETECTION"].number == 4
