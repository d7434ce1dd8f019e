// Reading /metrics back: the Prometheus text exposition format (0.0.4) parsed
// into samples with lookups by name and labels, and a plain-socket HTTP GET to
// scrape an endpoint. For tests and debugging tools (the server itself only
// writes metrics, server/metrics.h); no dependencies beyond Abseil and POSIX.
//
//   absl::StatusOr<MetricsText> text = ScrapeMetrics(metrics->port());
//   text->Value("florence_requests_total",
//               {{"method", "Caption"}, {"task", "caption"}, {"code", "OK"}});
//   text->Histogram("florence_queue_time_seconds", {{"task", "od"}})->count;
//
// Pure functions and immutable values, safe from any thread.
#ifndef FLORENCE_SERVER_METRICS_TEXT_H_
#define FLORENCE_SERVER_METRICS_TEXT_H_

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace florence::server {

using MetricLabels = std::map<std::string, std::string>;

// One sample line: `name{labels} value`.
struct MetricSample {
  std::string name;  // as written, with any _bucket/_count/_sum/_total suffix
  MetricLabels labels;
  double value = 0;
};

// One histogram series (one label set).
struct HistogramValues {
  // (upper bound "le", cumulative count), ascending; the last bound is +Inf.
  std::vector<std::pair<double, double>> buckets;
  double count = 0;
  double sum = 0;

  // The cumulative count of the bucket whose bound is `le` (compared with a
  // relative tolerance of 1e-9); nullopt if there is no such bucket.
  std::optional<double> Bucket(double le) const;
};

class MetricsText {
 public:
  // InvalidArgument naming the line for anything that is not a sample, a
  // "# HELP"/"# TYPE" line, another comment or blank.
  static absl::StatusOr<MetricsText> Parse(absl::string_view text);

  const std::vector<MetricSample>& samples() const { return samples_; }

  // The value of sample `name` whose labels are exactly `labels`.
  std::optional<double> Value(absl::string_view name,
                              const MetricLabels& labels = {}) const;
  // The sum over the samples `name` whose labels include `labels` (0 when
  // none): Sum("florence_requests_total", {{"code", "OK"}}).
  double Sum(absl::string_view name, const MetricLabels& labels = {}) const;
  // The histogram family `name` (no suffix) series whose labels, "le" aside,
  // are exactly `labels`; nullopt if it has no _count sample.
  std::optional<HistogramValues> Histogram(
      absl::string_view name, const MetricLabels& labels = {}) const;
  // The "# HELP" text / "# TYPE" of family `name`; nullopt when absent.
  std::optional<std::string> Help(absl::string_view name) const;
  std::optional<std::string> Type(absl::string_view name) const;

 private:
  std::vector<MetricSample> samples_;
  std::map<std::string, std::string, std::less<>> help_;
  std::map<std::string, std::string, std::less<>> type_;
};

struct HttpResponse {
  int status = 0;    // 200, 404, ...
  std::string body;  // de-chunked
};

// GET http://`host`:`port``path` over a plain TCP socket (HTTP/1.0,
// Connection: close). `host` is a numeric address or a resolvable name.
// Unavailable when it cannot connect or the reply does not come within
// `timeout`; Internal for a malformed reply.
absl::StatusOr<HttpResponse> HttpGet(
    const std::string& host, int port, const std::string& path,
    absl::Duration timeout = absl::Seconds(10));

// HttpGet(`host`, `port`, "/metrics") parsed; Unavailable unless it is 200.
absl::StatusOr<MetricsText> ScrapeMetrics(
    int port, const std::string& host = "127.0.0.1",
    absl::Duration timeout = absl::Seconds(10));

}  // namespace florence::server

#endif  // FLORENCE_SERVER_METRICS_TEXT_H_
