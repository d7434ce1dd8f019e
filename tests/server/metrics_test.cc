// Metrics recorded through the observer and RPC methods, then scraped the way
// Prometheus does: an HTTP GET of /metrics on loopback, parsed back with
// server/metrics_text.h. Also the text parser on hand-written input.
#include "server/metrics.h"

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "batching/observer.h"
#include "engine/task.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/metrics_text.h"

namespace florence::server {
namespace {

using engine::Task;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Optional;
using ::testing::Pair;

std::unique_ptr<Metrics> StartOnLoopback() {
  absl::StatusOr<std::unique_ptr<Metrics>> metrics =
      Metrics::Create("127.0.0.1:0");
  EXPECT_TRUE(metrics.ok()) << metrics.status();
  if (!metrics.ok()) return nullptr;
  EXPECT_GT((*metrics)->port(), 0);
  return *std::move(metrics);
}

MetricsText Scrape(const Metrics& metrics) {
  absl::StatusOr<MetricsText> text = ScrapeMetrics(metrics.port());
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? *std::move(text) : MetricsText();
}

TEST(MetricsTest, ScrapeReturnsWhatWasRecorded) {
  std::unique_ptr<Metrics> metrics = StartOnLoopback();
  ASSERT_NE(metrics, nullptr);
  batching::SchedulerObserver& observer = *metrics;

  for (int i = 0; i < 3; ++i) {
    metrics->OnRpcDone("Caption", Task::kCaption, absl::StatusCode::kOk, 0.02);
  }
  metrics->OnRpcDone("Caption", Task::kCaption,
                     absl::StatusCode::kInvalidArgument, 0.005);
  metrics->OnRpcDone("Run", Task::kObjectDetection, absl::StatusCode::kOk, 1.5);
  metrics->OnRpcDone("Run", std::nullopt, absl::StatusCode::kInvalidArgument,
                     0.001);
  metrics->OnFirstItem(Task::kObjectDetection, 0.3);

  observer.OnQueueDepth(5);
  observer.OnQueueDepth(3);
  observer.OnActive(4, int64_t{1} << 20);
  observer.OnActive(2, 4096);
  observer.OnEncoderBatch(/*requests=*/3, /*tasks=*/4, /*images=*/2, 0.25);
  observer.OnEncoderBatch(/*requests=*/1, /*tasks=*/1, /*images=*/1, 0.5);
  observer.OnDecodeStep(/*rows=*/6, /*sequences=*/2, 0.02);
  observer.OnDecodeStep(/*rows=*/130, /*sequences=*/40, 0.125);
  observer.OnQueueTime(Task::kObjectDetection, 0.004);
  observer.OnQueueTime(Task::kObjectDetection, 2);
  observer.OnTaskGenerated(Task::kObjectDetection, 0.25, 1.0, 17);
  observer.OnTaskGenerated(Task::kCaption, 0.5, 2.0, 5);
  observer.OnTaskGenerated(Task::kCaption, 0.5, 2.0, 6);

  const MetricsText text = Scrape(*metrics);

  // Requests by method, task and code.
  EXPECT_THAT(
      text.Value("florence_requests_total",
                 {{"method", "Caption"}, {"task", "caption"}, {"code", "OK"}}),
      Optional(3.0));
  EXPECT_THAT(
      text.Value("florence_requests_total", {{"method", "Caption"},
                                             {"task", "caption"},
                                             {"code", "INVALID_ARGUMENT"}}),
      Optional(1.0));
  EXPECT_THAT(text.Value("florence_requests_total",
                         {{"method", "Run"}, {"task", "od"}, {"code", "OK"}}),
              Optional(1.0));
  EXPECT_THAT(
      text.Value(
          "florence_requests_total",
          {{"method", "Run"}, {"task", "none"}, {"code", "INVALID_ARGUMENT"}}),
      Optional(1.0));
  EXPECT_EQ(text.Sum("florence_requests_total"), 6);
  EXPECT_EQ(text.Sum("florence_requests_total", {{"code", "OK"}}), 4);
  EXPECT_EQ(text.Type("florence_requests_total"), "counter");

  // End-to-end latency: by method and task, all codes together.
  std::optional<HistogramValues> latency =
      text.Histogram("florence_request_duration_seconds",
                     {{"method", "Caption"}, {"task", "caption"}});
  ASSERT_TRUE(latency.has_value());
  EXPECT_EQ(latency->count, 4);
  EXPECT_NEAR(latency->sum, 0.065, 1e-12);
  EXPECT_THAT(latency->Bucket(0.01), Optional(1.0));
  EXPECT_THAT(latency->Bucket(0.025), Optional(4.0));
  EXPECT_THAT(latency->Bucket(600), Optional(4.0));
  EXPECT_EQ(latency->buckets.front().first, 0.01);
  EXPECT_TRUE(std::isinf(latency->buckets.back().first));
  EXPECT_EQ(text.Type("florence_request_duration_seconds"), "histogram");
  latency = text.Histogram("florence_request_duration_seconds",
                           {{"method", "Run"}, {"task", "od"}});
  ASSERT_TRUE(latency.has_value());
  EXPECT_EQ(latency->count, 1);
  EXPECT_THAT(latency->Bucket(1), Optional(0.0));
  EXPECT_THAT(latency->Bucket(2.5), Optional(1.0));

  std::optional<HistogramValues> first_item =
      text.Histogram("florence_time_to_first_item_seconds", {{"task", "od"}});
  ASSERT_TRUE(first_item.has_value());
  EXPECT_EQ(first_item->count, 1);
  EXPECT_EQ(first_item->sum, 0.3);
  EXPECT_THAT(first_item->Bucket(0.25), Optional(0.0));
  EXPECT_THAT(first_item->Bucket(0.5), Optional(1.0));

  // Scheduler series.
  std::optional<HistogramValues> queue =
      text.Histogram("florence_queue_time_seconds", {{"task", "od"}});
  ASSERT_TRUE(queue.has_value());
  EXPECT_EQ(queue->count, 2);
  EXPECT_NEAR(queue->sum, 2.004, 1e-12);
  EXPECT_THAT(queue->Bucket(0.001), Optional(0.0));
  EXPECT_THAT(queue->Bucket(0.005), Optional(1.0));
  EXPECT_THAT(queue->Bucket(2.5), Optional(2.0));

  std::optional<HistogramValues> prefill = text.Histogram(
      "florence_prefill_duration_seconds", {{"task", "caption"}});
  ASSERT_TRUE(prefill.has_value());
  EXPECT_EQ(prefill->count, 2);
  EXPECT_EQ(prefill->sum, 1.0);
  std::optional<HistogramValues> decode =
      text.Histogram("florence_decode_duration_seconds", {{"task", "od"}});
  ASSERT_TRUE(decode.has_value());
  EXPECT_EQ(decode->count, 1);
  EXPECT_EQ(decode->sum, 1.0);
  EXPECT_THAT(decode->Bucket(0.5), Optional(0.0));
  EXPECT_THAT(decode->Bucket(1), Optional(1.0));  // le is inclusive

  EXPECT_THAT(text.Value("florence_generated_tokens_total", {{"task", "od"}}),
              Optional(17.0));
  EXPECT_THAT(
      text.Value("florence_generated_tokens_total", {{"task", "caption"}}),
      Optional(11.0));
  EXPECT_EQ(text.Sum("florence_generated_tokens_total"), 28);

  std::optional<HistogramValues> batch =
      text.Histogram("florence_encoder_batch_size");
  ASSERT_TRUE(batch.has_value());
  EXPECT_EQ(batch->count, 2);
  EXPECT_EQ(batch->sum, 4);
  std::vector<double> bounds;
  for (const auto& [bound, count] : batch->buckets) bounds.push_back(bound);
  EXPECT_THAT(bounds, ElementsAre(1, 2, 4, 8, 16, 32, 64,
                                  std::numeric_limits<double>::infinity()));
  EXPECT_THAT(batch->Bucket(1), Optional(1.0));
  EXPECT_THAT(batch->Bucket(2), Optional(1.0));
  EXPECT_THAT(batch->Bucket(4), Optional(2.0));
  std::optional<HistogramValues> batch_seconds =
      text.Histogram("florence_encoder_batch_duration_seconds");
  ASSERT_TRUE(batch_seconds.has_value());
  EXPECT_EQ(batch_seconds->count, 2);
  EXPECT_EQ(batch_seconds->sum, 0.75);
  EXPECT_THAT(text.Value("florence_encoder_prompts_total"), Optional(5.0));
  EXPECT_THAT(text.Value("florence_encoder_images_total"), Optional(3.0));

  std::optional<HistogramValues> rows =
      text.Histogram("florence_decode_step_rows");
  ASSERT_TRUE(rows.has_value());
  EXPECT_EQ(rows->count, 2);
  EXPECT_EQ(rows->sum, 136);
  EXPECT_THAT(rows->Bucket(8), Optional(1.0));
  EXPECT_THAT(rows->Bucket(128), Optional(1.0));
  EXPECT_THAT(rows->Bucket(256), Optional(2.0));
  std::optional<HistogramValues> sequences =
      text.Histogram("florence_decode_step_sequences");
  ASSERT_TRUE(sequences.has_value());
  EXPECT_EQ(sequences->sum, 42);
  EXPECT_THAT(sequences->Bucket(2), Optional(1.0));
  EXPECT_THAT(sequences->Bucket(64), Optional(2.0));
  std::optional<HistogramValues> step =
      text.Histogram("florence_decode_step_duration_seconds");
  ASSERT_TRUE(step.has_value());
  EXPECT_EQ(step->count, 2);
  EXPECT_EQ(step->sum, 0.145);
  EXPECT_THAT(step->Bucket(0.025), Optional(1.0));
  EXPECT_THAT(step->Bucket(0.25), Optional(2.0));

  // Gauges hold the last value.
  EXPECT_THAT(text.Value("florence_queue_depth"), Optional(3.0));
  EXPECT_THAT(text.Value("florence_active_sequences"), Optional(2.0));
  EXPECT_THAT(text.Value("florence_kv_cache_used_bytes"), Optional(4096.0));
  EXPECT_EQ(text.Type("florence_queue_depth"), "gauge");

  // Every florence_ family has HELP and TYPE.
  int samples = 0;
  for (const MetricSample& sample : text.samples()) {
    if (!absl::StartsWith(sample.name, "florence_")) continue;
    absl::string_view family = sample.name;
    if (!text.Type(family).has_value()) {
      for (absl::string_view suffix : {"_bucket", "_count", "_sum"}) {
        if (absl::ConsumeSuffix(&family, suffix)) break;
      }
    }
    EXPECT_TRUE(text.Type(family).has_value()) << sample.name;
    EXPECT_FALSE(text.Help(family).value_or("").empty()) << sample.name;
    ++samples;
  }
  EXPECT_GT(samples, 0);

  // Serialize() is the same exposition.
  absl::StatusOr<MetricsText> serialized =
      MetricsText::Parse(metrics->Serialize());
  ASSERT_TRUE(serialized.ok()) << serialized.status();
  EXPECT_EQ(serialized->Sum("florence_requests_total"), 6);
  EXPECT_THAT(serialized->Value("florence_queue_depth"), Optional(3.0));
}

TEST(MetricsTest, ScrapesSeeNewValues) {
  std::unique_ptr<Metrics> metrics = StartOnLoopback();
  ASSERT_NE(metrics, nullptr);
  metrics->OnQueueDepth(7);
  EXPECT_THAT(Scrape(*metrics).Value("florence_queue_depth"), Optional(7.0));
  metrics->OnQueueDepth(0);
  metrics->OnTaskGenerated(Task::kOcr, 0.1, 0.2, 9);
  const MetricsText text = Scrape(*metrics);
  EXPECT_THAT(text.Value("florence_queue_depth"), Optional(0.0));
  EXPECT_THAT(text.Value("florence_generated_tokens_total", {{"task", "ocr"}}),
              Optional(9.0));
}

TEST(MetricsTest, UnknownPathIsNotFound) {
  std::unique_ptr<Metrics> metrics = StartOnLoopback();
  ASSERT_NE(metrics, nullptr);
  absl::StatusOr<HttpResponse> response =
      HttpGet("127.0.0.1", metrics->port(), "/nope");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 404);
  response = HttpGet("127.0.0.1", metrics->port(), "/metrics");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  EXPECT_THAT(response->body, HasSubstr("# TYPE florence_queue_depth gauge"));
}

TEST(MetricsTest, SecondMetricsOnTheSamePortFails) {
  std::unique_ptr<Metrics> first = StartOnLoopback();
  ASSERT_NE(first, nullptr);
  const std::string port = std::to_string(first->port());
  absl::StatusOr<std::unique_ptr<Metrics>> second =
      Metrics::Create("127.0.0.1:" + port);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr("127.0.0.1:" + port));
  EXPECT_THAT(second.status().message(), HasSubstr("already in use"));
  // The first one still serves.
  EXPECT_TRUE(ScrapeMetrics(first->port()).ok());
}

