// Hand-written ParseGeneration cases: de-quantisation, the golden float values
// of FLORENCE2.md 5.5, and one case per transformers rule worth knowing. The
// exhaustive comparison with transformers is parser_vectors_test.cc.
#include "engine/postprocess/parse.h"

#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "engine/task.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace florence::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::FloatNear;
using ::testing::IsEmpty;

constexpr int kBeetleWidth = 640;  // car.jpg of the published vectors
constexpr int kBeetleHeight = 480;

template <typename T>
T ParseAs(Task task, absl::string_view text, int width = kBeetleWidth,
          int height = kBeetleHeight) {
  absl::StatusOr<TaskResult> result =
      ParseGeneration(task, text, width, height);
  EXPECT_TRUE(result.ok()) << result.status();
  if (!result.ok()) return T{};
  EXPECT_TRUE(std::holds_alternative<T>(*result));
  if (!std::holds_alternative<T>(*result)) return T{};
  return std::get<T>(*std::move(result));
}

std::vector<float> Coords(const Box& box) {
  return {box.x1, box.y1, box.x2, box.y2};
}

std::vector<std::string> Labels(const DetectionResult& result) {
  std::vector<std::string> labels;
  for (const Detection& d : result.detections) labels.push_back(d.label);
  return labels;
}

// ---- De-quantisation
// ---------------------------------------------------------------

TEST(PostprocessDequantizeTest, BinCentre) {
  EXPECT_FLOAT_EQ(DequantizeCoordinate(0, 1000), 0.5f);
  EXPECT_FLOAT_EQ(DequantizeCoordinate(999, 1000), 999.5f);
  EXPECT_FLOAT_EQ(DequantizeCoordinate(499, 2), 0.999f);
  EXPECT_NEAR(DequantizeCoordinate(53, 640), 34.24, 1e-5);
  EXPECT_NEAR(DequantizeCoordinate(333, 480), 160.08, 1e-5);
}

// torch computes float32(bin + 0.5) * float32(size / 1000): on a 144-pixel
// side bin 187 is exactly 27.0 but comes out as 26.999998f, which transformers
// truncates to 26. Matching its ints needs the same arithmetic.
TEST(PostprocessDequantizeTest, Float32ArithmeticLikeTorch) {
  const float x = DequantizeCoordinate(187, 144);
  EXPECT_NEAR(x, 27.0, 1e-4);
  EXPECT_LT(x, 27.0f);
  EXPECT_EQ(static_cast<int>(x), 26);
}

TEST(PostprocessDequantizeTest, NoClampingPastLastBin) {
  EXPECT_NEAR(DequantizeCoordinate(1000, 640), 640.32, 1e-4);
}

// ---- Golden vectors (FLORENCE2.md 5.5, transformers.js tests) ---------------

TEST(PostprocessParseTest, GoldenObjectDetection) {
  const auto od = ParseAs<DetectionResult>(
      Task::kObjectDetection,
      "</s><s><s><s>car<loc_53><loc_333><loc_933><loc_774>door<loc_712><loc_"
      "203><loc_906><loc_545>wheel<loc_704><loc_576><loc_866><loc_772><loc_"
      "149><loc_584><loc_310><loc_773></s>");
  ASSERT_EQ(od.detections.size(), 4u);
  const float kTol = 1e-4f;
  EXPECT_THAT(Coords(od.detections[0].box),
              ElementsAre(FloatNear(34.24f, kTol), FloatNear(160.08f, kTol),
                          FloatNear(597.44f, kTol), FloatNear(371.76f, kTol)));
  EXPECT_THAT(Coords(od.detections[1].box),
              ElementsAre(FloatNear(456.00f, kTol), FloatNear(97.68f, kTol),
                          FloatNear(580.16f, kTol), FloatNear(261.84f, kTol)));
  EXPECT_THAT(Coords(od.detections[2].box),
              ElementsAre(FloatNear(450.88f, kTol), FloatNear(276.72f, kTol),
                          FloatNear(554.56f, kTol), FloatNear(370.80f, kTol)));
  EXPECT_THAT(Coords(od.detections[3].box),
              ElementsAre(FloatNear(95.68f, kTol), FloatNear(280.56f, kTol),
                          FloatNear(198.72f, kTol), FloatNear(371.28f, kTol)));
  EXPECT_THAT(Labels(od), ElementsAre("car", "door", "wheel", "wheel"));
}

