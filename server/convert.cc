#include "server/convert.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/postprocess/mask_png.h"

namespace florence::server {
namespace {

using engine::Task;

// proto enum value = engine index + 1 (TASK_UNSPECIFIED = 0).
static_assert(v1::TASK_CAPTION == static_cast<int>(Task::kCaption) + 1);
static_assert(v1::TASK_OBJECT_DETECTION == static_cast<int>(Task::kObjectDetection) + 1);
static_assert(v1::TASK_REGION_TO_OCR == static_cast<int>(Task::kRegionToOcr) + 1);
static_assert(v1::Task_MAX == static_cast<int>(engine::kTaskSpecs.size()));

std::optional<int> Clamp(bool has, uint32_t value) {
  if (!has) return std::nullopt;
  return static_cast<int>(std::min<uint32_t>(value, std::numeric_limits<int>::max()));
}

absl::Status SetImage(v1::Image* image, batching::Request* out) {
  switch (image->source_case()) {
    case v1::Image::kEncoded:
      out->encoded_image = std::move(*image->mutable_encoded());
      return absl::OkStatus();
    case v1::Image::kRaw: {
      const v1::RawImage& raw = image->raw();
      engine::RgbImage rgb;
      if (raw.width() == 0 || raw.height() == 0 || raw.width() > (1u << 20) ||
          raw.height() > (1u << 20)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "image.raw: width and height must be 1 .. 1048576, got ", raw.width(), "x",
            raw.height()));
      }
      rgb.width = static_cast<int>(raw.width());
      rgb.height = static_cast<int>(raw.height());
      const uint64_t expected = uint64_t{3} * raw.width() * raw.height();
      if (raw.rgb().size() != expected) {
        return absl::InvalidArgumentError(absl::StrCat(
            "image.raw: ", raw.width(), "x", raw.height(), " RGB needs exactly ", expected,
            " bytes (width * height * 3), got ", raw.rgb().size()));
      }
      rgb.rgb.assign(raw.rgb().begin(), raw.rgb().end());
      out->raw = std::move(rgb);
      return absl::OkStatus();
    }
    case v1::Image::SOURCE_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(
      "image: missing; set image.encoded (JPEG, PNG, WebP, BMP or TIFF bytes) or image.raw");
}

void SetOptions(const v1::Options& o, batching::Request* out) {
  out->max_new_tokens = Clamp(o.has_max_new_tokens(), o.max_new_tokens());
  out->num_beams = Clamp(o.has_num_beams(), o.num_beams());
  out->min_new_tokens = Clamp(o.has_min_new_tokens(), o.min_new_tokens());
  switch (o.priority()) {
    case v1::PRIORITY_LOW:
      out->priority = -1;
      break;
    case v1::PRIORITY_HIGH:
      out->priority = 1;
      break;
    default:
      out->priority = 0;
  }
}

engine::RegionBox RegionFrom(const v1::Box& b) { return {b.x1(), b.y1(), b.x2(), b.y2()}; }

// Request with one task; `region` null when the request has none.
absl::StatusOr<batching::Request> Single(v1::Image* image, const v1::Options& options, Task task,
                                         std::string text, const v1::Box* region) {
  batching::Request r;
  if (absl::Status st = SetImage(image, &r); !st.ok()) return st;
  SetOptions(options, &r);
  batching::TaskInput t;
  t.task = task;
  t.text = std::move(text);
  if (region != nullptr) t.region = RegionFrom(*region);
  r.tasks.push_back(std::move(t));
  return r;
}

v1::Box* SetBox(const engine::Box& b, v1::Box* out) {
  out->set_x1(b.x1);
  out->set_y1(b.y1);
  out->set_x2(b.x2);
  out->set_y2(b.y2);
  return out;
}

void SetDetection(const engine::Detection& d, float confidence, v1::Detection* out) {
  SetBox(d.box, out->mutable_box());
  out->set_label(d.label);
  out->set_confidence(confidence);
}

void SetOcrRegion(const engine::OcrRegion& r, float confidence, v1::OcrRegion* out) {
  for (size_t i = 0; i + 1 < r.quad.points.size(); i += 2) {
    v1::Point* p = out->add_quad();
    p->set_x(r.quad.points[i]);
    p->set_y(r.quad.points[i + 1]);
  }
  out->set_text(r.text);
  out->set_confidence(confidence);
}

void SetInstance(const engine::PolygonInstance& inst, float confidence, v1::Instance* out) {
  for (const auto& poly : inst.polygons) {
    v1::Polygon* p = out->add_polygons();
    for (size_t i = 0; i + 1 < poly.size(); i += 2) {
      v1::Point* pt = p->add_points();
      pt->set_x(poly[i]);
      pt->set_y(poly[i + 1]);
    }
  }
  out->set_label(inst.label);
  out->set_confidence(confidence);
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::StatusOr<Task> TaskFromProto(v1::Task task, absl::string_view field) {
  const int v = static_cast<int>(task);
  if (v < 1 || v > static_cast<int>(engine::kTaskSpecs.size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": ", v == 0 ? "missing (TASK_UNSPECIFIED)" : absl::StrCat("unknown value ", v),
        "; set one of TASK_CAPTION .. TASK_REGION_TO_OCR"));
  }
  return static_cast<Task>(v - 1);
}

v1::Task TaskToProto(Task task) { return static_cast<v1::Task>(static_cast<int>(task) + 1); }

absl::StatusOr<batching::Request> FromCaption(v1::CaptionRequest& request) {
  Task task;
  switch (request.detail()) {
    case v1::CAPTION_DETAIL_UNSPECIFIED:
    case v1::CAPTION_DETAIL_BRIEF:
      task = Task::kCaption;
      break;
    case v1::CAPTION_DETAIL_DETAILED:
      task = Task::kDetailedCaption;
      break;
    case v1::CAPTION_DETAIL_PARAGRAPH:
      task = Task::kMoreDetailedCaption;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("detail: unknown value ", static_cast<int>(request.detail())));
  }
  return Single(request.mutable_image(), request.options(), task, "", nullptr);
}

