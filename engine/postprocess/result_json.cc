#include "engine/postprocess/result_json.h"

#include <cstdint>
#include <utility>
#include <variant>
#include <vector>

namespace florence::engine {
namespace {

using json = nlohmann::json;

json Coordinate(float value, Coordinates coords) {
  if (coords == Coordinates::kTruncated) return static_cast<int64_t>(value);
  return value;
}

template <typename Floats>
json CoordinateArray(const Floats& values, Coordinates coords) {
  json out = json::array();
  for (const float v : values) out.push_back(Coordinate(v, coords));
  return out;
}

json BoxJson(const Box& b, Coordinates coords) {
  return CoordinateArray(std::vector<float>{b.x1, b.y1, b.x2, b.y2}, coords);
}

json PolygonsJson(const PolygonInstance& instance, Coordinates coords) {
  json polygons = json::array();
  for (const std::vector<float>& polygon : instance.polygons) {
    polygons.push_back(CoordinateArray(polygon, coords));
  }
  return polygons;
}

struct Visitor {
  Coordinates coords;
  json operator()(const TextResult& r) const { return r.text; }
  json operator()(const DetectionResult& r) const {
    json out = {{"bboxes", json::array()}, {"labels", json::array()}};
    for (const Detection& d : r.detections) {
      out["bboxes"].push_back(BoxJson(d.box, coords));
      out["labels"].push_back(d.label);
    }
    return out;
  }
  json operator()(const OcrResult& r) const {
    json out = {{"quad_boxes", json::array()}, {"labels", json::array()}};
    for (const OcrRegion& region : r.regions) {
      out["quad_boxes"].push_back(CoordinateArray(region.quad.points, coords));
      out["labels"].push_back(region.text);
    }
    return out;
  }
  json operator()(const SegmentationResult& r) const {
    json out = {{"polygons", json::array()}, {"labels", json::array()}};
    for (const PolygonInstance& instance : r.instances) {
      out["polygons"].push_back(PolygonsJson(instance, coords));
      out["labels"].push_back(instance.label);
    }
    return out;
  }
  json operator()(const OpenVocabularyResult& r) const {
    json out = {{"bboxes", json::array()},
                {"bboxes_labels", json::array()},
                {"polygons", json::array()},
                {"polygons_labels", json::array()}};
    for (const Detection& d : r.detections) {
      out["bboxes"].push_back(BoxJson(d.box, coords));
      out["bboxes_labels"].push_back(d.label);
    }
    for (const PolygonInstance& instance : r.polygons) {
      out["polygons"].push_back(PolygonsJson(instance, coords));
      out["polygons_labels"].push_back(instance.label);
    }
    return out;
  }
};

}  // namespace

json TaskResultJson(const TaskResult& result, Coordinates coords) {
  return std::visit(Visitor{coords}, result);
}

}  // namespace florence::engine
