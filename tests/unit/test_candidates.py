"""Candidates, confidence and the choice among them (engine/candidates.py), and the
engine's one call into them (CompletionEngine._choose)."""

import math
import threading
import time
from dataclasses import replace

from lsp_server.backends import GenerationResult
from lsp_server.config import Settings
from lsp_server.engine.candidates import (
    EARLY_TOKENS,
    UNSURE_ALTERNATIVE_TOKENS,
    Candidate,
    ChoiceOptions,
    branch_point,
    choose,
    give_up_rule,
    kept_logprobs,
    make_candidate,
    rank,
    wants_more,
)
from lsp_server.engine.engine import CompletionEngine, CompletionRequest
from lsp_server.engine.gate import prepare
from lsp_server.engine.model import LoadedModel
from lsp_server.engine.postprocess import CursorText, Mode, finalize
from lsp_server.families.completion import get_template

from .fakes import FakeBackend


def gen(text, lps, top=(), forced=""):
    """A generation of one token per character of ``forced + text``."""
    full = forced + text
    return GenerationResult(
        text=full,
        tokens=[ord(c) for c in full],
        prompt_tokens=10,
        reused_tokens=0,
        prompt_ms=0.0,
        generate_ms=0.0,
        stop_reason="eos",
        logprobs=list(lps),
        token_ends=list(range(1, len(full) + 1)),
        top=[list(t) for t in top],
    )


def cand(text, p, verdict="pass"):
    return Candidate(text, math.log(p), math.log(p), verdict, tokens=len(text) or 1)


def test_confidence_is_the_geometric_mean_of_the_kept_tokens():
    g = gen("abcd", [math.log(0.9), math.log(0.9), math.log(0.1), math.log(0.1)])
    c = make_candidate(g, "ab", 0, None, use_gate=False)
    assert abs(c.confidence - 0.9) < 1e-9  # "cd" was cut off by cleanup: not scored
    assert c.verdict == "off"
    assert abs(kept_logprobs(g, 0, 4)[-1] - math.log(0.1)) < 1e-9
    assert abs(math.exp(c.min_logprob) - 0.9) < 1e-9


def test_one_unsure_early_token_makes_the_suggestion_unsure():
    # A guessed name followed by text that follows from it: the mean is high, the guess not.
    lps = [math.log(0.16)] + [math.log(0.99)] * 15
    c = make_candidate(gen("x" * 16, lps), "x" * 16, 0, None, use_gate=False)
    assert math.exp(c.mean_logprob) > 0.8
    assert abs(c.confidence - 0.4) < 1e-9  # sqrt(0.16)
    # Past the first EARLY_TOKENS only the mean counts.
    late = [math.log(0.99)] * EARLY_TOKENS + [math.log(0.16)] + [math.log(0.99)] * 9
    c = make_candidate(gen("x" * 16, late), "x" * 16, 0, None, use_gate=False)
    assert abs(c.confidence - math.exp(c.mean_logprob)) < 1e-9


def test_tokens_that_spell_the_typed_text_are_not_in_the_confidence():
    # The healed token's unmasked probability is about the user's text, not the suggestion.
    g = gen("xy", [math.log(0.05), math.log(0.5), math.log(0.5)], forced="t")
    c = make_candidate(g, "xy", 1, None, use_gate=False)
    assert c.tokens == 2 and c.forced == 1
    assert abs(c.confidence - 0.5) < 1e-9
    assert len(c.logprobs) == 3  # all kept tokens are reported
    # Nothing of its own past the typed text: the covering tokens are all there is.
    g1 = gen("", [math.log(0.25)], forced="t")
    assert abs(make_candidate(g1, "", 1, None, use_gate=False).confidence - 0.0) < 1e-9


def test_no_logprobs_means_unknown_confidence_never_hidden():
    g = GenerationResult("abc", [97, 98, 99], 1, 0, 0.0, 0.0, "eos")
    c = make_candidate(g, "abc", 0, None, use_gate=False)
    assert not c.known
    assert rank([c], min_confidence=0.99) == [c]


