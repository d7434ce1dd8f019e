#include "engine/generation/search.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace florence::engine {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr double kVeryNegative = -1e9;  // transformers' "never pick this"

// transformers' logits processors, in its order, on scores [rows, V] (float32,
// CPU, modified in place); seqs are the rows' decoder tokens so far.
void ApplyRules(at::Tensor& scores,
                const std::vector<std::vector<int64_t>>& seqs,
                const SearchParams& p, int64_t max_length) {
  auto s = scores.accessor<float, 2>();
  const int64_t rows = scores.size(0);
  const int64_t vocab = scores.size(1);
  const int64_t cur_len = static_cast<int64_t>(seqs[0].size());
  const int64_t n = p.no_repeat_ngram_size;
  if (n > 0 && cur_len + 1 >= n) {
    for (int64_t row = 0; row < rows; ++row) {
      const std::vector<int64_t>& seq = seqs[row];
      // The last n-1 tokens; every earlier occurrence bans its successor.
      for (int64_t i = 0; i + n - 1 < cur_len; ++i) {
        bool same = true;
        for (int64_t j = 0; j < n - 1 && same; ++j) {
          same = seq[i + j] == seq[cur_len - (n - 1) + j];
        }
        if (same) s[row][seq[i + n - 1]] = kNegInf;
      }
    }
  }
  if (cur_len - 1 < p.min_new_tokens) {
    for (int64_t row = 0; row < rows; ++row) s[row][p.eos_token_id] = kNegInf;
  }
  auto force = [&](int64_t token) {
    for (int64_t row = 0; row < rows; ++row) {
      for (int64_t v = 0; v < vocab; ++v) s[row][v] = kNegInf;
      s[row][token] = 0.0f;
    }
  };
  if (p.forced_bos_token_id && cur_len == 1) force(*p.forced_bos_token_id);
  if (p.forced_eos_token_id && cur_len == max_length - 1) {
    force(*p.forced_eos_token_id);
  }
}

at::Tensor CpuFloat(const at::Tensor& logits) {
  return logits.to(at::kCPU, at::kFloat).contiguous().clone();
}

class GreedySearch final : public Search {
 public:
  explicit GreedySearch(const SearchParams& p)
      : p_(p), max_length_(1 + p.max_new_tokens) {
    result_.tokens = {p.decoder_start_token_id};
  }
  int rows() const override { return 1; }
  std::vector<int64_t> last_tokens() const override {
    return {result_.tokens.back()};
  }
  int64_t position() const override {
    return static_cast<int64_t>(result_.tokens.size()) - 1;
  }
  std::vector<int64_t> Advance(const at::Tensor& logits) override {
    c10::InferenceMode guard;
    at::Tensor scores = CpuFloat(logits);
    ApplyRules(scores, {result_.tokens}, p_, max_length_);
    const int64_t token = scores[0].argmax().item<int64_t>();
    const float logprob = at::log_softmax(scores[0], -1)[token].item<float>();
    result_.tokens.push_back(token);
    result_.token_logprobs.push_back(logprob);
    result_.sequence_score += logprob;
    done_ = token == p_.eos_token_id ||
            static_cast<int64_t>(result_.tokens.size()) >= max_length_;
    return {0};
  }
  std::vector<int64_t> shared_positions() const override {  // the one row stays in place
    return {static_cast<int64_t>(result_.tokens.size()) - 1};
  }
  bool done() const override { return done_; }
  SearchResult stable_prefix() const override { return result_; }
  SearchResult result() const override { return result_; }

 private:
  const SearchParams p_;
  const int64_t max_length_;
  SearchResult result_;
  bool done_ = false;
};

// One hypothesis: tokens and the processed log-prob of each generated token.
struct Hypothesis {
  std::vector<int64_t> tokens;
  std::vector<float> logprobs;
};

