// Runtime on the exported tiny model: a request runs end to end, defaults come
// from config.json, and every kind of bad input fails alone with
// InvalidArgument and a message that names the problem. (Parity with
// transformers is e2e_test.cc.)
#include "engine/pipeline/runtime.h"

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/pipeline/render.h"
#include "engine/pipeline/task_names.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/test_data.h"

namespace florence::engine {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// One Runtime per test binary process (ctest runs each test in its own).
Runtime& TinyRuntime() {
  static Runtime* runtime = [] {
    absl::StatusOr<std::unique_ptr<Runtime>> r =
        Runtime::Create(testdata::TestModelDir(), {});
    if (!r.ok()) {
      ADD_FAILURE() << r.status();
      std::abort();
    }
    return r->release();
  }();
  return *runtime;
}

// A small gradient picture as PNG bytes.
std::string TestPng(int width, int height) {
  RgbImage image;
  image.width = width;
  image.height = height;
  image.rgb.resize(size_t{3} * width * height);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      uint8_t* p = &image.rgb[3 * (size_t{1} * y * width + x)];
      p[0] = static_cast<uint8_t>(x * 255 / width);
      p[1] = static_cast<uint8_t>(y * 255 / height);
      p[2] = static_cast<uint8_t>((x + y) % 256);
    }
  }
  absl::StatusOr<std::string> png = EncodePng(image);
  EXPECT_TRUE(png.ok()) << png.status();
  return png.ok() ? *png : "";
}

// ---- hand-made PNG headers ----

uint32_t Crc32(const std::string& bytes) {
  uint32_t crc = 0xFFFFFFFFu;
  for (const char c : bytes) {
    crc ^= static_cast<uint8_t>(c);
    for (int k = 0; k < 8; ++k)
      crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

std::string BigEndian32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
          static_cast<char>(v >> 8), static_cast<char>(v)};
}

std::string Chunk(const std::string& type, const std::string& data) {
  return BigEndian32(static_cast<uint32_t>(data.size())) + type + data +
         BigEndian32(Crc32(type + data));
}

// A PNG whose IHDR (with a valid CRC) claims width x height RGB pixels,
// followed by an empty IDAT: the header is all a decoder may look at.
std::string PngHeader(uint32_t width, uint32_t height) {
  const std::string ihdr = BigEndian32(width) + BigEndian32(height) +
                           std::string("\x08\x02\x00\x00\x00", 5);
  return std::string("\x89PNG\r\n\x1A\n", 8) + Chunk("IHDR", ihdr) +
         Chunk("IDAT", "") + Chunk("IEND", "");
}

RunRequest Request(const std::string& image, Task task) {
  RunRequest r;
  r.image = image;
  r.task = task;
  r.num_beams = 1;
  r.max_new_tokens = 8;
  return r;
}

void ExpectInvalid(const absl::StatusOr<RunResult>& result,
                   const ::testing::Matcher<std::string>& message) {
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument)
      << result.status();
  EXPECT_THAT(std::string(result.status().message()), message);
}

TEST(RuntimeTest, RunsOneRequestEndToEnd) {
  const std::string png = TestPng(64, 48);
  absl::StatusOr<RunResult> r =
      TinyRuntime().Run(Request(png, Task::kObjectDetection));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->task, Task::kObjectDetection);
  EXPECT_EQ(r->image_width, 64);
  EXPECT_EQ(r->image_height, 48);
  ASSERT_GE(r->token_ids.size(), 2u);
  EXPECT_LE(r->token_ids.size(), 9u);
  EXPECT_EQ(r->token_ids.front(), 2);  // decoder start </s>
  EXPECT_EQ(r->token_ids[1], 0);       // forced <s>
  EXPECT_EQ(r->token_ids.back(), 2);   // forced </s> at the last step
  EXPECT_EQ(r->token_logprobs.size(), r->token_ids.size() - 1);
  EXPECT_THAT(r->generated_text, StartsWith("</s><s>"));
  EXPECT_TRUE(std::holds_alternative<DetectionResult>(r->parsed));
  // <s> + "Locate the objects with category name in the image." + </s>
  EXPECT_EQ(r->prompt_ids.front(), 0);
  EXPECT_EQ(r->prompt_ids.back(), 2);
  EXPECT_EQ(r->timings.steps, static_cast<int>(r->token_ids.size()) - 1);
  EXPECT_GT(r->timings.encode_ms, 0);
  EXPECT_GT(r->timings.decode_ms, 0);
  EXPECT_GE(r->timings.total_ms, r->timings.encode_ms + r->timings.decode_ms);
}

