// ItemTracker against an oracle built from the parser itself: every prefix of
// a token sequence is decoded and parsed on its own, and the streamed events
// must (1) concatenate to the final parse, (2) arrive at the step that
// stream_items.h promises, computed from those prefix parses (boxes and
// quads at their completing token c_k; polygon instances when the next one
// appears; open-vocabulary boxes at the end), and (3) carry exp(mean
// log-prob) over the documented spans. Token sequences are real: the tiny test
// model's tokenizer encodes realistic generations, every generation that
// tools/parser_vectors.py records, random mixes of tricky tokens (pieces of
// tags, of UTF-8 characters, of "</s>"), and, when the pipeline's e2e vectors
// exist, the tokens real models generated.
#include "engine/postprocess/stream_items.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/postprocess/parse.h"
#include "engine/postprocess/python_text.h"
#include "engine/task.h"
#include "engine/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/test_data.h"

namespace florence::engine {
namespace {

using ::testing::ElementsAre;
using Item = std::variant<Detection, OcrRegion, PolygonInstance>;

constexpr absl::string_view kReplacement = "\xEF\xBF\xBD";

const Tokenizer& Tok() {
  static const Tokenizer* tokenizer = [] {
    absl::StatusOr<std::unique_ptr<Tokenizer>> t =
        Tokenizer::FromFile(testdata::TestModelDir() + "/tokenizer.json");
    if (!t.ok()) {
      ADD_FAILURE() << t.status();
      std::abort();
    }
    return t->release();
  }();
  return *tokenizer;
}

std::vector<int64_t> Ids(absl::string_view text) {
  const std::vector<int32_t> ids = Tok().Encode(text, false);
  return std::vector<int64_t>(ids.begin(), ids.end());
}

std::string Decode(absl::Span<const int64_t> ids) {
  const std::vector<int32_t> ids32(ids.begin(), ids.end());
  return Tok().Decode(ids32, /*skip_special_tokens=*/false);
}

int64_t Id(absl::string_view token) {
  const std::optional<int32_t> id = Tok().TokenToId(token);
  EXPECT_TRUE(id.has_value()) << token;
  return id.value_or(-1);
}

// Distinct, deterministic log-probs for tokens 1..n.
std::vector<float> Logprobs(size_t n) {
  std::vector<float> lp(n);
  for (size_t i = 0; i < n; ++i) lp[i] = -0.01f * (1 + (i * 37) % 100);
  return lp;
}

std::string Describe(const Item& item) {
  auto coords = [](absl::Span<const float> v) {
    return absl::StrJoin(v, ",", [](std::string* out, float f) {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%.9g", f);
      out->append(buf);
    });
  };
  if (const auto* d = std::get_if<Detection>(&item)) {
    const float b[] = {d->box.x1, d->box.y1, d->box.x2, d->box.y2};
    return absl::StrCat("det '", d->label, "' ", coords(b));
  }
  if (const auto* r = std::get_if<OcrRegion>(&item)) {
    return absl::StrCat("ocr '", r->text, "' ", coords(r->quad.points));
  }
  const auto& p = std::get<PolygonInstance>(item);
  std::string s = absl::StrCat("inst '", p.label, "'");
  for (const auto& polygon : p.polygons) {
    absl::StrAppend(&s, " [", coords(polygon), "]");
  }
  return s;
}

std::vector<Item> ItemsOf(const TaskResult& result) {
  std::vector<Item> items;
  if (const auto* r = std::get_if<DetectionResult>(&result)) {
    items.assign(r->detections.begin(), r->detections.end());
  } else if (const auto* r = std::get_if<OcrResult>(&result)) {
    items.assign(r->regions.begin(), r->regions.end());
  } else if (const auto* r = std::get_if<SegmentationResult>(&result)) {
    items.assign(r->instances.begin(), r->instances.end());
  } else if (const auto* r = std::get_if<OpenVocabularyResult>(&result)) {
    items.assign(r->detections.begin(), r->detections.end());
    items.insert(items.end(), r->polygons.begin(), r->polygons.end());
  }
  return items;
}

std::optional<Item> ItemOf(const ItemEvent& e) {
  switch (e.kind) {
    case ItemEvent::Kind::kDetection:
      return e.detection;
    case ItemEvent::Kind::kOcrRegion:
      return e.ocr_region;
    case ItemEvent::Kind::kInstance:
      return e.instance;
    case ItemEvent::Kind::kTextDelta:
      return std::nullopt;
  }
  return std::nullopt;
}

// parse.h: a leading "</s>" is the start token, the next one ends the text.
bool HasEnded(absl::string_view text) {
  const size_t start = absl::StartsWith(text, "</s>") ? 4 : 0;
  return text.find("</s>", start) != absl::string_view::npos;
}

struct Streamed {
  std::vector<ItemEvent> events;
  std::vector<size_t> steps;  // the step each event came at; N = Finish
  std::vector<float> confidences;
};

// Feeds ids in chunks of the given sizes (cycled), then calls Finish.
Streamed Stream(Task task, const std::vector<int64_t>& ids,
                const std::vector<float>& logprobs, int width, int height,
                const std::vector<size_t>& chunks = {1}) {
  ItemTracker tracker(Tok(), task, width, height);
  Streamed out;
  const absl::Span<const int64_t> all(ids);
  size_t fed = 0;
  for (size_t c = 0; fed < ids.size(); ++c) {
    fed = std::min(ids.size(), fed + chunks[c % chunks.size()]);
    const absl::Span<const float> lp =
        absl::MakeConstSpan(logprobs).subspan(0, fed == 0 ? 0 : fed - 1);
    for (ItemEvent& e : tracker.Update(all.subspan(0, fed), lp)) {
      out.events.push_back(std::move(e));
      out.steps.push_back(fed - 1);
    }
  }
  for (ItemEvent& e : tracker.Finish(all, logprobs)) {
    out.events.push_back(std::move(e));
    out.steps.push_back(ids.size());
  }
  EXPECT_TRUE(tracker.Update(all, logprobs).empty());
  EXPECT_TRUE(tracker.Finish(all, logprobs).empty());
  out.confidences = tracker.confidences();
  return out;
}

// Streams `ids` one token at a time (and in uneven chunks) and checks every
// promise of stream_items.h against the parses of all prefixes.
void CheckStreaming(Task task, const std::vector<int64_t>& ids, int width,
                    int height) {
  const size_t n = ids.size();  // 0 for an empty generation
  const std::vector<float> logprobs = Logprobs(n == 0 ? 0 : n - 1);
  const std::string full = Decode(ids);
  SCOPED_TRACE(absl::StrCat("task ", SpecOf(task).token, " ", width, "x",
                            height, " text: ", full));
  absl::StatusOr<TaskResult> final_result =
      ParseGeneration(task, full, width, height);
  ASSERT_TRUE(final_result.ok()) << final_result.status();
  const std::vector<Item> final_items = ItemsOf(*final_result);
  const PostProcess post_process = SpecOf(task).post_process;

  // Parses of every prefix tokens[0..s].
  std::vector<std::vector<Item>> prefix_items(n);
  size_t end_step = n;  // first step whose prefix holds "</s>"; n: none
  for (size_t s = 0; s < n; ++s) {
    const std::string text = Decode(absl::MakeConstSpan(ids).subspan(0, s + 1));
    if (end_step == n && HasEnded(text)) end_step = s;
    absl::StatusOr<TaskResult> r = ParseGeneration(task, text, width, height);
    ASSERT_TRUE(r.ok());
    prefix_items[s] = ItemsOf(*r);
  }
  auto same = [](const Item& a, const Item& b) {
    return Describe(a) == Describe(b);
  };
  // c_k: the first step from which every prefix parse holds item k.
  std::vector<size_t> completed(final_items.size());
  for (size_t k = 0; k < final_items.size(); ++k) {
    size_t s = n;
    while (s > 0 && prefix_items[s - 1].size() > k &&
           same(prefix_items[s - 1][k], final_items[k])) {
      --s;
    }
    ASSERT_LT(s, n) << "the last prefix is the whole sequence";
    completed[k] = s;
  }

  const Streamed streamed = Stream(task, ids, logprobs, width, height);

  // (1) The events are the final parse.
  std::string text;
  std::vector<Item> items;
  std::vector<size_t> item_steps;
  for (size_t i = 0; i < streamed.events.size(); ++i) {
    const ItemEvent& e = streamed.events[i];
    if (e.kind == ItemEvent::Kind::kTextDelta) {
      EXPECT_EQ(post_process, PostProcess::kPureText);
      EXPECT_FALSE(e.text_delta.empty());
      EXPECT_EQ(e.index, 0);
      text += e.text_delta;
      continue;
    }
    EXPECT_EQ(e.index, static_cast<int>(items.size()));
    items.push_back(*ItemOf(e));
    item_steps.push_back(streamed.steps[i]);
    const bool is_detection = e.kind == ItemEvent::Kind::kDetection;
    const bool is_ocr = e.kind == ItemEvent::Kind::kOcrRegion;
    const bool is_instance = e.kind == ItemEvent::Kind::kInstance;
    switch (post_process) {
      case PostProcess::kPureText:
        ADD_FAILURE() << "item in a pure-text task";
        break;
      case PostProcess::kDescriptionWithBboxes:
      case PostProcess::kBboxes:
      case PostProcess::kPhraseGrounding:
        EXPECT_TRUE(is_detection);
        break;
      case PostProcess::kOcr:
        EXPECT_TRUE(is_ocr);
        break;
      case PostProcess::kPolygons:
        EXPECT_TRUE(is_instance);
        break;
      case PostProcess::kDescriptionWithBboxesOrPolygons:
        EXPECT_TRUE(is_detection || is_instance);
        break;
    }
  }
  if (const auto* t = std::get_if<TextResult>(&*final_result)) {
    EXPECT_EQ(text, t->text);
    EXPECT_TRUE(streamed.confidences.empty());
  }
  ASSERT_EQ(items.size(), final_items.size());
  for (size_t k = 0; k < items.size(); ++k) {
    ASSERT_EQ(Describe(items[k]), Describe(final_items[k])) << "item " << k;
  }

  // (2) Each item at its promised step.
  for (size_t k = 0; k < items.size(); ++k) {
    size_t expected = std::min(end_step, n);
    if (std::holds_alternative<PolygonInstance>(items[k])) {
      for (size_t s = 0; s < expected; ++s) {
        if (prefix_items[s].size() >= k + 2 &&
            std::holds_alternative<PolygonInstance>(prefix_items[s][k + 1])) {
          expected = s;
          break;
        }
      }
      EXPECT_LE(completed[k], expected) << "instance " << k;
    } else if (post_process != PostProcess::kDescriptionWithBboxesOrPolygons) {
      expected = completed[k];
    }
    EXPECT_EQ(item_steps[k], expected)
        << "item " << k << " " << Describe(items[k]) << ", completed at "
        << completed[k] << " of " << n << ", end at " << end_step;
  }

  // (3) Confidences over the spans (c_{k-1}, c_k].
  ASSERT_EQ(streamed.confidences.size(), items.size());
  size_t previous = 0;
  size_t item = 0;
  for (const ItemEvent& e : streamed.events) {
    if (e.kind == ItemEvent::Kind::kTextDelta) continue;
    const size_t to = completed[item];
    size_t from = to < previous + 1 ? to : previous + 1;
    from = std::max<size_t>(from, 1);
    double sum = 0;
    int count = 0;
    for (size_t j = from; j <= to; ++j) {
      sum += logprobs[j - 1];
      ++count;
    }
    const double expected = count == 0 ? 0.0 : std::exp(sum / count);
    EXPECT_NEAR(e.confidence, expected, 1e-6 * expected + 1e-12)
        << "item " << item << " span " << from << ".." << to;
    EXPECT_EQ(streamed.confidences[item], e.confidence);
    previous = std::max(previous, to);
    ++item;
  }

  // Fed in uneven chunks, the same items come out (at coarser steps), and
  // the same text in other deltas.
  const Streamed chunked =
      Stream(task, ids, logprobs, width, height, {3, 1, 7, 2});
  std::vector<const ItemEvent*> item_events, chunked_item_events;
  std::string chunked_text;
  for (const ItemEvent& e : streamed.events) {
    if (e.kind != ItemEvent::Kind::kTextDelta) item_events.push_back(&e);
  }
  for (const ItemEvent& e : chunked.events) {
    if (e.kind == ItemEvent::Kind::kTextDelta) {
      chunked_text += e.text_delta;
    } else {
      chunked_item_events.push_back(&e);
    }
  }
  EXPECT_EQ(chunked_text, text);
  ASSERT_EQ(chunked_item_events.size(), item_events.size());
  for (size_t i = 0; i < item_events.size(); ++i) {
    const ItemEvent& a = *item_events[i];
    const ItemEvent& b = *chunked_item_events[i];
    EXPECT_EQ(a.kind, b.kind);
    EXPECT_EQ(a.index, b.index);
    EXPECT_EQ(Describe(*ItemOf(a)), Describe(*ItemOf(b)));
    EXPECT_EQ(a.confidence, b.confidence);
  }
}

// One generation string for every task whose output it can be.
void CheckAllTasks(absl::string_view generation) {
  for (const TaskSpec& spec : kTaskSpecs) {
    CheckStreaming(spec.task, Ids(generation), 640, 480);
  }
}

// ---- Realistic generations

TEST(StreamItemsTest, ObjectDetectionBoxesAtTheirFourthLocation) {
  const std::vector<int64_t> ids =
      Ids("</s><s>car<loc_53><loc_333><loc_933><loc_774>person<loc_1><loc_2>"
          "<loc_3><loc_4>wheel<loc_100><loc_600><loc_200><loc_700><loc_300>"
          "<loc_600><loc_400><loc_700></s>");
  // The steps of every 4th <loc_N>.
  std::vector<size_t> fourth;
  int locs = 0;
  for (size_t j = 0; j < ids.size(); ++j) {
    const std::optional<std::string> token =
        Tok().IdToToken(static_cast<int32_t>(ids[j]));
    if (token && absl::StartsWith(*token, "<loc_") && ++locs % 4 == 0) {
      fourth.push_back(j);
    }
  }
  ASSERT_EQ(fourth.size(), 4u);
  const Streamed s =
      Stream(Task::kObjectDetection, ids, Logprobs(ids.size() - 1), 640, 480);
  ASSERT_EQ(s.events.size(), 4u);
  EXPECT_EQ(s.steps, fourth);
  EXPECT_EQ(s.events[0].detection.label, "car");
  EXPECT_EQ(s.events[1].detection.label, "person");
  EXPECT_EQ(s.events[2].detection.label, "wheel");
  EXPECT_EQ(s.events[3].detection.label, "wheel");
  EXPECT_FLOAT_EQ(s.events[0].detection.box.x1, 34.24f);  // (53.5) * 0.64
  EXPECT_EQ(s.events[3].index, 3);
  CheckStreaming(Task::kObjectDetection, ids, 640, 480);
  CheckStreaming(Task::kDenseRegionCaption, ids, 640, 480);
}

TEST(StreamItemsTest, ConfidenceIsTheMeanLogprobOfTheItemsSpan) {
  const std::vector<int64_t> ids =
      Ids("</s><s>car<loc_10><loc_20><loc_30><loc_40>person<loc_50><loc_60>"
          "<loc_70><loc_80></s>");
  // </s> <s> car l l l l person l l l l </s>
  ASSERT_EQ(ids.size(), 13u);
  const std::vector<float> logprobs = {-0.1f, -0.2f, -0.3f, -0.4f, -0.5f,
                                       -0.6f,  // car's box: steps 1..6
                                       -1.0f, -1.0f, -1.0f, -1.0f,
                                       -2.0f,   // person's: steps 7..11
                                       -9.0f};  // </s>: no item's
  ItemTracker tracker(Tok(), Task::kObjectDetection, 1000, 1000);
  std::vector<ItemEvent> events;
  for (size_t fed = 1; fed <= ids.size(); ++fed) {
    for (ItemEvent& e :
         tracker.Update(absl::MakeConstSpan(ids).subspan(0, fed),
                        absl::MakeConstSpan(logprobs).subspan(0, fed - 1))) {
      events.push_back(std::move(e));
    }
  }
  EXPECT_TRUE(tracker.Finish(ids, logprobs).empty());
  ASSERT_EQ(events.size(), 2u);
  EXPECT_FLOAT_EQ(events[0].confidence, std::exp(-2.1f / 6));
  EXPECT_FLOAT_EQ(events[1].confidence, std::exp(-6.0f / 5));
  EXPECT_THAT(tracker.confidences(),
              ElementsAre(events[0].confidence, events[1].confidence));
  EXPECT_FLOAT_EQ(events[1].detection.box.x2, 70.5f);
}

TEST(StreamItemsTest, MissingLogprobsAreLeftOutOfTheMean) {
  const std::vector<int64_t> ids =
      Ids("</s><s>car<loc_10><loc_20><loc_30><loc_40>");
  ASSERT_EQ(ids.size(), 7u);
  ItemTracker tracker(Tok(), Task::kObjectDetection, 1000, 1000);
  const std::vector<float> logprobs = {-1.0f, -3.0f};  // steps 1, 2 only
  const std::vector<ItemEvent> events = tracker.Update(ids, logprobs);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_FLOAT_EQ(events[0].confidence, std::exp(-2.0f));
  ItemTracker none(Tok(), Task::kObjectDetection, 1000, 1000);
  EXPECT_EQ(none.Update(ids, {}).at(0).confidence, 0.0f);
}

TEST(StreamItemsTest, RegionProposalAndPhraseGrounding) {
  CheckStreaming(Task::kRegionProposal,
                 Ids("</s><s><loc_0><loc_0><loc_998><loc_711><loc_0><loc_0>"
                     "<loc_419><loc_673><loc_0><loc_64><loc_364><loc_672></s>"),
                 1300, 876);
  // "a" and "it" are banned grounding phrases: never streamed.
  const std::vector<int64_t> grounding =
      Ids("</s><s>A green car<loc_53><loc_333><loc_933><loc_774>a<loc_1>"
          "<loc_2><loc_3><loc_4>the road<loc_0><loc_700><loc_999><loc_999>"
          "it<loc_5><loc_6><loc_7><loc_8></s>");
  const Streamed s = Stream(Task::kPhraseGrounding, grounding,
                            Logprobs(grounding.size() - 1), 640, 480);
  ASSERT_EQ(s.events.size(), 2u);
  EXPECT_EQ(s.events[0].detection.label, "A green car");
  EXPECT_EQ(s.events[1].detection.label, "the road");
  EXPECT_EQ(s.events[1].index, 1);
  CheckStreaming(Task::kPhraseGrounding, grounding, 640, 480);
}

TEST(StreamItemsTest, OcrRegionsAtTheirEighthLocation) {
  const std::vector<int64_t> ids =
      Ids("</s><s>CUDA<loc_100><loc_100><loc_300><loc_100><loc_300><loc_200>"
          "<loc_100><loc_200>Hello world<loc_1><loc_2><loc_3><loc_4><loc_5>"
          "<loc_6><loc_7><loc_8>\nLine two<loc_11><loc_12><loc_13><loc_14>"
          "<loc_15><loc_16><loc_17><loc_18>東京<loc_21><loc_22><loc_23><loc_24>"
          "<loc_25><loc_26><loc_27><loc_28></s><pad><pad>");
  const Streamed s =
      Stream(Task::kOcrWithRegion, ids, Logprobs(ids.size() - 1), 403, 500);
  ASSERT_EQ(s.events.size(), 4u);
  EXPECT_EQ(s.events[0].ocr_region.text, "CUDA");
  EXPECT_EQ(s.events[1].ocr_region.text, "Hello world");
  EXPECT_EQ(s.events[3].ocr_region.text, "東京");
  for (const ItemEvent& e : s.events) EXPECT_LT(e.index, 4);
  CheckStreaming(Task::kOcrWithRegion, ids, 403, 500);
}

TEST(StreamItemsTest, SegmentationInstanceIsFinalAtTheEnd) {
  const std::vector<int64_t> ids =
      Ids("</s><s><loc_10><loc_20><loc_30><loc_20><loc_30><loc_40><loc_10>"
          "<loc_40><sep><loc_500><loc_500><loc_600><loc_500><loc_600>"
          "<loc_600></s>");
  for (Task task :
       {Task::kReferringExpressionSegmentation, Task::kRegionToSegmentation}) {
    const Streamed s = Stream(task, ids, Logprobs(ids.size() - 1), 1000, 500);
    ASSERT_EQ(s.events.size(), 1u);
    EXPECT_EQ(s.steps[0], ids.size() - 1);  // at "</s>", through Update
    ASSERT_EQ(s.events[0].instance.polygons.size(), 2u);
    EXPECT_EQ(s.events[0].instance.polygons[0].size(), 8u);
    EXPECT_EQ(s.events[0].instance.polygons[1].size(), 6u);
    // Its span ends at its last <loc_N>, not at "</s>".
    const std::vector<float> lp = Logprobs(ids.size() - 1);
    double sum = 0;
    for (size_t j = 1; j + 1 < ids.size(); ++j) sum += lp[j - 1];
    EXPECT_FLOAT_EQ(s.events[0].confidence,
                    static_cast<float>(std::exp(sum / (ids.size() - 2))));
    CheckStreaming(task, ids, 1000, 500);
  }
  // Without "</s>": at Finish.
  const std::vector<int64_t> open =
      Ids("</s><s><loc_10><loc_20><loc_30><loc_20><loc_30><loc_40>");
  const Streamed s = Stream(Task::kReferringExpressionSegmentation, open,
                            Logprobs(open.size() - 1), 1000, 500);
  ASSERT_EQ(s.events.size(), 1u);
  EXPECT_EQ(s.steps[0], open.size());
}

TEST(StreamItemsTest, PolygonInstanceIsFinalWhenTheNextAppears) {
  const std::string car1 =
      "<poly><loc_1><loc_2><loc_3><loc_4><loc_5><loc_6></poly>";
  const std::string car2 =
      "<poly><loc_7><loc_8><loc_9><loc_10><loc_11><loc_12></poly>";
  const std::string dog =
      "<poly><loc_20><loc_21><loc_22><loc_23><loc_24><loc_25></poly>";
  const std::vector<int64_t> ids =
      Ids(absl::StrCat("</s><s>car", car1, car2, "dog", dog, "</s>"));
  const Streamed s = Stream(Task::kOpenVocabularyDetection, ids,
                            Logprobs(ids.size() - 1), 640, 480);
  ASSERT_EQ(s.events.size(), 3u);
  EXPECT_EQ(s.events[0].instance.label, "car");
  EXPECT_EQ(s.events[1].instance.label, "car");
  EXPECT_EQ(s.events[2].instance.label, "dog");
  // Instance 0 when car2's "</poly>" closes; instance 1 once "dog<poly>"
  // is followed by enough <loc_N> to parse (before dog's "</poly>"); the
  // last at "</s>".
  const int64_t close = Id("</poly>");
  std::vector<size_t> closes;
  for (size_t j = 0; j < ids.size(); ++j) {
    if (ids[j] == close) closes.push_back(j);
  }
  ASSERT_EQ(closes.size(), 3u);
  ASSERT_EQ(s.steps.size(), 3u);
  EXPECT_EQ(s.steps[0], closes[1]);
  EXPECT_GT(s.steps[1], closes[1]);
  EXPECT_LT(s.steps[1], closes[2]);
  EXPECT_EQ(s.steps[2], ids.size() - 1);
  CheckStreaming(Task::kOpenVocabularyDetection, ids, 640, 480);
  // Instances separated by text in the segmentation tasks.
  CheckStreaming(Task::kReferringExpressionSegmentation,
                 Ids("</s><s><loc_1><loc_2><loc_3><loc_4><loc_5><loc_6>x"
                     "<loc_7><loc_8><loc_9><loc_10><sep><loc_11><loc_12>"
                     "<loc_13>y<loc_14><loc_15><loc_16><loc_17></s>"),
                 640, 480);
}

TEST(StreamItemsTest, OpenVocabularyBoxesWaitForTheEnd) {
  const std::vector<int64_t> ids =
      Ids("</s><s>wheels<loc_144><loc_570><loc_870><loc_778>wheels<loc_711>"
          "<loc_573><loc_866><loc_774></s><pad><pad><pad>");
  const Streamed s = Stream(Task::kOpenVocabularyDetection, ids,
                            Logprobs(ids.size() - 1), 640, 480);
  ASSERT_EQ(s.events.size(), 2u);
  const size_t eos = ids.size() - 4;
  EXPECT_EQ(s.steps, (std::vector<size_t>{eos, eos}));
  CheckStreaming(Task::kOpenVocabularyDetection, ids, 640, 480);
  // A later <poly> turns the boxes into polygons: nothing was streamed early.
  const std::vector<int64_t> mixed =
      Ids("</s><s>car<loc_1><loc_2><loc_3><loc_4>dog<poly><loc_5><loc_6>"
          "<loc_7><loc_8></poly>cat<loc_9><loc_10><loc_11><loc_12></s>");
  const Streamed m = Stream(Task::kOpenVocabularyDetection, mixed,
                            Logprobs(mixed.size() - 1), 640, 480);
  for (const ItemEvent& e : m.events) {
    EXPECT_EQ(e.kind, ItemEvent::Kind::kInstance);
  }
  CheckStreaming(Task::kOpenVocabularyDetection, mixed, 640, 480);
  CheckAllTasks(
      "</s><s>car<loc_1><loc_2><loc_3><loc_4>dog<poly><loc_5><loc_6>"
      "<loc_7><loc_8></poly>");
}

// ---- Text

// The decoded prefix after "</s><s>", without a trailing incomplete
// character, stripped: what a clean caption (no tags) has surely produced.
std::string SureCaption(absl::Span<const int64_t> prefix) {
  std::string text = Decode(prefix);
  for (absl::string_view tag : {"</s>", "<s>"}) {
    if (absl::StartsWith(text, tag)) text.erase(0, tag.size());
  }
  while (absl::EndsWith(text, kReplacement)) text.resize(text.size() - 3);
  return std::string(python_text::Strip(text));
}

TEST(StreamItemsTest, TextDeltasHoldBackSplitCharactersAndSpaces) {
  const std::vector<int64_t> ids = Ids("</s><s> café 東京 😀 and 🎉!  </s>");
  // Some character really is split across byte-level tokens.
  bool split = false;
  for (size_t j = 1; j < ids.size(); ++j) {
    split = split || absl::StrContains(Decode({&ids[j], 1}), kReplacement);
  }
  ASSERT_TRUE(split);
  ItemTracker tracker(Tok(), Task::kCaption, 640, 480);
  std::string emitted;
  for (size_t fed = 1; fed <= ids.size(); ++fed) {
    const absl::Span<const int64_t> prefix =
        absl::MakeConstSpan(ids).subspan(0, fed);
    for (const ItemEvent& e : tracker.Update(prefix, {})) {
      ASSERT_EQ(e.kind, ItemEvent::Kind::kTextDelta);
      EXPECT_FALSE(absl::StrContains(e.text_delta, kReplacement));
      emitted += e.text_delta;
    }
    if (fed < ids.size()) {
      // Everything sure is out, nothing more.
      EXPECT_EQ(emitted, SureCaption(prefix)) << "after " << fed << " tokens";
    }
  }
  EXPECT_EQ(emitted, "café 東京 😀 and 🎉!");
  EXPECT_TRUE(tracker.Finish(ids, {}).empty());
  EXPECT_TRUE(tracker.confidences().empty());
  CheckStreaming(Task::kCaption, ids, 640, 480);
}

TEST(StreamItemsTest, TextWithoutEndTokenIsCompletedByFinish) {
  const std::vector<int64_t> ids = Ids("</s><s>  a dog   ");
  ItemTracker tracker(Tok(), Task::kDetailedCaption, 640, 480);
  std::string emitted;
  for (const ItemEvent& e : tracker.Update(ids, {})) emitted += e.text_delta;
  EXPECT_EQ(emitted, "a dog");
  EXPECT_TRUE(tracker.Finish(ids, {}).empty());  // the spaces are stripped
  // A trailing split character comes at Finish, as the parser decodes it.
  std::vector<int64_t> cut = Ids("</s><s>x 😀");
  cut.pop_back();
  ItemTracker split(Tok(), Task::kCaption, 640, 480);
  std::string text;
  for (const ItemEvent& e : split.Update(cut, {})) text += e.text_delta;
  EXPECT_EQ(text, "x");
  for (const ItemEvent& e : split.Finish(cut, {})) text += e.text_delta;
  EXPECT_EQ(text, absl::StrCat("x ", kReplacement));
}

TEST(StreamItemsTest, TextHoldsBackTagsTheParserMayRemove) {
  // "<" + "<s>" + "/s>": the first pass removes "<s>", the second the "</s>"
  // that forms; "a <" must not be emitted.
  std::vector<int64_t> ids = Ids("</s><s>a <");
  const std::vector<int64_t> tail = Ids("<s>/s> b");
  ids.insert(ids.end(), tail.begin(), tail.end());
  ItemTracker tracker(Tok(), Task::kCaption, 640, 480);
  std::string text;
  for (size_t fed = 1; fed <= ids.size(); ++fed) {
    for (const ItemEvent& e :
         tracker.Update(absl::MakeConstSpan(ids).subspan(0, fed), {})) {
      text += e.text_delta;
    }
  }
  for (const ItemEvent& e : tracker.Finish(ids, {})) text += e.text_delta;
  EXPECT_EQ(text, "a  b");
  CheckStreaming(Task::kCaption, ids, 640, 480);
  // "</s>" spelled by ordinary tokens ends the text too.
  std::vector<int64_t> spelled = Ids("</s><s>the end</");
  const std::vector<int64_t> rest = Ids("s> more");
  spelled.insert(spelled.end(), rest.begin(), rest.end());
  ASSERT_EQ(Decode(spelled), "</s><s>the end</s> more");
  CheckStreaming(Task::kCaption, spelled, 640, 480);
  CheckStreaming(Task::kOcr, Ids("</s><s>x<pad>y<loc_5> z</s>"), 640, 480);
}

// ---- Malformed generations

TEST(StreamItemsTest, MalformedGenerations) {
  for (absl::string_view generation : {
           "</s><s>car<loc_1><loc_2><loc_3></s>",  // truncated group
           "</s><s>car<loc_1><loc_2><loc_3>",      // no end token
           "</s><s>car<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6></s>",
           "</s><s>car<loc_1><loc_2><loc_3>x<loc_4><loc_5><loc_6><loc_7>",
           "</s><s><poly>car<loc_1><loc_2></poly><loc_3><loc_4><sep><sep>",
           "</s><s>car</poly><loc_1><loc_2><loc_3><loc_4><poly></s>",
           "</s><s><sep><sep><sep><loc_1><sep><loc_2><loc_3><loc_4></s>",
           "</s><s>a\nb<loc_1><loc_2><loc_3><loc_4>c<loc_1><loc_2><loc_3>"
           "<loc_4><loc_5><loc_6><loc_7><loc_8></s>",
           "</s><s><od>car</od><loc_1><loc_2><loc_3><loc_4><s>x<pad></s>",
           "</s><s>car<loc_1><loc_2><s><loc_3><loc_4><pad><loc_5></s>",
           "</s><s>car<loc_999999><loc_1000><loc_3><loc_4></s>",
           "</s><s>",
           "</s>",
           "</s><s></s>car<loc_1><loc_2><loc_3><loc_4>",
       }) {
    CheckAllTasks(generation);
  }
  // Tags spelled by ordinary BPE tokens ("<lo" "c_5>", "<se" "p>").
  std::vector<int64_t> ids = Ids("</s><s>car<loc_1><loc_2><loc_3>");
  for (absl::string_view piece : {"<lo", "c_4>", "<se", "p>", "<loc_5>", "<lo",
                                  "c_6", "<pad>", "><loc_7>"}) {
    const std::vector<int64_t> more = Ids(piece);
    ids.insert(ids.end(), more.begin(), more.end());
  }
  for (const TaskSpec& spec : kTaskSpecs)
    CheckStreaming(spec.task, ids, 64, 48);
}

TEST(StreamItemsTest, TokensAfterTheEndChangeNothing) {
  const std::vector<int64_t> ids =
      Ids("</s><s>car<loc_1><loc_2><loc_3><loc_4></s>dog<loc_1><loc_2>"
          "<loc_3><loc_4><pad>");
  const Streamed s =
      Stream(Task::kObjectDetection, ids, Logprobs(ids.size() - 1), 640, 480);
  ASSERT_EQ(s.events.size(), 1u);
  EXPECT_EQ(s.events[0].detection.label, "car");
  CheckAllTasks(Decode(ids));
}

TEST(StreamItemsTest, BadImageSizeStreamsNothing) {
  const std::vector<int64_t> ids =
      Ids("</s><s>car<loc_1><loc_2><loc_3><loc_4>");
  ItemTracker tracker(Tok(), Task::kObjectDetection, 0, 480);
  EXPECT_TRUE(tracker.Update(ids, {}).empty());
  EXPECT_TRUE(tracker.Finish(ids, {}).empty());
}

// ---- Recorded and random generations

std::string EnvOr(const char* name, const char* fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

// Every generation tools/parser_vectors.py records (published ones, edge
// cases, its own fuzz), tokenized.
TEST(StreamItemsTest, ParserVectors) {
  const std::string path =
      EnvOr("FLORENCE_PARSER_VECTORS", FLORENCE_PARSER_VECTORS_DEFAULT);
  std::ifstream in(path);
  ASSERT_TRUE(in) << path << " (written by tools/parser_vectors.py)";
  int generations = 0;
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json record = nlohmann::json::parse(line);
    if (record.at("kind") != "generation") continue;
    const std::optional<Task> task =
        TaskFromToken(record.at("task").get<std::string>());
    ASSERT_TRUE(task.has_value());
    SCOPED_TRACE(record.at("name").get<std::string>());
    CheckStreaming(*task, Ids(record.at("text").get<std::string>()),
                   record.at("width").get<int>(),
                   record.at("height").get<int>());
    ++generations;
    if (HasFailure()) break;
  }
  EXPECT_GT(generations, 100);
}

// The tokens real (random-weight and location-prone) models generated in
// tools/e2e_vectors.py, when the pipeline's setup test has written them.
TEST(StreamItemsTest, ModelGenerations) {
  const std::string path =
      EnvOr("FLORENCE_E2E_DIR", FLORENCE_E2E_DIR_DEFAULT) + "/vectors.json";
  std::ifstream in(path);
  ASSERT_TRUE(in) << path << " is missing (the ctest setup test setup.pipeline_e2e_vectors writes it)";
  const nlohmann::json vectors = nlohmann::json::parse(in);
  int cases = 0;
  for (const nlohmann::json& c : vectors.at("cases")) {
    SCOPED_TRACE(c.at("name").get<std::string>());
    const std::vector<int64_t> ids =
        c.at("expected_tokens").get<std::vector<int64_t>>();
    ASSERT_EQ(Decode(ids), c.at("expected_text").get<std::string>());
    const std::optional<Task> task =
        TaskFromToken(c.at("task").get<std::string>());
    ASSERT_TRUE(task.has_value());
    CheckStreaming(*task, ids, c.at("width").get<int>(),
                   c.at("height").get<int>());
    ++cases;
    if (HasFailure()) break;
  }
  EXPECT_GT(cases, 0);
}

// Random sequences of the tokens that make streaming hard: <loc_N> and the
// polygon markers, <s>, </s>, <pad>, tags spelled by ordinary tokens, pieces
// of multi-byte characters (each byte-level token of 東, 😀, é on its own, so
// they also come out of order), whitespace and newlines.
TEST(StreamItemsTest, RandomTokenSequences) {
  std::vector<std::vector<int64_t>> pieces;
  auto add = [&pieces](absl::string_view text) { pieces.push_back(Ids(text)); };
  for (absl::string_view text :
       {"<s>",  "</s>", "<pad>", "<sep>", "<poly>", "</poly>", "<od>", "car",
        " dog", "a",    "it",    " ",     "  ",     "\n",      "<",    "/",
        "s",    ">",    "</",    "s>",    "<lo",    "c_",      "12",   "<pa",
        "d>",   "<se",  "p>",    "<po",   "ly>",    "\u2003",  "x y"}) {
    add(text);
  }
  for (absl::string_view text : {"東京", "😀", "é", "🎉"}) {
    for (int64_t id : Ids(text)) pieces.push_back({id});
  }
  std::mt19937 rng(20240611);
  for (int round = 0; round < 400; ++round) {
    std::vector<int64_t> ids = {2};
    if (rng() % 4 != 0) ids.push_back(0);
    const int length = static_cast<int>(rng() % 40);
    for (int i = 0; i < length; ++i) {
      const uint32_t r = rng() % 12;
      // A whole group of 4 or 8 <loc_N> now and then, so that boxes and
      // quads form often; single <loc_N> otherwise.
      const int locs = r == 0 ? 4 : r == 1 ? 8 : r < 7 ? 1 : 0;
      for (int l = 0; l < locs; ++l) {
        ids.push_back(Id(absl::StrCat("<loc_", rng() % 1000, ">")));
      }
      if (locs == 0) {
        const std::vector<int64_t>& piece = pieces[rng() % pieces.size()];
        ids.insert(ids.end(), piece.begin(), piece.end());
      }
    }
    SCOPED_TRACE(absl::StrCat("round ", round));
    for (const TaskSpec& spec : kTaskSpecs) {
      CheckStreaming(spec.task, ids, 1 + static_cast<int>(rng() % 2000),
                     1 + static_cast<int>(rng() % 2000));
    }
    if (HasFailure()) break;
  }
}

}  // namespace
}  // namespace florence::engine
