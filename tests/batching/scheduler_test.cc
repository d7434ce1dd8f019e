// The scheduler on a real exported model (the location-prone tiny model, whose
// generations mix words, boxes, quads and polygons) and real image files.
//
// The reference for every result is engine::Runtime::Run, the single-request
// path whose tokens equal transformers' generate() (tests/engine/pipeline/).
#include "batching/scheduler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "engine/image/decode.h"
#include "engine/model_dir.h"
#include "engine/pipeline/runtime.h"
#include "engine/torchscript_model.h"
#include "tests/engine/image/jpeg_writer.h"
#include "tests/fakes/failing_backend.h"

namespace florence::batching {
namespace {

using engine::Task;
using ::testing::HasSubstr;

std::string LocModelDir() { return FLORENCE_TEST_LOC_MODEL_DIR; }

std::string ReadFile(const std::string& name) {
  std::ifstream in(absl::StrCat(FLORENCE_TEST_IMAGES_DIR, "/", name), std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  EXPECT_FALSE(s.str().empty()) << name;
  return s.str();
}

// Collects what the scheduler delivers for one request.
class Collector final : public RequestSink {
 public:
  void OnEvents(int task_index, std::vector<engine::ItemEvent> events) override {
    absl::MutexLock lock(&mu_);
    EXPECT_FALSE(done_.HasBeenNotified()) << "events after OnDone";
    for (auto& e : events) events_[task_index].push_back(std::move(e));
  }
  void OnDone(absl::StatusOr<std::vector<TaskOutput>> result) override {
    {
      absl::MutexLock lock(&mu_);
      ++done_calls_;
      result_ = std::move(result);
    }
    done_.Notify();
  }
  const absl::StatusOr<std::vector<TaskOutput>>& Wait() {
    EXPECT_TRUE(done_.WaitForNotificationWithTimeout(absl::Minutes(5)));
    return result_;
  }
  std::vector<engine::ItemEvent> events(int task) {
    absl::MutexLock lock(&mu_);
    return events_[task];
  }
  int event_count() {
    absl::MutexLock lock(&mu_);
    int n = 0;
    for (auto& [k, v] : events_) n += static_cast<int>(v.size());
    return n;
  }
  int done_calls() {
    absl::MutexLock lock(&mu_);
    return done_calls_;
  }

 private:
  absl::Mutex mu_;
  std::map<int, std::vector<engine::ItemEvent>> events_;
  absl::StatusOr<std::vector<TaskOutput>> result_ = absl::UnknownError("not done");
  int done_calls_ = 0;
  absl::Notification done_;
};

struct Case {
  std::string image;
  Task task;
  std::string text;
  std::optional<engine::RegionBox> region;
  int beams;
  int max_new_tokens;
};

Request MakeRequest(const Case& c) {
  Request r;
  r.id = absl::StrCat(engine::SpecOf(c.task).token, "/", c.image);
  r.encoded_image = ReadFile(c.image);
  r.tasks.push_back({c.task, c.text, c.region});
  r.num_beams = c.beams;
  r.max_new_tokens = c.max_new_tokens;
  return r;
}

// The reference: the same request alone through engine::Runtime.
engine::RunResult Alone(engine::Runtime& runtime, const Case& c) {
  const std::string bytes = ReadFile(c.image);
  engine::RunRequest r;
  r.image = bytes;
  r.task = c.task;
  r.text = c.text;
  r.region = c.region;
  r.num_beams = c.beams;
  r.max_new_tokens = c.max_new_tokens;
  absl::StatusOr<engine::RunResult> out = runtime.Run(r);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? *std::move(out) : engine::RunResult{};
}

std::vector<Case> AllTasks(int beams, int max_new_tokens) {
  const std::vector<std::string> images = {"astronaut.jpg", "coffee.png", "chelsea.webp",
                                           "rocket.bmp", "page.tiff"};
  std::vector<Case> cases;
  for (size_t i = 0; i < engine::kTaskSpecs.size(); ++i) {
    const engine::TaskSpec& spec = engine::kTaskSpecs[i];
    Case c;
    c.image = images[i % images.size()];
    c.task = spec.task;
    if (spec.input == engine::TaskInput::kText) c.text = "a person next to a red car";
    if (spec.input == engine::TaskInput::kRegion) c.region = engine::RegionBox{20.5, 30, 150, 180.25};
    c.beams = beams;
    c.max_new_tokens = max_new_tokens;
    cases.push_back(c);
  }
  return cases;
}

class SchedulerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto rt = engine::Runtime::Create(LocModelDir(), {});
    ASSERT_TRUE(rt.ok()) << rt.status();
    runtime_ = rt->release();
  }
  static void TearDownTestSuite() {
    delete runtime_;
    runtime_ = nullptr;
  }

