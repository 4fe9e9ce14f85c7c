"""Candidates, their confidence, and the choice among them.

The greedy generation is the first candidate.  When it fails the validity gate
(``engine/gate.py``) or when the client asks for several
suggestions, other candidates branch from it: the next most likely tokens at the first
position where the model chose freely (after the healed prefix), each continued greedily.
They share the evaluated prompt (the backend cuts the KV cache back to the prompt's end
between candidates: ``branch``), and they are tried only while the request stays within
its time share.  The order: suggestions that pass the gate as generated, then trimmed ones;
within each, the model's own mean log-probability.  A suggestion whose confidence (the
geometric mean of the probabilities of the tokens the model wrote itself, past the healed
prefix, or the square root of the least likely of its first few, whichever is lower) is
under the bar is not shown.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lsp_server.backends import GenerationResult
from lsp_server.engine import gate as validity

# Extra time the candidates may take, as a share of the time the request took so far
# (checked before each candidate is started).
TIME_SHARE = 0.3
# A branch may generate at most this many tokens more than the greedy one did.
BRANCH_EXTRA_TOKENS = 4
# An alternative shown in place of a greedy suggestion that was under the bar must reach
# this confidence (or the bar, if higher).  The confidence leaves out the tokens that spell
# typed text, often the very token where the alternative branched, so it does not see that
# the model preferred another start.  Of the alternatives shown that way on the repo-line
# dev set (warm), the exact ones had 0.67-0.94 and most of the wrong ones 0.55-0.75
# (docs/suggestion-quality.md).
UNSURE_ALTERNATIVE_BAR = 0.8
# In place of an unsure greedy suggestion only the next most likely start is tried (in the
# 9 explicit requests where ranking by mean found the exact line and the greedy-first order
# did not, it was that one), and only as a short text: at most this many tokens after the
# branch (the exact ones were a name, a call or an annotation: ``BadOptionUsage(``,
# ``NotAnAttrsClassError(msg)``, ``Converter):``); one that runs longer is not used.
UNSURE_ALTERNATIVE_TOKENS = 10
# ... and only where the model hesitated: the next start is at least half as likely as the
# chosen one (log-probability within this of it).  Tried on every unsure suggestion, the
# alternatives cost the keystroke's p50 1.56-1.63x today's (latency.py) against 1.12x
# without them; with this rule 1.41x (and 2 of the 6 exact lines they had found).
CLOSE_CALL = math.log(2)
# The confidence also looks at the least likely of the first tokens the model wrote: those
# decide what the suggestion is (a name, an operator), the rest mostly follows from them and
# is likely whatever they were, which lifts the mean of a long wrong suggestion.  One unsure
# early choice makes the whole suggestion unsure; its square root puts one token's
# probability on the scale of a mean (0.3 -> 0.55).  With the bar at 0.55, measured with
# the answers known (docs/suggestion-quality.md), 88-100% of the right suggestions and at
# most half of the wrong ones stay in the per-case sweeps of both dev sets (warm and cold)
# and a held-out set; the mean alone at 0.7 kept 64% of the right held-out ones.
EARLY_TOKENS = 6


@dataclass
class Candidate:
    text: str
    mean_logprob: float  # over the tokens that make ``text`` (-inf: none)
    min_logprob: float
    verdict: str  # "pass", "trimmed", "dropped" (gate), "off" (no gate)
    tokens: int = 0  # tokens scored (0: the backend gives no log-probabilities)
    logprobs: tuple[float, ...] = ()  # of the kept tokens, in order
    forced: int = 0  # leading kept tokens that cover the forced prefix (not scored)

    @property
    def known(self) -> bool:
        return self.tokens > 0

    @property
    def confidence(self) -> float:
        """0..1: the geometric mean of the probabilities of the tokens the model wrote
        itself, or the square root of the lowest of them among the first
        ``EARLY_TOKENS``, whichever is lower."""
        return confidence_of(self.mean_logprob, own_logprobs(self.logprobs, self.forced))

    @property
    def tier(self) -> int:
        return {"pass": 0, "off": 0, "trimmed": 1}.get(self.verdict, 2)


@dataclass(frozen=True)
class ChoiceOptions:
    gate: bool = True
    candidates: int = 1  # 1: the greedy one only
    min_confidence: float = 0.0  # 0: every suggestion is shown
    items: int = 1  # suggestions the client wants
    unsure: bool = False  # also try an alternative in place of a suggestion under the bar


def kept_logprobs(gen: GenerationResult, forced_len: int, kept_len: int) -> list[float]:
    """Log-probabilities of the generated tokens that make the kept text (the forced
    prefix, then ``kept_len`` characters of the suggestion)."""
    if not gen.logprobs or len(gen.token_ends) != len(gen.logprobs):
        return []
    out: list[float] = []
    start = 0
    for lp, end in zip(gen.logprobs, gen.token_ends, strict=True):
        if start >= forced_len + kept_len and out:
            break
        out.append(lp)
        start = end
    return out


def forced_tokens(gen: GenerationResult, forced_len: int) -> int:
    """How many leading tokens start inside the forced (healed) prefix: they spell text
    the user typed, and their unmasked probability is the model's opinion of that text,
    not of the suggestion."""
    n, start = 0, 0
    for end in gen.token_ends:
        if start >= forced_len:
            break
        n += 1
        start = end
    return n


def own_logprobs(lps: Sequence[float], n_forced: int) -> Sequence[float]:
    """The log-probabilities that make the confidence: those of the model's own text
    (all of them when every kept token covers typed text)."""
    return lps[n_forced:] or lps


def confidence_of(mean_logprob: float, own: Sequence[float]) -> float:
    """``Candidate.confidence``'s measure from the mean log-probability and the model's
    own tokens' log-probabilities, in order."""
    if mean_logprob == -math.inf:
        return 0.0
    early = min(own[:EARLY_TOKENS]) / 2 if own else 0.0
    return math.exp(min(mean_logprob, early))


