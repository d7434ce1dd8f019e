// DecideNext with a fake clock: times are absl::Time values built from a fixed
// epoch, never the wall clock.
#include "batching/policy.h"

#include <gtest/gtest.h>

namespace florence::batching {
namespace {

using Action = Decision::Action;

const absl::Time kT0 = absl::FromUnixSeconds(1'000'000);

absl::Time At(int64_t us) { return kT0 + absl::Microseconds(us); }

PolicyConfig Config(int max_batch, int64_t delay_us) {
  PolicyConfig c;
  c.max_batch = max_batch;
  c.max_delay = absl::Microseconds(delay_us);
  return c;
}

QueueSummary Queue(int waiting, int admissible, int64_t oldest_us,
                   bool decoding,
                   absl::Time deadline = absl::InfiniteFuture()) {
  QueueSummary q;
  q.waiting = waiting;
  q.admissible = admissible;
  q.oldest_enqueued = waiting > 0 ? At(oldest_us) : absl::InfiniteFuture();
  q.nearest_deadline = deadline;
  q.decoding = decoding;
  return q;
}

TEST(Policy, IdleSleepsForever) {
  const Decision d = DecideNext(QueueSummary{}, At(0), Config(8, 1000));
  EXPECT_EQ(d.action, Action::kWait);
  EXPECT_EQ(d.wake_at, absl::InfiniteFuture());
}

TEST(Policy, DecodesWhenOnlySequencesRun) {
  const Decision d = DecideNext(Queue(0, 0, 0, true), At(0), Config(8, 1000));
  EXPECT_EQ(d.action, Action::kDecode);
}

TEST(Policy, PartialBatchWaitsForTheDelayBudgetLeft) {
  // One request queued at t=100us, delay 1000us, now t=400us: wake at 1100us.
  const Decision d = DecideNext(Queue(1, 1, 100, false), At(400), Config(8, 1000));
  EXPECT_EQ(d.action, Action::kWait);
  EXPECT_EQ(d.wake_at, At(1100));
}

TEST(Policy, WakeUpIsTheNearestDeadlineWhenSooner) {
  const Decision d =
      DecideNext(Queue(2, 2, 100, false, At(600)), At(400), Config(8, 1000));
  EXPECT_EQ(d.action, Action::kWait);
  EXPECT_EQ(d.wake_at, At(600));
}

TEST(Policy, FlushesWhenTheDelayExpires) {
  const Decision d = DecideNext(Queue(3, 3, 100, false), At(1100), Config(8, 1000));
  EXPECT_EQ(d.action, Action::kEncode);
  EXPECT_EQ(d.batch, 3);
}

TEST(Policy, FlushesWhenADeadlineIsDue) {
  const Decision d =
      DecideNext(Queue(2, 2, 100, false, At(500)), At(500), Config(8, 1000));
  EXPECT_EQ(d.action, Action::kEncode);
  EXPECT_EQ(d.batch, 2);
}

TEST(Policy, FullBatchGoesAtOnceAndIsCapped) {
  const Decision d = DecideNext(Queue(20, 20, 100, true), At(100), Config(8, 1000));
  EXPECT_EQ(d.action, Action::kEncode);
  EXPECT_EQ(d.batch, 8);
}

TEST(Policy, ZeroDelayEncodesImmediately) {
  const Decision d = DecideNext(Queue(1, 1, 100, true), At(100), Config(8, 0));
  EXPECT_EQ(d.action, Action::kEncode);
  EXPECT_EQ(d.batch, 1);
}

TEST(Policy, RunningSequencesKeepDecodingWhileABatchFills) {
  const Decision d = DecideNext(Queue(2, 2, 100, true), At(300), Config(8, 1000));
  EXPECT_EQ(d.action, Action::kDecode);
}

TEST(Policy, OnlyAdmissibleRequestsAreEncoded) {
  // Five waiting, but the KV-cache pool has room for two of them.
  const Decision d = DecideNext(Queue(5, 2, 100, true), At(5000), Config(8, 1000));
  EXPECT_EQ(d.action, Action::kEncode);
  EXPECT_EQ(d.batch, 2);
}

TEST(Policy, NoRoomDecodesToFreeRows) {
  const Decision d = DecideNext(Queue(5, 0, 100, true), At(5000), Config(8, 1000));
  EXPECT_EQ(d.action, Action::kDecode);
}

TEST(Policy, NoRoomAndNothingRunningSleepsUntilTheNearestDeadline) {
  const Decision d =
      DecideNext(Queue(1, 0, 100, false, At(9000)), At(5000), Config(8, 1000));
  EXPECT_EQ(d.action, Action::kWait);
  EXPECT_EQ(d.wake_at, At(9000));
}

TEST(Policy, AdvancingTheFakeClockFlushesExactlyAtTheBudget) {
  const PolicyConfig config = Config(4, 2000);
  const QueueSummary q = Queue(1, 1, 0, false);
  absl::Time now = At(0);
  Decision d = DecideNext(q, now, config);
  ASSERT_EQ(d.action, Action::kWait);
  EXPECT_EQ(DecideNext(q, d.wake_at - absl::Nanoseconds(1), config).action,
            Action::kWait);
  now = d.wake_at;
  d = DecideNext(q, now, config);
  EXPECT_EQ(d.action, Action::kEncode);
  EXPECT_EQ(d.batch, 1);
}

}  // namespace
}  // namespace florence::batching