  std::unique_ptr<Scheduler> Make(Scheduler::Options options = {}) {
    if (options.kv_cache_bytes == (int64_t{4} << 30)) options.kv_cache_bytes = int64_t{1} << 30;
    auto s = Scheduler::Create(LocModelDir(), options, nullptr);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *std::move(s) : nullptr;
  }

  static engine::Runtime* runtime_;
};

engine::Runtime* SchedulerTest::runtime_ = nullptr;

TEST_F(SchedulerTest, EveryTaskAmidAConcurrentMixEqualsTheRequestAlone) {
  Scheduler::Options options;
  options.policy.max_batch = 4;
  options.policy.max_delay = absl::Milliseconds(5);
  options.vision_batch = 3;  // a full encoder batch runs the vision tower as 3 + 1 images
  auto scheduler = Make(options);
  ASSERT_NE(scheduler, nullptr);
  std::vector<Case> cases = AllTasks(1, 48);
  for (const Case& c : AllTasks(3, 32)) cases.push_back(c);
  // All at once: encoder batches of up to 4 and a decoder batch mixing
  // tasks, images, beam widths and lengths.
  std::vector<std::unique_ptr<Collector>> sinks;
  for (const Case& c : cases) {
    sinks.push_back(std::make_unique<Collector>());
    ASSERT_TRUE(scheduler->Submit(MakeRequest(c), sinks.back().get()).ok());
  }
  int structured_items = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& out = sinks[i]->Wait();
    ASSERT_TRUE(out.ok()) << out.status();
    ASSERT_EQ(out->size(), 1u);
    const TaskOutput& got = out->front();
    const engine::RunResult want = Alone(*runtime_, cases[i]);
    EXPECT_EQ(got.token_ids, want.token_ids)
        << engine::SpecOf(cases[i].task).token << " beams=" << cases[i].beams << " on "
        << cases[i].image;
    EXPECT_EQ(got.generated_text, want.generated_text);
    EXPECT_EQ(got.image_width, want.image_width);
    EXPECT_EQ(got.prompt_tokens, static_cast<int>(want.prompt_ids.size()));
    EXPECT_EQ(got.num_beams, cases[i].beams);
    structured_items += static_cast<int>(got.confidences.size());
    for (float c : got.confidences) {
      EXPECT_GT(c, 0.0f);
      EXPECT_LE(c, 1.0f);
    }
    EXPECT_EQ(sinks[i]->done_calls(), 1);
  }
  // The location-prone model must actually produce structured items here.
  EXPECT_GT(structured_items, 5);
  EXPECT_EQ(scheduler->kv_bytes_in_use(), 0);
  EXPECT_EQ(scheduler->in_flight(), 0);
}