absl::StatusOr<batching::Request> FromDetect(v1::DetectRequest& request) {
  Task task;
  switch (request.mode()) {
    case v1::DETECT_MODE_UNSPECIFIED:
    case v1::DETECT_MODE_OBJECTS:
      task = Task::kObjectDetection;
      break;
    case v1::DETECT_MODE_DENSE_CAPTIONS:
      task = Task::kDenseRegionCaption;
      break;
    case v1::DETECT_MODE_PROPOSALS:
      task = Task::kRegionProposal;
      break;
    case v1::DETECT_MODE_OPEN_VOCABULARY:
      task = Task::kOpenVocabularyDetection;
      break;
    case v1::DETECT_MODE_GROUNDING:
      task = Task::kPhraseGrounding;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("mode: unknown value ", static_cast<int>(request.mode())));
  }
  return Single(request.mutable_image(), request.options(), task,
                std::move(*request.mutable_text()), nullptr);
}

absl::StatusOr<batching::Request> FromOcr(v1::OcrRequest& request) {
  return Single(request.mutable_image(), request.options(),
                request.with_regions() ? Task::kOcrWithRegion : Task::kOcr, "", nullptr);
}

absl::StatusOr<batching::Request> FromSegment(v1::SegmentRequest& request) {
  switch (request.target_case()) {
    case v1::SegmentRequest::kExpression:
      return Single(request.mutable_image(), request.options(),
                    Task::kReferringExpressionSegmentation,
                    std::move(*request.mutable_expression()), nullptr);
    case v1::SegmentRequest::kRegion:
      return Single(request.mutable_image(), request.options(), Task::kRegionToSegmentation, "",
                    &request.region());
    case v1::SegmentRequest::TARGET_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(
      "target: missing; set expression (what to segment) or region (a box to segment)");
}

absl::StatusOr<batching::Request> FromDescribeRegion(v1::DescribeRegionRequest& request) {
  Task task;
  switch (request.query()) {
    case v1::REGION_QUERY_UNSPECIFIED:
    case v1::REGION_QUERY_CATEGORY:
      task = Task::kRegionToCategory;
      break;
    case v1::REGION_QUERY_DESCRIPTION:
      task = Task::kRegionToDescription;
      break;
    case v1::REGION_QUERY_TEXT:
      task = Task::kRegionToOcr;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("query: unknown value ", static_cast<int>(request.query())));
  }
  if (!request.has_region()) {
    return absl::InvalidArgumentError("region: missing; set the box to describe");
  }
  return Single(request.mutable_image(), request.options(), task, "", &request.region());
}

absl::StatusOr<batching::Request> FromTask(v1::TaskRequest& request) {
  absl::StatusOr<Task> task = TaskFromProto(request.task(), "task");
  if (!task.ok()) return task.status();
  return Single(request.mutable_image(), request.options(), *task,
                std::move(*request.mutable_text()),
                request.has_region() ? &request.region() : nullptr);
}