def test_gate_verdicts():
    ctx = prepare("def f(a):\n    ", "\n", "python")
    good = make_candidate(gen("x = a", [-0.1] * 5), "x = a", 0, ctx, True)
    cut = make_candidate(gen("x = f(a))", [-0.1] * 9), "x = f(a))", 0, ctx, True)
    bad = make_candidate(gen("= = )", [-0.1] * 5), "= = )", 0, ctx, True)
    assert good.verdict == "pass" and good.text == "x = a"
    assert cut.verdict == "trimmed" and cut.text == "x = f(a)"
    assert bad.verdict == "dropped" and bad.text == ""


def test_rank_validity_first_then_mean_logprob():
    a = cand("likely but trimmed", 0.9, "trimmed")
    b = cand("valid and less likely", 0.4)
    c = cand("valid and likely", 0.6)
    d = cand("", 0.99, "dropped")
    assert [x.text for x in rank([a, b, c, d])] == ["valid and likely", "valid and less likely", "likely but trimmed"]
    # duplicates once; under the bar out
    assert [x.text for x in rank([c, cand("valid and likely", 0.3)])] == ["valid and likely"]
    assert [x.text for x in rank([b, c], min_confidence=0.5)] == ["valid and likely"]


def test_wants_more():
    opts = ChoiceOptions(candidates=3, min_confidence=0.3)
    assert not wants_more(cand("sure", 0.9), opts)
    assert not wants_more(cand("unsure", 0.2), opts)  # under the bar: not unless asked for
    assert wants_more(cand("unsure", 0.2), ChoiceOptions(candidates=3, min_confidence=0.3, unsure=True))
    assert not wants_more(cand("unsure", 0.2), ChoiceOptions(candidates=3))  # no bar: shown as it is
    assert not wants_more(cand("sure enough", 0.31), opts)
    assert not wants_more(cand("", 0.2, "off"), opts)  # the model ended there
    assert wants_more(cand("", 0.2, "dropped"), opts)
    assert wants_more(cand("", 0.2, "off"), opts, rejected=True)  # written, but cleanup could not use it
    assert wants_more(cand("cut", 0.9, "trimmed"), opts)
    assert wants_more(cand("sure", 0.9), ChoiceOptions(candidates=3, items=3))
    assert not wants_more(cand("unsure", 0.1), ChoiceOptions(candidates=1))


def test_branch_point_is_past_the_forced_prefix():
    g = gen("ab", [-1.0] * 3, top=[[(1, -0.1)], [(2, -0.1)], [(3, -0.1)]], forced="t")
    assert branch_point(g, 1) == 1
    assert branch_point(g, 0) == 0
    assert branch_point(gen("ab", [-1.0, -1.0]), 0) is None  # no alternatives kept


def test_choose_tries_the_next_first_tokens_and_picks_the_valid_one():
    ctx = prepare("def f(a):\n    ", "\n", "python")
    first_gen = gen("= = 1", [math.log(0.9)] * 5, top=[[(ord("="), -0.1), (ord("r"), -1.0), (ord("x"), -2.0)]])
    heads = []

    def branch(head, cap):
        heads.append(list(head))
        text = {ord("r"): "return a", ord("x"): "x = 2"}[head[-1]]
        return gen(text, [math.log(0.5)] * len(text))

    def build(g):
        return make_candidate(g, g.text, 0, ctx, True)

    ranked, tried = choose(
        first_gen,
        build(first_gen),
        ChoiceOptions(candidates=3),
        forced_len=0,
        branch=branch,
        build=build,
        deadline=time.perf_counter() + 10,
        cancel=threading.Event(),
    )
    assert heads == [[ord("r")], [ord("x")]]
    assert tried == 3
    assert [c.text for c in ranked] == ["return a", "x = 2"]


def test_choose_stops_at_the_deadline_and_on_cancel():
    first_gen = gen("= =", [-3.0] * 3, top=[[(1, -0.1), (2, -1.0), (3, -2.0)]])
    calls = []

    def branch(head, cap):
        calls.append(head)
        return gen("x", [-0.1])

    def build(g):
        return make_candidate(g, g.text, 0, None, False)

    first = build(first_gen)
    _, tried = choose(first_gen, first, ChoiceOptions(candidates=3), forced_len=0, branch=branch, build=build,
                      deadline=time.perf_counter() - 1, cancel=threading.Event())
    assert tried == 1 and not calls
    cancel = threading.Event()
    cancel.set()
    _, tried = choose(first_gen, first, ChoiceOptions(candidates=3), forced_len=0, branch=branch, build=build,
                      deadline=time.perf_counter() + 10, cancel=cancel)
    assert tried == 1 and not calls


