"""Reads a replica's Prometheus /metrics (server/metrics.cc): calls answered by code, sequences decoding."""
from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections import Counter

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(port: int, timeout: float = 5.0) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of the text exposition: (name, labels, value)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
        text = response.read().decode()
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not an exposition line: {line!r}"
        samples.append((m.group(1), dict(LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return samples


def calls_by_code(port: int) -> Counter:
    """florence_requests_total summed over method and task: code name -> calls completed."""
    counts: Counter = Counter()
    for name, labels, value in scrape(port):
        if name == "florence_requests_total":
            counts[labels.get("code", "?")] += int(value)
    return counts


def active_sequences(port: int) -> int:
    """florence_active_sequences: sequences being decoded right now (requests past their encoder batch)."""
    for name, _, value in scrape(port):
        if name == "florence_active_sequences":
            return int(value)
    raise AssertionError(f"no florence_active_sequences on :{port}/metrics")


def try_calls_by_code(port: int) -> Counter | None:
    """calls_by_code, or None once the replica is gone (connection refused or reset)."""
    try:
        return calls_by_code(port)
    except (urllib.error.URLError, ConnectionError, OSError):
        return None
