#!/usr/bin/env python3
"""Baseline (c) of bench/baselines.py: the gRPC server a Florence-2 user would write instead of florence-serve.

A grpcio server on the same florence.v1 proto (Caption, Detect, Ocr) that wraps transformers'
Florence2ForConditionalGeneration holding the weights of a florence-serve model directory (seeded random or
real: the state dict is read from model.ts). Each call decodes the image with Pillow, runs the processor and
`generate()`, post-processes with the processor's `post_process_generation`, and answers the typed response.
`generate()` runs under one lock, one request at a time, as a careful user would write it: two concurrent
`generate()` calls on 2 cores only contend for the same cores. Threads: a grpcio pool of --workers.

  .venv/bin/python bench/hf_grpc_server.py --model models/florence2-base-random --port-file /tmp/p [--port 0]

Writes the bound port (then a newline) to --port-file once serving; runs until SIGTERM/SIGINT.
"""
from __future__ import annotations

import argparse
import io
import itertools
import json
import signal
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import hf_florence  # noqa: E402
from clients.python import florence_client  # noqa: E402


OCR_PATTERN = r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>"


class HfFlorence:
    """transformers' Florence-2 and processor, one generate() at a time."""

    def __init__(self, model_dir: Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.model, self.processor = hf_florence.load(model_dir, device, dtype)
        # The checkpoint's processor_config.json carries the post-processor's task table; the processor built
        # from our model directory has none, so give it the entries the served tasks parse with.
        from transformers.models.florence2.processing_florence2 import Florence2PostProcessor
        self.processor.post_processor = Florence2PostProcessor(
            config={"pure_text": {}, "description_with_bboxes": {},
                    "ocr": {"PATTERN": OCR_PATTERN, "AREA_THRESHOLD": 0.0}},
            tokenizer=self.processor.tokenizer)
        self.lock = threading.Lock()

    def run(self, prompt: str, image: Image.Image, num_beams: int, max_new: int, min_new: int) -> tuple[list[int], dict]:
        inputs = self.processor(text=prompt, images=image, return_tensors="pt")
        with self.lock:
            out = hf_florence.generate(self.model, inputs, num_beams, max_new, min_new)
        tokens = out[0].tolist()
        text = self.processor.batch_decode(out, skip_special_tokens=False)[0]
        parsed = self.processor.post_process_generation(text, task=prompt, image_size=image.size)
        return tokens, parsed[prompt]


class Servicer:
    """Caption / Detect / Ocr of florence.v1 over HfFlorence; anything malformed is INVALID_ARGUMENT."""

    def __init__(self, stubs: florence_client.Stubs, hf: HfFlorence) -> None:
        self.pb = stubs.pb2
        self.hf = hf
        self.invalid_argument = itertools.count()  # next() is atomic under the GIL; read at exit (--stats-file)

    def _run(self, request, context, prompt: str):
        if not request.image.encoded:
            next(self.invalid_argument)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "image.encoded is empty: send JPEG/PNG/... bytes")
        try:
            image = Image.open(io.BytesIO(request.image.encoded)).convert("RGB")
        except Exception as e:  # Pillow raises many types for bad data
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cannot decode the image: {e}")
        o = request.options
        num_beams = o.num_beams if o.HasField("num_beams") else 3
        max_new = o.max_new_tokens if o.HasField("max_new_tokens") else 1024
        min_new = o.min_new_tokens if o.HasField("min_new_tokens") else 0
        start = time.perf_counter()
        tokens, parsed = self.hf.run(prompt, image, num_beams, max_new, min_new)
        result = self.pb.TaskResult(token_ids=tokens, image_width=image.size[0], image_height=image.size[1])
        result.usage.generated_tokens = len(tokens) - 1
        result.usage.num_beams = num_beams
        result.usage.total_ms = (time.perf_counter() - start) * 1000
        return result, parsed

    def _box(self, b):
        return self.pb.Box(x1=b[0], y1=b[1], x2=b[2], y2=b[3])

    def Caption(self, request, context):
        prompt = {0: "<CAPTION>", 1: "<CAPTION>", 2: "<DETAILED_CAPTION>", 3: "<MORE_DETAILED_CAPTION>"}
        result, parsed = self._run(request, context, prompt[request.detail])
        result.text = parsed
        return self.pb.CaptionResponse(text=parsed, result=result)

    def Detect(self, request, context):
        if request.mode not in (0, 1):
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this baseline serves <OD> only")
        result, parsed = self._run(request, context, "<OD>")
        response = self.pb.DetectResponse(result=result)
        for box, label in zip(parsed.get("bboxes", []), parsed.get("labels", [])):
            response.detections.add(box=self._box(box), label=label)
        return response

    def Ocr(self, request, context):
        prompt = "<OCR_WITH_REGION>" if request.with_regions else "<OCR>"
        result, parsed = self._run(request, context, prompt)
        response = self.pb.OcrResponse(result=result)
        if request.with_regions:
            for quad, label in zip(parsed.get("quad_boxes", []), parsed.get("labels", [])):
                region = response.regions.add(text=label)
                for i in range(0, len(quad) - 1, 2):
                    region.quad.add(x=quad[i], y=quad[i + 1])
            response.text = "\n".join(parsed.get("labels", []))
        else:
            response.text = parsed
        return response


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--port", type=int, default=0, help="on 127.0.0.1; 0 = any free port")
    ap.add_argument("--port-file", type=Path, required=True)
    ap.add_argument("--stats-file", type=Path, help="written at exit: calls answered INVALID_ARGUMENT for a missing "
                    "image (the null-work call), JSON")
    ap.add_argument("--workers", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("--device", default="cpu", help="torch device of the model: cpu, cuda")
    ap.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    stubs = florence_client.load_stubs()
    hf = HfFlorence(args.model, args.device, getattr(torch, args.dtype))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers),
                         options=[("grpc.max_receive_message_length", 64 << 20)])
    servicer = Servicer(stubs, hf)
    handlers = {name: grpc.unary_unary_rpc_method_handler(
        getattr(servicer, name), request_deserializer=getattr(stubs.pb2, f"{name}Request").FromString,
        response_serializer=getattr(stubs.pb2, f"{name}Response").SerializeToString)
        for name in ("Caption", "Detect", "Ocr")}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("florence.v1.Florence", handlers),))
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    args.port_file.write_text(f"{port}\n")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=5).wait()
    if args.stats_file:
        args.stats_file.write_text(json.dumps({"invalid_argument_no_image": next(servicer.invalid_argument)}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