TEST(PostprocessParseTest, GoldenPhraseGrounding) {
  const auto grounding = ParseAs<DetectionResult>(
      Task::kPhraseGrounding,
      "</s><s><s><s>A green car<loc_54><loc_330><loc_911><loc_780>a yellow "
      "building<loc_0><loc_8><loc_998><loc_635></s>");
  ASSERT_EQ(grounding.detections.size(), 2u);
  const float kTol = 1e-4f;
  EXPECT_THAT(Coords(grounding.detections[0].box),
              ElementsAre(FloatNear(34.88f, kTol), FloatNear(158.64f, kTol),
                          FloatNear(583.36f, kTol), FloatNear(374.64f, kTol)));
  EXPECT_THAT(Coords(grounding.detections[1].box),
              ElementsAre(FloatNear(0.32f, kTol), FloatNear(4.08f, kTol),
                          FloatNear(639.04f, kTol), FloatNear(305.04f, kTol)));
  EXPECT_THAT(Labels(grounding),
              ElementsAre("A green car", "a yellow building"));
}

TEST(PostprocessParseTest, GoldenOcrWithRegion) {
  // transformers.js book_cover (403 x 500); its Python original kept "</s>"
  // in the first text, the native port does not.
  const auto ocr = ParseAs<OcrResult>(
      Task::kOcrWithRegion,
      "</s><s><s><s>CUDA<loc_414><loc_100><loc_932><loc_100><loc_932><loc_229>"
      "<loc_414><loc_229>FOR ENGINEERS<loc_359><loc_241><loc_932><loc_241><loc_"
      "932><loc_298><loc_359><loc_298></s>",
      403, 500);
  ASSERT_EQ(ocr.regions.size(), 2u);
  EXPECT_EQ(ocr.regions[0].text, "CUDA");
  EXPECT_EQ(ocr.regions[1].text, "FOR ENGINEERS");
  EXPECT_THAT(ocr.regions[0].quad.points,
              ElementsAre(FloatNear(167.0435f, 1e-4f), 50.25f,
                          FloatNear(375.7975f, 1e-4f), 50.25f,
                          FloatNear(375.7975f, 1e-4f), 114.75f,
                          FloatNear(167.0435f, 1e-4f), 114.75f));
}

// ---- Contract
// -------------------------------------------------------------------------

size_t AlternativeFor(PostProcess kind) {
  switch (kind) {
    case PostProcess::kPureText:
      return TaskResult(TextResult{}).index();
    case PostProcess::kDescriptionWithBboxes:
    case PostProcess::kBboxes:
    case PostProcess::kPhraseGrounding:
      return TaskResult(DetectionResult{}).index();
    case PostProcess::kOcr:
      return TaskResult(OcrResult{}).index();
    case PostProcess::kPolygons:
      return TaskResult(SegmentationResult{}).index();
    case PostProcess::kDescriptionWithBboxesOrPolygons:
      return TaskResult(OpenVocabularyResult{}).index();
  }
  return std::variant_npos;
}

TEST(PostprocessParseTest, ResultTypeFollowsTaskTable) {
  for (const TaskSpec& spec : kTaskSpecs) {
    for (const absl::string_view text : {"", "</s><s></s><pad>"}) {
      const absl::StatusOr<TaskResult> result =
          ParseGeneration(spec.task, text, 10, 10);
      ASSERT_TRUE(result.ok()) << spec.token << ": " << result.status();
      EXPECT_EQ(result->index(), AlternativeFor(spec.post_process))
          << spec.token;
    }
  }
}