# ------------------------------------------------------------------ engine
class ScoredBackend(FakeBackend):
    """A fake with log-probabilities and ``branch``: ``replies`` maps a first character
    to (text, probability per token); the greedy one is ``replies[greedy]``."""

    def __init__(self, replies, greedy):
        super().__init__(lambda prompt: replies[greedy][0])
        self.replies = replies
        self.greedy = greedy
        self.branches = []

    def _result(self, request, text, p):
        full = request.forced_prefix + text
        order = sorted(self.replies, key=lambda k: -self.replies[k][1])
        return GenerationResult(
            full, [ord(c) for c in full], len(request.prompt), 0, 0.0, 0.0, "eos",
            logprobs=[math.log(p)] * len(full),
            token_ends=list(range(1, len(full) + 1)),
            top=[[(ord(c), math.log(self.replies[c][1])) for c in order]] * 2,
        )

    def generate(self, request, cancel):
        self.calls.append(request)
        text, p = self.replies[self.greedy]
        return self._result(request, text, p)

    def branch(self, request, head, cancel):
        self.branches.append(list(head))
        text, p = self.replies[chr(head[-1])]
        return self._result(request, text, p)


def engine_with(backend, **settings):
    model = LoadedModel(backend=backend, template=get_template("plain"), stop=())
    settings = {"min_confidence": 0.0, **settings}  # the fake's probabilities are made up
    return CompletionEngine(Settings(cache_completions=False, **settings), loader=lambda s: model)


def request(text, max_items=1):
    return CompletionRequest(uri="file:///w/a.py", text=text, offset=len(text), path="a.py", max_items=max_items)


REPLIES = {"=": ("= = 1", 0.9), "r": ("return a", 0.6), "x": ("x = 2", 0.3)}


async def test_engine_replaces_an_invalid_greedy_suggestion(monkeypatch):
    # the fake takes no time, so the time share of the request would allow no candidate
    monkeypatch.setattr("lsp_server.engine.engine.TIME_SHARE", 1e6)
    backend = ScoredBackend(REPLIES, "=")
    engine = engine_with(backend)
    result = await engine.complete(request("def f(a):\n    "))
    assert result is not None
    assert result.text == "return a"
    assert result.gate == "dropped" and result.candidates == 3
    assert abs(result.confidence - 0.6) < 1e-6
    engine.shutdown()


async def test_engine_returns_several_when_asked():
    backend = ScoredBackend(REPLIES, "r")
    engine = engine_with(backend)
    result = await engine.complete(request("def f(a):\n    ", max_items=3))
    assert result is not None
    assert [result.text, *result.alternatives] == ["return a", "x = 2"]
    engine.shutdown()


async def test_engine_confidence_bar_hides_unsure_suggestions():
    backend = ScoredBackend({"x": ("x = 2", 0.3)}, "x")
    engine = engine_with(backend, min_confidence=0.5)
    result = await engine.complete(request("def f(a):\n    "))
    assert result is not None and result.text == "" and result.hidden == "confidence"
    engine.shutdown()


async def test_everything_off_is_the_old_behaviour():
    backend = ScoredBackend(REPLIES, "=")
    engine = engine_with(backend, validity_gate=False, candidates=1, min_confidence=0.0)
    result = await engine.complete(request("def f(a):\n    "))
    assert result is not None and result.text == "= = 1"
    assert backend.branches == [] and result.candidates == 1 and result.gate == ""
    engine.shutdown()