TEST_F(SchedulerTest, StreamedEventsAddUpToTheFinalResult) {
  auto scheduler = Make();
  ASSERT_NE(scheduler, nullptr);
  std::vector<Case> cases = AllTasks(1, 64);
  for (const Case& c : AllTasks(3, 48)) cases.push_back(c);
  std::vector<std::unique_ptr<Collector>> sinks;
  for (const Case& c : cases) {
    Request r = MakeRequest(c);
    r.stream = true;
    sinks.push_back(std::make_unique<Collector>());
    ASSERT_TRUE(scheduler->Submit(std::move(r), sinks.back().get()).ok());
  }
  int items = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& out = sinks[i]->Wait();
    ASSERT_TRUE(out.ok()) << out.status();
    const TaskOutput& got = out->front();
    std::string text;
    std::vector<engine::ItemEvent> structured;
    for (auto& e : sinks[i]->events(0)) {
      if (e.kind == engine::ItemEvent::Kind::kTextDelta) {
        text += e.text_delta;
      } else {
        structured.push_back(e);
      }
    }
    items += static_cast<int>(structured.size());
    if (const auto* t = std::get_if<engine::TextResult>(&got.parsed)) {
      EXPECT_EQ(text, t->text) << engine::SpecOf(cases[i].task).token;
    } else {
      ASSERT_EQ(structured.size(), got.confidences.size()) << engine::SpecOf(cases[i].task).token;
      std::map<engine::ItemEvent::Kind, int> per_kind;
      for (size_t k = 0; k < structured.size(); ++k) {
        EXPECT_EQ(structured[k].index, per_kind[structured[k].kind]++);
        EXPECT_FLOAT_EQ(structured[k].confidence, got.confidences[k]);
      }
    }
  }
  EXPECT_GT(items, 5);
}

TEST_F(SchedulerTest, CancelMidDecodeFreesTheCacheAndSparesOthers) {
  auto scheduler = Make();
  ASSERT_NE(scheduler, nullptr);
  Case long_case{"astronaut.jpg", Task::kCaption, "", std::nullopt, 3, 1000};
  Request r = MakeRequest(long_case);
  r.min_new_tokens = 1000;  // never stops on its own
  r.stream = true;
  Collector cancelled;
  absl::StatusOr<RequestHandle> h = scheduler->Submit(std::move(r), &cancelled);
  ASSERT_TRUE(h.ok());
  Case short_case{"coffee.png", Task::kObjectDetection, "", std::nullopt, 1, 24};
  Collector other;
  ASSERT_TRUE(scheduler->Submit(MakeRequest(short_case), &other).ok());
  // Decoding has started once it holds cache rows.
  for (int i = 0; i < 2000 && scheduler->kv_bytes_in_use() == 0; ++i) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_GT(scheduler->kv_bytes_in_use(), 0);
  scheduler->Cancel(*h);
  const auto& out = cancelled.Wait();
  EXPECT_EQ(out.status().code(), absl::StatusCode::kCancelled);
  const auto& ok = other.Wait();
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->front().token_ids, Alone(*runtime_, short_case).token_ids);
  EXPECT_EQ(scheduler->kv_bytes_in_use(), 0);
  EXPECT_EQ(scheduler->in_flight(), 0);
  scheduler->Cancel(*h);  // finished handles are ignored
  EXPECT_EQ(cancelled.done_calls(), 1);
}

