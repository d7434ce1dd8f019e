// The whole C++ request path against transformers, from the same image FILES:
// tools/e2e_vectors.py (CTest setup setup.pipeline_e2e_vectors) records, for
// every task on random tiny models (seeds 0 and 1, and a location-prone copy
// of seed 0) and for caption / OD / OCR-with-regions on a random base model,
// greedy and beam=3, what processor -> generate -> batch_decode ->
// post_process_generation give. Runtime::Run on the file's bytes must give the
// same prompt ids, token ids and text, and the same parsed result once our
// float coordinates are truncated like transformers' .int().
//
// Also runs the florence2-run binary on one image and checks its JSON and
// --draw PNG.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "engine/image/decode.h"
#include "engine/pipeline/runtime.h"
#include "engine/postprocess/result_json.h"
#include "engine/task.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/test_data.h"

namespace florence::engine {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

std::string E2eDir() {
  return testdata::EnvOr("FLORENCE_E2E_DIR", FLORENCE_E2E_DIR_DEFAULT);
}

const json& Vectors() {
  static const json* vectors = [] {
    std::ifstream in(E2eDir() + "/vectors.json");
    if (!in) {
      ADD_FAILURE() << "no " << E2eDir()
                    << "/vectors.json (written by tools/e2e_vectors.py)";
      return new json(json::object({{"models", json::object()},
                                    {"images", json::object()},
                                    {"cases", json::array()}}));
    }
    return new json(json::parse(in));
  }();
  return *vectors;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << "cannot open " << path;
  return std::string((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
}

std::string ModelPath(const std::string& model) {
  const std::string dir =
      Vectors().at("models").at(model).at("dir").get<std::string>();
  return std::filesystem::path(dir).is_absolute() ? dir : E2eDir() + "/" + dir;
}

std::string Dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

RunRequest RequestFor(const json& c, const std::string& image_bytes) {
  RunRequest request;
  request.image = image_bytes;
  request.task = *TaskFromToken(c.at("task").get<std::string>());
  request.text = c.at("text").get<std::string>();
  if (!c.at("region").is_null()) {
    const std::vector<double> r = c.at("region").get<std::vector<double>>();
    request.region = RegionBox{r[0], r[1], r[2], r[3]};
  }
  request.num_beams = c.at("num_beams").get<int>();
  request.max_new_tokens = c.at("max_new_tokens").get<int>();
  return request;
}

std::vector<json> CasesOf(const std::string& model) {
  std::vector<json> out;
  for (const json& c : Vectors().at("cases")) {
    if (c.at("model").get<std::string>() == model) out.push_back(c);
  }
  return out;
}

TEST(E2eVectorsTest, CoverEveryTaskGreedyAndBeamOnEachModel) {
  const json& models = Vectors().at("models");
  for (const std::string model : {"tiny-0", "tiny-0-locs", "tiny-1"}) {
    ASSERT_TRUE(models.contains(model)) << model;
    std::set<std::pair<std::string, int>> seen;
    for (const json& c : CasesOf(model)) {
      seen.insert(
          {c.at("task").get<std::string>(), c.at("num_beams").get<int>()});
    }
    EXPECT_EQ(seen.size(), 2 * kTaskSpecs.size()) << model;
  }
  ASSERT_TRUE(models.contains("base-0"));
  EXPECT_EQ(CasesOf("base-0").size(), 6u);
  // The location-prone model must make the structured parsers do real work.
  int structured = 0;
  for (const json& c : CasesOf("tiny-0-locs")) {
    const json& parsed = c.at("expected_parsed");
    for (const char* key : {"bboxes", "quad_boxes", "polygons"}) {
      if (parsed.is_object() && parsed.contains(key) && !parsed.at(key).empty())
        ++structured;
    }
  }
  EXPECT_GE(structured, 6);
}

class E2eModelTest : public ::testing::TestWithParam<std::string> {};

TEST_P(E2eModelTest, MatchesTransformersFromTheImageFile) {
  const std::string model = GetParam();
  const std::vector<json> cases = CasesOf(model);
  ASSERT_FALSE(cases.empty()) << "no cases for " << model;
  absl::StatusOr<std::unique_ptr<Runtime>> runtime =
      Runtime::Create(ModelPath(model), {});
  ASSERT_TRUE(runtime.ok()) << runtime.status();

  int identical = 0;
  for (const json& c : cases) {
    const std::string name = c.at("name").get<std::string>();
    SCOPED_TRACE(name);
    const std::string bytes =
        ReadFile(E2eDir() + "/" + c.at("image").get<std::string>());
    absl::StatusOr<RunResult> r = (*runtime)->Run(RequestFor(c, bytes));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->image_width, c.at("width").get<int>());
    EXPECT_EQ(r->image_height, c.at("height").get<int>());
    EXPECT_EQ(r->prompt_ids, c.at("prompt_ids").get<std::vector<int32_t>>());
    const auto expected = c.at("expected_tokens").get<std::vector<int64_t>>();
    if (r->token_ids != expected) {
      size_t at = 0;
      while (at < r->token_ids.size() && at < expected.size() &&
             r->token_ids[at] == expected[at]) {
        ++at;
      }
      ADD_FAILURE() << "token ids differ from position " << at << " of "
                    << expected.size()
                    << "\n  ours:         " << json(r->token_ids).dump()
                    << "\n  transformers: " << json(expected).dump();
      continue;  // text and parse follow from the tokens
    }
    EXPECT_EQ(r->generated_text, c.at("expected_text").get<std::string>());
    EXPECT_EQ(Dump(TaskResultJson(r->parsed, Coordinates::kTruncated)),
              Dump(c.at("expected_parsed")));
    if (!c.at("expected_score").is_null()) {
      EXPECT_NEAR(r->sequence_score, c.at("expected_score").get<double>(),
                  1e-4);
    }
    ++identical;
  }
  EXPECT_EQ(identical, static_cast<int>(cases.size()));
}

INSTANTIATE_TEST_SUITE_P(Models, E2eModelTest,
                         ::testing::Values("tiny-0", "tiny-0-locs", "tiny-1",
                                           "base-0", "base-1"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return absl::StrReplaceAll(info.param, {{"-", "_"}});
                         });

// ---- florence2-run ----

struct Exec {
  int exit_code = -1;
  std::string out;
};

// Runs `command` through the shell; stdout captured, stderr to `err_file`.
Exec Shell(const std::string& command) {
  Exec e;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return e;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) e.out.append(buf, n);
  const int status = pclose(pipe);
  e.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return e;
}

std::string Quoted(const std::string& s) {
  return "'" + absl::StrReplaceAll(s, {{"'", "'\\''"}}) + "'";
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_ = std::filesystem::temp_directory_path() /
           absl::StrCat("florence2_run_test_", getpid());
    std::filesystem::create_directories(tmp_);
  }
  void TearDown() override { std::filesystem::remove_all(tmp_); }
  std::filesystem::path tmp_;
};