def test_an_unsure_greedy_suggestion_is_replaced_only_by_a_sure_alternative():
    first_gen = gen("ValueError(", [math.log(0.4)] * 11, top=[[(ord("V"), -0.6), (ord("B"), -0.9), (ord("T"), -2.0)]])

    def run(alt_p):
        def branch(head, cap):
            text, p = {ord("B"): ("BadParameter(", alt_p), ord("T"): ("TypeError(", alt_p - 0.05)}[head[-1]]
            return gen(text, [math.log(p)] * len(text))

        def build(g):
            return make_candidate(g, g.text, 0, None, False)

        ranked, tried = choose(first_gen, build(first_gen), ChoiceOptions(candidates=3, min_confidence=0.55, unsure=True),
                               forced_len=0, branch=branch, build=build,
                               deadline=time.perf_counter() + 10, cancel=threading.Event())
        return [c.text for c in ranked], tried

    # The next most likely start only; the greedy one (0.4) stays hidden.
    assert run(0.95) == (["BadParameter("], 2)
    assert run(0.75) == ([], 2)  # over the bar, but not sure enough to stand in for the greedy one
    # A short text only: the cap is passed on, and one cut off by it is not used.
    caps = []

    def long_branch(head, cap):
        caps.append(cap)
        g = gen("BadParameter", [math.log(0.95)] * 12)
        g.stop_reason = "length"
        return g

    ranked, tried = choose(first_gen, make_candidate(first_gen, first_gen.text, 0, None, False),
                           ChoiceOptions(candidates=3, min_confidence=0.55, unsure=True), forced_len=0, branch=long_branch,
                           build=lambda g: make_candidate(g, g.text, 0, None, False),
                           deadline=time.perf_counter() + 10, cancel=threading.Event())
    assert ranked == [] and tried == 2 and caps == [1 + UNSURE_ALTERNATIVE_TOKENS]
    # Asked for several (explicit request): the bar alone.
    def branch(head, cap):
        return gen("TypeError(", [math.log(0.7)] * 10)

    def build(g):
        return make_candidate(g, g.text, 0, None, False)

    ranked, _ = choose(first_gen, build(first_gen), ChoiceOptions(candidates=2, min_confidence=0.55, items=3),
                       forced_len=0, branch=branch, build=build,
                       deadline=time.perf_counter() + 10, cancel=threading.Event())
    assert [c.text for c in ranked] == ["TypeError("]


def test_an_unsure_suggestion_without_a_close_second_start_gets_no_alternative():
    first_gen = gen("ValueError(", [math.log(0.4)] * 11, top=[[(ord("V"), -0.1), (ord("B"), -2.5)]])
    calls = []

    def branch(head, cap):
        calls.append(head)
        return gen("BadParameter(", [math.log(0.95)] * 13)

    ranked, tried = choose(first_gen, make_candidate(first_gen, first_gen.text, 0, None, False),
                           ChoiceOptions(candidates=3, min_confidence=0.55, unsure=True), forced_len=0, branch=branch,
                           build=lambda g: make_candidate(g, g.text, 0, None, False),
                           deadline=time.perf_counter() + 10, cancel=threading.Event())
    assert ranked == [] and tried == 1 and not calls


def _doomed_at(rule, text, lps):
    """The first token index at which ``rule`` gives up (one token per character), or None."""
    for i in range(len(text)):
        if rule(text[: i + 1], lps[: i + 1], list(range(1, i + 2))):
            return i
    return None


def test_give_up_only_when_the_confidence_can_no_longer_reach_the_bar():
    bar = 0.55
    rule = give_up_rule(bar, forced_len=0)
    sure, unsure = math.log(0.9), math.log(bar**2 * 0.99)  # just under bar squared
    # An unsure token among the first EARLY_TOKENS: whatever follows, the confidence is under the bar.
    lps = [sure, sure, unsure] + [math.log(0.999)] * 20
    assert _doomed_at(rule, "abc" + "x" * 20, lps) == 2
    whole = make_candidate(gen("abc" + "x" * 20, lps), "abc" + "x" * 20, 0, None, use_gate=False)
    assert whole.confidence < bar  # what finishing the line would have found
    # Just at bar squared: not given up (the confidence may reach the bar).
    assert _doomed_at(rule, "abc", [sure, sure, math.log(bar**2 * 1.01)]) is None
    # Past the first EARLY_TOKENS only the mean counts: later tokens may lift it.
    late = [sure] * EARLY_TOKENS + [unsure] + [sure] * 5
    assert _doomed_at(rule, "x" * len(late), late) is None
    # Not on a line after one with code (cleanup may cut there), not in the forced prefix.
    assert _doomed_at(rule, "ab\ncd", [sure, sure, sure, unsure, sure]) is None
    forced_rule = give_up_rule(bar, forced_len=2)
    assert _doomed_at(forced_rule, "abcd", [unsure, sure, sure, sure]) is None
    assert _doomed_at(forced_rule, "abcd", [unsure, sure, unsure, sure]) == 2
    # Forced tokens do not count among the first EARLY_TOKENS own ones.
    text = "ab" + "x" * EARLY_TOKENS
    lps = [sure, sure] + [sure] * (EARLY_TOKENS - 1) + [unsure]
    assert _doomed_at(forced_rule, text, lps) == len(text) - 1
    # No bar, no rule.
    assert give_up_rule(0.0, 0) is None