TEST_F(SchedulerTest, DeadlineWhileDecodingAndWhileQueued) {
  Scheduler::Options options;
  options.max_rows = 3;  // one beam-3 request fills the pool
  auto scheduler = Make(options);
  ASSERT_NE(scheduler, nullptr);

  Case long_case{"astronaut.jpg", Task::kCaption, "", std::nullopt, 3, 1000};
  Request decoding = MakeRequest(long_case);
  decoding.min_new_tokens = 1000;
  const absl::Time decoding_deadline = absl::Now() + absl::Milliseconds(1500);
  decoding.deadline = decoding_deadline;
  Collector a;
  ASSERT_TRUE(scheduler->Submit(std::move(decoding), &a).ok());
  for (int i = 0; i < 2000 && scheduler->kv_bytes_in_use() == 0; ++i) absl::SleepFor(absl::Milliseconds(5));
  // No rows left: this one waits in the queue past its deadline, which comes
  // before the decoding request's (however long that one took to join on a
  // loaded machine) so the rows are still taken when it expires.
  Request queued = MakeRequest({"coffee.png", Task::kOcr, "", std::nullopt, 1, 8});
  queued.deadline =
      absl::Now() + std::min(absl::Milliseconds(300), (decoding_deadline - absl::Now()) / 2);
  Collector b;
  ASSERT_TRUE(scheduler->Submit(std::move(queued), &b).ok());

  const auto& qb = b.Wait();
  EXPECT_EQ(qb.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(qb.status().message(), HasSubstr("queue"));
  const auto& qa = a.Wait();
  EXPECT_EQ(qa.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(qa.status().message(), HasSubstr("decoding"));
  EXPECT_EQ(scheduler->kv_bytes_in_use(), 0);
}

TEST_F(SchedulerTest, FullQueueIsResourceExhaustedWhileAdmittedWorkCompletes) {
  Scheduler::Options options;
  options.max_rows = 1;
  options.max_queue = 2;
  auto scheduler = Make(options);
  ASSERT_NE(scheduler, nullptr);
  Case slow{"astronaut.jpg", Task::kCaption, "", std::nullopt, 1, 200};
  Request first = MakeRequest(slow);
  first.min_new_tokens = 200;
  Collector a;
  ASSERT_TRUE(scheduler->Submit(std::move(first), &a).ok());
  for (int i = 0; i < 2000 && scheduler->kv_bytes_in_use() == 0; ++i) absl::SleepFor(absl::Milliseconds(5));
  Collector b, c, d;
  Case quick{"coffee.png", Task::kCaption, "", std::nullopt, 1, 4};
  ASSERT_TRUE(scheduler->Submit(MakeRequest(quick), &b).ok());
  ASSERT_TRUE(scheduler->Submit(MakeRequest(quick), &c).ok());
  absl::StatusOr<RequestHandle> refused = scheduler->Submit(MakeRequest(quick), &d);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(), HasSubstr("retry in about"));
  EXPECT_GT(scheduler->RetryHint(), absl::ZeroDuration());
  EXPECT_TRUE(a.Wait().ok());
  EXPECT_TRUE(b.Wait().ok());
  EXPECT_TRUE(c.Wait().ok());
  EXPECT_EQ(d.done_calls(), 0);  // refused at Submit: no OnDone
}

// A request whose deadline passed before a worker took it is answered without decoding its image: the answer is
// DEADLINE_EXCEEDED even for bytes that would fail to decode, and the scheduler is left with nothing in flight.
TEST_F(SchedulerTest, AnExpiredRequestIsNotDecoded) {
  auto scheduler = Make();
  ASSERT_NE(scheduler, nullptr);
  Request r = MakeRequest({"coffee.png", Task::kCaption, "", std::nullopt, 1, 4});
  r.encoded_image = std::string(4096, '\x5a');  // no image format: decoding would be INVALID_ARGUMENT
  r.deadline = absl::Now() - absl::Milliseconds(1);
  Collector expired;
  ASSERT_TRUE(scheduler->Submit(std::move(r), &expired).ok());
  const auto& out = expired.Wait();
  EXPECT_EQ(out.status().code(), absl::StatusCode::kDeadlineExceeded) << out.status();
  EXPECT_EQ(expired.done_calls(), 1);
  for (int i = 0; i < 200 && scheduler->in_flight() > 0; ++i) absl::SleepFor(absl::Milliseconds(5));
  EXPECT_EQ(scheduler->in_flight(), 0);
}

TEST_F(SchedulerTest, MultiTaskRunsTheVisionTowerOnceAndMatchesEachTaskAlone) {
  auto scheduler = Make();
  ASSERT_NE(scheduler, nullptr);
  std::vector<Case> cases = {
      {"rocket.bmp", Task::kCaption, "", std::nullopt, 3, 24},
      {"rocket.bmp", Task::kObjectDetection, "", std::nullopt, 3, 24},
      {"rocket.bmp", Task::kRegionToCategory, "", engine::RegionBox{10, 10, 200, 300}, 3, 24},
      {"rocket.bmp", Task::kOpenVocabularyDetection, "rocket", std::nullopt, 3, 24},
  };
  Request r = MakeRequest(cases[0]);
  for (size_t i = 1; i < cases.size(); ++i) r.tasks.push_back({cases[i].task, cases[i].text, cases[i].region});
  Collector sink;
  ASSERT_TRUE(scheduler->Submit(std::move(r), &sink).ok());
  const auto& out = sink.Wait();
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ((*out)[i].task, cases[i].task);
    EXPECT_EQ((*out)[i].token_ids, Alone(*runtime_, cases[i]).token_ids) << i;
    EXPECT_EQ((*out)[i].timings.encoder_batch_size, 1);
  }
}

