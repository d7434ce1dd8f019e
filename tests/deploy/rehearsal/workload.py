"""The rehearsal's client side: a fixed set of unary calls with known answers, a bounded multi-threaded load
over one channel that records every call's outcome, and a server-streaming Run call watched event by event.

Answers are deterministic: the same request to the same model gives the same tokens, text and boxes whatever
replica or batch serves it (float32 on the CPU; only the log-probabilities may differ in their last bits), and
min_new_tokens == max_new_tokens fixes the length (the tiny random model never stops by itself). So every
successful answer can be compared with a reference taken before the chaos.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import grpc

CALL_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class UnaryCall:
    method: str  # a unary method of florence.v1.Florence: "Caption" or "Detect"
    request: Any


def raw_image(pb: Any, seed: int, width: int = 64, height: int = 48) -> Any:
    """A small deterministic RGB image (raw pixels: no codec involved)."""
    return pb.Image(raw=pb.RawImage(rgb=random.Random(seed).randbytes(width * height * 3), width=width,
                                    height=height))


def fixed_length(pb: Any, tokens: int) -> Any:
    return pb.Options(max_new_tokens=tokens, min_new_tokens=tokens, num_beams=1)


def unary_calls(pb: Any, tokens: tuple[int, ...]) -> list[UnaryCall]:
    """Captions at each detail level and object detections, on three images, of the given lengths."""
    images = [raw_image(pb, seed) for seed in range(3)]
    details = [pb.CAPTION_DETAIL_BRIEF, pb.CAPTION_DETAIL_DETAILED, pb.CAPTION_DETAIL_PARAGRAPH]
    calls = [UnaryCall("Caption", pb.CaptionRequest(image=images[i], detail=details[i],
                                                    options=fixed_length(pb, tokens[i % len(tokens)])))
             for i in range(3)]
    calls += [UnaryCall("Detect", pb.DetectRequest(image=images[i], mode=pb.DETECT_MODE_OBJECTS,
                                                   options=fixed_length(pb, tokens[(3 + i) % len(tokens)])))
              for i in range(2)]
    return calls


LOGPROB_TOLERANCE = 1e-4


def _without_scores(response: Any) -> Any:
    """The response without timings (usage), which differ from call to call, and without float scores."""
    copy = type(response)()
    copy.CopyFrom(response)
    result = copy.result
    for name in ("usage", "token_logprobs", "sequence_score"):
        result.ClearField(name)
    items = [*result.detections, *result.instances, *result.ocr_regions]
    for name in ("detections", "instances", "regions"):
        if name in type(copy).DESCRIPTOR.fields_by_name:
            items += list(getattr(copy, name))
    for item in items:
        item.ClearField("confidence")
    return copy


def same_answer(response: Any, reference: Any) -> bool:
    """Same tokens, text, boxes and labels; log-probabilities (and the confidences and scores made of them)
    equal within LOGPROB_TOLERANCE: a sequence decoded in another decoder batch gets the same tokens but its
    float32 log-softmax may differ in the last bits (~1e-6)."""
    if _without_scores(response) != _without_scores(reference):
        return False
    a, b = response.result, reference.result
    return (len(a.token_logprobs) == len(b.token_logprobs)
            and all(abs(x - y) <= LOGPROB_TOLERANCE for x, y in zip(a.token_logprobs, b.token_logprobs))
            and abs(a.sequence_score - b.sequence_score) <= LOGPROB_TOLERANCE * max(1, len(a.token_logprobs)))


def references(stub: Any, calls: list[UnaryCall]) -> list[Any]:
    return [getattr(stub, c.method)(c.request, timeout=CALL_TIMEOUT_S) for c in calls]


def last_upstream(metadata: Any) -> str:
    """The replica that answered, from nginx's x-upstream-addr ("A, B" when nginx itself moved on to B)."""
    value = dict(metadata or ()).get("x-upstream-addr", "")
    return value.split(",")[-1].strip()


@dataclass
class CallRecord:
    index: int        # into the call list
    started: float    # time.monotonic()
    ended: float
    code: str         # "OK" or the grpc.StatusCode name
    details: str
    upstream: str     # the replica that answered (through nginx); "" otherwise
    matches: bool     # OK and the same answer as the reference (same_answer)


class Load:
    """`threads` threads share one stub (so one channel) and send the calls in turn, each waiting for its
    answer before the next, until stop() or `max_calls` calls or `max_seconds`. Every call is recorded."""

    def __init__(self, stub: Any, calls: list[UnaryCall], refs: list[Any], threads: int, max_calls: int,
                 max_seconds: float) -> None:
        self.stub, self.calls, self.refs = stub, calls, refs
        self.max_calls = max_calls
        self.deadline = time.monotonic() + max_seconds
        self.records: list[CallRecord] = []
        self._next = 0
        self._lock = threading.Lock()  # guards _next and records
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True, name=f"load-{i}") for i in range(threads)]

    def start(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, f"load threads still running after {timeout} s: {alive}"

    def completed(self) -> int:
        with self._lock:
            return len(self.records)

    def snapshot(self) -> list[CallRecord]:
        with self._lock:
            return list(self.records)

    def _take(self) -> int | None:
        with self._lock:
            if self._stop.is_set() or self._next >= self.max_calls or time.monotonic() > self.deadline:
                return None
            self._next += 1
            return self._next - 1

    def _run(self) -> None:
        while (n := self._take()) is not None:
            index = n % len(self.calls)
            call = self.calls[index]
            started = time.monotonic()
            try:
                response, rpc = getattr(self.stub, call.method).with_call(
                    call.request, timeout=CALL_TIMEOUT_S)
                record = CallRecord(index, started, time.monotonic(), "OK", "",
                                    last_upstream(rpc.initial_metadata()),
                                    same_answer(response, self.refs[index]))
            except grpc.RpcError as e:
                record = CallRecord(index, started, time.monotonic(), e.code().name, e.details() or "",
                                    last_upstream(e.initial_metadata()), False)
            with self._lock:
                self.records.append(record)


@dataclass
class StreamCall:
    """One Run call consumed on its own thread: its events, the replica that serves it (through nginx), how
    it ended."""
    stub: Any
    request: Any
    events: int = 0
    upstream: str = ""
    code: str = ""     # "OK" or the status code name, once done
    details: str = ""
    first_event: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> "StreamCall":
        threading.Thread(target=self._run, daemon=True, name="stream").start()
        return self

    def _run(self) -> None:
        call = self.stub.Run(self.request, timeout=CALL_TIMEOUT_S)
        try:
            for _ in call:
                if self.events == 0:
                    self.upstream = last_upstream(call.initial_metadata())
                self.events += 1
                self.first_event.set()
            self.code = "OK"
        except grpc.RpcError as e:
            self.code, self.details = e.code().name, e.details() or ""
        finally:
            self.first_event.set()
            self.done.set()


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.01) -> None:
    """Polls `condition` (the state of other processes, such as a replica's /metrics, which sends no
    notification) until it holds; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting until {what}")