async def test_the_engine_gives_up_on_a_hopeless_line_and_hides_it():
    """Through the engine with a backend that scores tokens: a line whose third token is
    a guess stops there (stop reason "unsure", hidden, confidence under the bar) instead
    of writing the rest; a sure line is written and shown as before."""

    class Scored(FakeBackend):
        def __init__(self, probs):
            super().__init__(lambda prompt: "compute(x) + 1\n")
            self.probs = probs

        def generate(self, request, cancel):
            self.calls.append(request)
            text, lps, ends, reason = "", [], [], "eos"
            for i, ch in enumerate(request.forced_prefix + self.reply("")):
                text += ch
                lps.append(math.log(self.probs(i)))
                ends.append(len(text))
                if request.should_stop is not None and request.should_stop(text):
                    reason = "condition"
                    break
                if request.give_up is not None and request.give_up(text, lps, ends):
                    reason = "unsure"
                    break
            return GenerationResult(text, [ord(c) for c in text], 5, 0, 0.0, 0.0, reason, logprobs=lps, token_ends=ends)

    async def run(probs):
        backend = Scored(probs)
        engine = engine_with(backend, min_confidence=0.55, latency_target_ms=0, multiline=False, validity_gate=False)
        try:
            return await engine.complete(request("x = 1\ny = ")), backend
        finally:
            engine.shutdown()

    result, backend = await run(lambda i: 0.2 if i == 2 else 0.95)
    assert backend.calls[0].give_up is not None
    assert result.stop_reason == "unsure" and result.text == "" and result.hidden == "confidence"
    assert result.generated_tokens == 3 and result.confidence < 0.55
    result, backend = await run(lambda i: 0.95)
    assert result.stop_reason != "unsure" and result.text == "compute(x) + 1"
    # Asked for several suggestions (explicit request), nothing is given up early.
    backend = Scored(lambda i: 0.2 if i == 2 else 0.95)
    engine = engine_with(backend, min_confidence=0.55, latency_target_ms=0, multiline=False, validity_gate=False)
    await engine.complete(request("x = 1\ny = ", max_items=3))
    engine.shutdown()
    assert backend.calls[0].give_up is None


def test_give_up_on_the_first_line_with_code_after_a_blank_one():
    """At a new line the model often ends the blank line first: the suggestion is then the
    next line with code (finalize drops the blanks), and its early tokens doom it as they
    do on a first line."""
    bar = 0.6
    rule = give_up_rule(bar, forced_len=0)
    sure, unsure = math.log(0.9), math.log(bar**2 * 0.9)
    pieces = ["  \n", "    ", "def", " f", "(x", "):", "\n", "        return", " x", "\n"]
    lps = [sure, sure, unsure] + [sure] * (len(pieces) - 3)
    ends = [sum(len(p) for p in pieces[: k + 1]) for k in range(len(pieces))]
    text = "".join(pieces)
    cur = CursorText.from_prefix_suffix("class A:\n    def g(self):\n        return 1\n        ", "\n")
    shown = finalize(text, Mode.LINE, cur)
    assert shown == "\n    def f(x):"
    whole = replace(gen(text, [sure] * len(text)), tokens=list(range(len(pieces))), logprobs=lps, token_ends=ends)
    assert make_candidate(whole, shown, 0, None, use_gate=False).confidence < bar  # what finishing it finds
    doomed_at = next((k for k in range(len(pieces)) if rule(text[: ends[k]], lps[: k + 1], ends[: k + 1])), None)
    assert doomed_at == 2  # at "def": 7 tokens fewer
    # One token per character: the indentation of that line counts too; a token that
    # starts past the end of the cleaned line does not.
    assert _doomed_at(rule, "  \n    x", [sure] * 3 + [unsure] + [sure] * 4) == 7
    assert _doomed_at(rule, "  \nab", [sure] * 3 + [sure, unsure]) is None
    # A line after one with code: cleanup may cut there, as before.
    assert _doomed_at(rule, "ab\n  \ncd", [sure] * 6 + [unsure, sure]) is None