TEST_F(SchedulerTest, FeatureCacheSkipsTheVisionTowerWithIdenticalResults) {
  Scheduler::Options options;
  options.feature_cache_bytes = 64 << 20;
  auto scheduler = Make(options);
  ASSERT_NE(scheduler, nullptr);
  Case c{"chelsea.webp", Task::kObjectDetection, "", std::nullopt, 3, 32};
  Collector first;
  ASSERT_TRUE(scheduler->Submit(MakeRequest(c), &first).ok());
  ASSERT_TRUE(first.Wait().ok());
  Collector second;
  ASSERT_TRUE(scheduler->Submit(MakeRequest(c), &second).ok());
  ASSERT_TRUE(second.Wait().ok());
  EXPECT_FALSE(first.Wait()->front().timings.features_cached);
  EXPECT_TRUE(second.Wait()->front().timings.features_cached);
  EXPECT_EQ(first.Wait()->front().token_ids, second.Wait()->front().token_ids);
  EXPECT_EQ(second.Wait()->front().token_ids, Alone(*runtime_, c).token_ids);
}

TEST_F(SchedulerTest, BadInputsFailAloneWithClearMessages) {
  auto scheduler = Make();
  ASSERT_NE(scheduler, nullptr);
  const std::string jpeg = ReadFile("astronaut.jpg");
  struct Bad {
    std::string name;
    Request request;
    std::string message;
  };
  std::vector<Bad> bad;
  auto base = [&] {
    Request r;
    r.encoded_image = jpeg;
    r.tasks.push_back({Task::kCaption, "", std::nullopt});
    r.num_beams = 1;
    r.max_new_tokens = 8;
    return r;
  };
  {
    Request r = base();
    r.encoded_image = jpeg.substr(0, jpeg.size() / 3);
    bad.push_back({"truncated JPEG", std::move(r), "image: "});
  }
  {
    Request r = base();
    r.encoded_image = std::string(5000, '\x5a');
    bad.push_back({"random bytes", std::move(r), "image: "});
  }
  {
    Request r = base();
    r.tasks[0] = {Task::kRegionToCategory, "", engine::RegionBox{10, 10, 900, 100}};
    bad.push_back({"region outside", std::move(r), "outside the image"});
  }
  {
    Request r = base();
    r.tasks[0] = {Task::kCaption, "unexpected", std::nullopt};
    bad.push_back({"text on caption", std::move(r), "<CAPTION>"});
  }
  {
    Request r = base();
    r.tasks[0] = {Task::kPhraseGrounding, "", std::nullopt};
    bad.push_back({"missing text", std::move(r), "<CAPTION_TO_PHRASE_GROUNDING>"});
  }
  {
    Request r = base();
    r.encoded_image.clear();
    engine::RgbImage raw;
    raw.width = 10;
    raw.height = 10;
    raw.rgb.resize(299);
    r.raw = raw;
    bad.push_back({"raw of wrong length", std::move(r), "needs exactly 300 bytes"});
  }
  Case good{"coffee.png", Task::kCaption, "", std::nullopt, 1, 8};
  Collector good_sink;
  ASSERT_TRUE(scheduler->Submit(MakeRequest(good), &good_sink).ok());
  std::vector<std::unique_ptr<Collector>> sinks;
  for (Bad& b : bad) {
    sinks.push_back(std::make_unique<Collector>());
    ASSERT_TRUE(scheduler->Submit(std::move(b.request), sinks.back().get()).ok()) << b.name;
  }
  for (size_t i = 0; i < bad.size(); ++i) {
    const auto& out = sinks[i]->Wait();
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << bad[i].name;
    EXPECT_THAT(out.status().message(), HasSubstr(bad[i].message)) << bad[i].name;
  }
  const auto& ok = good_sink.Wait();
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->front().token_ids, Alone(*runtime_, good).token_ids);

  // Refused at Submit: decoding options that can never run.
  Collector never;
  Request beams0 = base();
  beams0.num_beams = 0;
  EXPECT_EQ(scheduler->Submit(std::move(beams0), &never).status().code(),
            absl::StatusCode::kInvalidArgument);
  Request beams_huge = base();
  beams_huge.num_beams = 1 << 30;
  EXPECT_EQ(scheduler->Submit(std::move(beams_huge), &never).status().code(),
            absl::StatusCode::kInvalidArgument);
  Request too_long = base();
  too_long.max_new_tokens = 1 << 20;
  EXPECT_THAT(scheduler->Submit(std::move(too_long), &never).status().message(),
              HasSubstr("max_new_tokens"));
  // Text no prompt could hold (the default 256 tokens x 128 bytes): refused before decoding or tokenizing.
  Request huge_text = base();
  huge_text.tasks[0] = {Task::kPhraseGrounding, std::string(32 * 1024 + 1, 'a'), std::nullopt};
  absl::StatusOr<RequestHandle> refused_text = scheduler->Submit(std::move(huge_text), &never);
  EXPECT_EQ(refused_text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused_text.status().message(), HasSubstr("32768 bytes of text"));
  EXPECT_EQ(never.done_calls(), 0);
}