class BeamSearch final : public Search {
 public:
  explicit BeamSearch(const SearchParams& p)
      : p_(p),
        nb_(p.num_beams),
        keep_(2 * p.num_beams),  // max(2, 1 + #eos ids) * num_beams
        max_length_(1 + p.max_new_tokens) {
    c10::InferenceMode guard;
    running_.assign(nb_, Hypothesis{{p.decoder_start_token_id}, {}});
    finished_.assign(nb_, Hypothesis{});
    running_scores_ = at::full({nb_}, kVeryNegative, at::kFloat);
    running_scores_[0] = 0.0;
    finished_scores_ = at::full({nb_}, kVeryNegative, at::kFloat);
    is_finished_ = at::zeros({nb_}, at::kBool);
  }

  int rows() const override { return nb_; }
  std::vector<int64_t> last_tokens() const override {
    std::vector<int64_t> out;
    for (const Hypothesis& h : running_) out.push_back(h.tokens.back());
    return out;
  }
  int64_t position() const override { return cur_len_ - 1; }
  bool done() const override { return done_; }
  SearchResult result() const override {
    SearchResult r;
    r.tokens = finished_[0].tokens;
    r.token_logprobs = finished_[0].logprobs;
    r.sequence_score = finished_scores_[0].item<float>();
    return r;
  }

  SearchResult stable_prefix() const override {
    if (done_) return result();
    // Hypotheses that can still be returned: the running beams and the
    // finished ones kept (slots never filled hold no tokens and are skipped).
    const Hypothesis& first = running_[0];
    size_t common = first.tokens.size();
    auto narrow = [&](const Hypothesis& h) {
      size_t i = 0;
      while (i < common && i < h.tokens.size() && h.tokens[i] == first.tokens[i]) ++i;
      common = i;
    };
    for (const Hypothesis& h : running_) narrow(h);
    auto finished = is_finished_.accessor<bool, 1>();
    for (int64_t j = 0; j < nb_; ++j) {
      if (finished[j]) narrow(finished_[j]);
    }
    // A shared token prefix means a shared ancestry, hence the same logprobs.
    SearchResult r;
    r.tokens.assign(first.tokens.begin(), first.tokens.begin() + common);
    r.token_logprobs.assign(first.logprobs.begin(),
                            first.logprobs.begin() + (common > 0 ? common - 1 : 0));
    return r;
  }