def give_up_rule(bar: float, forced_len: int) -> Callable[[str, Sequence[float], Sequence[int]], bool] | None:
    """A ``GenerationRequest.give_up`` that stops as soon as the suggestion cannot reach
    ``bar``: one of the first ``EARLY_TOKENS`` tokens the model wrote itself (past the
    forced prefix) is less likely than ``bar`` squared, so the confidence is under the bar
    whatever follows.  Only tokens on the suggestion's first line with code count: the
    caller uses it where that line is kept as written (nothing after the cursor on its
    line; when the model ends the cursor's line or leaves it blank, the suggestion is the
    next line with code, ``postprocess._grow_line``, without the blanks before it).  A
    hidden suggestion then costs the tokens up to that one, not the whole line and the
    lines looked ahead at.  None when there is no bar."""
    if bar <= 0:
        return None
    floor = 2 * math.log(bar)

    def counted(own: str, start: int, end: int) -> bool:
        """Whether the token at ``start:end`` of ``own`` (the text past the forced
        prefix) is surely among the scored tokens of what the cleanup keeps of ``own``."""
        if "\n" not in own[:end]:
            return True  # on the first line, kept as written
        lines = own.split("\n")
        if lines[0].strip():
            return False  # a line after one with code: cleanup may cut there
        # The model ended the cursor's line: the suggestion is the lines up to the first
        # with code, blanks emptied (``_grow_line``), scored on the tokens that start
        # within its length (``kept_logprobs``); the line may still grow.
        code = next((k for k in range(1, len(lines)) if lines[k].strip()), len(lines) - 1)
        if own.count("\n", 0, start) > code:
            return False
        kept = len("\n" + "\n".join(line.rstrip() for line in lines[1 : code + 1]))
        return start < kept

    def doomed(text: str, logprobs: Sequence[float], ends: Sequence[int]) -> bool:
        own = text[forced_len:]
        seen = 0
        for j, lp in enumerate(logprobs):
            start = ends[j - 1] if j > 0 else 0
            if start < forced_len:
                continue
            seen += 1
            if seen > EARLY_TOKENS:
                return False
            if lp < floor and counted(own, start - forced_len, ends[j] - forced_len):
                return True
        return False

    return doomed


def boundaries(gen: GenerationResult, forced_len: int) -> list[int]:
    """Token ends as offsets in the suggestion (after the forced prefix)."""
    return [e - forced_len for e in gen.token_ends if e > forced_len]


def make_candidate(
    gen: GenerationResult,
    text: str,
    forced_len: int,
    ctx: validity.GateContext | None,
    use_gate: bool,
) -> Candidate:
    """Gate ``text`` (the cleaned generation) and score what is left."""
    verdict = "off"
    if use_gate and text:
        kept = validity.trim(ctx, text, boundaries(gen, forced_len))
        verdict = "pass" if kept == text else ("trimmed" if kept else "dropped")
        text = kept
    scored = kept_logprobs(gen, forced_len, len(text)) if text else []
    n_forced = min(forced_tokens(gen, forced_len), len(scored))
    lps = own_logprobs(scored, n_forced)
    mean = sum(lps) / len(lps) if lps else -math.inf
    return Candidate(text, mean, min(lps) if lps else -math.inf, verdict, len(lps), tuple(scored), n_forced)