TEST(RuntimeTest, DecodingDefaultsComeFromConfigJson) {
  const ModelDir& dir = TinyRuntime().model_dir();
  ASSERT_EQ(dir.generation.num_beams, 3);
  const std::string png = TestPng(32, 32);
  RunRequest request = Request(png, Task::kCaption);
  request.num_beams.reset();
  absl::StatusOr<RunResult> r = TinyRuntime().Run(request);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->num_beams, 3);
  EXPECT_EQ(r->max_new_tokens, 8);
  EXPECT_EQ(r->min_new_tokens, 0);
}

TEST(RuntimeTest, MinNewTokensDelaysTheEnd) {
  const std::string png = TestPng(32, 32);
  RunRequest request = Request(png, Task::kCaption);
  request.max_new_tokens = 6;
  request.min_new_tokens = 6;
  absl::StatusOr<RunResult> r = TinyRuntime().Run(request);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->token_ids.size(), 7u);
}

TEST(RuntimeTest, RejectsUndecodableBytes) {
  std::mt19937 rng(7);
  std::string noise(4096, '\0');
  for (char& c : noise) c = static_cast<char>(rng());
  noise[0] = 'x';  // not a JPEG/PNG/... signature by chance
  ExpectInvalid(
      TinyRuntime().Run(Request(noise, Task::kCaption)),
      AllOf(StartsWith("image: "), HasSubstr("unrecognized image format")));
  ExpectInvalid(TinyRuntime().Run(Request("", Task::kCaption)),
                HasSubstr("empty"));
}

TEST(RuntimeTest, RejectsZeroSizedImage) {
  ExpectInvalid(
      TinyRuntime().Run(Request(PngHeader(0, 0), Task::kCaption)),
      AllOf(StartsWith("image: "), HasSubstr("PNG"), HasSubstr("zero")));
}

TEST(RuntimeTest, RejectsHugeImageFromItsHeader) {
  ExpectInvalid(
      TinyRuntime().Run(Request(PngHeader(30000, 30000), Task::kCaption)),
      AllOf(HasSubstr("30000x30000"), HasSubstr("exceeds the limit")));
}

TEST(RuntimeTest, DecodeLimitsComeFromOptions) {
  Runtime::Options options;
  options.decode_limits.max_pixels = 100;
  absl::StatusOr<std::unique_ptr<Runtime>> small =
      Runtime::Create(testdata::TestModelDir(), options);
  ASSERT_TRUE(small.ok()) << small.status();
  ExpectInvalid((*small)->Run(Request(TestPng(11, 10), Task::kCaption)),
                HasSubstr("11x10"));
}

TEST(RuntimeTest, RejectsRegionOutsideTheImage) {
  const std::string png = TestPng(64, 48);
  RunRequest request = Request(png, Task::kRegionToCategory);
  request.region = RegionBox{10, 10, 70, 40};
  ExpectInvalid(TinyRuntime().Run(request),
                AllOf(HasSubstr("x2 = 70"), HasSubstr("outside the image"),
                      HasSubstr("64x48")));
  request.region = RegionBox{10, 30, 20, 20};
  ExpectInvalid(TinyRuntime().Run(request),
                HasSubstr("must be greater than y1"));
  request.region.reset();
  ExpectInvalid(TinyRuntime().Run(request), HasSubstr("needs a region"));
}

