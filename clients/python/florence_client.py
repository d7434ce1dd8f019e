#!/usr/bin/env python3
"""A small Python client for florence.v1.Florence (the florence2-server gRPC API).

    python clients/python/florence_client.py --server localhost:50051 --task od image.jpg --draw out.png
    python clients/python/florence_client.py --server localhost:50051 --task caption --stream image.jpg
    python clients/python/florence_client.py --server HOST:443 --tls-ca ca.pem --token "$TOKEN" \\
        --task phrase_grounding --text "a man in a suit" image.jpg --draw out.png

Sends the image file as it is (the server decodes JPEG, PNG, WebP, BMP and TIFF), prints the structured
result (detections, OCR regions, polygons, text) and optionally draws it onto a PNG. Without --stream it calls
the typed RPC that fits the task (Caption, Detect, Ocr, Segment, DescribeRegion); with --stream it calls the
server-streaming Run RPC and prints every event as it arrives, then the final result.

The Python stubs are generated from proto/florence/v1/florence.proto with grpcio-tools on first use, into
a cache directory keyed by the proto's content and the grpcio-tools / protobuf versions (see load_stubs);
nothing generated is checked in. Importable as a module: load_stubs, connect, build_typed_call,
build_task_request, format_result, format_event, draw_result.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

import grpc

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PROTO_DIR = REPO / "proto"
PROTO_FILE = "florence/v1/florence.proto"
CACHE_ENV = "FLORENCE_STUBS_CACHE"


# ---- Stubs ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stubs:
    pb2: ModuleType       # florence.v1.florence_pb2: the messages
    pb2_grpc: ModuleType  # florence.v1.florence_pb2_grpc: FlorenceStub


def default_cache_dir() -> Path:
    """$FLORENCE_STUBS_CACHE, else $XDG_CACHE_HOME/florence-serve/python-stubs (~/.cache/...)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "florence-serve" / "python-stubs"


def load_stubs(proto_dir: Path = DEFAULT_PROTO_DIR, cache_dir: Path | None = None) -> Stubs:
    """Generates (once per proto content and tool version) and imports the florence.v1 Python stubs.

    The stubs land in CACHE/<key>/florence/v1/florence_pb2{,_grpc}.py; CACHE/<key> goes to the front of
    sys.path, so `import florence.v1.florence_pb2` works afterwards too. Generation writes into a fresh
    temporary directory that is renamed into place, so concurrent first uses never see half-written files.
    """
    from google.protobuf import __version__ as protobuf_version
    from grpc_tools import protoc

    proto_dir = Path(proto_dir).resolve()
    proto = proto_dir / PROTO_FILE
    if not proto.is_file():
        raise FileNotFoundError(f"{proto} not found (pass --proto-dir, the directory that holds florence/v1/)")
    tools_version = importlib.metadata.version("grpcio-tools")
    key = hashlib.sha256(proto.read_bytes() + f"|{tools_version}|{protobuf_version}".encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = root / key
    if not (out / "florence" / "v1" / "florence_pb2_grpc.py").is_file():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".gen-", dir=root))
        try:
            well_known = Path(protoc.__file__).parent / "_proto"
            rc = protoc.main(["grpc_tools.protoc", f"-I{proto_dir}", f"-I{well_known}",
                              f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}",
                              str(proto)])
            if rc != 0:
                raise RuntimeError(f"grpc_tools.protoc failed ({rc}) on {proto}")
            # Regular packages, so no other "florence" namespace on sys.path can shadow or merge with them.
            (tmp / "florence" / "__init__.py").touch()
            (tmp / "florence" / "v1" / "__init__.py").touch()
            try:
                tmp.rename(out)
            except OSError:  # another process generated the same key first: use theirs
                if not out.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    pb2 = importlib.import_module("florence.v1.florence_pb2")
    pb2_grpc = importlib.import_module("florence.v1.florence_pb2_grpc")
    return Stubs(pb2, pb2_grpc)


# ---- Tasks ----------------------------------------------------------------------------------------------------

