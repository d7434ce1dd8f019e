#include "server/metrics_text.h"

#include <netdb.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace florence::server {
namespace {

// A sample value: a float, "+Inf"/"-Inf" or "NaN" (any case; prometheus-cpp
// writes "Nan").
std::optional<double> ParseValue(absl::string_view text) {
  if (absl::EqualsIgnoreCase(text, "+Inf") ||
      absl::EqualsIgnoreCase(text, "Inf")) {
    return std::numeric_limits<double>::infinity();
  }
  if (absl::EqualsIgnoreCase(text, "-Inf")) {
    return -std::numeric_limits<double>::infinity();
  }
  if (absl::EqualsIgnoreCase(text, "NaN")) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  double value = 0;
  if (!absl::SimpleAtod(text, &value)) return std::nullopt;
  return value;
}

bool IsNameChar(char c, bool first) {
  return absl::ascii_isalpha(c) || c == '_' || c == ':' ||
         (!first && absl::ascii_isdigit(c));
}

// Consumes a metric or label name from the front of `text`; empty if none.
absl::string_view ConsumeName(absl::string_view& text) {
  size_t n = 0;
  while (n < text.size() && IsNameChar(text[n], n == 0)) ++n;
  absl::string_view name = text.substr(0, n);
  text.remove_prefix(n);
  return name;
}

void SkipSpaces(absl::string_view& text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) {
    text.remove_prefix(1);
  }
}

// The HELP text and label value escapes: \\, \n and (label values) \".
std::string Unescape(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 1 < text.size()) {
      const char next = text[++i];
      out.push_back(next == 'n' ? '\n' : next);
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

// `{name="value",...}` from the front of `text`, which starts at '{'.
std::optional<MetricLabels> ConsumeLabels(absl::string_view& text) {
  MetricLabels labels;
  text.remove_prefix(1);  // '{'
  while (true) {
    SkipSpaces(text);
    if (absl::ConsumePrefix(&text, "}")) return labels;
    const absl::string_view name = ConsumeName(text);
    SkipSpaces(text);
    if (name.empty() || !absl::ConsumePrefix(&text, "=")) return std::nullopt;
    SkipSpaces(text);
    if (!absl::ConsumePrefix(&text, "\"")) return std::nullopt;
    size_t end = 0;
    while (end < text.size() && text[end] != '"') {
      end += text[end] == '\\' ? 2 : 1;
    }
    if (end >= text.size()) return std::nullopt;
    labels[std::string(name)] = Unescape(text.substr(0, end));
    text.remove_prefix(end + 1);
    SkipSpaces(text);
    if (!absl::ConsumePrefix(&text, ",") && !absl::StartsWith(text, "}")) {
      return std::nullopt;
    }
  }
}

std::optional<MetricSample> ParseSample(absl::string_view line) {
  MetricSample sample;
  sample.name = std::string(ConsumeName(line));
  if (sample.name.empty()) return std::nullopt;
  SkipSpaces(line);
  if (absl::StartsWith(line, "{")) {
    std::optional<MetricLabels> labels = ConsumeLabels(line);
    if (!labels.has_value()) return std::nullopt;
    sample.labels = *std::move(labels);
  }
  // The value, then an optional timestamp.
  std::vector<absl::string_view> fields =
      absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
  if (fields.empty() || fields.size() > 2) return std::nullopt;
  std::optional<double> value = ParseValue(fields[0]);
  int64_t timestamp = 0;
  if (!value.has_value() ||
      (fields.size() == 2 && !absl::SimpleAtoi(fields[1], &timestamp))) {
    return std::nullopt;
  }
  sample.value = *value;
  return sample;
}

// `labels` without "le".
MetricLabels WithoutLe(MetricLabels labels) {
  labels.erase("le");
  return labels;
}

bool Includes(const MetricLabels& labels, const MetricLabels& subset) {
  for (const auto& [name, value] : subset) {
    auto it = labels.find(name);
    if (it == labels.end() || it->second != value) return false;
  }
  return true;
}

// A socket closed on scope exit.
class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() {
    if (fd_ >= 0) close(fd_);
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  int get() const { return fd_; }

 private:
  const int fd_;
};

void SetTimeout(int fd, int option, absl::Duration timeout) {
  timeval tv = absl::ToTimeval(std::max(timeout, absl::Milliseconds(1)));
  setsockopt(fd, SOL_SOCKET, option, &tv, sizeof(tv));
}

// A chunked body (RFC 9112 7.1) decoded; nullopt if malformed.
std::optional<std::string> Dechunk(absl::string_view body) {
  std::string out;
  while (true) {
    const size_t eol = body.find("\r\n");
    if (eol == absl::string_view::npos) return std::nullopt;
    absl::string_view size_text = body.substr(0, eol);
    size_text = size_text.substr(0, size_text.find(';'));  // extensions
    uint64_t size = 0;
    if (!absl::SimpleHexAtoi(absl::StripAsciiWhitespace(size_text), &size)) {
      return std::nullopt;
    }
    body.remove_prefix(eol + 2);
    if (size == 0) return out;
    if (body.size() < size + 2) return std::nullopt;
    out.append(body.data(), size);
    body.remove_prefix(size + 2);
  }
}

}  // namespace