TEST(PostprocessParseTest, RejectsImpossibleInputs) {
  for (const auto& [w, h] : {std::pair{0, 480}, std::pair{640, 0},
                             std::pair{-1, 480}, std::pair{640, -5}}) {
    for (const Task task : {Task::kCaption, Task::kObjectDetection}) {
      EXPECT_EQ(ParseGeneration(task, "</s><s>car</s>", w, h).status().code(),
                absl::StatusCode::kInvalidArgument)
          << w << "x" << h;
    }
  }
  EXPECT_EQ(
      ParseGeneration(static_cast<Task>(99), "", 640, 480).status().code(),
      absl::StatusCode::kInvalidArgument);
}

// ---- Rules (each also among the transformers vectors)
// ---------------------------------

// transformers would answer "a red car<pad><pad>" (its pure-text path keeps
// <pad>); we stop at the end token.
TEST(PostprocessParseTest, PureTextStopsAtEndToken) {
  EXPECT_EQ(
      ParseAs<TextResult>(Task::kCaption, "</s><s>a red car</s><pad><pad>")
          .text,
      "a red car");
  EXPECT_EQ(
      ParseAs<TextResult>(Task::kCaption, "</s><s><s><s>  a red car").text,
      "a red car");
}

TEST(PostprocessParseTest, RegionTextKeepsLocTokens) {
  EXPECT_EQ(
      ParseAs<TextResult>(Task::kRegionToCategory,
                          "</s><s>car<loc_52><loc_332><loc_932><loc_774></s>")
          .text,
      "car<loc_52><loc_332><loc_932><loc_774>");
}

TEST(PostprocessParseTest, BoxesComeInGroupsOfFour) {
  const auto od = ParseAs<DetectionResult>(
      Task::kObjectDetection,
      "</s><s>wheel<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8>"
      "<loc_9><loc_10><loc_11></s>");
  EXPECT_THAT(Labels(od), ElementsAre("wheel", "wheel"));
  // No end token (max_new_tokens reached): the complete groups still count.
  const auto cut = ParseAs<DetectionResult>(
      Task::kObjectDetection,
      "</s><s>car<loc_1><loc_2><loc_3><loc_4>door<loc_5>");
  EXPECT_THAT(Labels(cut), ElementsAre("car"));
}

// A label with fewer than four locs is lost, and the scan resumes inside the
// last loc tag, which becomes part of the next label.
TEST(PostprocessParseTest, ShortLocGroupLeaksIntoNextLabel) {
  const auto od = ParseAs<DetectionResult>(
      Task::kObjectDetection,
      "</s><s>car<loc_10><loc_20><loc_30>dog<loc_100><loc_200><loc_300><loc_"
      "400></s>");
  EXPECT_THAT(Labels(od), ElementsAre("loc_30>dog"));
}

TEST(PostprocessParseTest, BoxLabelsDropNonAsciiAfterStripping) {
  const auto od = ParseAs<DetectionResult>(
      Task::kObjectDetection,
      "</s><s>caf\u00e9<loc_1><loc_2><loc_3><loc_4>car \u00e9<loc_1><loc_2>"
      "<loc_3><loc_4>\u505c\u8f66<loc_1><loc_2><loc_3><loc_4></s>");
  EXPECT_THAT(Labels(od), ElementsAre("caf", "car ", ""));
}

TEST(PostprocessParseTest, NewlineInsideLabelDropsThePhrase) {
  const auto od = ParseAs<DetectionResult>(
      Task::kObjectDetection,
      "</s><s>red\ncar<loc_1><loc_2><loc_3><loc_4>\n dog<loc_5><loc_6><loc_7>"
      "<loc_8></s>");
  EXPECT_THAT(Labels(od), ElementsAre("dog"));
}

TEST(PostprocessParseTest, RegionProposalIgnoresText) {
  const auto rp = ParseAs<DetectionResult>(
      Task::kRegionProposal,
      "</s><s>car<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7>x<loc_8>"
      "<loc_9><loc_10><loc_11></s>");
  EXPECT_THAT(Labels(rp), ElementsAre("", ""));
}