# Readable task names (as florence2-run's --task) in florence.v1.Task order: TASK_<NAME> = index + 1.
TASK_NAMES = (
    "caption", "detailed_caption", "more_detailed_caption", "od", "dense_region_caption", "region_proposal",
    "ocr", "ocr_with_region", "phrase_grounding", "referring_expression_segmentation",
    "region_to_segmentation", "open_vocabulary_detection", "region_to_category", "region_to_description",
    "region_to_ocr",
)
TEXT_TASKS = {"phrase_grounding", "referring_expression_segmentation", "open_vocabulary_detection"}
REGION_TASKS = {"region_to_segmentation", "region_to_category", "region_to_description", "region_to_ocr"}
SEGMENTATION_TASKS = {"referring_expression_segmentation", "region_to_segmentation"}


def task_enum(name: str) -> int:
    """florence.v1.Task value of a readable task name."""
    return TASK_NAMES.index(name) + 1


def task_name(value: int) -> str:
    return TASK_NAMES[value - 1] if 1 <= value <= len(TASK_NAMES) else f"task#{value}"


@dataclass(frozen=True)
class Inputs:
    """What one call sends besides the task."""
    image: bytes                                            # the encoded file
    text: str = ""                                          # text tasks
    region: tuple[float, float, float, float] | None = None  # region tasks: x1, y1, x2, y2 in pixels
    max_new_tokens: int | None = None
    num_beams: int | None = None
    min_new_tokens: int | None = None
    return_mask: bool = False                               # segmentation tasks


def check_inputs(task: str, inputs: Inputs) -> None:
    """Raises ValueError when the task's input is missing or given to a task that takes none."""
    if task in TEXT_TASKS and not inputs.text:
        raise ValueError(f"--task {task} needs --text")
    if task not in TEXT_TASKS and inputs.text:
        raise ValueError(f"--task {task} takes no --text")
    if task in REGION_TASKS and inputs.region is None:
        raise ValueError(f"--task {task} needs --region x1,y1,x2,y2")
    if task not in REGION_TASKS and inputs.region is not None:
        raise ValueError(f"--task {task} takes no --region")
    if inputs.return_mask and task not in SEGMENTATION_TASKS:
        raise ValueError(f"--mask needs a segmentation task ({', '.join(sorted(SEGMENTATION_TASKS))})")


def _options(stubs: Stubs, inputs: Inputs) -> Any:
    options = stubs.pb2.Options()
    if inputs.max_new_tokens is not None:
        options.max_new_tokens = inputs.max_new_tokens
    if inputs.num_beams is not None:
        options.num_beams = inputs.num_beams
    if inputs.min_new_tokens is not None:
        options.min_new_tokens = inputs.min_new_tokens
    return options


def _box(stubs: Stubs, region: tuple[float, float, float, float]) -> Any:
    x1, y1, x2, y2 = region
    return stubs.pb2.Box(x1=x1, y1=y1, x2=x2, y2=y2)


def build_typed_call(stubs: Stubs, task: str, inputs: Inputs) -> tuple[str, Any]:
    """The typed RPC for `task` and its request: ("Detect", DetectRequest(...)). Every typed response
    carries the full TaskResult in its `result` field."""
    pb = stubs.pb2
    check_inputs(task, inputs)
    image = pb.Image(encoded=inputs.image)
    options = _options(stubs, inputs)
    captions = {"caption": pb.CAPTION_DETAIL_BRIEF, "detailed_caption": pb.CAPTION_DETAIL_DETAILED,
                "more_detailed_caption": pb.CAPTION_DETAIL_PARAGRAPH}
    detects = {"od": pb.DETECT_MODE_OBJECTS, "dense_region_caption": pb.DETECT_MODE_DENSE_CAPTIONS,
               "region_proposal": pb.DETECT_MODE_PROPOSALS,
               "open_vocabulary_detection": pb.DETECT_MODE_OPEN_VOCABULARY,
               "phrase_grounding": pb.DETECT_MODE_GROUNDING}
    queries = {"region_to_category": pb.REGION_QUERY_CATEGORY,
               "region_to_description": pb.REGION_QUERY_DESCRIPTION, "region_to_ocr": pb.REGION_QUERY_TEXT}
    if task in captions:
        return "Caption", pb.CaptionRequest(image=image, detail=captions[task], options=options)
    if task in detects:
        return "Detect", pb.DetectRequest(image=image, mode=detects[task], text=inputs.text, options=options)
    if task in ("ocr", "ocr_with_region"):
        return "Ocr", pb.OcrRequest(image=image, with_regions=task == "ocr_with_region", options=options)
    if task == "referring_expression_segmentation":
        return "Segment", pb.SegmentRequest(image=image, expression=inputs.text,
                                            return_mask=inputs.return_mask, options=options)
    if task == "region_to_segmentation":
        return "Segment", pb.SegmentRequest(image=image, region=_box(stubs, inputs.region),
                                            return_mask=inputs.return_mask, options=options)
    if task in queries:
        return "DescribeRegion", pb.DescribeRegionRequest(image=image, region=_box(stubs, inputs.region),
                                                          query=queries[task], options=options)
    raise ValueError(f"unknown task {task!r}; one of: {', '.join(TASK_NAMES)}")


