// BuildPrompt / QuantizeBox rules; no tokenizer needed. Prompt ids against
// transformers' processor are in tokenizer_model_test.cc.
#include "engine/tokenizer/prompt.h"

#include <cmath>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace florence::engine {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

MATCHER_P(IsInvalidArgument, substring, "") {
  if (arg.status().code() != absl::StatusCode::kInvalidArgument) {
    *result_listener << "status is " << arg.status();
    return false;
  }
  if (arg.status().message().find(substring) == absl::string_view::npos) {
    *result_listener << "message \"" << arg.status().message() << "\" lacks \""
                     << substring << "\"";
    return false;
  }
  return true;
}

TEST(BuildPrompt, EveryTaskWithAValidInput) {
  for (const TaskSpec& spec : kTaskSpecs) {
    SCOPED_TRACE(std::string(spec.token));
    switch (spec.input) {
      case TaskInput::kNone:
        EXPECT_EQ(*BuildPrompt(spec.task, "", std::nullopt, 640, 480),
                  spec.prompt);
        break;
      case TaskInput::kText:
        EXPECT_EQ(
            *BuildPrompt(spec.task, "  a red car\n", std::nullopt, 640, 480),
            absl::StrReplaceAll(spec.prompt, {{"{input}", "a red car"}}));
        break;
      case TaskInput::kRegion:
        EXPECT_EQ(*BuildPrompt(spec.task, "",
                               RegionBox{33.3, 159.4, 596.5, 371.6}, 640, 480),
                  absl::StrReplaceAll(
                      spec.prompt,
                      {{"{input}", "<loc_52><loc_332><loc_932><loc_774>"}}));
        break;
    }
  }
}

TEST(BuildPrompt, FixedPromptsFromTheModelCard) {
  EXPECT_EQ(*BuildPrompt(Task::kCaption, "", std::nullopt, 1, 1),
            "What does the image describe?");
  EXPECT_EQ(*BuildPrompt(Task::kPhraseGrounding,
                         "A green car parked in front of a yellow building.",
                         std::nullopt, 1, 1),
            "Locate the phrases in the caption: A green car parked in front of "
            "a yellow building.");
  EXPECT_EQ(*BuildPrompt(Task::kReferringExpressionSegmentation, "a car",
                         std::nullopt, 1, 1),
            "Locate a car in the image with mask");
  // Inner whitespace and location tokens in the text are kept.
  EXPECT_EQ(*BuildPrompt(Task::kOpenVocabularyDetection,
                         "\xE3\x80\x80 car  <loc_5>\x1f", std::nullopt, 9, 9),
            "Locate car  <loc_5> in the image.");
}

TEST(BuildPrompt, TextForATaskThatTakesNone) {
  EXPECT_THAT(
      BuildPrompt(Task::kObjectDetection, "cars", std::nullopt, 640, 480),
      AllOf(IsInvalidArgument("<OD> takes no text input"),
            IsInvalidArgument("\"cars\"")));
  EXPECT_THAT(BuildPrompt(Task::kCaption, " ", std::nullopt, 640, 480),
              IsInvalidArgument("\" \""));
  EXPECT_THAT(
      BuildPrompt(Task::kRegionToCategory, "<loc_1><loc_2><loc_3><loc_4>",
                  RegionBox{1, 2, 3, 4}, 640, 480),
      AllOf(IsInvalidArgument("takes a region, not text"),
            IsInvalidArgument("<loc_1><loc_2>")));
}

TEST(BuildPrompt, MissingOrEmptyText) {
  EXPECT_THAT(
      BuildPrompt(Task::kOpenVocabularyDetection, "", std::nullopt, 640, 480),
      IsInvalidArgument("<OPEN_VOCABULARY_DETECTION> needs a text input"));
  EXPECT_THAT(
      BuildPrompt(Task::kPhraseGrounding, " \t\n", std::nullopt, 640, 480),
      AllOf(IsInvalidArgument("needs a text input"),
            IsInvalidArgument("\" \\t\\n\"")));
}

TEST(BuildPrompt, TextContainingATaskToken) {
  EXPECT_THAT(BuildPrompt(Task::kOpenVocabularyDetection, "cars <OD>",
                          std::nullopt, 640, 480),
              AllOf(IsInvalidArgument("contains the task token <OD>"),
                    IsInvalidArgument("\"cars <OD>\"")));
  EXPECT_THAT(
      BuildPrompt(Task::kPhraseGrounding, "<CAPTION_TO_PHRASE_GROUNDING>x",
                  std::nullopt, 640, 480),
      IsInvalidArgument("<CAPTION_TO_PHRASE_GROUNDING>"));
  // Lower-case added tokens are ordinary text for the processor.
  EXPECT_TRUE(
      BuildPrompt(Task::kPhraseGrounding, "<od>x", std::nullopt, 640, 480)
          .ok());
}

