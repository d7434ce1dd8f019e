// The batching decision: what the engine thread does next, as a pure function
// of a summary of the queue and the decoder batch at time `now`.
//
// Mechanism (batching/scheduler.cc) builds the summary, calls DecideNext and
// carries the decision out; all timing behaviour lives here and is tested with
// a fake clock (tests/batching/policy_test.cc), as Triton's dynamic batcher
// computes "wait min(delay budget left, nearest deadline)".
//
// Rules, in order:
//  1. Nothing admissible (queue empty, or its head needs more KV-cache rows
//     than are free): decode if sequences are running, else sleep until the
//     nearest queued deadline (which the scheduler then expires).
//  2. A full encoder batch is admissible (max_batch requests): encode it now.
//  3. The oldest queued request has waited max_delay, or the nearest queued
//     deadline is due: encode what is admissible now (an expired request is
//     failed by the scheduler rather than encoded).
//  4. Otherwise, if sequences are decoding, run one decode step (new requests
//     keep accumulating meanwhile and join at the next decision: continuous
//     batching); else sleep until min(oldest + max_delay, nearest deadline).
// Encoding before decoding (rules 2-3) lets new requests join the running
// decoder batch as early as possible, at the cost of one encoder batch's
// pause for the running sequences (vLLM's default order).
//
// Pure, thread-safe.
#ifndef FLORENCE_BATCHING_POLICY_H_
#define FLORENCE_BATCHING_POLICY_H_

#include "absl/time/time.h"

namespace florence::batching {

struct PolicyConfig {
  int max_batch = 8;                                    // requests per encoder batch, >= 1
  absl::Duration max_delay = absl::Microseconds(2000);  // longest wait to fill a batch
};

struct QueueSummary {
  int waiting = 0;      // requests queued for encoding
  int admissible = 0;   // how many of them, in queue order, fit the free KV-cache rows
  absl::Time oldest_enqueued = absl::InfiniteFuture();   // of the waiting requests
  absl::Time nearest_deadline = absl::InfiniteFuture();  // of the waiting requests
  bool decoding = false;  // sequences are in the decoder batch
};

struct Decision {
  enum class Action { kEncode, kDecode, kWait };
  Action action = Action::kWait;
  int batch = 0;                              // kEncode: requests to take from the head
  absl::Time wake_at = absl::InfiniteFuture();  // kWait: when to decide again
};

Decision DecideNext(const QueueSummary& queue, absl::Time now,
                    const PolicyConfig& config);

}  // namespace florence::batching

#endif  // FLORENCE_BATCHING_POLICY_H_
