"""Reference greedy and beam search over the scripted model's incremental interface.

These loops reproduce transformers' ``generate()`` semantics (v5 ``_sample`` / ``_beam_search``) for one
request, so that identical tokens prove the artefact and the decoding rules together. They are the
specification the C++ runtime ports: logits rules in the same order (no_repeat_ngram, min_new_tokens,
forced BOS, forced EOS), the same top-k of 2*num_beams candidates, the same length normalisation and
early-stopping rules. The caller-owned cache is handled the way the server does it: one row per beam,
reordered by copying only this request's rows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .config import GenerationDefaults


@dataclass
class GenerationParams:
    max_new_tokens: int = 1024
    min_new_tokens: int = 0
    num_beams: int = 3
    no_repeat_ngram_size: int = 3
    length_penalty: float = 1.0
    early_stopping: bool = True
    decoder_start_token_id: int = 2
    forced_bos_token_id: int | None = 0
    forced_eos_token_id: int | None = 2
    eos_token_id: int = 2
    pad_token_id: int = 1

    @staticmethod
    def from_defaults(g: GenerationDefaults, **overrides) -> "GenerationParams":
        p = GenerationParams(
            max_new_tokens=g.max_new_tokens, num_beams=g.num_beams, no_repeat_ngram_size=g.no_repeat_ngram_size,
            length_penalty=g.length_penalty, early_stopping=g.early_stopping,
            decoder_start_token_id=g.decoder_start_token_id, forced_bos_token_id=g.forced_bos_token_id,
            forced_eos_token_id=g.forced_eos_token_id, eos_token_id=g.eos_token_id, pad_token_id=g.pad_token_id)
        for k, v in overrides.items():
            setattr(p, k, v)
        return p


@dataclass
class Generation:
    tokens: list[int]                 # decoder sequence incl. the start token, cut after EOS
    scores: list[float] = field(default_factory=list)  # per generated token: log-prob under the model (processed)
    sequence_score: float | None = None                # beam search: length-normalised sum of log-probs


@dataclass
class EncodedRequest:
    """What prefill produces for one request: its cross K/V and mask, ready for decode steps."""

    cross_k: Tensor     # [L, 1, H, S, hd]
    cross_v: Tensor
    cross_mask: Tensor  # [1, S]


# The server pads the self and cross lengths a decode step attends over to multiples of this (see
# kAttentionLengthQuantum in batching/scheduler.cc: the CPU attention kernels' sums depend on the padded length,
# and an int8 export's per-row quantization can magnify that into different tokens); the reference does the same,
# so its steps are bit-identical to the server's.
ATTENTION_LENGTH_QUANTUM = 16


def round_up_to_quantum(n: int) -> int:
    return -(-n // ATTENTION_LENGTH_QUANTUM) * ATTENTION_LENGTH_QUANTUM


def prefill(model, pixel_values: Tensor, input_ids: Tensor) -> EncodedRequest:
    """image features -> encoder -> cross K/V for one image and one unpadded prompt ``[1, T]``, the K/V and mask
    zero-padded to a whole ATTENTION_LENGTH_QUANTUM of encoder positions (the padding masked out)."""
    feats = model.image_features(pixel_values)
    mask = torch.ones(1, feats.shape[1] + input_ids.shape[1], dtype=torch.long)
    enc = model.encode(feats, input_ids, mask)
    k, v = model.cross_kv(enc)
    pad = round_up_to_quantum(mask.shape[1]) - mask.shape[1]
    if pad > 0:
        k = torch.nn.functional.pad(k, [0, 0, 0, pad])
        v = torch.nn.functional.pad(v, [0, 0, 0, pad])
        mask = torch.nn.functional.pad(mask, [0, pad])
    return EncodedRequest(k, v, mask)


def apply_logits_rules(scores: Tensor, seqs: list[list[int]], p: GenerationParams, max_length: int) -> Tensor:
    """transformers' processors, in its order, on [rows, V] scores; ``seqs`` are the decoder tokens so far."""
    scores = scores.clone()
    cur_len = len(seqs[0])
    n = p.no_repeat_ngram_size
    if n > 0 and cur_len + 1 >= n:
        for row, seq in enumerate(seqs):
            prefix = tuple(seq[cur_len + 1 - n:])
            banned = [seq[i + n - 1] for i in range(cur_len - n + 1) if tuple(seq[i:i + n - 1]) == prefix]
            if banned:
                scores[row, banned] = -math.inf
    if cur_len - 1 < p.min_new_tokens:
        scores[:, p.eos_token_id] = -math.inf
    if p.forced_bos_token_id is not None and cur_len == 1:
        scores[:] = -math.inf
        scores[:, p.forced_bos_token_id] = 0.0
    if p.forced_eos_token_id is not None and cur_len == max_length - 1:
        scores[:] = -math.inf
        scores[:, p.forced_eos_token_id] = 0.0
    return scores


def _new_cache(model, rows: int, max_len: int) -> tuple[Tensor, Tensor]:
    """Self K/V for ``max_len`` positions, rounded up to a whole ATTENTION_LENGTH_QUANTUM."""
    n = round_up_to_quantum(max_len)
    return model.empty_self_cache(rows, n), model.empty_self_cache(rows, n)