  std::vector<int64_t> Advance(const at::Tensor& logits) override {
    c10::InferenceMode guard;
    std::vector<std::vector<int64_t>> seqs;
    for (const Hypothesis& h : running_) seqs.push_back(h.tokens);
    at::Tensor log_probs = at::log_softmax(CpuFloat(logits), -1).contiguous();
    ApplyRules(log_probs, seqs, p_, max_length_);
    const int64_t vocab = log_probs.size(1);
    at::Tensor acc = (log_probs + running_scores_.unsqueeze(1)).reshape({-1});
    auto [top_scores, top_idx] = at::topk(acc, keep_);
    auto lp = log_probs.accessor<float, 2>();
    auto idx = top_idx.accessor<int64_t, 1>();

    std::vector<Hypothesis> cand(keep_);
    std::vector<int64_t> src_beam(keep_);
    at::Tensor hits_stop = at::zeros({keep_}, at::kBool);
    for (int64_t i = 0; i < keep_; ++i) {
      src_beam[i] = idx[i] / vocab;
      const int64_t token = idx[i] % vocab;
      cand[i] = running_[src_beam[i]];
      cand[i].tokens.push_back(token);
      cand[i].logprobs.push_back(lp[src_beam[i]][token]);
      hits_stop[i] = token == p_.eos_token_id || cur_len_ + 1 >= max_length_;
    }

    // Next running beams: the best nb_ candidates that did not stop.
    at::Tensor run_scores = top_scores + hits_stop.to(at::kFloat) * kVeryNegative;
    at::Tensor next_idx = std::get<1>(at::topk(run_scores, nb_));
    std::vector<Hypothesis> new_running;
    std::vector<int64_t> sources;
    shared_.assign(nb_, cur_len_);
    for (int64_t j = 0; j < nb_; ++j) {
      const int64_t c = next_idx[j].item<int64_t>();
      new_running.push_back(cand[c]);
      sources.push_back(src_beam[c]);
      const std::vector<int64_t>& mine = running_[j].tokens;
      const std::vector<int64_t>& theirs = running_[src_beam[c]].tokens;
      const auto differ = std::mismatch(mine.begin(), mine.end(), theirs.begin(), theirs.end());
      shared_[j] = differ.first - mine.begin();
    }
    at::Tensor new_running_scores = run_scores.index_select(0, next_idx);

    // Finished hypotheses: merge the top-nb_ candidates that just stopped.
    at::Tensor top_nb_mask = at::zeros({keep_}, at::kBool);
    top_nb_mask.slice(0, 0, nb_).fill_(true);
    at::Tensor just_finished = hits_stop.logical_and(top_nb_mask);
    at::Tensor fin_scores =
        top_scores / std::pow(static_cast<double>(cur_len_), p_.length_penalty);
    if (is_finished_.all().item<bool>() && p_.early_stopping) {
      fin_scores = fin_scores - 1e9;
    }
    if (!heuristic_unsatisfied_) fin_scores = fin_scores - 1e9;
    fin_scores =
        fin_scores + just_finished.logical_not().to(at::kFloat) * kVeryNegative;
    at::Tensor merged_scores = at::cat({finished_scores_, fin_scores});
    at::Tensor merged_fin = at::cat({is_finished_, just_finished});
    at::Tensor pick = std::get<1>(at::topk(merged_scores, nb_));
    std::vector<Hypothesis> new_finished;
    for (int64_t j = 0; j < nb_; ++j) {
      const int64_t m = pick[j].item<int64_t>();
      new_finished.push_back(m < nb_ ? finished_[m] : cand[m - nb_]);
    }
    finished_ = std::move(new_finished);
    finished_scores_ = merged_scores.index_select(0, pick);
    is_finished_ = merged_fin.index_select(0, pick);

    running_ = std::move(new_running);
    running_scores_ = new_running_scores;
    cur_len_ += 1;

    if (heuristic_unsatisfied_) {
      at::Tensor best_running =
          running_scores_[0] /
          std::pow(static_cast<double>(cur_len_ - 1), p_.length_penalty);
      at::Tensor worst =
          at::where(is_finished_, finished_scores_.min(),
                    at::scalar_tensor(kVeryNegative, at::kFloat));
      heuristic_unsatisfied_ = (best_running > worst).any().item<bool>();
    }
    const bool open_beam =
        !(is_finished_.all().item<bool>() && p_.early_stopping);
    done_ = !(heuristic_unsatisfied_ && open_beam &&
              !hits_stop.all().item<bool>());
    return sources;
  }
  std::vector<int64_t> shared_positions() const override { return shared_; }

 private:
  const SearchParams p_;
  const int64_t nb_;
  const int64_t keep_;
  const int64_t max_length_;
  std::vector<int64_t> shared_;  // shared_positions() of the last Advance()
  int64_t cur_len_ = 1;
  std::vector<Hypothesis> running_;
  std::vector<Hypothesis> finished_;
  at::Tensor running_scores_;   // [nb] float32
  at::Tensor finished_scores_;  // [nb] float32
  at::Tensor is_finished_;      // [nb] bool
  bool heuristic_unsatisfied_ = true;
  bool done_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Search>> Search::Create(
    const SearchParams& p) {
  if (p.num_beams < 1 || p.num_beams > 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_beams must be 1..16, got ", p.num_beams));
  }
  if (p.max_new_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens must be >= 1, got ", p.max_new_tokens));
  }
  if (p.min_new_tokens < 0 || p.min_new_tokens > p.max_new_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_new_tokens must be in 0..max_new_tokens (",
                     p.max_new_tokens, "), got ", p.min_new_tokens));
  }
  if (p.no_repeat_ngram_size < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("no_repeat_ngram_size must be >= 0, got ",
                     p.no_repeat_ngram_size));
  }
  if (!std::isfinite(p.length_penalty)) {
    return absl::InvalidArgumentError("length_penalty must be finite");
  }
  if (p.num_beams == 1) return std::make_unique<GreedySearch>(p);
  return std::make_unique<BeamSearch>(p);
}

}  // namespace florence::engine