std::optional<double> HistogramValues::Bucket(double le) const {
  for (const auto& [bound, count] : buckets) {
    if (bound == le || std::abs(bound - le) <= 1e-9 * std::abs(le)) {
      return count;
    }
  }
  return std::nullopt;
}

absl::StatusOr<MetricsText> MetricsText::Parse(absl::string_view text) {
  MetricsText out;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    if (absl::ConsumePrefix(&line, "#")) {
      SkipSpaces(line);
      const absl::string_view keyword = line.substr(0, line.find(' '));
      const bool help = keyword == "HELP";
      if (!help && keyword != "TYPE") continue;  // a comment
      line.remove_prefix(keyword.size());
      SkipSpaces(line);
      const std::string name(ConsumeName(line));
      if (name.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("metrics text line ", line_number,
                         ": no metric name after # ", help ? "HELP" : "TYPE"));
      }
      SkipSpaces(line);
      if (help) {
        out.help_[name] = Unescape(line);
      } else {
        out.type_[name] = std::string(line);
      }
      continue;
    }
    std::optional<MetricSample> sample = ParseSample(line);
    if (!sample.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("metrics text line ", line_number,
                       " is not a sample: \"", line, "\""));
    }
    out.samples_.push_back(*std::move(sample));
  }
  return out;
}

std::optional<double> MetricsText::Value(absl::string_view name,
                                         const MetricLabels& labels) const {
  for (const MetricSample& sample : samples_) {
    if (sample.name == name && sample.labels == labels) return sample.value;
  }
  return std::nullopt;
}

double MetricsText::Sum(absl::string_view name,
                        const MetricLabels& labels) const {
  double sum = 0;
  for (const MetricSample& sample : samples_) {
    if (sample.name == name && Includes(sample.labels, labels)) {
      sum += sample.value;
    }
  }
  return sum;
}

std::optional<HistogramValues> MetricsText::Histogram(
    absl::string_view name, const MetricLabels& labels) const {
  std::optional<double> count = Value(absl::StrCat(name, "_count"), labels);
  if (!count.has_value()) return std::nullopt;
  HistogramValues histogram;
  histogram.count = *count;
  histogram.sum = Value(absl::StrCat(name, "_sum"), labels).value_or(0);
  const std::string bucket_name = absl::StrCat(name, "_bucket");
  for (const MetricSample& sample : samples_) {
    if (sample.name != bucket_name || WithoutLe(sample.labels) != labels) {
      continue;
    }
    auto le = sample.labels.find("le");
    if (le == sample.labels.end()) continue;
    if (std::optional<double> bound = ParseValue(le->second)) {
      histogram.buckets.emplace_back(*bound, sample.value);
    }
  }
  std::sort(histogram.buckets.begin(), histogram.buckets.end());
  return histogram;
}