TEST(MetricsTest, MalformedAddressesAreInvalidArguments) {
  for (const char* address :
       {"9090", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:65536",
        "127.0.0.1:9090s", "127.0.0.1:1,127.0.0.1:2", "127.0.0.1:-1"}) {
    absl::StatusOr<std::unique_ptr<Metrics>> metrics = Metrics::Create(address);
    ASSERT_FALSE(metrics.ok()) << address;
    EXPECT_EQ(metrics.status().code(), absl::StatusCode::kInvalidArgument)
        << address << ": " << metrics.status();
  }
  // Not an address of this machine (TEST-NET-1).
  absl::StatusOr<std::unique_ptr<Metrics>> metrics =
      Metrics::Create("192.0.2.1:0");
  ASSERT_FALSE(metrics.ok());
  EXPECT_EQ(metrics.status().code(), absl::StatusCode::kInvalidArgument)
      << metrics.status();
  EXPECT_THAT(metrics.status().message(), HasSubstr("not an address"));
}

TEST(MetricsTest, PortOnlyAddressListensOnAllInterfaces) {
  absl::StatusOr<std::unique_ptr<Metrics>> metrics = Metrics::Create(":0");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  ASSERT_GT((*metrics)->port(), 0);
  (*metrics)->OnQueueDepth(1);
  EXPECT_THAT(Scrape(**metrics).Value("florence_queue_depth"), Optional(1.0));
}