def build_task_request(stubs: Stubs, task: str, inputs: Inputs) -> Any:
    """The generic TaskRequest of the Run / RunStream RPCs."""
    check_inputs(task, inputs)
    request = stubs.pb2.TaskRequest(task=task_enum(task), image=stubs.pb2.Image(encoded=inputs.image),
                                    text=inputs.text, options=_options(stubs, inputs),
                                    return_mask=inputs.return_mask)
    if inputs.region is not None:
        request.region.CopyFrom(_box(stubs, inputs.region))
    return request


# ---- Connection -----------------------------------------------------------------------------------------------

def connect(server: str, tls_ca: Path | None = None, tls_cert: Path | None = None,
            tls_key: Path | None = None, server_name: str | None = None) -> grpc.Channel:
    """A channel to `server` (host:port): plaintext, or TLS when any TLS file is given (tls_ca verifies the
    server; tls_cert + tls_key present a client certificate for mTLS). Without tls_ca a TLS channel trusts
    the system roots."""
    if tls_ca is None and tls_cert is None and tls_key is None:
        return grpc.insecure_channel(server)
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(tls_ca).read_bytes() if tls_ca else None,
        private_key=Path(tls_key).read_bytes() if tls_key else None,
        certificate_chain=Path(tls_cert).read_bytes() if tls_cert else None)
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(server, credentials, options=options)


def auth_metadata(token: str | None) -> list[tuple[str, str]]:
    """The bearer-token metadata florence2-server --auth_token_file expects."""
    return [("authorization", f"Bearer {token}")] if token else []


# ---- Printing -------------------------------------------------------------------------------------------------

def _xy(x: float, y: float) -> str:
    return f"({x:.1f}, {y:.1f})"


def format_detection(d: Any) -> str:
    label = f"{d.label!r} " if d.label else ""
    b = d.box
    return f"{label}conf={d.confidence:.3f} box=[{b.x1:.1f}, {b.y1:.1f}, {b.x2:.1f}, {b.y2:.1f}]"


def format_ocr_region(r: Any) -> str:
    quad = " ".join(_xy(p.x, p.y) for p in r.quad)
    return f"{r.text!r} conf={r.confidence:.3f} quad={quad}"


def format_instance(i: Any) -> str:
    label = f"{i.label!r} " if i.label else ""
    polygons = "; ".join(" ".join(_xy(p.x, p.y) for p in poly.points) for poly in i.polygons)
    return f"{label}conf={i.confidence:.3f} polygons={len(i.polygons)}: {polygons}"


