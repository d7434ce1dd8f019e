// Florence-2 tasks as types: one table from task to task token, prompt
// template, the input it takes and the post-processor that parses its output
// (FLORENCE2.md 2.2 and 5.4; transformers' Florence2Processor tables).
//
// Torch-free; shared by the tokenizer (prompt construction), the parsers and
// the server.
#ifndef FLORENCE_ENGINE_TASK_H_
#define FLORENCE_ENGINE_TASK_H_

#include <array>
#include <optional>

#include "absl/strings/string_view.h"

namespace florence::engine {

enum class Task {
  kCaption,
  kDetailedCaption,
  kMoreDetailedCaption,
  kObjectDetection,
  kDenseRegionCaption,
  kRegionProposal,
  kOcr,
  kOcrWithRegion,
  kPhraseGrounding,
  kReferringExpressionSegmentation,
  kRegionToSegmentation,
  kOpenVocabularyDetection,
  kRegionToCategory,
  kRegionToDescription,
  kRegionToOcr,
};

// What a task needs besides the image.
enum class TaskInput {
  kNone,    // the task token alone
  kText,    // free text (caption to ground, expression, class names)
  kRegion,  // a box, written into the prompt as four <loc_N> tokens
};

// How the generated text is parsed (transformers' post-processing types).
enum class PostProcess {
  kPureText,
  kDescriptionWithBboxes,
  kBboxes,
  kOcr,
  kPhraseGrounding,
  kPolygons,
  kDescriptionWithBboxesOrPolygons,
};

struct TaskSpec {
  Task task;
  absl::string_view token;   // "<OD>"
  absl::string_view prompt;  // "{input}" marks where the input goes
  TaskInput input;
  PostProcess post_process;
};

inline constexpr std::array<TaskSpec, 15> kTaskSpecs = {{
    {Task::kCaption, "<CAPTION>", "What does the image describe?",
     TaskInput::kNone, PostProcess::kPureText},
    {Task::kDetailedCaption, "<DETAILED_CAPTION>",
     "Describe in detail what is shown in the image.", TaskInput::kNone,
     PostProcess::kPureText},
    {Task::kMoreDetailedCaption, "<MORE_DETAILED_CAPTION>",
     "Describe with a paragraph what is shown in the image.", TaskInput::kNone,
     PostProcess::kPureText},
    {Task::kObjectDetection, "<OD>",
     "Locate the objects with category name in the image.", TaskInput::kNone,
     PostProcess::kDescriptionWithBboxes},
    {Task::kDenseRegionCaption, "<DENSE_REGION_CAPTION>",
     "Locate the objects in the image, with their descriptions.",
     TaskInput::kNone, PostProcess::kDescriptionWithBboxes},
    {Task::kRegionProposal, "<REGION_PROPOSAL>",
     "Locate the region proposals in the image.", TaskInput::kNone,
     PostProcess::kBboxes},
    {Task::kOcr, "<OCR>", "What is the text in the image?", TaskInput::kNone,
     PostProcess::kPureText},
    {Task::kOcrWithRegion, "<OCR_WITH_REGION>",
     "What is the text in the image, with regions?", TaskInput::kNone,
     PostProcess::kOcr},
    {Task::kPhraseGrounding, "<CAPTION_TO_PHRASE_GROUNDING>",
     "Locate the phrases in the caption: {input}", TaskInput::kText,
     PostProcess::kPhraseGrounding},
    {Task::kReferringExpressionSegmentation,
     "<REFERRING_EXPRESSION_SEGMENTATION>",
     "Locate {input} in the image with mask", TaskInput::kText,
     PostProcess::kPolygons},
    {Task::kRegionToSegmentation, "<REGION_TO_SEGMENTATION>",
     "What is the polygon mask of region {input}", TaskInput::kRegion,
     PostProcess::kPolygons},
    {Task::kOpenVocabularyDetection, "<OPEN_VOCABULARY_DETECTION>",
     "Locate {input} in the image.", TaskInput::kText,
     PostProcess::kDescriptionWithBboxesOrPolygons},
    {Task::kRegionToCategory, "<REGION_TO_CATEGORY>",
     "What is the region {input}?", TaskInput::kRegion,
     PostProcess::kPureText},
    {Task::kRegionToDescription, "<REGION_TO_DESCRIPTION>",
     "What does the region {input} describe?", TaskInput::kRegion,
     PostProcess::kPureText},
    {Task::kRegionToOcr, "<REGION_TO_OCR>", "What text is in the region {input}?",
     TaskInput::kRegion, PostProcess::kPureText},
}};

inline const TaskSpec& SpecOf(Task task) {
  return kTaskSpecs[static_cast<size_t>(task)];
}

// The task whose token is `token` ("<OD>"), if any.
inline std::optional<Task> TaskFromToken(absl::string_view token) {
  for (const TaskSpec& spec : kTaskSpecs) {
    if (spec.token == token) return spec.task;
  }
  return std::nullopt;
}

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_TASK_H_