TEST(BuildPrompt, RegionRules) {
  EXPECT_THAT(BuildPrompt(Task::kRegionToOcr, "", std::nullopt, 640, 480),
              IsInvalidArgument("<REGION_TO_OCR> needs a region"));
  EXPECT_THAT(BuildPrompt(Task::kCaption, "", RegionBox{1, 2, 3, 4}, 640, 480),
              AllOf(IsInvalidArgument("<CAPTION> takes no region"),
                    IsInvalidArgument("(1, 2, 3, 4)")));
  EXPECT_THAT(BuildPrompt(Task::kOpenVocabularyDetection, "car",
                          RegionBox{1, 2, 3, 4}, 640, 480),
              IsInvalidArgument("takes no region"));
  EXPECT_THAT(
      BuildPrompt(Task::kRegionToSegmentation, "", RegionBox{1, 2, 700.5, 4},
                  640, 480),
      AllOf(IsInvalidArgument("x2 = 700.5"), IsInvalidArgument("640x480")));
}

TEST(BuildPrompt, ImageSizeAndEncoding) {
  EXPECT_THAT(BuildPrompt(Task::kCaption, "", std::nullopt, 0, 480),
              IsInvalidArgument("0x480"));
  EXPECT_THAT(BuildPrompt(Task::kCaption, "", std::nullopt, 640, -1),
              IsInvalidArgument("640x-1"));
  EXPECT_THAT(BuildPrompt(Task::kOpenVocabularyDetection, "ca\xFFr",
                          std::nullopt, 640, 480),
              AllOf(IsInvalidArgument("not valid UTF-8"),
                    IsInvalidArgument("ca\\xffr")));
}

TEST(QuantizeBox, FloorOfBinSizeDivisionClamped) {
  // 640 wide: bins of 0.64 px; 480 high: bins of 0.48 px.
  EXPECT_EQ(*QuantizeBox({0, 0, 640, 480}, 640, 480),
            (std::array<int, 4>{0, 0, 999, 999}));
  EXPECT_EQ(*QuantizeBox({0.64, 0.48, 639.99, 479.99}, 640, 480),
            (std::array<int, 4>{1, 1, 999, 999}));
  EXPECT_EQ(*QuantizeBox({0.6399, 0.4799, 1.28, 0.96}, 640, 480),
            (std::array<int, 4>{0, 0, 2, 2}));
  EXPECT_EQ(*QuantizeBox({33.3, 159.4, 596.5, 371.6}, 640, 480),
            (std::array<int, 4>{52, 332, 932, 774}));
  // Images smaller than 1000 px: several bins per pixel.
  EXPECT_EQ(*QuantizeBox({0.5, 0.25, 1, 1}, 1, 1),
            (std::array<int, 4>{500, 250, 999, 999}));
  EXPECT_EQ(*QuantizeBox({1, 2, 2, 7}, 3, 7),
            (std::array<int, 4>{333, 285, 666, 999}));
  // Large images: several pixels per bin.
  EXPECT_EQ(*QuantizeBox({4.095, 4.094, 4096, 4095.9}, 4096, 4096),
            (std::array<int, 4>{0, 0, 999, 999}));
  EXPECT_EQ(*QuantizeBox({4.096, 8.192, 12.288, 4091.904}, 4096, 4096),
            (std::array<int, 4>{1, 2, 3, 999}));
  EXPECT_EQ(LocationTokens({0, 12, 345, 999}),
            "<loc_0><loc_12><loc_345><loc_999>");
}

TEST(QuantizeBox, RejectsBadBoxesNamingTheValue) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_THAT(QuantizeBox({-1, 0, 10, 10}, 640, 480),
              IsInvalidArgument("x1 = -1 is outside the image"));
  EXPECT_THAT(QuantizeBox({0, -0.5, 10, 10}, 640, 480),
              IsInvalidArgument("y1 = -0.5 is outside"));
  EXPECT_THAT(QuantizeBox({0, 0, 640.0001, 10}, 640, 480),
              IsInvalidArgument("x2 = 640.0001 is outside"));
  EXPECT_THAT(QuantizeBox({0, 0, 10, 481}, 640, 480),
              IsInvalidArgument("y2 = 481 is outside"));
  EXPECT_THAT(QuantizeBox({641, 0, 642, 10}, 640, 480),
              IsInvalidArgument("x1 = 641"));
  EXPECT_THAT(QuantizeBox({10, 0, 10, 10}, 640, 480),
              IsInvalidArgument("x2 = 10 must be greater than x1 = 10"));
  EXPECT_THAT(QuantizeBox({20, 0, 10, 10}, 640, 480),
              IsInvalidArgument("x2 = 10 must be greater than x1 = 20"));
  EXPECT_THAT(QuantizeBox({0, 5, 10, 4.5}, 640, 480),
              IsInvalidArgument("y2 = 4.5 must be greater than y1 = 5"));
  EXPECT_THAT(QuantizeBox({nan, 0, 10, 10}, 640, 480),
              IsInvalidArgument("x1 = nan is not a finite number"));
  EXPECT_THAT(QuantizeBox({0, 0, inf, 10}, 640, 480),
              IsInvalidArgument("x2 = inf"));
  EXPECT_THAT(QuantizeBox({0, -inf, 10, 10}, 640, 480),
              IsInvalidArgument("y1 = -inf"));
  EXPECT_THAT(QuantizeBox({0, 0, 1, 1}, 0, 0),
              IsInvalidArgument("image size 0x0"));
  EXPECT_THAT(QuantizeBox({0, 0, 1, 1}, 640, 0),
              IsInvalidArgument("image size 640x0"));
}

}  // namespace
}  // namespace florence::engine
