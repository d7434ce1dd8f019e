// What the scheduler reports while it runs, for metrics. Torch-free.
//
// The scheduler calls these from its engine thread (and OnQueueDepth from
// whichever thread changed the queue), so implementations must be cheap,
// thread-safe and never block (prometheus-cpp counters/histograms are).
#ifndef FLORENCE_BATCHING_OBSERVER_H_
#define FLORENCE_BATCHING_OBSERVER_H_

#include <cstdint>

#include "engine/task.h"

namespace florence::batching {

class SchedulerObserver {
 public:
  virtual ~SchedulerObserver() = default;

  // Requests waiting for their encoder batch (admitted, not yet encoding).
  virtual void OnQueueDepth(int64_t depth) = 0;
  // One encoder batch ran: `requests` requests (`tasks` task prompts, >=
  // requests for multi-task requests), `images` of which ran the vision tower
  // (the rest hit the feature cache), in `seconds`.
  virtual void OnEncoderBatch(int requests, int tasks, int images,
                              double seconds) = 0;
  // One decoder step ran over `rows` cache rows (beam rows included) of
  // `sequences` requests, in `seconds`.
  virtual void OnDecodeStep(int rows, int sequences, double seconds) = 0;
  // A task left the queue for its encoder batch after `seconds` of waiting.
  virtual void OnQueueTime(engine::Task task, double seconds) = 0;
  // A task finished generating: its prefill (encode) time, decode time and
  // generated tokens.
  virtual void OnTaskGenerated(engine::Task task, double prefill_seconds,
                               double decode_seconds, int64_t tokens) = 0;
  // Sequences (requests' tasks) in the decoder batch now, and the KV-cache
  // bytes they hold.
  virtual void OnActive(int64_t sequences, int64_t kv_bytes_in_use) = 0;
};

// An observer that records nothing.
class NullObserver final : public SchedulerObserver {
 public:
  void OnQueueDepth(int64_t) override {}
  void OnEncoderBatch(int, int, int, double) override {}
  void OnDecodeStep(int, int, double) override {}
  void OnQueueTime(engine::Task, double) override {}
  void OnTaskGenerated(engine::Task, double, double, int64_t) override {}
  void OnActive(int64_t, int64_t) override {}
};

}  // namespace florence::batching

#endif  // FLORENCE_BATCHING_OBSERVER_H_
