// florence.v1 messages <-> the scheduler's types, and absl::Status ->
// grpc::Status (the only place that mapping happens). Pure functions,
// thread-safe.
#ifndef FLORENCE_SERVER_CONVERT_H_
#define FLORENCE_SERVER_CONVERT_H_

#include <grpcpp/support/status.h>

#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "batching/scheduler.h"
#include "engine/postprocess/stream_items.h"
#include "engine/task.h"
#include "florence/v1/florence.grpc.pb.h"

namespace florence::server {

// absl codes map one to one onto gRPC codes; the message is kept.
grpc::Status ToGrpcStatus(const absl::Status& status);

// TASK_UNSPECIFIED and unknown values -> InvalidArgument naming the field.
absl::StatusOr<engine::Task> TaskFromProto(v1::Task task, absl::string_view field);
v1::Task TaskToProto(engine::Task task);

// Each typed request -> a scheduler request with one task (several for
// RunMulti). The image bytes are moved out of `request`. InvalidArgument
// naming the field for what can be checked without the image (missing image,
// bad enum values, raw pixels of the wrong length, text or region on a task
// that takes none); the prompt checks that need the image size run later in
// the scheduler.
absl::StatusOr<batching::Request> FromCaption(v1::CaptionRequest& request);
absl::StatusOr<batching::Request> FromDetect(v1::DetectRequest& request);
absl::StatusOr<batching::Request> FromOcr(v1::OcrRequest& request);
absl::StatusOr<batching::Request> FromSegment(v1::SegmentRequest& request);
absl::StatusOr<batching::Request> FromDescribeRegion(v1::DescribeRegionRequest& request);
absl::StatusOr<batching::Request> FromTask(v1::TaskRequest& request);
absl::StatusOr<batching::Request> FromMulti(v1::MultiTaskRequest& request);

// One task's output -> TaskResult. With `return_mask` on a segmentation task
// the polygons are rasterised into mask_png.
absl::Status ToTaskResult(const batching::TaskOutput& output, bool return_mask,
                          v1::TaskResult* result);

// One streamed item -> RunEvent.
void ToRunEvent(const engine::ItemEvent& event, v1::RunEvent* out);

}  // namespace florence::server

#endif  // FLORENCE_SERVER_CONVERT_H_
