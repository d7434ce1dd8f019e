#include "batching/policy.h"

#include <algorithm>

namespace florence::batching {

Decision DecideNext(const QueueSummary& queue, absl::Time now,
                    const PolicyConfig& config) {
  Decision d;
  const int max_batch = std::max(1, config.max_batch);
  if (queue.admissible <= 0) {  // rule 1
    if (queue.decoding) {
      d.action = Decision::Action::kDecode;
    } else {
      d.wake_at = queue.waiting > 0 ? queue.nearest_deadline
                                    : absl::InfiniteFuture();
    }
    return d;
  }
  const int batch = std::min(queue.admissible, max_batch);
  const absl::Time flush_at = queue.oldest_enqueued + config.max_delay;
  if (batch >= max_batch || now >= flush_at ||
      now >= queue.nearest_deadline) {  // rules 2, 3
    d.action = Decision::Action::kEncode;
    d.batch = batch;
    return d;
  }
  if (queue.decoding) {  // rule 4
    d.action = Decision::Action::kDecode;
    return d;
  }
  d.wake_at = std::min(flush_at, queue.nearest_deadline);
  return d;
}

}  // namespace florence::batching