TEST_F(SchedulerTest, DrainRefusesNewWorkAndWaitsForInFlight) {
  auto scheduler = Make();
  ASSERT_NE(scheduler, nullptr);
  Collector a;
  ASSERT_TRUE(scheduler->Submit(MakeRequest({"page.tiff", Task::kOcr, "", std::nullopt, 3, 24}), &a).ok());
  EXPECT_TRUE(scheduler->Drain(absl::Now() + absl::Minutes(2)));
  EXPECT_TRUE(a.Wait().ok());
  Collector b;
  EXPECT_EQ(scheduler->Submit(MakeRequest({"page.tiff", Task::kOcr, "", std::nullopt, 1, 4}), &b)
                .status()
                .code(),
            absl::StatusCode::kUnavailable);
}

TEST_F(SchedulerTest, WarmupRunsARequest) {
  auto scheduler = Make();
  ASSERT_NE(scheduler, nullptr);
  EXPECT_TRUE(scheduler->Warmup().ok());
  EXPECT_EQ(scheduler->in_flight(), 0);
}


// A model that fails on a chosen call, around the real one.
std::unique_ptr<engine::ModelBackend> Failing(testing::FailingBackend::Plan plan) {
  auto dir = engine::LoadModelDir(LocModelDir());
  EXPECT_TRUE(dir.ok()) << dir.status();
  auto real = engine::TorchScriptModel::Create(*dir, {});
  EXPECT_TRUE(real.ok()) << real.status();
  return std::make_unique<testing::FailingBackend>(*std::move(real), plan);
}

TEST_F(SchedulerTest, AnEncoderFailureFailsItsBatchWithOneStatusAndTheNextBatchRuns) {
  Scheduler::Options options;
  options.policy.max_batch = 3;
  options.policy.max_delay = absl::Seconds(1);  // the three requests fill the batch before it runs
  options.kv_cache_bytes = int64_t{1} << 30;
  auto s = Scheduler::CreateWithModel(LocModelDir(), options, nullptr,
                                      Failing({.fail_image_features_call = 1}));
  ASSERT_TRUE(s.ok()) << s.status();
  auto& scheduler = *s;
  std::vector<Case> cases = {{"astronaut.jpg", Task::kCaption, "", std::nullopt, 1, 8},
                             {"coffee.png", Task::kObjectDetection, "", std::nullopt, 3, 8},
                             {"page.tiff", Task::kOcr, "", std::nullopt, 1, 8}};
  std::vector<std::unique_ptr<Collector>> sinks;
  for (const Case& c : cases) {
    sinks.push_back(std::make_unique<Collector>());
    ASSERT_TRUE(scheduler->Submit(MakeRequest(c), sinks.back().get()).ok());
  }
  for (auto& sink : sinks) {
    const auto& out = sink->Wait();
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInternal);
    EXPECT_THAT(out.status().message(), HasSubstr("injected failure"));
  }
  EXPECT_EQ(scheduler->kv_bytes_in_use(), 0);
  for (size_t i = 0; i < cases.size(); ++i) {  // the same requests now succeed
    Collector again;
    ASSERT_TRUE(scheduler->Submit(MakeRequest(cases[i]), &again).ok());
    const auto& out = again.Wait();
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->front().token_ids, Alone(*runtime_, cases[i]).token_ids);
  }
}