def branch_point(gen: GenerationResult, forced_len: int) -> int | None:
    """The first step at which the model chose text of its own (past the healed prefix)."""
    for i, end in enumerate(gen.token_ends):
        if end > forced_len:
            return i if i < len(gen.top) else None
    return None


def wants_more(first: Candidate, opts: ChoiceOptions, rejected: bool = False) -> bool:
    """Whether to try other candidates.  ``rejected``: the model wrote something that
    cleanup could not use (e.g. a line that never meets the text after the cursor)."""
    if opts.candidates <= 1:
        return False
    if opts.items > 1 or rejected:
        return True
    # A suggestion under the bar would not be shown: another first token may give one that
    # is.  Where the model hesitates between two names (``ValueError(`` / ``BadParameter(``),
    # the right one is often the alternative, and then the rest of it follows surely
    # (confidence 0.48 -> 0.93); on explicit requests, ranking all three by mean put an
    # exact line first 34 times against the greedy's 28 of 164 (docs/suggestion-quality.md).
    # Such an alternative must reach ``UNSURE_ALTERNATIVE_BAR`` (``choose``).
    return replaces_unsure(first, opts) or first.tier > 0


def replaces_unsure(first: Candidate, opts: ChoiceOptions, rejected: bool = False) -> bool:
    """Whether alternatives are wanted only to stand in for ``first``, a suggestion that
    passed the gate but is under the bar (``unsureAlternatives``; nothing else asked for
    them).  Not when the model ended there (nothing written): nothing says another start
    is better."""
    return (
        opts.unsure
        and not rejected
        and opts.items <= 1
        and first.tier == 0
        and first.known
        and bool(first.text.strip())
        and 0 < opts.min_confidence
        and first.confidence < opts.min_confidence
    )


def choose(
    first_gen: GenerationResult,
    first: Candidate,
    opts: ChoiceOptions,
    *,
    forced_len: int,
    branch: Callable[[Sequence[int], int], GenerationResult | None] | None,
    build: Callable[[GenerationResult], Candidate],
    deadline: float,
    cancel: threading.Event,
    rejected: bool = False,
) -> tuple[list[Candidate], int]:
    """The candidates worth showing, best first, and how many were generated.

    ``branch(head, max_tokens)`` generates a candidate that starts with ``head``;
    ``build`` cleans, gates and scores one.  Alternatives are started only before
    ``deadline`` (``time.perf_counter()``) and while ``cancel`` is clear."""
    cands = [first]
    tried = 1
    # Alternatives that would only stand in for an unsure greedy suggestion: one close
    # call, short, and a higher bar than the greedy one's.
    replacing = replaces_unsure(first, opts, rejected)
    if branch is not None and wants_more(first, opts, rejected):
        b = branch_point(first_gen, forced_len)
        if b is not None:
            chosen = first_gen.tokens[b]
            alts = [t for t, _ in first_gen.top[b] if t != chosen][: opts.candidates - 1]
            cap = len(first_gen.tokens) + BRANCH_EXTRA_TOKENS
            if replacing:
                # Only a close call: the next start at least half as likely as the chosen one.
                top = dict(first_gen.top[b])
                close = [t for t in alts[:1] if top.get(t, -math.inf) >= top.get(chosen, 0.0) - CLOSE_CALL]
                alts, cap = close, b + 1 + UNSURE_ALTERNATIVE_TOKENS
            for alt in alts:
                if cancel.is_set() or time.perf_counter() >= deadline:
                    break
                gen = branch([*first_gen.tokens[:b], alt], cap)
                if gen is None or gen.stop_reason == "cancelled":
                    break
                tried += 1
                if gen.stop_reason == "unsure":
                    continue  # under the bar whatever it would have become
                if replacing and gen.stop_reason == "length":
                    continue  # cut off: not a short suggestion
                cand = build(gen)
                if replacing and cand.known and cand.confidence < max(opts.min_confidence, UNSURE_ALTERNATIVE_BAR):
                    continue
                cands.append(cand)
    return rank(cands, opts.min_confidence), tried


def rank(cands: Sequence[Candidate], min_confidence: float = 0.0) -> list[Candidate]:
    """Suggestions that pass the gate first (as generated, then trimmed), then by mean
    log-probability; duplicates and empty or dropped ones out; under the bar out."""
    seen: set[str] = set()
    out: list[Candidate] = []
    for c in sorted(cands, key=lambda c: (c.tier, -c.mean_logprob)):
        if not c.text.strip() or c.tier > 1 or c.text in seen:
            continue
        seen.add(c.text)
        out.append(c)
    return [c for c in out if not c.known or c.confidence >= min_confidence]