TEST(RuntimeTest, RejectsTextOnATaskThatTakesNone) {
  const std::string png = TestPng(32, 32);
  RunRequest request = Request(png, Task::kCaption);
  request.text = "a red car";
  ExpectInvalid(TinyRuntime().Run(request),
                AllOf(HasSubstr("<CAPTION>"), HasSubstr("takes no text")));
}

TEST(RuntimeTest, RejectsMissingTextOnPhraseGrounding) {
  const std::string png = TestPng(32, 32);
  RunRequest request = Request(png, Task::kPhraseGrounding);
  ExpectInvalid(TinyRuntime().Run(request),
                AllOf(HasSubstr("<CAPTION_TO_PHRASE_GROUNDING>"),
                      HasSubstr("needs a text input")));
  request.text = "   ";
  ExpectInvalid(TinyRuntime().Run(request), HasSubstr("needs a text input"));
}

TEST(RuntimeTest, RejectsPromptLongerThanTheModel) {
  const std::string png = TestPng(32, 32);
  RunRequest request = Request(png, Task::kPhraseGrounding);
  for (int i = 0; i < 600; ++i) absl::StrAppend(&request.text, "car ");
  ExpectInvalid(TinyRuntime().Run(request),
                AllOf(HasSubstr("over the model's limit of 1024"),
                      HasSubstr("shorten the text")));
}

TEST(RuntimeTest, RejectsOutOfRangeDecodingParameters) {
  const std::string png = TestPng(32, 32);
  RunRequest request = Request(png, Task::kCaption);
  request.num_beams = 0;
  ExpectInvalid(TinyRuntime().Run(request), HasSubstr("num_beams = 0"));
  request = Request(png, Task::kCaption);
  request.max_new_tokens = 1025;
  ExpectInvalid(TinyRuntime().Run(request),
                AllOf(HasSubstr("max_new_tokens = 1025"), HasSubstr("1024")));
  request = Request(png, Task::kCaption);
  request.min_new_tokens = 9;
  ExpectInvalid(TinyRuntime().Run(request), HasSubstr("min_new_tokens = 9"));
  request = Request(png, static_cast<Task>(99));
  ExpectInvalid(TinyRuntime().Run(request), HasSubstr("unknown task"));
}

TEST(RuntimeTest, AFailedRequestLeavesTheRuntimeUsable) {
  ExpectInvalid(TinyRuntime().Run(Request("garbage", Task::kCaption)),
                HasSubstr("image"));
  const std::string png = TestPng(40, 30);
  EXPECT_TRUE(TinyRuntime().Run(Request(png, Task::kOcr)).ok());
}

TEST(RuntimeTest, CreateReportsAMissingModelDirectory) {
  absl::StatusOr<std::unique_ptr<Runtime>> r =
      Runtime::Create("/nonexistent/model", {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
}

TEST(TaskNamesTest, TokensAndReadableNames) {
  EXPECT_EQ(ParseTaskName("<OD>"), Task::kObjectDetection);
  EXPECT_EQ(ParseTaskName("od"), Task::kObjectDetection);
  EXPECT_EQ(ParseTaskName("OCR_With_Region"), Task::kOcrWithRegion);
  EXPECT_EQ(ParseTaskName("phrase_grounding"), Task::kPhraseGrounding);
  EXPECT_EQ(ParseTaskName("<od>"), std::nullopt);  // tokens are exact
  EXPECT_EQ(ParseTaskName("detect"), std::nullopt);
  for (const TaskSpec& spec : kTaskSpecs) {
    EXPECT_EQ(ParseTaskName(TaskName(spec.task)), spec.task);
    EXPECT_EQ(ParseTaskName(spec.token), spec.task);
  }
}

}  // namespace
}  // namespace florence::engine