TEST_F(CliTest, JsonLinesMatchRuntimeAndDrawWritesAPng) {
  const std::string model = ModelPath("tiny-0-locs");
  const std::string images = E2eDir() + "/images/";
  const std::vector<std::string> files = {images + "coffee.png",
                                          images + "astronaut.jpg"};
  const std::string draw = (tmp_ / "drawn.png").string();
  const std::string err = (tmp_ / "stderr.txt").string();
  const Exec run = Shell(absl::StrCat(
      Quoted(FLORENCE2_RUN_PATH), " --model ", Quoted(model),
      " --task dense_region_caption --num-beams 3 --max-new-tokens 64",
      " --draw ", Quoted(draw), " ", Quoted(files[0]), " ", Quoted(files[1]),
      " 2>", Quoted(err)));
  ASSERT_EQ(run.exit_code, 0) << ReadFile(err);
  const std::vector<std::string> lines =
      absl::StrSplit(run.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << run.out;

  absl::StatusOr<std::unique_ptr<Runtime>> runtime = Runtime::Create(model, {});
  ASSERT_TRUE(runtime.ok()) << runtime.status();
  for (size_t i = 0; i < files.size(); ++i) {
    SCOPED_TRACE(files[i]);
    const json out = json::parse(lines[i]);
    const std::string bytes = ReadFile(files[i]);
    RunRequest request;
    request.image = bytes;
    request.task = Task::kDenseRegionCaption;
    request.num_beams = 3;
    request.max_new_tokens = 64;
    absl::StatusOr<RunResult> r = (*runtime)->Run(request);
    ASSERT_TRUE(r.ok()) << r.status();

    EXPECT_EQ(out.at("image"), files[i]);
    EXPECT_EQ(out.at("task"), "<DENSE_REGION_CAPTION>");
    EXPECT_EQ(out.at("task_name"), "dense_region_caption");
    EXPECT_EQ(out.at("width"), r->image_width);
    EXPECT_EQ(out.at("height"), r->image_height);
    EXPECT_EQ(out.at("token_ids").get<std::vector<int64_t>>(), r->token_ids);
    EXPECT_EQ(out.at("generated_text"), r->generated_text);
    const auto& detections = std::get<DetectionResult>(r->parsed).detections;
    ASSERT_EQ(out.at("result").at("bboxes").size(), detections.size());
    for (size_t k = 0; k < detections.size(); ++k) {
      const auto box =
          out.at("result").at("bboxes")[k].get<std::vector<float>>();
      EXPECT_EQ(box, (std::vector<float>{
                         detections[k].box.x1, detections[k].box.y1,
                         detections[k].box.x2, detections[k].box.y2}));
      EXPECT_EQ(out.at("result").at("labels")[k], detections[k].label);
    }
    EXPECT_TRUE(out.at("timings_ms").contains("encode"));

    // --draw with two images: drawn-0.png, drawn-1.png at the original size.
    const std::string png =
        ReadFile((tmp_ / absl::StrCat("drawn-", i, ".png")).string());
    absl::StatusOr<RgbImage> drawn = DecodeImage(png);
    ASSERT_TRUE(drawn.ok()) << drawn.status();
    EXPECT_EQ(drawn->width, r->image_width);
    EXPECT_EQ(drawn->height, r->image_height);
    absl::StatusOr<RgbImage> original = DecodeImage(bytes);
    ASSERT_TRUE(original.ok());
    if (!detections.empty()) {
      EXPECT_NE(drawn->rgb, original->rgb);
    }
  }
}

TEST_F(CliTest, OneImageDrawsToExactlyOut) {
  const std::string draw = (tmp_ / "one.png").string();
  const Exec run = Shell(absl::StrCat(
      Quoted(FLORENCE2_RUN_PATH), " --model ", Quoted(ModelPath("tiny-0")),
      " --task '<REGION_TO_CATEGORY>' --region 100,50.5,330.3,290",
      " --num-beams 1 --max-new-tokens 4 --draw ", Quoted(draw), " ",
      Quoted(E2eDir() + "/images/chelsea.jpg"), " 2>/dev/null"));
  ASSERT_EQ(run.exit_code, 0);
  const json out = json::parse(run.out);
  EXPECT_EQ(out.at("task"), "<REGION_TO_CATEGORY>");
  EXPECT_TRUE(out.at("result").is_string());
  absl::StatusOr<RgbImage> drawn = DecodeImage(ReadFile(draw));
  ASSERT_TRUE(drawn.ok()) << drawn.status();
  EXPECT_EQ(drawn->width, 451);
  EXPECT_EQ(drawn->height, 300);
}

TEST_F(CliTest, ErrorsExitNonZeroWithAMessage) {
  const std::string err = (tmp_ / "stderr.txt").string();
  const std::string bin = Quoted(FLORENCE2_RUN_PATH);
  const std::string model = Quoted(ModelPath("tiny-0"));
  const std::string image = Quoted(E2eDir() + "/images/coffee.png");

  Exec run = Shell(absl::StrCat(bin, " --model ", model, " --task detect ",
                                image, " 2>", Quoted(err)));
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_THAT(ReadFile(err), HasSubstr("unknown --task \"detect\""));

  // A missing file and text on a task that takes none: each image fails
  // alone, the good one still prints.
  const std::string missing = Quoted((tmp_ / "missing.jpg").string());
  run = Shell(absl::StrCat(bin, " --model ", model,
                           " --task ocr --max-new-tokens 3 ", missing, " ",
                           image, " 2>", Quoted(err)));
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(ReadFile(err), HasSubstr("missing.jpg"));
  EXPECT_EQ(std::count(run.out.begin(), run.out.end(), '\n'), 1);

  run = Shell(absl::StrCat(bin, " --model ", model,
                           " --task caption --text 'a car' ", image, " 2>",
                           Quoted(err)));
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(ReadFile(err), HasSubstr("takes no text"));

  run = Shell(absl::StrCat(bin, " --model ", model,
                           " --task region_to_ocr --region 1,2,3 ", image,
                           " 2>", Quoted(err)));
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_THAT(ReadFile(err), HasSubstr("--region wants four"));

  run = Shell(absl::StrCat(bin, " --model /nonexistent --task od ", image,
                           " 2>", Quoted(err)));
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_THAT(ReadFile(err), HasSubstr("cannot load model"));
}

}  // namespace
}  // namespace florence::engine