TEST_F(SchedulerTest, ADecodeFailureFailsTheRunningRequestsAndFreesTheirRows) {
  Scheduler::Options options;
  options.kv_cache_bytes = int64_t{1} << 30;
  auto s = Scheduler::CreateWithModel(LocModelDir(), options, nullptr,
                                      Failing({.fail_decode_step_call = 5}));
  ASSERT_TRUE(s.ok()) << s.status();
  auto& scheduler = *s;
  Request a = MakeRequest({"astronaut.jpg", Task::kCaption, "", std::nullopt, 3, 40});
  a.min_new_tokens = 40;
  Collector sink_a;
  ASSERT_TRUE(scheduler->Submit(std::move(a), &sink_a).ok());
  const auto& out = sink_a.Wait();
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(out.status().message(), HasSubstr("decode_step: injected failure"));
  EXPECT_EQ(scheduler->kv_bytes_in_use(), 0);
  Case next{"coffee.png", Task::kOcrWithRegion, "", std::nullopt, 3, 24};
  Collector sink_b;
  ASSERT_TRUE(scheduler->Submit(MakeRequest(next), &sink_b).ok());
  ASSERT_TRUE(sink_b.Wait().ok());
  EXPECT_EQ(sink_b.Wait()->front().token_ids, Alone(*runtime_, next).token_ids);
}

TEST_F(SchedulerTest, HigherPriorityLeavesTheQueueFirst) {
  Scheduler::Options options;
  options.max_rows = 1;  // one sequence at a time: the queue order is the run order
  auto scheduler = Make(options);
  ASSERT_NE(scheduler, nullptr);
  Request blocker = MakeRequest({"astronaut.jpg", Task::kCaption, "", std::nullopt, 1, 60});
  blocker.min_new_tokens = 60;
  Collector first;
  ASSERT_TRUE(scheduler->Submit(std::move(blocker), &first).ok());
  for (int i = 0; i < 2000 && scheduler->kv_bytes_in_use() == 0; ++i) absl::SleepFor(absl::Milliseconds(5));
  // Queued behind it, in this order: low, normal, high, normal.
  const std::vector<int> priorities = {-1, 0, 1, 0};
  std::vector<std::unique_ptr<Collector>> sinks;
  for (int p : priorities) {
    Request r = MakeRequest({"coffee.png", Task::kCaption, "", std::nullopt, 1, 4});
    r.priority = p;
    sinks.push_back(std::make_unique<Collector>());
    ASSERT_TRUE(scheduler->Submit(std::move(r), sinks.back().get()).ok());
  }
  // Queue time orders them: high, then the normals in arrival order, then low.
  std::vector<double> queue_ms;
  for (auto& sink : sinks) {
    const auto& out = sink->Wait();
    ASSERT_TRUE(out.ok()) << out.status();
    queue_ms.push_back(out->front().timings.queue_ms);
  }
  EXPECT_LT(queue_ms[2], queue_ms[1]);
  EXPECT_LT(queue_ms[1], queue_ms[3]);
  EXPECT_LT(queue_ms[3], queue_ms[0]);
}


