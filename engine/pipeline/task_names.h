// Readable task names for command lines and logs ("od", "ocr_with_region"),
// next to the task tokens of engine/task.h ("<OD>"). Pure, thread-safe.
#ifndef FLORENCE_ENGINE_PIPELINE_TASK_NAMES_H_
#define FLORENCE_ENGINE_PIPELINE_TASK_NAMES_H_

#include <array>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "engine/task.h"

namespace florence::engine {

// In Task order (kTaskSpecs order).
inline constexpr std::array<absl::string_view, 15> kTaskNames = {
    "caption",
    "detailed_caption",
    "more_detailed_caption",
    "od",
    "dense_region_caption",
    "region_proposal",
    "ocr",
    "ocr_with_region",
    "phrase_grounding",
    "referring_expression_segmentation",
    "region_to_segmentation",
    "open_vocabulary_detection",
    "region_to_category",
    "region_to_description",
    "region_to_ocr",
};
static_assert(kTaskNames.size() == kTaskSpecs.size());

// The readable name of `task`.
inline absl::string_view TaskName(Task task) {
  return kTaskNames[static_cast<size_t>(task)];
}

// A task token ("<OD>", exact) or a readable name ("od", case-insensitive)
// -> the task; nullopt if `name` is neither.
inline std::optional<Task> ParseTaskName(absl::string_view name) {
  if (std::optional<Task> task = TaskFromToken(name)) return task;
  for (size_t i = 0; i < kTaskNames.size(); ++i) {
    if (absl::EqualsIgnoreCase(kTaskNames[i], name)) return kTaskSpecs[i].task;
  }
  return std::nullopt;
}

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_PIPELINE_TASK_NAMES_H_
