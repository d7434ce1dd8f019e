// ParseGeneration against transformers: every generation recorded by
// tools/parser_vectors.py (run by the CTest setup test
// setup.postprocess_parser_vectors) must give transformers' answer once our
// float coordinates are truncated like transformers' .int(): identical labels
// and texts, identical ints, same counts and nesting.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "engine/postprocess/parse.h"
#include "engine/postprocess/result_json.h"
#include "engine/task.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace florence::engine {
namespace {

using json = nlohmann::json;

std::string VectorsPath() {
  const char* env = std::getenv("FLORENCE_PARSER_VECTORS");
  return env != nullptr && *env != '\0' ? env : FLORENCE_PARSER_VECTORS_DEFAULT;
}

// All records of the file, read once.
const std::vector<json>& Records() {
  static const std::vector<json>* records = [] {
    auto* out = new std::vector<json>;
    std::ifstream in(VectorsPath());
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty()) out->push_back(json::parse(line));
    }
    return out;
  }();
  return *records;
}

std::vector<json> RecordsOfKind(absl::string_view kind) {
  std::vector<json> out;
  for (const json& record : Records()) {
    if (record.at("kind").get<std::string>() == kind) out.push_back(record);
  }
  return out;
}

// transformers' .int() on a float tensor: truncation toward zero.
int64_t Truncate(float value) { return static_cast<int64_t>(value); }

// Compact JSON; invalid UTF-8 (a parser bug) shows as U+FFFD instead of
// throwing.
std::string Dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

absl::StatusOr<TaskResult> ParseRecord(const json& record) {
  const std::optional<Task> task =
      TaskFromToken(record.at("task").get<std::string>());
  if (!task) return absl::InvalidArgumentError("unknown task token");
  return ParseGeneration(*task, record.at("text").get<std::string>(),
                         record.at("width").get<int>(),
                         record.at("height").get<int>());
}

TEST(PostprocessVectorsTest, CoverEveryTask) {
  const std::vector<json> generations = RecordsOfKind("generation");
  ASSERT_GE(generations.size(), 150u)
      << "too few vectors in " << VectorsPath()
      << " (written by tools/parser_vectors.py)";
  std::set<std::string> tasks;
  for (const json& record : generations) {
    tasks.insert(record.at("task").get<std::string>());
  }
  for (const TaskSpec& spec : kTaskSpecs) {
    EXPECT_TRUE(tasks.count(std::string(spec.token))) << spec.token;
  }
  EXPECT_GE(RecordsOfKind("dequantize").size(), 20u);
}

TEST(PostprocessVectorsTest, MatchTransformers) {
  int compared = 0;
  for (const json& record : RecordsOfKind("generation")) {
    const std::string name = record.at("name").get<std::string>();
    SCOPED_TRACE(name + ": " + record.at("text").dump());
    const absl::StatusOr<TaskResult> result = ParseRecord(record);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(Dump(TaskResultJson(*result, Coordinates::kTruncated)),
              Dump(record.at("expected")));
    ++compared;
  }
  EXPECT_GT(compared, 0);
}

// Floats printed by transformers.js' tests (4 decimals there) for the same
// generations; bin centres in pixels, e.g. FLORENCE2.md 5.5.
TEST(PostprocessVectorsTest, MatchPublishedFloats) {
  int compared = 0;
  for (const json& record : RecordsOfKind("generation")) {
    if (!record.contains("published_float")) continue;
    const json& published = record.at("published_float");
    SCOPED_TRACE(record.at("name").get<std::string>());
    const absl::StatusOr<TaskResult> result = ParseRecord(record);
    ASSERT_TRUE(result.ok()) << result.status();
    std::vector<std::vector<float>> ours;
    std::vector<std::string> labels;
    if (const auto* od = std::get_if<DetectionResult>(&*result)) {
      for (const Detection& d : od->detections) {
        ours.push_back({d.box.x1, d.box.y1, d.box.x2, d.box.y2});
        labels.push_back(d.label);
      }
    } else if (const auto* ovd = std::get_if<OpenVocabularyResult>(&*result)) {
      for (const Detection& d : ovd->detections) {
        ours.push_back({d.box.x1, d.box.y1, d.box.x2, d.box.y2});
        labels.push_back(d.label);
      }
    } else if (const auto* ocr = std::get_if<OcrResult>(&*result)) {
      for (const OcrRegion& r : ocr->regions) {
        ours.emplace_back(r.quad.points.begin(), r.quad.points.end());
        labels.push_back(r.text);
      }
    } else {
      FAIL() << "no float vectors for this result type";
    }
    const json& boxes = published.contains("quad_boxes")
                            ? published.at("quad_boxes")
                            : published.at("bboxes");
    const json& expected_labels = published.contains("bboxes_labels")
                                      ? published.at("bboxes_labels")
                                      : published.at("labels");
    ASSERT_EQ(ours.size(), boxes.size());
    for (size_t i = 0; i < ours.size(); ++i) {
      ASSERT_EQ(ours[i].size(), boxes[i].size());
      for (size_t j = 0; j < ours[i].size(); ++j) {
        EXPECT_NEAR(ours[i][j], boxes[i][j].get<double>(), 1e-4)
            << "box " << i << " value " << j;
      }
      EXPECT_EQ(labels[i], expected_labels[i].get<std::string>());
    }
    ++compared;
  }
  EXPECT_GE(compared, 6);
}

// transformers' dequantize of bins 0..999 (and a few past 999) on many side
// lengths, including those where float32 rounding truncates one below the
// exact value (e.g. 144 px: bin 187 -> 26, exactly 27.0).
TEST(PostprocessVectorsTest, DequantizeTablesMatchTorch) {
  for (const json& table : RecordsOfKind("dequantize")) {
    const int size = table.at("size").get<int>();
    const json& bins = table.at("bins");
    const json& coords = table.at("coords");
    ASSERT_EQ(bins.size(), coords.size());
    int mismatches = 0;
    for (size_t i = 0; i < bins.size(); ++i) {
      const int64_t bin = bins[i].get<int64_t>();
      const int64_t got = Truncate(DequantizeCoordinate(bin, size));
      if (got != coords[i].get<int64_t>() && ++mismatches <= 5) {
        ADD_FAILURE() << "size " << size << " bin " << bin << ": " << got
                      << " vs transformers " << coords[i];
      }
    }
    EXPECT_EQ(mismatches, 0) << "size " << size;
  }
}

// Where we knowingly differ from transformers (we stop at the end token, it
// parses the whole string), the generation has more than <pad> after that
// token, or the task is pure text, whose answers keep <pad> in transformers.
TEST(PostprocessVectorsTest, DifferOnlyAfterEndToken) {
  for (const json& record : RecordsOfKind("generation")) {
    if (!record.contains("expected_uncut")) continue;
    const std::string text = record.at("text").get<std::string>();
    const size_t start = absl::StartsWith(text, "</s>") ? 4 : 0;
    const size_t eos = text.find("</s>", start);
    ASSERT_NE(eos, std::string::npos) << record.at("name");
    const std::string tail =
        absl::StrReplaceAll(text.substr(eos + 4), {{"<pad>", ""}});
    const std::optional<Task> task =
        TaskFromToken(record.at("task").get<std::string>());
    ASSERT_TRUE(task.has_value());
    EXPECT_TRUE(!tail.empty() ||
                SpecOf(*task).post_process == PostProcess::kPureText)
        << record.at("name");
  }
}

}  // namespace
}  // namespace florence::engine