def format_result(result: Any) -> list[str]:
    """The TaskResult as readable lines: task and image size, text, each detection / OCR region / instance,
    then token counts and timings."""
    lines = [f"task: {task_name(result.task)}  image: {result.image_width}x{result.image_height}"]
    if result.text:
        lines.append(f"text: {result.text!r}")
    if result.detections:
        lines.append(f"detections: {len(result.detections)}")
        lines += [f"  [{k}] {format_detection(d)}" for k, d in enumerate(result.detections)]
    if result.ocr_regions:
        lines.append(f"ocr_regions: {len(result.ocr_regions)}")
        lines += [f"  [{k}] {format_ocr_region(r)}" for k, r in enumerate(result.ocr_regions)]
    if result.instances:
        lines.append(f"instances: {len(result.instances)}")
        lines += [f"  [{k}] {format_instance(i)}" for k, i in enumerate(result.instances)]
    if result.mask_png:
        lines.append(f"mask_png: {len(result.mask_png)} bytes")
    u = result.usage
    lines.append(f"usage: {u.prompt_tokens} prompt + {u.image_tokens} image tokens -> {u.generated_tokens} "
                 f"generated (beams {u.num_beams}, max {u.max_new_tokens}); total {u.total_ms:.1f} ms "
                 f"(queue {u.queue_ms:.1f}, prepare {u.prepare_ms:.1f}, encode {u.encode_ms:.1f}, "
                 f"decode {u.decode_ms:.1f})")
    return lines


def format_event(event: Any) -> str:
    """One RunEvent as one line: 'event text_delta: ...', 'event detection[0]: ...', 'event result'."""
    kind = event.WhichOneof("event")
    if kind == "text_delta":
        return f"event text_delta: {event.text_delta!r}"
    if kind == "detection":
        return f"event detection[{event.index}]: {format_detection(event.detection)}"
    if kind == "ocr_region":
        return f"event ocr_region[{event.index}]: {format_ocr_region(event.ocr_region)}"
    if kind == "instance":
        return f"event instance[{event.index}]: {format_instance(event.instance)}"
    if kind == "result":
        return "event result"
    return f"event {kind}"


def result_json(result: Any) -> str:
    from google.protobuf import json_format

    return json_format.MessageToJson(result, preserving_proto_field_name=True, indent=None)


# ---- Drawing --------------------------------------------------------------------------------------------------

PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40))


def draw_result(image_path: Path, result: Any, out: Path) -> int:
    """Draws the result's boxes, OCR quadrilaterals and polygons with their labels onto the image and
    saves it as a PNG of the original size. Returns how many shapes were drawn."""
    from PIL import Image, ImageDraw, ImageFont

    with Image.open(image_path) as im:
        base = im.convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    width = max(2, round(min(base.size) / 200))
    font = ImageFont.load_default()
    shapes = 0

    def label(xy: tuple[float, float], text: str, color: tuple[int, int, int]) -> None:
        if not text:
            return
        x, y = xy
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        h = bottom - top + 4
        y = y - h if y - h >= 0 else y  # above the shape, or inside it at the top edge
        draw.rectangle([x, y, x + right - left + 4, y + h], fill=color + (220,))
        draw.text((x + 2, y + 2 - top), text, fill=(255, 255, 255, 255), font=font)

    for k, d in enumerate(result.detections):
        color = PALETTE[k % len(PALETTE)]
        b = d.box
        # Generated boxes come in generation order; a model may emit x2 < x1 (transformers keeps it too).
        x1, x2 = sorted((b.x1, b.x2))
        y1, y2 = sorted((b.y1, b.y2))
        draw.rectangle([x1, y1, x2, y2], outline=color + (255,), width=width)
        label((x1, y1), d.label, color)
        shapes += 1
    for k, r in enumerate(result.ocr_regions):
        color = PALETTE[k % len(PALETTE)]
        points = [(p.x, p.y) for p in r.quad]
        if len(points) >= 2:
            draw.polygon(points, outline=color + (255,), width=width)
            label(points[0], r.text, color)
            shapes += 1
    for k, inst in enumerate(result.instances):
        color = PALETTE[k % len(PALETTE)]
        for poly in inst.polygons:
            points = [(p.x, p.y) for p in poly.points]
            if len(points) >= 2:
                draw.polygon(points, fill=color + (90,), outline=color + (255,), width=width)
                shapes += 1
        if inst.label and inst.polygons and inst.polygons[0].points:
            first = inst.polygons[0].points[0]
            label((first.x, first.y), inst.label, color)
    Image.alpha_composite(base, overlay).convert("RGB").save(out, format="PNG")
    return shapes