TEST(MetricsTest, EmptyAddressRecordsWithoutAnEndpoint) {
  absl::StatusOr<std::unique_ptr<Metrics>> metrics = Metrics::Create("");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ((*metrics)->port(), 0);
  (*metrics)->OnActive(3, 300);
  (*metrics)->OnRpcDone("Ocr", Task::kOcr, absl::StatusCode::kDeadlineExceeded,
                        600);
  absl::StatusOr<MetricsText> text =
      MetricsText::Parse((*metrics)->Serialize());
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(text->Value("florence_active_sequences"), Optional(3.0));
  EXPECT_THAT(text->Value("florence_kv_cache_used_bytes"), Optional(300.0));
  EXPECT_THAT(
      text->Value(
          "florence_requests_total",
          {{"method", "Ocr"}, {"task", "ocr"}, {"code", "DEADLINE_EXCEEDED"}}),
      Optional(1.0));
  std::optional<HistogramValues> latency =
      text->Histogram("florence_request_duration_seconds",
                      {{"method", "Ocr"}, {"task", "ocr"}});
  ASSERT_TRUE(latency.has_value());
  EXPECT_THAT(latency->Bucket(250), Optional(0.0));
  EXPECT_THAT(latency->Bucket(600), Optional(1.0));
}

TEST(MetricsTest, ConcurrentRecordingAddsUpExactly) {
  std::unique_ptr<Metrics> metrics = StartOnLoopback();
  ASSERT_NE(metrics, nullptr);
  constexpr int kThreads = 8;
  constexpr int kIterations = 2000;
  const std::vector<std::string> methods = {"Caption", "Run", "Detect"};
  const std::vector<Task> tasks = {Task::kCaption, Task::kObjectDetection,
                                   Task::kOcr};

  // Scrapes run on the exposer's threads while the writers record.
  absl::Notification writers_done;
  int scrapes = 0;
  std::thread scraper([&] {
    while (!writers_done.HasBeenNotified()) {
      if (ScrapeMetrics(metrics->port()).ok()) ++scrapes;
    }
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; i < kIterations; ++i) {
        const size_t k = static_cast<size_t>(t + i) % methods.size();
        metrics->OnRpcDone(methods[k], tasks[k],
                           i % 2 ? absl::StatusCode::kOk
                                 : absl::StatusCode::kResourceExhausted,
                           0.5);
        metrics->OnTaskGenerated(tasks[k], 0.25, 0.5, 3);
        metrics->OnDecodeStep(4, 2, 0.125);
        metrics->OnEncoderBatch(2, 2, 1, 0.25);
        metrics->OnQueueTime(tasks[k], 0.0625);
        metrics->OnFirstItem(tasks[k], 0.5);
        metrics->OnQueueDepth(i);
      }
    });
  }
  for (std::thread& writer : writers) writer.join();
  writers_done.Notify();
  scraper.join();
  EXPECT_GT(scrapes, 0);

  constexpr double kTotal = kThreads * kIterations;
  const MetricsText text = Scrape(*metrics);
  EXPECT_EQ(text.Sum("florence_requests_total"), kTotal);
  EXPECT_EQ(text.Sum("florence_requests_total", {{"code", "OK"}}), kTotal / 2);
  EXPECT_EQ(
      text.Sum("florence_requests_total", {{"code", "RESOURCE_EXHAUSTED"}}),
      kTotal / 2);
  EXPECT_EQ(text.Sum("florence_request_duration_seconds_count"), kTotal);
  EXPECT_EQ(text.Sum("florence_request_duration_seconds_sum"), kTotal * 0.5);
  EXPECT_EQ(text.Sum("florence_generated_tokens_total"), kTotal * 3);
  EXPECT_EQ(text.Sum("florence_prefill_duration_seconds_count"), kTotal);
  EXPECT_EQ(text.Sum("florence_decode_duration_seconds_sum"), kTotal * 0.5);
  EXPECT_EQ(text.Sum("florence_queue_time_seconds_sum"), kTotal * 0.0625);
  EXPECT_EQ(text.Sum("florence_time_to_first_item_seconds_count"), kTotal);
  EXPECT_THAT(text.Value("florence_encoder_prompts_total"),
              Optional(kTotal * 2));
  EXPECT_THAT(text.Value("florence_encoder_images_total"), Optional(kTotal));
  std::optional<HistogramValues> rows =
      text.Histogram("florence_decode_step_rows");
  ASSERT_TRUE(rows.has_value());
  EXPECT_EQ(rows->count, kTotal);
  EXPECT_EQ(rows->sum, kTotal * 4);
  EXPECT_THAT(rows->Bucket(2), Optional(0.0));
  EXPECT_THAT(rows->Bucket(4), Optional(kTotal));
  EXPECT_THAT(text.Value("florence_queue_depth"), Optional(kIterations - 1.0));
}

