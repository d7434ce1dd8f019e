// The decoder's KV cache for every running sequence: fixed-size rows in
// preallocated tensors, kept dense, so that one decode step runs over the
// occupied rows as plain views. Two kinds of rows:
//
//   self rows, one per beam:        self K/V [L, R, H, self_len, hd], written
//                                   in place by DecodeStep
//   cross rows, one per sequence:   cross K/V [L, R, H, cross_len, hd] and
//                                   mask [R, cross_len] int64 (1 = real
//                                   encoder position), written once at join;
//                                   the beams of a sequence all read it
//
// A row holds one sequence at the model's full decoder length, so its size is
// the same for every request. The budget is counted per greedy sequence (one
// self row + one cross row = row_bytes()): the pool holds capacity() rows of
// each kind, and a beam sequence leaves cross rows unused (a paged cache would
// let short requests take less; not done here).
// Stale values in a reused row are finite (the pool starts zeroed and only
// model outputs are written), and the model masks every position past a
// row's own, so they never contribute.
//
// Engine-internal (Torch). Not thread-safe: the engine thread owns it.
#ifndef FLORENCE_BATCHING_KV_POOL_H_
#define FLORENCE_BATCHING_KV_POOL_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model_backend.h"

namespace florence::batching {

class KvPool {
 public:
  struct Shape {
    int64_t layers = 0;
    int64_t heads = 0;
    int64_t head_dim = 0;
    int64_t self_len = 0;   // decoder positions per row
    int64_t cross_len = 0;  // encoder positions per row
  };

  // Sizes the pool to min(max_rows, budget_bytes / row bytes) rows and
  // allocates it zeroed through `model` (its dtype and device).
  // ResourceExhausted, with the numbers, when the budget holds no row or the
  // allocation fails.
  static absl::StatusOr<std::unique_ptr<KvPool>> Create(
      engine::ModelBackend& model, const Shape& shape, int64_t budget_bytes,
      int max_rows);

  // Rows of each kind. Every sequence holds at least one self row and exactly
  // one cross row, so free self rows imply free cross rows.
  int capacity() const { return capacity_; }
  int used() const { return used_self_; }  // self rows [0, used())
  int used_cross() const { return used_cross_; }
  int free_rows() const { return capacity_ - used_self_; }
  // One self row + one cross row: the budget one greedy sequence takes.
  int64_t row_bytes() const { return self_row_bytes_ + cross_row_bytes_; }
  int64_t bytes_in_use() const {
    return used_self_ * self_row_bytes_ + used_cross_ * cross_row_bytes_;
  }

  // Takes `n` <= free_rows() self rows (the next ones after the occupied
  // prefix).
  std::vector<int64_t> Allocate(int n);
  // Takes one cross row; requires used_cross() < capacity().
  int64_t AllocateCross();

  // (from, to) row moves made by Free, per kind.
  struct Moves {
    std::vector<std::pair<int64_t, int64_t>> self;
    std::vector<std::pair<int64_t, int64_t>> cross;
  };

  // Releases self rows and cross rows and keeps each kind dense by moving rows
  // from the end into the holes; copies only the first `self_len` /
  // `cross_len` positions (the longest in use). Returns the moves so the
  // owners of moved rows can update their indices.
  Moves Free(const std::vector<int64_t>& self_rows,
             const std::vector<int64_t>& cross_rows, int64_t self_len,
             int64_t cross_len);

  // Writes sequence `index` of a CrossKv result (K/V [L, B, H, S, hd]), its
  // first `len` positions, into cross row `row`, and sets the row's mask to
  // the first `len` entries of `mask` (that sequence's encoder attention mask).
  void WriteCross(int64_t row, const engine::KvPair& cross, int64_t index,
                  int64_t len, const at::Tensor& mask);

  // Beam reordering within one sequence: positions [shared[j], self_len) of
  // row rows[j] := those of old row rows[sources[j]]. Positions before
  // shared[j] already hold the same K/V (Search::shared_positions) and are
  // left alone; only sources that are themselves overwritten are staged.
  void Reorder(const std::vector<int64_t>& rows, const std::vector<int64_t>& sources,
               const std::vector<int64_t>& shared, int64_t self_len);

  // Views over the occupied rows and their first positions: self rows
  // [0, used()), cross rows and masks [0, used_cross()).
  engine::KvPair SelfView(int64_t self_len) const;
  engine::KvPair CrossView(int64_t cross_len) const;
  at::Tensor MaskView(int64_t cross_len) const;

 private:
  KvPool(Shape shape, int capacity, int64_t self_row_bytes, int64_t cross_row_bytes,
         engine::KvPair self, engine::KvPair cross, at::Tensor mask);

  const Shape shape_;
  const int capacity_;
  const int64_t self_row_bytes_;
  const int64_t cross_row_bytes_;
  engine::KvPair self_;
  engine::KvPair cross_;
  at::Tensor mask_;
  at::Tensor scratch_;  // [2 (K, V), slots, L, H, self_len, hd], grown on demand by Reorder
  int used_self_ = 0;
  int used_cross_ = 0;
};

}  // namespace florence::batching

#endif  // FLORENCE_BATCHING_KV_POOL_H_