std::optional<std::string> MetricsText::Help(absl::string_view name) const {
  auto it = help_.find(name);
  if (it == help_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> MetricsText::Type(absl::string_view name) const {
  auto it = type_.find(name);
  if (it == type_.end()) return std::nullopt;
  return it->second;
}

absl::StatusOr<HttpResponse> HttpGet(const std::string& host, int port,
                                     const std::string& path,
                                     absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  const std::string where = absl::StrCat("http://", host, ":", port, path);

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (const int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(),
                                 &hints, &found);
      rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("GET ", where, ": ", gai_strerror(rc)));
  }
  int fd = -1;
  int connect_error = 0;
  for (addrinfo* ai = found; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      connect_error = errno;
      continue;
    }
    SetTimeout(fd, SO_SNDTIMEO, deadline - absl::Now());  // bounds connect()
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      connect_error = errno;
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(found);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat(
        "GET ", where, ": cannot connect: ", std::strerror(connect_error)));
  }
  const ScopedFd socket_fd(fd);

  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", host, ":", port,
                   "\r\nConnection: close\r\n\r\n");
  for (size_t sent = 0; sent < request.size();) {
    const ssize_t n =
        send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::UnavailableError(
          absl::StrCat("GET ", where, ": send failed: ", std::strerror(errno)));
    }
    sent += static_cast<size_t>(n);
  }

  std::string reply;
  char buffer[16384];
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::UnavailableError(
          absl::StrCat("GET ", where, ": no complete reply within ",
                       absl::FormatDuration(timeout)));
    }
    SetTimeout(fd, SO_RCVTIMEO, left);
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return absl::UnavailableError(
          absl::StrCat("GET ", where, ": recv failed: ", std::strerror(errno)));
    }
    reply.append(buffer, static_cast<size_t>(n));
  }

  const size_t head_end = reply.find("\r\n\r\n");
  if (head_end == std::string::npos) {
    return absl::InternalError(
        absl::StrCat("GET ", where, ": reply has no header end"));
  }
  std::vector<absl::string_view> head =
      absl::StrSplit(absl::string_view(reply).substr(0, head_end), "\r\n");
  // "HTTP/1.1 200 OK"
  std::vector<absl::string_view> status_line =
      absl::StrSplit(head[0], absl::MaxSplits(' ', 2));
  HttpResponse response;
  if (status_line.size() < 2 || !absl::StartsWith(status_line[0], "HTTP/") ||
      !absl::SimpleAtoi(status_line[1], &response.status)) {
    return absl::InternalError(
        absl::StrCat("GET ", where, ": bad status line \"", head[0], "\""));
  }
  bool chunked = false;
  std::optional<size_t> content_length;
  for (size_t i = 1; i < head.size(); ++i) {
    std::pair<absl::string_view, absl::string_view> field =
        absl::StrSplit(head[i], absl::MaxSplits(':', 1));
    const absl::string_view value = absl::StripAsciiWhitespace(field.second);
    if (absl::EqualsIgnoreCase(field.first, "Transfer-Encoding")) {
      chunked = absl::StrContains(absl::AsciiStrToLower(value), "chunked");
    } else if (absl::EqualsIgnoreCase(field.first, "Content-Length")) {
      size_t length = 0;
      if (absl::SimpleAtoi(value, &length)) content_length = length;
    }
  }
  absl::string_view body = absl::string_view(reply).substr(head_end + 4);
  if (chunked) {
    std::optional<std::string> dechunked = Dechunk(body);
    if (!dechunked.has_value()) {
      return absl::InternalError(
          absl::StrCat("GET ", where, ": malformed chunked body"));
    }
    response.body = *std::move(dechunked);
  } else {
    if (content_length.has_value()) {
      if (body.size() < *content_length) {
        return absl::InternalError(
            absl::StrCat("GET ", where, ": body of ", body.size(),
                         " bytes, expected ", *content_length));
      }
      body = body.substr(0, *content_length);
    }
    response.body = std::string(body);
  }
  return response;
}

absl::StatusOr<MetricsText> ScrapeMetrics(int port, const std::string& host,
                                          absl::Duration timeout) {
  absl::StatusOr<HttpResponse> response =
      HttpGet(host, port, "/metrics", timeout);
  if (!response.ok()) return response.status();
  if (response->status != 200) {
    return absl::UnavailableError(
        absl::StrCat("GET http://", host, ":", port, "/metrics: HTTP ",
                     response->status, ": ", response->body.substr(0, 200)));
  }
  return MetricsText::Parse(response->body);
}

}  // namespace florence::server