TEST(MetricsTextTest, ParsesTheExpositionFormat) {
  absl::StatusOr<MetricsText> text = MetricsText::Parse(
      "# HELP a_total Things, with \\\\ and \\n escapes.\n"
      "# TYPE a_total counter\n"
      "a_total{x=\"1\",y=\"quote \\\" backslash \\\\ newline \\n\"} 1e+20\n"
      "a_total{x=\"2\",} 2 1700000000000\n"
      "# a comment\n"
      "\n"
      "b NaN\r\n"
      "c{} +Inf\n"
      "d -Inf\n"
      "h_bucket{le=\"0.5\"} 1\n"
      "h_bucket{le=\"+Inf\"} 3\n"
      "h_bucket{le=\"0.1\"} 0\n"
      "h_count 3\n"
      "h_sum 4.25\n");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->Help("a_total"), "Things, with \\ and \n escapes.");
  EXPECT_EQ(text->Type("a_total"), "counter");
  EXPECT_EQ(text->Type("b"), std::nullopt);
  EXPECT_THAT(
      text->Value("a_total",
                  {{"x", "1"}, {"y", "quote \" backslash \\ newline \n"}}),
      Optional(1e20));
  EXPECT_THAT(text->Value("a_total", {{"x", "2"}}), Optional(2.0));
  EXPECT_EQ(text->Value("a_total", {{"x", "3"}}), std::nullopt);
  EXPECT_EQ(text->Sum("a_total"), 1e20 + 2);
  EXPECT_TRUE(std::isnan(text->Value("b").value_or(0)));
  EXPECT_THAT(text->Value("c"),
              Optional(std::numeric_limits<double>::infinity()));
  EXPECT_THAT(text->Value("d"),
              Optional(-std::numeric_limits<double>::infinity()));
  std::optional<HistogramValues> h = text->Histogram("h");
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->count, 3);
  EXPECT_EQ(h->sum, 4.25);
  EXPECT_THAT(h->buckets,
              ElementsAre(Pair(0.1, 0.0), Pair(0.5, 1.0),
                          Pair(std::numeric_limits<double>::infinity(), 3.0)));
  EXPECT_EQ(text->Histogram("h", {{"x", "1"}}), std::nullopt);
}

TEST(MetricsTextTest, MalformedLinesAreErrors) {
  for (const char* bad :
       {"a_total", "a_total x", "a_total{x=1} 1", "a_total{x=\"1\" 1",
        "a_total{x=\"1\"} 1 2 3", "{x=\"1\"} 1", "# TYPE\n"}) {
    absl::StatusOr<MetricsText> text = MetricsText::Parse(bad);
    ASSERT_FALSE(text.ok()) << bad;
    EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(text.status().message(), HasSubstr("line 1")) << bad;
  }
}

TEST(MetricsTextTest, NothingListeningIsUnavailable) {
  // Bind a port, then free it: nothing listens there now.
  int port = 0;
  {
    absl::StatusOr<std::unique_ptr<Metrics>> metrics =
        Metrics::Create("127.0.0.1:0");
    ASSERT_TRUE(metrics.ok()) << metrics.status();
    port = (*metrics)->port();
  }
  absl::StatusOr<MetricsText> text = ScrapeMetrics(port);
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace florence::server