def greedy(model, req: EncodedRequest, p: GenerationParams) -> Generation:
    max_length = 1 + p.max_new_tokens
    self_k, self_v = _new_cache(model, 1, max_length)
    seq = [p.decoder_start_token_id]
    scores: list[float] = []
    while len(seq) < max_length:
        pos = len(seq) - 1
        logits = model.decode_step(torch.tensor([seq[-1]]), torch.tensor([pos]), self_k, self_v,
                                   req.cross_k, req.cross_v, req.cross_mask, torch.zeros(1, dtype=torch.long))
        processed = apply_logits_rules(logits, [seq], p, max_length)
        token = int(torch.argmax(processed[0]))
        scores.append(float(torch.log_softmax(processed[0], dim=-1)[token]))
        seq.append(token)
        if token == p.eos_token_id:
            break
    return Generation(seq, scores)


def beam_search(model, req: EncodedRequest, p: GenerationParams) -> Generation:
    """transformers v5 ``_beam_search`` for batch size 1 (num_return_sequences=1)."""
    nb = p.num_beams
    max_length = 1 + p.max_new_tokens
    keep = 2 * nb  # max(2, 1 + n_eos) * num_beams with one EOS id
    cross_rows = torch.zeros(nb, dtype=torch.long)  # every beam reads the request's one cross K/V row
    self_k, self_v = _new_cache(model, nb, max_length)

    running = [[p.decoder_start_token_id] for _ in range(nb)]
    running_scores = torch.full((nb,), -1e9)
    running_scores[0] = 0.0
    finished: list[list[int]] = [[] for _ in range(nb)]
    finished_scores = torch.full((nb,), -1e9)
    is_finished = torch.zeros(nb, dtype=torch.bool)
    heuristic_unsatisfied = True
    cur_len = 1
    while True:
        pos = torch.full((nb,), cur_len - 1, dtype=torch.long)
        last = torch.tensor([s[-1] for s in running])
        logits = model.decode_step(last, pos, self_k, self_v, req.cross_k, req.cross_v, req.cross_mask, cross_rows)
        log_probs = apply_logits_rules(torch.log_softmax(logits, dim=-1), running, p, max_length)
        vocab = log_probs.shape[-1]
        acc = (log_probs + running_scores[:, None]).reshape(-1)
        top_scores, top_idx = torch.topk(acc, k=keep)
        src_beam = (top_idx // vocab).tolist()
        tokens = (top_idx % vocab).tolist()
        cand = [running[b] + [t] for b, t in zip(src_beam, tokens)]
        hits_stop = torch.tensor([t == p.eos_token_id or cur_len + 1 >= max_length for t in tokens])

        # Next running beams: best nb candidates that did not stop.
        run_scores = top_scores + hits_stop.float() * -1e9
        next_idx = torch.topk(run_scores, k=nb)[1].tolist()
        new_running = [cand[i] for i in next_idx]
        new_running_scores = run_scores[next_idx]

        # Finished beams: merge the top-nb candidates that just stopped with those already kept.
        top_nb_mask = torch.zeros(keep, dtype=torch.bool)
        top_nb_mask[:nb] = True
        just_finished = hits_stop & top_nb_mask
        fin_scores = top_scores / ((cur_len + 1 - 1) ** p.length_penalty)
        if bool(is_finished.all()) and p.early_stopping:
            fin_scores = fin_scores - 1e9
        if not heuristic_unsatisfied:
            fin_scores = fin_scores - 1e9
        fin_scores = fin_scores + (~just_finished).float() * -1e9
        merged_scores = torch.cat([finished_scores, fin_scores])
        merged = finished + cand
        merged_fin = torch.cat([is_finished, just_finished])
        pick = torch.topk(merged_scores, k=nb)[1].tolist()
        finished = [merged[i] for i in pick]
        finished_scores = merged_scores[pick]
        is_finished = merged_fin[pick]

        # Reorder this request's cache rows to follow the surviving beams.
        rows = torch.tensor([src_beam[i] for i in next_idx])
        self_k.copy_(self_k.index_select(1, rows))
        self_v.copy_(self_v.index_select(1, rows))
        running, running_scores = new_running, new_running_scores
        cur_len += 1

        if heuristic_unsatisfied:
            best_running = running_scores[0] / ((cur_len - 1) ** p.length_penalty)
            worst = torch.where(is_finished, finished_scores.min(), torch.tensor(-1e9))
            heuristic_unsatisfied = bool((best_running > worst).any())
        open_beam = not (bool(is_finished.all()) and p.early_stopping)
        if not (heuristic_unsatisfied and open_beam and not bool(hits_stop.all())):
            break
    best = finished[0]
    return Generation(best, [], float(finished_scores[0]))


def generate(model, req: EncodedRequest, p: GenerationParams) -> Generation:
    return greedy(model, req, p) if p.num_beams == 1 else beam_search(model, req, p)


def teacher_forced_logits(model, req: EncodedRequest, tokens: list[int]) -> Tensor:
    """Logits [len(tokens) - 1, V] of ``model`` fed the decoder sequence ``tokens`` (start token first) one
    decode_step at a time: row i is the distribution over tokens[i + 1] (precision parity figures)."""
    k, v = _new_cache(model, 1, len(tokens))
    rows = torch.zeros(1, dtype=torch.long)
    return torch.cat([model.decode_step(torch.tensor([t]), torch.tensor([pos]), k, v, req.cross_k, req.cross_v,
                                        req.cross_mask, rows) for pos, t in enumerate(tokens[:-1])])