TEST_F(SchedulerTest, LetterboxKeepsTheAspectRatioAndTheBatchingContract) {
  Scheduler::Options options;
  options.image_mode = Scheduler::Options::ImageMode::kLetterbox;
  options.policy.max_batch = 4;
  options.policy.max_delay = absl::Milliseconds(20);
  auto scheduler = Make(options);
  ASSERT_NE(scheduler, nullptr);
  // A square image letterboxes to exactly transformers' resize: same tokens.
  Case square{"astronaut.jpg", Task::kObjectDetection, "", std::nullopt, 3, 32};
  Collector sq;
  ASSERT_TRUE(scheduler->Submit(MakeRequest(square), &sq).ok());
  ASSERT_TRUE(sq.Wait().ok()) << sq.Wait().status();
  EXPECT_EQ(sq.Wait()->front().token_ids, Alone(*runtime_, square).token_ids);

  // Non-square images: each alone, then all together, give the same tokens.
  std::vector<Case> cases = {{"coffee.png", Task::kObjectDetection, "", std::nullopt, 1, 48},
                             {"page.tiff", Task::kOcrWithRegion, "", std::nullopt, 3, 32},
                             {"rocket.bmp", Task::kRegionToCategory, "",
                              engine::RegionBox{100, 50, 400, 420}, 1, 16},
                             {"chelsea.webp", Task::kCaption, "", std::nullopt, 3, 24}};
  std::vector<std::vector<int64_t>> alone;
  for (const Case& c : cases) {
    Collector one;
    ASSERT_TRUE(scheduler->Submit(MakeRequest(c), &one).ok());
    ASSERT_TRUE(one.Wait().ok()) << one.Wait().status();
    alone.push_back(one.Wait()->front().token_ids);
  }
  std::vector<std::unique_ptr<Collector>> sinks;
  for (const Case& c : cases) {
    sinks.push_back(std::make_unique<Collector>());
    ASSERT_TRUE(scheduler->Submit(MakeRequest(c), sinks.back().get()).ok());
  }
  int differs_from_resize = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_TRUE(sinks[i]->Wait().ok());
    EXPECT_EQ(sinks[i]->Wait()->front().token_ids, alone[i]) << cases[i].image;
    differs_from_resize += alone[i] != Alone(*runtime_, cases[i]).token_ids;
  }
  // The padded, masked input is not the stretched one: the model sees it.
  EXPECT_GT(differs_from_resize, 0);

  // A region must lie in the image, not merely in the square canvas.
  Request outside = MakeRequest({"coffee.png", Task::kRegionToCategory, "",
                                 engine::RegionBox{10, 450, 100, 550}, 1, 4});
  Collector bad;
  ASSERT_TRUE(scheduler->Submit(std::move(outside), &bad).ok());
  EXPECT_EQ(bad.Wait().status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.Wait().status().message(), HasSubstr("outside the image"));
}

// Opt-in reduced-scale JPEG decoding: a large JPEG is decoded at 1/2 (no
// side below the model's 768), yet its coordinates (the region in the prompt,
// the result's size) are the file's own; a small JPEG and other formats answer
// exactly as without the option; letterbox mode refuses it.
TEST_F(SchedulerTest, ScaledJpegDecodeKeepsTheFileSizeForCoordinates) {
  Scheduler::Options options;
  options.jpeg_scaled_decode = true;
  auto scheduler = Make(options);
  ASSERT_NE(scheduler, nullptr);
  absl::StatusOr<engine::RgbImage> small = engine::DecodeImage(ReadFile("astronaut.jpg"));
  ASSERT_TRUE(small.ok()) << small.status();
  Request big;
  big.id = "large jpeg";
  big.encoded_image = testdata::EncodeJpeg(testdata::MakeLargePhoto(*small, 2000, 1600, 6), 90);
  // Inside 2000x1600, outside the 1000x800 the decoder produces.
  big.tasks.push_back({Task::kRegionToCategory, "", engine::RegionBox{1500, 1200, 1900, 1550}});
  big.tasks.push_back({Task::kObjectDetection, "", std::nullopt});
  big.num_beams = 1;
  big.max_new_tokens = 32;
  Collector sink;
  ASSERT_TRUE(scheduler->Submit(std::move(big), &sink).ok());
  ASSERT_TRUE(sink.Wait().ok()) << sink.Wait().status();
  for (const TaskOutput& out : *sink.Wait()) {
    EXPECT_EQ(out.image_width, 2000);
    EXPECT_EQ(out.image_height, 1600);
  }

  for (const Case& c : {Case{"astronaut.jpg", Task::kObjectDetection, "", std::nullopt, 3, 24},
                        Case{"coffee.png", Task::kObjectDetection, "", std::nullopt, 3, 24}}) {
    Collector same;
    ASSERT_TRUE(scheduler->Submit(MakeRequest(c), &same).ok());
    ASSERT_TRUE(same.Wait().ok()) << same.Wait().status();
    EXPECT_EQ(same.Wait()->front().token_ids, Alone(*runtime_, c).token_ids) << c.image;
  }

  options.image_mode = Scheduler::Options::ImageMode::kLetterbox;
  auto refused = Scheduler::Create(LocModelDir(), options, nullptr);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("resize image mode"));
}

}  // namespace
}  // namespace florence::batching