absl::StatusOr<batching::Request> FromMulti(v1::MultiTaskRequest& request) {
  if (request.tasks_size() < 1 || request.tasks_size() > batching::kMaxTasksPerRequest) {
    return absl::InvalidArgumentError(absl::StrCat("tasks: 1 to ", batching::kMaxTasksPerRequest,
                                                   " tasks per request, got ",
                                                   request.tasks_size()));
  }
  batching::Request r;
  if (absl::Status st = SetImage(request.mutable_image(), &r); !st.ok()) return st;
  SetOptions(request.options(), &r);
  for (int i = 0; i < request.tasks_size(); ++i) {
    v1::TaskSpec* spec = request.mutable_tasks(i);
    absl::StatusOr<Task> task = TaskFromProto(spec->task(), absl::StrCat("tasks[", i, "].task"));
    if (!task.ok()) return task.status();
    batching::TaskInput t;
    t.task = *task;
    t.text = std::move(*spec->mutable_text());
    if (spec->has_region()) t.region = RegionFrom(spec->region());
    r.tasks.push_back(std::move(t));
  }
  return r;
}

absl::Status ToTaskResult(const batching::TaskOutput& output, bool return_mask,
                          v1::TaskResult* result) {
  result->set_task(TaskToProto(output.task));
  const std::vector<float>& conf = output.confidences;
  auto confidence = [&](size_t i) { return i < conf.size() ? conf[i] : 0.0f; };
  const std::vector<engine::PolygonInstance>* polygons = nullptr;
  if (const auto* text = std::get_if<engine::TextResult>(&output.parsed)) {
    result->set_text(text->text);
  } else if (const auto* det = std::get_if<engine::DetectionResult>(&output.parsed)) {
    for (size_t i = 0; i < det->detections.size(); ++i) {
      SetDetection(det->detections[i], confidence(i), result->add_detections());
    }
  } else if (const auto* ocr = std::get_if<engine::OcrResult>(&output.parsed)) {
    std::vector<absl::string_view> lines;
    for (size_t i = 0; i < ocr->regions.size(); ++i) {
      SetOcrRegion(ocr->regions[i], confidence(i), result->add_ocr_regions());
      lines.push_back(ocr->regions[i].text);
    }
    result->set_text(absl::StrJoin(lines, "\n"));
  } else if (const auto* seg = std::get_if<engine::SegmentationResult>(&output.parsed)) {
    for (size_t i = 0; i < seg->instances.size(); ++i) {
      SetInstance(seg->instances[i], confidence(i), result->add_instances());
    }
    polygons = &seg->instances;
  } else if (const auto* ov = std::get_if<engine::OpenVocabularyResult>(&output.parsed)) {
    for (size_t i = 0; i < ov->detections.size(); ++i) {
      SetDetection(ov->detections[i], confidence(i), result->add_detections());
    }
    for (size_t i = 0; i < ov->polygons.size(); ++i) {
      SetInstance(ov->polygons[i], confidence(ov->detections.size() + i),
                  result->add_instances());
    }
  }
  if (return_mask && polygons != nullptr) {
    absl::StatusOr<std::string> png =
        engine::PolygonMaskPng(*polygons, output.image_width, output.image_height);
    if (!png.ok()) return png.status();
    result->set_mask_png(*std::move(png));
  }
  result->set_raw_text(output.generated_text);
  result->mutable_token_ids()->Assign(output.token_ids.begin(), output.token_ids.end());
  result->mutable_token_logprobs()->Assign(output.token_logprobs.begin(),
                                           output.token_logprobs.end());
  result->set_sequence_score(output.sequence_score);
  result->set_image_width(output.image_width);
  result->set_image_height(output.image_height);
  v1::Usage* u = result->mutable_usage();
  u->set_prompt_tokens(output.prompt_tokens);
  u->set_image_tokens(output.image_tokens);
  u->set_generated_tokens(output.token_ids.empty() ? 0 : output.token_ids.size() - 1);
  u->set_num_beams(output.num_beams);
  u->set_max_new_tokens(output.max_new_tokens);
  u->set_queue_ms(output.timings.queue_ms);
  u->set_prepare_ms(output.timings.prepare_ms);
  u->set_encode_ms(output.timings.encode_ms);
  u->set_decode_ms(output.timings.decode_ms);
  u->set_total_ms(output.timings.total_ms);
  u->set_encoder_batch_size(output.timings.encoder_batch_size);
  u->set_image_features_cached(output.timings.features_cached);
  return absl::OkStatus();
}

void ToRunEvent(const engine::ItemEvent& event, v1::RunEvent* out) {
  out->set_index(event.index);
  switch (event.kind) {
    case engine::ItemEvent::Kind::kTextDelta:
      out->set_text_delta(event.text_delta);
      break;
    case engine::ItemEvent::Kind::kDetection:
      SetDetection(event.detection, event.confidence, out->mutable_detection());
      break;
    case engine::ItemEvent::Kind::kOcrRegion:
      SetOcrRegion(event.ocr_region, event.confidence, out->mutable_ocr_region());
      break;
    case engine::ItemEvent::Kind::kInstance:
      SetInstance(event.instance, event.confidence, out->mutable_instance());
      break;
  }
}

}  // namespace florence::server