# ---- CLI ------------------------------------------------------------------------------------------------------

def parse_region(text: str) -> tuple[float, float, float, float]:
    parts = text.split(",")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError("a region is x1,y1,x2,y2")
    try:
        x1, y1, x2, y2 = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not numbers: {text!r}") from None
    return x1, y1, x2, y2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", type=Path, help="image file (JPEG, PNG, WebP, BMP, TIFF), sent as it is")
    p.add_argument("--server", default="localhost:50051", help="host:port (default: %(default)s)")
    p.add_argument("--task", default="caption", choices=TASK_NAMES, metavar="TASK",
                   help=f"one of: {', '.join(TASK_NAMES)} (default: %(default)s)")
    p.add_argument("--text", default="", help="the text input of phrase_grounding, "
                   "referring_expression_segmentation and open_vocabulary_detection")
    p.add_argument("--region", type=parse_region, help="x1,y1,x2,y2 in pixels, for the region_to_* tasks")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--num-beams", type=int, help="1 = greedy; unset: the server's default (3)")
    p.add_argument("--min-new-tokens", type=int)
    p.add_argument("--stream", action="store_true",
                   help="use the streaming Run RPC: print each event as it arrives, then the result")
    p.add_argument("--draw", type=Path, metavar="OUT.png", help="draw the boxes / quads / polygons onto a PNG")
    p.add_argument("--mask", type=Path, metavar="OUT.png", help="segmentation tasks: save the mask PNG")
    p.add_argument("--json", action="store_true", help="print the final TaskResult as one JSON line")
    p.add_argument("--token", default=os.environ.get("FLORENCE_TOKEN"),
                   help="bearer token (default: $FLORENCE_TOKEN)")
    p.add_argument("--tls-ca", type=Path, help="PEM CA that signed the server certificate; enables TLS")
    p.add_argument("--tls-cert", type=Path, help="PEM client certificate (mTLS), with --tls-key")
    p.add_argument("--tls-key", type=Path, help="PEM client key (mTLS)")
    p.add_argument("--server-name", help="TLS: expected server name when it differs from --server's host")
    p.add_argument("--timeout", type=float, default=300.0, help="deadline in seconds (default: %(default)s)")
    p.add_argument("--proto-dir", type=Path, default=DEFAULT_PROTO_DIR,
                   help="directory holding florence/v1/florence.proto (default: the repository's proto/)")
    return p.parse_args(argv)


def run(args: argparse.Namespace, out: Any = sys.stdout) -> Any:
    """Sends one request as the arguments say, prints as it goes, returns the final TaskResult."""
    stubs = load_stubs(args.proto_dir)
    inputs = Inputs(image=args.image.read_bytes(), text=args.text, region=args.region,
                    max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
                    min_new_tokens=args.min_new_tokens, return_mask=args.mask is not None)
    metadata = auth_metadata(args.token)
    with connect(args.server, args.tls_ca, args.tls_cert, args.tls_key, args.server_name) as channel:
        stub = stubs.pb2_grpc.FlorenceStub(channel)
        if args.stream:
            request = build_task_request(stubs, args.task, inputs)
            result = None
            for event in stub.Run(request, timeout=args.timeout, metadata=metadata):
                print(format_event(event), file=out, flush=True)
                if event.WhichOneof("event") == "result":
                    result = event.result
            if result is None:
                raise RuntimeError("the stream ended without a result event")
        else:
            method, request = build_typed_call(stubs, args.task, inputs)
            result = getattr(stub, method)(request, timeout=args.timeout, metadata=metadata).result
    if args.json:
        print(result_json(result), file=out)
    else:
        for line in format_result(result):
            print(line, file=out)
    if args.draw is not None:
        shapes = draw_result(args.image, result, args.draw)
        print(f"drew {shapes} shapes to {args.draw}", file=out)
    if args.mask is not None:
        args.mask.write_bytes(result.mask_png)
        print(f"wrote mask to {args.mask}", file=out)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except grpc.RpcError as e:
        print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