TEST(PostprocessParseTest, GroundingDropsBannedPhrases) {
  const auto grounding = ParseAs<DetectionResult>(
      Task::kPhraseGrounding,
      "</s><s>it<loc_1><loc_2><loc_3><loc_4> the image <loc_1><loc_2><loc_3>"
      "<loc_4>The<loc_1><loc_2><loc_3><loc_4>a dog<loc_1><loc_2><loc_3><loc_4>"
      "<loc_5><loc_6><loc_7><loc_8></s>");
  EXPECT_THAT(Labels(grounding), ElementsAre("The", "a dog", "a dog"));
}

TEST(PostprocessParseTest, OcrTextIsWhatPrecedesEightLocs) {
  const auto ocr = ParseAs<OcrResult>(
      Task::kOcrWithRegion,
      "</s><s> CUDA <loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8>"
      "\u4e2d<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7>FOR<loc_1><loc_"
      "2><loc_3><loc_4><loc_5><loc_6><loc_7><loc_8></s>");
  ASSERT_EQ(ocr.regions.size(), 2u);
  EXPECT_EQ(ocr.regions[0].text, "CUDA");
  // Seven locs do not make a region: they merge into the next text.
  EXPECT_EQ(ocr.regions[1].text,
            "\u4e2d<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6><loc_7>FOR");
}

TEST(PostprocessParseTest, PolygonsSplitAtSepAndDropOddBin) {
  const auto seg = ParseAs<SegmentationResult>(
      Task::kReferringExpressionSegmentation,
      "</s><s><loc_0><loc_0><loc_999><loc_999><loc_5><sep><loc_1><sep><loc_"
      "10><loc_20><loc_30><loc_40></s>",
      1000, 1000);
  ASSERT_EQ(seg.instances.size(), 1u);
  EXPECT_EQ(seg.instances[0].label, "");
  EXPECT_THAT(seg.instances[0].polygons,
              ElementsAre(ElementsAre(0.5f, 0.5f, 999.5f, 999.5f), IsEmpty(),
                          ElementsAre(10.5f, 20.5f, 30.5f, 40.5f)));
}

TEST(PostprocessParseTest, PolyMarkersMakeInstances) {
  const auto seg = ParseAs<SegmentationResult>(
      Task::kRegionToSegmentation,
      "</s><s><poly><loc_1><loc_2><loc_3><loc_4></poly><poly><loc_5><loc_6>"
      "<sep><loc_7><loc_8></poly></s>",
      1000, 1000);
  ASSERT_EQ(seg.instances.size(), 2u);
  EXPECT_THAT(seg.instances[0].polygons,
              ElementsAre(ElementsAre(1.5f, 2.5f, 3.5f, 4.5f)));
  EXPECT_THAT(seg.instances[1].polygons,
              ElementsAre(ElementsAre(5.5f, 6.5f), ElementsAre(7.5f, 8.5f)));
}

TEST(PostprocessParseTest, OpenVocabularyBoxesOrPolygons) {
  const auto boxes = ParseAs<OpenVocabularyResult>(
      Task::kOpenVocabularyDetection,
      "</s><s>wheels<loc_144><loc_570><loc_870><loc_778></s><pad><pad>");
  ASSERT_EQ(boxes.detections.size(), 1u);
  EXPECT_EQ(boxes.detections[0].label, "wheels");
  EXPECT_THAT(boxes.polygons, IsEmpty());

  // With <poly> anywhere, everything is read as polygons, whose labels keep
  // non-ASCII characters.
  const auto polygons = ParseAs<OpenVocabularyResult>(
      Task::kOpenVocabularyDetection,
      "</s><s>caf\u00e9<poly><loc_1><loc_2><loc_3><loc_4></poly>car<loc_5>"
      "<loc_6><loc_7><loc_8></s>",
      1000, 1000);
  EXPECT_THAT(polygons.detections, IsEmpty());
  ASSERT_EQ(polygons.polygons.size(), 2u);
  EXPECT_EQ(polygons.polygons[0].label, "caf\u00e9");
  EXPECT_EQ(polygons.polygons[1].label, "car");
  EXPECT_THAT(polygons.polygons[1].polygons,
              ElementsAre(ElementsAre(5.5f, 6.5f, 7.5f, 8.5f)));
}

}  // namespace
}  // namespace florence::engine
