#!/usr/bin/env python3
"""Reference vectors for the C++ Florence-2 output parsers (engine/postprocess/).

  parser_vectors.py --tokenizer build/models/tiny --out build/postprocess/parser_vectors.jsonl

Runs transformers' ``Florence2Processor.post_process_generation`` (the native port) on decoded generations
(special tokens kept, e.g. ``</s><s>car<loc_53><loc_333><loc_933><loc_774></s><pad>``) for all 15 tasks and
several image sizes, and writes one JSON object per line:

* ``{"kind": "generation", "name", "task", "text", "width", "height", "expected", ...}`` where ``expected`` is
  ``post_process_generation(cut_at_eos(text), task, (width, height))[task]``: transformers' own result shape
  (a string; ``{"bboxes", "labels"}``; ``{"quad_boxes", "labels"}``; ``{"polygons", "labels"}``; or the four
  open-vocabulary keys), coordinates already truncated to int by transformers. ``expected_uncut`` is added
  where transformers gives something else on the whole text (see ``cut_at_eos``). ``published`` /
  ``published_float`` carry the values printed in transformers' and transformers.js' tests; the script checks
  transformers still produces them before writing anything.
* ``{"kind": "dequantize", "size", "bins", "coords"}``: transformers' ``dequantize`` of every bin 0..999 (and
  a few beyond) for one image side, i.e. ``int(float32(bin + 0.5) * float32(size / 1000))``.

Besides the published generations and hand-written edge cases, ``--fuzz N`` adds N seeded random mixes of loc
tokens, markers, text and whitespace.

The tokenizer directory only supplies the special-token list the processor wants; parsing is tokenizer-free.
The post-processor config (banned grounding phrases) is passed explicitly because the processor's default is
empty, which makes every structured task raise ``Unsupported parse task``.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The post_processor_config that transformers' convert_florence2_original_pytorch_to_hf.py gives the processors of
# the converted (florence-community) checkpoints.
# (Its "pattern"/"area_threshold" keys are read as "PATTERN"/"AREA_THRESHOLD" by Florence2PostProcessor, so the
# built-in OCR pattern and threshold 0 apply whatever they say.)
BANNED_GROUNDING_TOKENS = [
    "it", "I", "me", "mine", "you", "your", "yours", "he", "him", "his", "she", "her", "hers", "they", "them",
    "their", "theirs", "one", "oneself", "we", "us", "our", "ours", "you", "your", "yours", "they", "them",
    "their", "theirs", "mine", "yours", "his", "hers", "its", "ours", "yours", "theirs", "myself", "yourself",
    "himself", "herself", "itself", "ourselves", "yourselves", "themselves", "this", "that", "these", "those",
    "who", "whom", "whose", "which", "what", "who", "whom", "whose", "which", "that", "all", "another", "any",
    "anybody", "anyone", "anything", "each", "everybody", "everyone", "everything", "few", "many", "nobody",
    "none", "one", "several", "some", "somebody", "someone", "something", "each other", "one another", "myself",
    "yourself", "himself", "herself", "itself", "ourselves", "yourselves", "themselves", "the image", "image",
    "images", "the", "a", "an", "a group", "other objects", "lots", "a set",
]
POST_PROCESSOR_CONFIG = {
    "ocr": {
        "pattern": r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>",
        "area_threshold": 0.0,
    },
    "phrase_grounding": {"banned_grounding_tokens": BANNED_GROUNDING_TOKENS},
    "pure_text": {},
    "description_with_bboxes": {},
    "description_with_polygons": {},
    "polygons": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}

ALL_TASKS = [
    "<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>", "<OD>", "<DENSE_REGION_CAPTION>",
    "<REGION_PROPOSAL>", "<OCR>", "<OCR_WITH_REGION>", "<CAPTION_TO_PHRASE_GROUNDING>",
    "<REFERRING_EXPRESSION_SEGMENTATION>", "<REGION_TO_SEGMENTATION>", "<OPEN_VOCABULARY_DETECTION>",
    "<REGION_TO_CATEGORY>", "<REGION_TO_DESCRIPTION>", "<REGION_TO_OCR>",
]
PURE_TEXT_TASKS = ["<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>", "<OCR>", "<REGION_TO_CATEGORY>",
                   "<REGION_TO_DESCRIPTION>", "<REGION_TO_OCR>"]

BEETLE = (640, 480)        # car.jpg of transformers' and transformers.js' tests
BOOK_COVER = (403, 500)    # transformers.js book_cover (inferred from its float quad boxes)
AUSTRALIA = (1300, 876)    # australia.jpg of transformers' tests (inferred from its int boxes)
DEQUANTIZE_SIZES = [1, 2, 3, 7, 144, 191, 300, 384, 403, 451, 480, 500, 512, 600, 640, 876, 1000, 1024, 1040,
                    1152, 1300, 2000, 4000, 4096]


def loc(*bins: int) -> str:
    return "".join(f"<loc_{b}>" for b in bins)


def cut_at_eos(text: str) -> str:
    """The C++ parser's first step: drop everything from the end-of-sequence ``</s>`` on.

    A decoded generation starts with the decoder start token ``</s>``; the next ``</s>`` ends the sequence and
    only ``<pad>`` of batch padding follows it. transformers parses the whole string, which only differs where
    text follows that ``</s>`` (pure-text tasks keep ``<pad>`` in their answer).
    """
    start = 4 if text.startswith("</s>") else 0
    end = text.find("</s>", start)
    return text if end < 0 else text[:end]


@dataclass
class Vector:
    name: str
    task: str
    text: str
    size: tuple[int, int]
    published: Any = None        # as printed in transformers' tests (int coordinates)
    published_float: Any = None  # as printed in transformers.js' tests (float coordinates), same shape


# ---- Published generations --------------------------------------------------------------------------------

# transformers tests/models/florence2/test_modeling_florence2.py (integration tests, florence-community weights).
RP_BASE_TEXT = ("</s><s>" + loc(0, 0, 998, 711, 0, 0, 419, 673, 0, 64, 364, 672, 764, 0, 998, 665, 525, 545, 921,
                                763, 163, 133, 365, 423, 0, 65, 71, 658, 955, 148, 998, 661, 806, 675, 890, 759,
                                567, 678, 646, 761) + "</s>")
RES_BASE_BINS = [279, 379, 282, 379, 290, 372, 293, 372, 298, 368, 301, 368, 306, 364, 310, 362, 315, 360, 320, 358,
                 324, 355, 331, 353, 337, 351, 343, 349, 349, 347, 356, 345, 365, 343, 376, 341, 390, 339, 409, 337,
                 489, 337, 514, 339, 528, 341, 539, 343, 547, 345, 553, 347, 559, 349, 566, 351, 572, 353, 578, 355,
                 584, 360, 589, 366, 592, 372, 595, 379, 598, 385, 601, 391, 603, 397, 606, 401, 608, 408, 611, 414,
                 614, 420, 617, 426, 620, 433, 626, 441, 631, 445, 636, 447, 639, 451, 639, 456, 642, 460]
RES_LARGE_BINS = [279, 377, 282, 375, 285, 375, 293, 368, 296, 368, 301, 364, 304, 364, 309, 360, 313, 358, 318, 356,
                  323, 354, 328, 352, 334, 350, 340, 347, 346, 345, 353, 343, 360, 341, 370, 339, 382, 337, 398, 335,
                  426, 333, 481, 333, 509, 335, 524, 337, 536, 339, 543, 341, 549, 343, 556, 345, 562, 347, 568, 350,
                  575, 352, 579, 354, 585, 358, 588, 362, 592, 368, 595, 375, 598, 381, 601, 387, 604, 393, 606, 399,
                  609, 404, 610, 410, 614, 416, 617, 422, 620, 429, 623, 435, 629, 443, 634, 445]
OCR_LARGE_TEXT = ("</s><s><s><s>中新中" + loc(533, 68, 653, 68, 653, 128, 533, 128) + "88" +
                  loc(1, 103, 19, 103, 19, 125, 1, 125) + "DAT" + loc(132, 186, 177, 188, 177, 214, 132, 213) +
                  "STOP" + loc(177, 226, 345, 224, 345, 327, 177, 331) + "KUO" +
                  loc(961, 371, 992, 371, 992, 397, 961, 397) + "OPTUS" + loc(120, 414, 192, 415, 192, 450, 120, 448) +
                  "OD COUKT" + loc(438, 399, 486, 399, 486, 413, 438, 413) + "yes" +
                  loc(21, 439, 64, 437, 65, 482, 21, 484) + "88" + loc(859, 435, 880, 435, 880, 460, 859, 460) + "</s>")


RES_BASE_PUBLISHED = [178, 182, 180, 182, 185, 178, 187, 178, 191, 176, 192, 176, 196, 174, 198, 174, 201, 173, 205,
                      172, 207, 170, 212, 169, 216, 168, 219, 167, 223, 166, 228, 165, 233, 164, 240, 163, 249, 162,
                      262, 162, 313, 162, 329, 162, 338, 163, 345, 164, 350, 165, 354, 166, 358, 167, 362, 168, 366,
                      169, 370, 170, 374, 173, 377, 175, 379, 178, 381, 182, 383, 185, 384, 187, 386, 190, 388, 192,
                      389, 196, 391, 198, 393, 201, 395, 204, 397, 208, 400, 211, 404, 213, 407, 214, 409, 216, 409,
                      219, 411, 221]
RES_LARGE_PUBLISHED = [178, 181, 180, 180, 182, 180, 187, 176, 189, 176, 192, 174, 194, 174, 198, 173, 200, 172, 203,
                       171, 207, 170, 210, 169, 214, 168, 217, 166, 221, 165, 226, 164, 230, 163, 237, 162, 244, 162,
                       255, 161, 272, 160, 308, 160, 326, 161, 335, 162, 343, 162, 347, 163, 351, 164, 356, 165, 360,
                       166, 363, 168, 368, 169, 370, 170, 374, 172, 376, 174, 379, 176, 381, 180, 383, 183, 384, 186,
                       386, 188, 388, 191, 390, 194, 390, 197, 393, 199, 395, 202, 397, 206, 399, 209, 402, 212, 406,
                       213]


def published_transformers() -> list[Vector]:
    v = [
        Vector("hf_base_region_proposal", "<REGION_PROPOSAL>", RP_BASE_TEXT, AUSTRALIA, published={
            "bboxes": [[0, 0, 1298, 623], [0, 0, 545, 589], [0, 56, 473, 589], [993, 0, 1298, 582],
                       [683, 477, 1197, 668], [212, 116, 475, 370], [0, 57, 92, 576], [1242, 130, 1298, 579],
                       [1048, 591, 1157, 665], [737, 594, 840, 667]],
            "labels": [""] * 10}),
        Vector("hf_base_ovd_wheels_padded", "<OPEN_VOCABULARY_DETECTION>",
               "</s><s>wheels" + loc(144, 570, 870, 778) + "wheels" + loc(711, 573, 866, 774) + "wheels" +
               loc(148, 579, 304, 774) + "</s>" + "<pad>" * 22, BEETLE, published={
                   "bboxes": [[92, 273, 557, 373], [455, 275, 554, 371], [95, 278, 194, 371]],
                   "bboxes_labels": ["wheels", "wheels", "wheels"], "polygons": [], "polygons_labels": []}),
        Vector("hf_base_res_a_car", "<REFERRING_EXPRESSION_SEGMENTATION>", "</s><s>" + loc(*RES_BASE_BINS) + "</s>",
               BEETLE, published={"polygons": [[RES_BASE_PUBLISHED]], "labels": [""]}),
        Vector("hf_base_ocr_pure_text_cjk", "<OCR>",
               "</s><s>中文中BBD DATSTOP第福科技有限公司KU O KUOPTUSOyesOPTUSTO</s>", AUSTRALIA,
               published="中文中BBD DATSTOP第福科技有限公司KU O KUOPTUSOyesOPTUSTO"),
        Vector("hf_base_od_padded", "<OD>",
               "</s><s>car" + loc(53, 333, 933, 774) + "door handle" + loc(425, 503, 474, 515) + "wheel" +
               loc(709, 576, 865, 772, 150, 584, 309, 773) + "</s>" + "<pad>" * 25, BEETLE, published={
                   "bboxes": [[34, 160, 597, 371], [272, 241, 303, 247], [454, 276, 553, 370], [96, 280, 198, 371]],
                   "labels": ["car", "door handle", "wheel", "wheel"]}),
        Vector("hf_base_detailed_caption", "<DETAILED_CAPTION>",
               "</s><s>The image shows a stop sign sitting on the side of a street in Chinatown, New York City. The "
               "street is lined with buildings, trees, and statues, and there are people walking on the footpath. "
               "The sky is visible in the background.</s>", AUSTRALIA,
               published="The image shows a stop sign sitting on the side of a street in Chinatown, New York City. "
               "The street is lined with buildings, trees, and statues, and there are people walking on the "
               "footpath. The sky is visible in the background."),
        Vector("hf_large_region_proposal_repeated_bos", "<REGION_PROPOSAL>",
               "</s><s><s><s>" + loc(0, 0, 999, 675, 0, 0, 362, 671, 0, 0, 306, 671, 763, 0, 999, 663, 524, 544,
                                     921, 762, 163, 132, 363, 422, 802, 674, 890, 758, 566, 677, 646, 760) + "</s>",
               AUSTRALIA, published={
                   "bboxes": [[0, 0, 1299, 591], [0, 0, 471, 588], [0, 0, 398, 588], [992, 0, 1299, 581],
                              [681, 476, 1197, 667], [212, 116, 472, 370], [1043, 590, 1157, 664],
                              [736, 593, 840, 666]],
                   "labels": [""] * 8}),
        Vector("hf_large_ovd_car_padded", "<OPEN_VOCABULARY_DETECTION>",
               "</s><s>car" + loc(52, 334, 932, 774) + "</s>" + "<pad>" * 29, BEETLE, published={
                   "bboxes": [[33, 160, 596, 371]], "bboxes_labels": ["car"], "polygons": [], "polygons_labels": []}),
        Vector("hf_large_res_repeated_bos", "<REFERRING_EXPRESSION_SEGMENTATION>",
               "</s><s><s><s>" + loc(*RES_LARGE_BINS) + "</s>", BEETLE,
               published={"polygons": [[RES_LARGE_PUBLISHED]], "labels": [""]}),
        Vector("hf_large_ocr_with_region", "<OCR_WITH_REGION>", OCR_LARGE_TEXT, AUSTRALIA, published={
            "quad_boxes": [[693, 60, 849, 60, 849, 112, 693, 112], [1, 90, 25, 90, 25, 109, 1, 109],
                           [172, 163, 230, 165, 230, 187, 172, 187], [230, 198, 449, 196, 449, 286, 230, 290],
                           [1249, 325, 1290, 325, 1290, 348, 1249, 348], [156, 363, 250, 363, 250, 394, 156, 392],
                           [570, 349, 632, 349, 632, 362, 570, 362], [27, 385, 83, 383, 85, 422, 27, 424],
                           [1117, 381, 1144, 381, 1144, 403, 1117, 403]],
            "labels": ["中新中", "88", "DAT", "STOP", "KUO", "OPTUS", "OD COUKT", "yes", "88"]}),
        Vector("hf_large_caption_padded", "<CAPTION>",
               "</s><s>a green car parked in front of a yellow building</s>" + "<pad>" * 85, BEETLE),
    ]
    # transformers tests/models/florence2/test_processing_florence2.py (parsers called on 1000x1000).
    sq = (1000, 1000)
    v += [
        Vector("hf_proc_region_proposal_13_locs", "<REGION_PROPOSAL>",
               "</s><s>" + loc(53, 334, 933, 775, 711, 203, 906, 546, 585, 309, 774, 709, 577) + "</s><pad>", sq,
               published={"bboxes": [[53, 334, 933, 775], [711, 203, 906, 546], [585, 309, 774, 709]],
                          "labels": ["", "", ""]}),
        Vector("hf_proc_od_door_handle", "<OD>",
               "</s><s>car" + loc(53, 334, 933, 775) + "door handle" + loc(425, 504, 474, 516) + "</s><pad>", sq,
               published={"bboxes": [[53, 334, 933, 775], [425, 504, 474, 516]], "labels": ["car", "door handle"]}),
        Vector("hf_proc_res_no_specials", "<REFERRING_EXPRESSION_SEGMENTATION>",
               loc(279, 379, 282, 379, 290, 373, 293, 373, 298, 369, 301, 369), sq,
               published={"polygons": [[[279, 379, 282, 379, 290, 373, 293, 373, 298, 369, 301, 369]]],
                          "labels": [""]}),
        Vector("hf_proc_res_text_before_locs", "<REFERRING_EXPRESSION_SEGMENTATION>",
               "Hello" + loc(769, 248, 771, 234, 773, 206, 773, 198, 771, 193), sq),
        Vector("hf_proc_ocr_hello_world", "<OCR_WITH_REGION>",
               "</s><s>Hello" + loc(100, 100, 200, 100, 200, 200, 100, 200) + "World" +
               loc(300, 300, 400, 300, 400, 400, 300, 400) + "</s>", sq, published={
                   "quad_boxes": [[100, 100, 200, 100, 200, 200, 100, 200], [300, 300, 400, 300, 400, 400, 300, 400]],
                   "labels": ["Hello", "World"]}),
        Vector("hf_proc_ocr_small_box", "<OCR_WITH_REGION>", "Small" + loc(1, 1, 2, 2, 2, 2, 1, 1), sq),
        Vector("hf_proc_grounding_red_car_sky_loc1000", "<CAPTION_TO_PHRASE_GROUNDING>",
               "</s><s>red car" + loc(53, 334, 933, 775, 711, 203, 906, 546) + "sky" + loc(0, 0, 1000, 300) + "</s>",
               sq, published={"bboxes": [[53, 334, 933, 775], [711, 203, 906, 546], [0, 0, 1000, 300]],
                              "labels": ["red car", "red car", "sky"]}),
        Vector("hf_proc_grounding_banned_the_image", "<CAPTION_TO_PHRASE_GROUNDING>",
               "the image" + loc(100, 100, 200, 200), sq, published={"bboxes": [], "labels": []}),
        Vector("hf_proc_caption_hello_world", "<CAPTION>", "<s>Hello world</s>", sq, published="Hello world"),
        Vector("hf_proc_od_no_specials", "<OD>", "car" + loc(53, 334, 933, 775), sq,
               published={"bboxes": [[53, 334, 933, 775]], "labels": ["car"]}),
        Vector("hf_proc_ocr_no_specials", "<OCR_WITH_REGION>", "Hello" + loc(100, 100, 200, 100, 200, 200, 100, 200),
               sq, published={"quad_boxes": [[100, 100, 200, 100, 200, 200, 100, 200]], "labels": ["Hello"]}),
    ]
    return v


def published_transformers_js() -> list[Vector]:
    """transformers.js tests/processors.test.js, Florence-2 "Post-process generation" (float coordinates)."""
    return [
        Vector("js_caption", "<CAPTION>", "</s><s>A green car parked in front of a yellow building.</s>", BEETLE,
               published="A green car parked in front of a yellow building."),
        Vector("js_detailed_caption", "<DETAILED_CAPTION>",
               "</s><s>The image shows a green Volkswagen Beetle parked in front of a yellow building with two brown "
               "doors. The sky is a mix of blue and white, and there are a few green trees in the background.</s>",
               BEETLE),
        Vector("js_more_detailed_caption", "<MORE_DETAILED_CAPTION>",
               "</s><s>The image shows a vintage Volkswagen Beetle car parked on a cobblestone street in front of a "
               "yellow building with two wooden doors. The car is painted in a bright turquoise color and has a "
               "white stripe running along the side. It has two doors on either side of the car, one on top of the "
               "other, and a small window on the front. The building appears to be old and dilapidated, with "
               "peeling paint and crumbling walls. The sky is blue and there are trees in the background.</s>",
               BEETLE),
        Vector("js_od", "<OD>",
               "</s><s><s><s>car" + loc(53, 333, 933, 774) + "door" + loc(712, 203, 906, 545) + "wheel" +
               loc(704, 576, 866, 772, 149, 584, 310, 773) + "</s>", BEETLE, published_float={
                   "bboxes": [[34.24, 160.08, 597.44, 371.76], [456.0, 97.68, 580.16, 261.84],
                              [450.88, 276.72, 554.56, 370.8], [95.68, 280.56, 198.72, 371.28]],
                   "labels": ["car", "door", "wheel", "wheel"]}),
        Vector("js_dense_region_caption", "<DENSE_REGION_CAPTION>",
               "</s><s>turquoise Volkswagen Beetle" + loc(52, 333, 932, 774) + "wheel" +
               loc(704, 576, 864, 772, 148, 584, 308, 773) + "</s>", BEETLE, published_float={
                   "bboxes": [[33.6, 160.08, 596.8, 371.76], [450.88, 276.72, 553.28, 370.8],
                              [95.04, 280.56, 197.44, 371.28]],
                   "labels": ["turquoise Volkswagen Beetle", "wheel", "wheel"]}),
        Vector("js_region_proposal", "<REGION_PROPOSAL>",
               "</s><s><s><s>" + loc(52, 333, 932, 774, 711, 203, 905, 545, 704, 576, 864, 772, 148, 584, 309, 773,
                                     354, 184, 519, 342, 102, 555, 135, 616, 424, 503, 472, 514, 637, 642, 646, 668) +
               "</s>", BEETLE, published_float={
                   "bboxes": [[33.6, 160.08, 596.8, 371.76], [455.36, 97.68, 579.52, 261.84],
                              [450.88, 276.72, 553.28, 370.8], [95.04, 280.56, 198.08, 371.28],
                              [226.88, 88.56, 332.48, 164.4], [65.6, 266.64, 86.72, 295.92],
                              [271.68, 241.68, 302.4, 246.96], [408.0, 308.4, 413.76, 320.88]],
                   "labels": [""] * 8}),
        Vector("js_phrase_grounding", "<CAPTION_TO_PHRASE_GROUNDING>",
               "</s><s><s><s>A green car" + loc(54, 330, 911, 780) + "a yellow building" + loc(0, 8, 998, 635) +
               "</s>", BEETLE, published_float={
                   "bboxes": [[34.88, 158.64, 583.36, 374.64], [0.32, 4.08, 639.04, 305.04]],
                   "labels": ["A green car", "a yellow building"]}),
        Vector("js_region_to_segmentation", "<REGION_TO_SEGMENTATION>",
               "</s><s><s><s>" + loc(734, 600, 740, 594, 745, 590, 748, 588, 751, 588, 756, 584, 760, 582, 765, 580,
                                     773, 578, 800, 578, 804, 580, 809, 582, 814, 586, 817, 586, 820, 590, 825, 592,
                                     829, 596, 834, 600, 848, 619, 851, 625, 854, 631, 859, 644, 861, 650, 862, 656,
                                     864, 665, 864, 692, 862, 702, 861, 708, 859, 715, 856, 723, 853, 729, 850, 735,
                                     845, 744, 839, 752, 831, 760, 826, 764, 823, 766, 818, 768, 814, 770, 806, 773,
                                     782, 773, 768, 770, 762, 768, 757, 766, 748, 760, 743, 756, 737, 750, 726, 735,
                                     723, 729, 720, 723, 718, 719, 718, 715, 715, 708, 713, 702, 712, 696, 710, 688,
                                     710, 658, 712, 648, 713, 640, 715, 633, 718, 627, 718, 623, 720, 619, 723, 613) +
               "</s>", BEETLE),
        Vector("js_ovd_a_green_car", "<OPEN_VOCABULARY_DETECTION>",
               "</s><s><s>a green car" + loc(53, 330, 910, 779) + "</s>", BEETLE, published_float={
                   "bboxes": [[34.24, 158.64, 582.72, 374.16]], "bboxes_labels": ["a green car"],
                   "polygons": [], "polygons_labels": []}),
        Vector("js_region_to_category", "<REGION_TO_CATEGORY>", "</s><s>car" + loc(52, 332, 932, 774) + "</s>",
               BEETLE, published="car" + loc(52, 332, 932, 774)),
        Vector("js_region_to_description", "<REGION_TO_DESCRIPTION>",
               "</s><s>turquoise Volkswagen Beetle" + loc(52, 332, 932, 774) + "</s>", BEETLE,
               published="turquoise Volkswagen Beetle" + loc(52, 332, 932, 774)),
        Vector("js_ocr", "<OCR>",
               "</s><s>CUDAFOR ENGINEERSAn Introduction to High-PerformanceParallel ComputingDUANE STORTIMETE "
               "YURTOGLU</s>", BOOK_COVER,
               published="CUDAFOR ENGINEERSAn Introduction to High-PerformanceParallel ComputingDUANE STORTIMETE "
               "YURTOGLU"),
        Vector("js_ocr_with_region", "<OCR_WITH_REGION>",
               "</s><s><s><s>CUDA" + loc(414, 100, 932, 100, 932, 229, 414, 229) + "FOR ENGINEERS" +
               loc(359, 241, 932, 241, 932, 298, 359, 298) + "An Introduction to High-Performance" +
               loc(287, 330, 934, 332, 934, 368, 287, 366) + "Parallel Computing" +
               loc(595, 368, 934, 372, 934, 408, 595, 404) + "DUANE STORTI" +
               loc(660, 882, 934, 882, 934, 912, 660, 912) + "METE YURTOGLU" +
               loc(625, 920, 934, 920, 934, 950, 625, 950) + "</s>", BOOK_COVER, published_float={
                   "quad_boxes": [
                       [167.0435028076172, 50.25, 375.7974853515625, 50.25, 375.7974853515625, 114.75,
                        167.0435028076172, 114.75],
                       [144.8784942626953, 120.75, 375.7974853515625, 120.75, 375.7974853515625, 149.25,
                        144.8784942626953, 149.25],
                       [115.86249542236328, 165.25, 376.6034851074219, 166.25, 376.6034851074219, 184.25,
                        115.86249542236328, 183.25],
                       [239.9864959716797, 184.25, 376.6034851074219, 186.25, 376.6034851074219, 204.25,
                        239.9864959716797, 202.25],
                       [266.1814880371094, 441.25, 376.6034851074219, 441.25, 376.6034851074219, 456.25,
                        266.1814880371094, 456.25],
                       [252.0764923095703, 460.25, 376.6034851074219, 460.25, 376.6034851074219, 475.25,
                        252.0764923095703, 475.25]],
                   "labels": ["CUDA", "FOR ENGINEERS", "An Introduction to High-Performance", "Parallel Computing",
                              "DUANE STORTI", "METE YURTOGLU"]}),
    ]


# ---- Hand-made generations: every task, edge cases, several image sizes -------------------------------------

def pure_text_vectors() -> list[Vector]:
    texts = {
        "empty": "",
        "only_decoder_start": "</s>",
        "immediate_eos": "</s><s></s>",
        "no_eos": "</s><s>a red car on a street",
        "pad_tail": "</s><s>a red car</s><pad><pad><pad>",
        "repeated_bos": "</s><s><s><s>a red car</s>",
        "bos_inside": "</s><s>a red<s> car</s>",
        "spaces_around": "</s><s>   a red car \t </s>",
        "unicode_spaces_around": "</s><s>\u3000\u00a0a red car\u2003\u00a0</s>",
        "newlines": "</s><s>\nline one\nline two\n</s>",
        "non_ascii": "</s><s>café 中文 Ünïcödé — ok</s>",
        "loc_tokens_kept": "</s><s>car" + loc(52, 332, 932, 774) + "</s>",
        "text_after_eos": "</s><s>a red car</s>trailing words",
        "pad_before_eos": "</s><s>a red<pad> car</s>",
        "no_specials": "plain words",
        "task_tags_kept": "</s><s><ocr>CUDA</ocr><cap>x</cap></s>",
    }
    sizes = [BEETLE, BOOK_COVER, AUSTRALIA, (1, 1), (7, 3), (333, 777), (4000, 3000)]
    out = []
    for i, (name, text) in enumerate(texts.items()):
        task = PURE_TEXT_TASKS[i % len(PURE_TEXT_TASKS)]
        out.append(Vector(f"pure_{name}", task, text, sizes[i % len(sizes)]))
    # Every pure-text task at least once with a pad tail.
    for task in PURE_TEXT_TASKS:
        out.append(Vector(f"pure_pad_tail_{task.strip('<>').lower()}", task, "</s><s>words here</s><pad><pad>",
                          BEETLE))
    return out


def bbox_vectors() -> list[Vector]:
    v = []
    for task in ["<OD>", "<DENSE_REGION_CAPTION>"]:
        t = task.strip("<>").lower()
        v += [
            Vector(f"{t}_truncated_group_5_locs", task, "</s><s>car" + loc(1, 2, 3, 4, 5) + "</s>", (1024, 768)),
            Vector(f"{t}_truncated_group_7_locs", task, "</s><s>car" + loc(10, 20, 30, 40, 50, 60, 70) + "</s>",
                   (333, 777)),
            Vector(f"{t}_only_3_locs", task, "</s><s>car" + loc(10, 20, 30) + "</s>", BEETLE),
            Vector(f"{t}_3_locs_then_label", task,
                   "</s><s>car" + loc(10, 20, 30) + "dog" + loc(100, 200, 300, 400) + "</s>", BEETLE),
            Vector(f"{t}_12_locs_three_boxes", task, "</s><s>wheel" + loc(*range(0, 120, 10)) + "</s>", (7, 3)),
            Vector(f"{t}_no_eos_truncated", task,
                   "</s><s>car" + loc(53, 333, 933, 774) + "door" + loc(712, 203), BEETLE),
            Vector(f"{t}_repeated_bos_pads", task,
                   "</s><s><s><s>car" + loc(53, 333, 933, 774) + "</s>" + "<pad>" * 5, (4000, 3000)),
            Vector(f"{t}_label_spaces", task, "</s><s>  red car  " + loc(1, 2, 3, 4) + "</s>", (1, 1)),
            Vector(f"{t}_label_newline_inside", task,
                   "</s><s>red\ncar" + loc(1, 2, 3, 4) + "dog" + loc(5, 6, 7, 8) + "</s>", BEETLE),
            Vector(f"{t}_label_newline_leading", task, "</s><s>\n car" + loc(1, 2, 3, 4) + "</s>", BEETLE),
            Vector(f"{t}_non_ascii_labels", task,
                   "</s><s>café" + loc(1, 2, 3, 4) + "中文 sign" + loc(5, 6, 7, 8) + "car é" + loc(9, 10, 11, 12) +
                   "停车" + loc(13, 14, 15, 16) + "</s>", AUSTRALIA),
            Vector(f"{t}_whitespace_only_label", task, "</s><s> " + loc(100, 100, 900, 900) + "</s>", (999, 1001)),
            Vector(f"{t}_no_label_locs_only", task, "</s><s>" + loc(100, 100, 900, 900) + "</s>", BEETLE),
            Vector(f"{t}_task_tag_in_label", task, "</s><s><od>car" + loc(1, 2, 3, 4) + "</od></s>", BEETLE),
            Vector(f"{t}_bins_beyond_999", task,
                   "</s><s>big" + loc(1000, 1234, 999, 0) + "zeros" + loc(7, 7, 7, 7).replace("_7", "_007") + "</s>",
                   (2000, 10)),
            Vector(f"{t}_malformed_loc_tokens", task,
                   "</s><s>a<loc_><loc_1><loc_2><loc_3><loc_4>b<loc_x1>" + loc(5, 6, 7, 8) + "c" + loc(9, 10, 11) +
                   "<loc_12", BEETLE),
            Vector(f"{t}_empty", task, "", BEETLE),
            Vector(f"{t}_eos_only", task, "</s><s></s><pad>", BEETLE),
        ]
    v += [
        Vector("od_text_after_eos", "<OD>", "</s><s>car" + loc(1, 2, 3, 4) + "</s>dog" + loc(5, 6, 7, 8), BEETLE),
        Vector("od_pad_between", "<OD>", "</s><s>car<pad>" + loc(1, 2, 3, 4) + "</s>", BEETLE),
        Vector("od_sep_poly_ignored", "<OD>", "</s><s>car" + loc(1, 2) + "<sep>" + loc(3, 4, 5, 6) + "</s>", BEETLE),
        Vector("od_ground_obj_tags", "<OD>", "</s><s><ground>car<obj>" + loc(1, 2, 3, 4) + "</s>", BEETLE),
    ]
    rp = "<REGION_PROPOSAL>"
    v += [
        Vector("rp_4_locs", rp, "</s><s>" + loc(10, 20, 30, 40) + "</s>", BOOK_COVER),
        Vector("rp_5_locs", rp, "</s><s>" + loc(10, 20, 30, 40, 50) + "</s>", BOOK_COVER),
        Vector("rp_7_locs", rp, "</s><s>" + loc(10, 20, 30, 40, 50, 60, 70) + "</s>", (1024, 768)),
        Vector("rp_3_locs", rp, "</s><s>" + loc(10, 20, 30) + "</s>", (1024, 768)),
        Vector("rp_labels_ignored", rp, "</s><s>car" + loc(1, 2, 3, 4) + "dog" + loc(5, 6, 7, 8, 9) + "</s>", BEETLE),
        Vector("rp_split_runs", rp, "</s><s>" + loc(1, 2, 3) + "x" + loc(4, 5, 6, 7) + "</s>", BEETLE),
        Vector("rp_no_eos", rp, "</s><s><s>" + loc(*range(100, 110)), (144, 1040)),
        Vector("rp_pads", rp, "</s><s>" + loc(1, 2, 3, 4) + "</s>" + "<pad>" * 40, (144, 1040)),
        Vector("rp_empty", rp, "</s><s></s>", BEETLE),
    ]
    return v


def ocr_vectors() -> list[Vector]:
    q = "<OCR_WITH_REGION>"
    a = loc(100, 100, 200, 100, 200, 200, 100, 200)
    b = loc(300, 300, 400, 300, 400, 400, 300, 400)
    return [
        Vector("ocr_7_locs_merges_into_next", q, "</s><s>CUDA" + loc(1, 2, 3, 4, 5, 6, 7) + "FOR" + a + "</s>",
               BOOK_COVER),
        Vector("ocr_9_locs", q, "</s><s>CUDA" + a + loc(999) + "FOR" + b + "</s>", BOOK_COVER),
        Vector("ocr_16_locs_no_text_between", q, "</s><s>CUDA" + a + b + "</s>", (1024, 768)),
        Vector("ocr_locs_first_then_text", q, "</s><s>" + a + "abc" + b + "</s>", (1024, 768)),
        Vector("ocr_only_8_locs", q, "</s><s>" + a + "</s>", (1024, 768)),
        Vector("ocr_newline_in_text", q, "</s><s>A\nB" + a + "C\n" + b + "</s>", BEETLE),
        Vector("ocr_spaces_stripped", q, "</s><s>  spaced out \t" + a + "</s>", BEETLE),
        Vector("ocr_whitespace_only", q, "</s><s>   " + a + "</s>", BEETLE),
        Vector("ocr_non_ascii_kept", q, "</s><s>中新中" + a + " café " + b + "</s>", AUSTRALIA),
        Vector("ocr_no_eos_truncated", q, "</s><s>CUDA" + a + "FOR" + loc(1, 2, 3), BOOK_COVER),
        Vector("ocr_pads", q, "</s><s><s>CUDA" + a + "</s>" + "<pad>" * 7, (3, 7)),
        Vector("ocr_empty", q, "", BEETLE),
        Vector("ocr_text_only", q, "</s><s>no boxes at all</s>", BEETLE),
        Vector("ocr_sep_and_tags_in_text", q, "</s><s><ocr>x<sep>" + a + "</ocr></s>", BEETLE),
        Vector("ocr_bins_beyond_999", q, "</s><s>big" + loc(1000, 1500, 999, 0, 5, 5, 5, 5) + "</s>", (640, 640)),
        Vector("ocr_book_cover_fragment_other_size", q, "</s><s><s><s>CUDA" + loc(414, 100, 932, 100, 932, 229, 414,
                                                                                    229) + "</s>", (4096, 2160)),
    ]


def grounding_vectors() -> list[Vector]:
    g = "<CAPTION_TO_PHRASE_GROUNDING>"
    box = loc(100, 100, 500, 500)
    phrases = ["it", "I", "i", "The", "the", "the image", "a", "an", "a group", "other objects", "each other",
               " the ", "a\u00a0", "thé", "someone", "images", "a dog"]
    v = [Vector(f"grounding_phrase_{i}", g, "</s><s>" + p + box + "</s>", BEETLE) for i, p in enumerate(phrases)]
    v += [
        Vector("grounding_mixed_banned_and_kept", g,
               "</s><s><s>A green car" + box + "it" + loc(1, 2, 3, 4) + "a yellow building" + loc(0, 8, 998, 635) +
               "</s>", BEETLE),
        Vector("grounding_two_boxes_one_phrase", g, "</s><s>wheels" + loc(1, 2, 3, 4, 5, 6, 7, 8) + "</s>",
               AUSTRALIA),
        Vector("grounding_7_locs", g, "</s><s>wheels" + loc(1, 2, 3, 4, 5, 6, 7) + "</s>", AUSTRALIA),
        Vector("grounding_newline_in_phrase", g, "</s><s>green\ncar" + box + "sky" + box + "</s>", BEETLE),
        Vector("grounding_non_ascii", g, "</s><s>café au lait" + box + "中文" + box + "</s>", BEETLE),
        Vector("grounding_whitespace_phrase", g, "</s><s>  " + box + "</s>", BEETLE),
        Vector("grounding_no_eos", g, "</s><s>A green car" + loc(54, 330, 911), BEETLE),
        Vector("grounding_pads", g, "</s><s>A green car" + loc(54, 330, 911, 780) + "</s><pad><pad>", (451, 300)),
        Vector("grounding_empty", g, "</s><s></s>", BEETLE),
        # Every banned phrase once (only "dog" survives), then capitalised (all survive).
        Vector("grounding_every_banned_phrase", g,
               "</s><s>" + "".join(p + box for p in dict.fromkeys(BANNED_GROUNDING_TOKENS)) + "dog" + box + "</s>",
               BEETLE),
        Vector("grounding_banned_phrases_capitalised", g,
               "</s><s>" + "".join(p.upper() + box for p in dict.fromkeys(BANNED_GROUNDING_TOKENS) if p != "I") +
               "</s>", BEETLE),
    ]
    return v


def polygon_vectors() -> list[Vector]:
    v = []
    for task, size in [("<REFERRING_EXPRESSION_SEGMENTATION>", BEETLE), ("<REGION_TO_SEGMENTATION>", (1024, 768))]:
        t = "res" if task.startswith("<REF") else "r2s"
        v += [
            Vector(f"{t}_sep_two_polygons", task, "</s><s>" + loc(1, 2, 3, 4, 5, 6) + "<sep>" + loc(7, 8, 9, 10) +
                   "</s>", size),
            Vector(f"{t}_odd_count", task, "</s><s>" + loc(1, 2, 3, 4, 5, 6, 7) + "</s>", size),
            Vector(f"{t}_single_loc_after_sep", task, "</s><s>" + loc(1, 2, 3, 4) + "<sep>" + loc(5) + "</s>", size),
            Vector(f"{t}_poly_instances", task,
                   "</s><s><poly>" + loc(1, 2, 3, 4, 5, 6) + "</poly><poly>" + loc(7, 8, 9, 10) + "<sep>" +
                   loc(11, 12, 13, 14) + "</poly></s>", size),
            Vector(f"{t}_poly_without_end", task, "</s><s><poly>" + loc(1, 2, 3, 4, 5, 6) + "</s>", size),
            Vector(f"{t}_end_before_start", task, "</s><s></poly>" + loc(1, 2, 3, 4) + "<poly></s>", size),
            Vector(f"{t}_leading_sep_label", task, "</s><s>" + loc(1) + "<sep>" + loc(2, 3, 4, 5) + "</s>", size),
            Vector(f"{t}_3_locs", task, "</s><s>" + loc(1, 2, 3) + "</s>", size),
            Vector(f"{t}_text_label_ignored", task, "</s><s>car" + loc(1, 2, 3, 4, 5, 6) + "</s>", size),
            Vector(f"{t}_double_sep", task,
                   "</s><s>" + loc(1, 2, 3, 4) + "<sep><sep>" + loc(5, 6, 7, 8) + "</s>", size),
            Vector(f"{t}_run_before_poly", task,
                   "</s><s>" + loc(1, 2, 3, 4) + "<poly>" + loc(5, 6, 7, 8) + "</s>", size),
            Vector(f"{t}_no_eos_pads", task, "</s><s><s>" + loc(*range(200, 230)), size),
            Vector(f"{t}_pads", task, "</s><s>" + loc(*range(300, 320)) + "</s>" + "<pad>" * 9, size),
            Vector(f"{t}_empty", task, "", size),
            Vector(f"{t}_two_runs_separated_by_text", task,
                   "</s><s>" + loc(1, 2, 3, 4) + "x" + loc(5, 6, 7, 8, 9, 10) + "</s>", size),
        ]
    return v


def ovd_vectors() -> list[Vector]:
    o = "<OPEN_VOCABULARY_DETECTION>"
    return [
        Vector("ovd_boxes_non_ascii_label", o, "</s><s>café" + loc(1, 2, 3, 4) + "</s>", BEETLE),
        Vector("ovd_poly_mode", o,
               "</s><s>car<poly>" + loc(1, 2, 3, 4, 5, 6) + "</poly>dog<poly>" + loc(7, 8, 9, 10) + "<sep>" +
               loc(11, 12, 13, 14) + "</poly></s>", (1024, 768)),
        Vector("ovd_poly_non_ascii_label_kept", o, "</s><s>café<poly>" + loc(1, 2, 3, 4, 5, 6) + "</poly></s>",
               BEETLE),
        Vector("ovd_poly_without_labels", o, "</s><s><poly>" + loc(1, 2, 3, 4, 5, 6) + "</poly></s>", BEETLE),
        Vector("ovd_boxes_and_poly_mixed", o,
               "</s><s>car" + loc(1, 2, 3, 4) + "dog<poly>" + loc(5, 6, 7, 8) + "</poly></s>", BEETLE),
        Vector("ovd_poly_start_only", o, "</s><s>car<poly>" + loc(1, 2, 3, 4, 5) + "</s>", BEETLE),
        Vector("ovd_poly_sep_label", o, "</s><s>car<sep>" + loc(1, 2, 3, 4) + "<poly></s>", BEETLE),
        Vector("ovd_poly_newline_label", o, "</s><s>red\ncar<poly>" + loc(1, 2, 3, 4) + "</poly></s>", BEETLE),
        Vector("ovd_boxes_truncated", o, "</s><s>wheels" + loc(144, 570, 870, 778, 711, 573) + "</s>", BEETLE),
        Vector("ovd_empty", o, "</s><s></s><pad>", BEETLE),
        Vector("ovd_poly_after_eos", o, "</s><s>car" + loc(1, 2, 3, 4) + "</s><poly>", BEETLE),
    ]


FUZZ_PIECES = ["<s>", "<pad>", "<sep>", "<poly>", "</poly>", "<od>", "</od>", "<ground>", "<obj>", "car",
               "the image", "it", "a", " ", "  ", "\n", "\t", "\u00a0", "\u3000", "\u00e9", "\u4e2d", "<", ">",
               "loc_", "<loc_", "<loc_>", "<loc_12", "x"]


def fuzz_vectors(count: int, seed: int) -> list[Vector]:
    """Seeded random mixes of loc tokens, markers, text and whitespace: the corners no one writes by hand."""
    import random

    rng = random.Random(seed)
    sizes = [BEETLE, BOOK_COVER, AUSTRALIA, (1, 1), (7, 3), (144, 1040), (4096, 2160)]
    out = []
    for i in range(count):
        pieces = ["</s><s>"] if rng.random() < 0.8 else []
        for _ in range(rng.randint(0, 40)):
            if rng.random() < 0.55:
                pieces.append(f"<loc_{rng.choice([0, 1, 7, 42, 500, 998, 999, 1000, rng.randint(0, 999)])}>")
            else:
                pieces.append(rng.choice(FUZZ_PIECES))
        if rng.random() < 0.7:
            pieces.append("</s>" + "<pad>" * rng.randint(0, 3))
        out.append(Vector(f"fuzz_{seed}_{i}", rng.choice(ALL_TASKS), "".join(pieces), rng.choice(sizes)))
    return out


def all_vectors(fuzz: int = 0, seed: int = 0) -> list[Vector]:
    return (published_transformers() + published_transformers_js() + pure_text_vectors() + bbox_vectors() +
            ocr_vectors() + grounding_vectors() + polygon_vectors() + ovd_vectors() + fuzz_vectors(fuzz, seed))


# ---- Running transformers ---------------------------------------------------------------------------------

def make_processor(tokenizer_dir: Path):
    """transformers' native Florence2Processor as tests/tools/conftest.py builds it, plus the checkpoint's
    post-processor config."""
    from transformers import AutoTokenizer, CLIPImageProcessor, Florence2Processor

    image_processor = CLIPImageProcessor(do_resize=True, size={"height": 768, "width": 768}, resample=3,
                                         do_center_crop=False, do_rescale=True, rescale_factor=1 / 255,
                                         do_normalize=True)
    image_processor.image_seq_length = 577
    return Florence2Processor(image_processor=image_processor, tokenizer=AutoTokenizer.from_pretrained(tokenizer_dir),
                              post_processor_config=POST_PROCESSOR_CONFIG)


def _check_published(vec: Vector, got: Any) -> None:
    if vec.published is not None and got != vec.published:
        raise SystemExit(f"{vec.name}: transformers gives {got!r}, its tests print {vec.published!r}")
    if vec.published_float is not None:
        key = "quad_boxes" if "quad_boxes" in vec.published_float else "bboxes"
        truncated = [[int(c) for c in box] for box in vec.published_float[key]]
        if truncated != got[key]:
            raise SystemExit(f"{vec.name}: transformers.js floats truncate to {truncated}, transformers gives "
                             f"{got[key]}")
        for k, value in vec.published_float.items():
            if k != key and value != got[k]:
                raise SystemExit(f"{vec.name}: {k} is {got[k]!r} in transformers, {value!r} in transformers.js")


def generation_records(processor, vectors: list[Vector]) -> list[dict]:
    names = set()
    records = []
    for vec in vectors:
        if vec.name in names:
            raise SystemExit(f"duplicate vector name {vec.name}")
        names.add(vec.name)
        w, h = vec.size
        raw = processor.post_process_generation(vec.text, task=vec.task, image_size=(w, h))[vec.task]
        cut = processor.post_process_generation(cut_at_eos(vec.text), task=vec.task, image_size=(w, h))[vec.task]
        _check_published(vec, raw)
        rec = {"kind": "generation", "name": vec.name, "task": vec.task, "text": vec.text, "width": w, "height": h,
               "expected": cut}
        if raw != cut:
            rec["expected_uncut"] = raw
        if vec.published is not None:
            rec["published"] = vec.published
        if vec.published_float is not None:
            rec["published_float"] = vec.published_float
        records.append(rec)
    missing = set(ALL_TASKS) - {r["task"] for r in records}
    if missing:
        raise SystemExit(f"no vectors for {sorted(missing)}")
    return records


def dequantize_records(processor) -> list[dict]:
    import torch

    bins = list(range(1000)) + [1000, 1234, 4095]
    records = []
    for size in DEQUANTIZE_SIZES:
        # dequantize takes (width, height) and (x, y) pairs; pass the bins as x and as y.
        pairs = torch.tensor([[b, b] for b in bins])
        out = processor.post_processor.dequantize(pairs, size=(size, size)).tolist()
        records.append({"kind": "dequantize", "size": size, "bins": bins, "coords": [x for x, _ in out]})
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", type=Path, required=True,
                        help="directory with tokenizer.json / tokenizer_config.json (e.g. build/models/tiny)")
    parser.add_argument("--out", type=Path, required=True, help="JSON-lines file to write")
    parser.add_argument("--fuzz", type=int, default=100, help="number of seeded random generations to add")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random generations")
    args = parser.parse_args(argv)

    processor = make_processor(args.tokenizer)
    records = generation_records(processor, all_vectors(args.fuzz, args.seed)) + dequantize_records(processor)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    tmp.replace(args.out)
    gens = [r for r in records if r["kind"] == "generation"]
    print(f"{args.out}: {len(gens)} generations ({sum('expected_uncut' in r for r in gens)} where cutting at EOS "
          f"changes transformers' answer), {len(records) - len(gens)} dequantize tables", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
