// A ModelBackend that forwards to a real one and fails chosen calls, to test
// how the scheduler handles model failures without a broken model.
#ifndef FLORENCE_TESTS_FAKES_FAILING_BACKEND_H_
#define FLORENCE_TESTS_FAKES_FAILING_BACKEND_H_

#include <atomic>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "engine/model_backend.h"

namespace florence::testing {

class FailingBackend final : public engine::ModelBackend {
 public:
  // Calls are counted from 1; 0 = never fail.
  struct Plan {
    int fail_image_features_call = 0;
    int fail_decode_step_call = 0;
  };

  FailingBackend(std::unique_ptr<engine::ModelBackend> real, Plan plan)
      : real_(std::move(real)), plan_(plan) {}

  c10::Device device() const override { return real_->device(); }

  absl::StatusOr<at::Tensor> ImageFeatures(const at::Tensor& pixel_values) override {
    if (++image_calls_ == plan_.fail_image_features_call) {
      return absl::InternalError("image_features: injected failure");
    }
    return real_->ImageFeatures(pixel_values);
  }
  absl::StatusOr<at::Tensor> Encode(const at::Tensor& features, const at::Tensor& ids,
                                    const at::Tensor& mask) override {
    return real_->Encode(features, ids, mask);
  }
  absl::StatusOr<engine::KvPair> CrossKv(const at::Tensor& encoder_hidden) override {
    return real_->CrossKv(encoder_hidden);
  }
  absl::StatusOr<engine::KvPair> EmptySelfCache(int64_t batch, int64_t max_len) override {
    return real_->EmptySelfCache(batch, max_len);
  }
  absl::StatusOr<at::Tensor> DecodeStep(const at::Tensor& ids, const at::Tensor& positions,
                                        engine::KvPair* self_cache, const engine::KvPair& cross,
                                        const at::Tensor& cross_mask,
                                        const at::Tensor& cross_rows) override {
    if (++decode_calls_ == plan_.fail_decode_step_call) {
      return absl::InternalError("decode_step: injected failure");
    }
    return real_->DecodeStep(ids, positions, self_cache, cross, cross_mask, cross_rows);
  }

  int decode_calls() const { return decode_calls_.load(); }

 private:
  const std::unique_ptr<engine::ModelBackend> real_;
  const Plan plan_;
  std::atomic<int> image_calls_{0};
  std::atomic<int> decode_calls_{0};
};

}  // namespace florence::testing

#endif  // FLORENCE_TESTS_FAKES_FAILING_BACKEND_H_
