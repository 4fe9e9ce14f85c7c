"""Prompt assembly under a token budget counted with the model's own tokenizer.

The builder fits (context chunks, prefix, suffix) into ``budget`` tokens:
- the suffix (FIM templates only) gets a small share, cut at its end;
- the prefix is cut at its start on a line boundary from a coarse grid (every
  ``PREFIX_LINE_QUANTUM`` lines), so that successive keystrokes keep the same first tokens
  and the KV cache of the previous request is reused;
- retrieved context chunks come first, whole and in the order given, up to the context
  share; the prefix gets what they leave;
- the last token of the prefix is taken back and handed to the generator as a forced
  prefix ("token healing"), so a cursor after indentation or inside an identifier does not
  make the model emit a stray space or a broken word.

The prompt returned is exactly the token list the model sees; ``n_tokens`` is its length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from lsp_server.engine.tokens import ContinuationTokenizer, adds_space_prefix
from lsp_server.families.completion import ContextChunk, PromptTemplate, Segment, comment_for

PREFIX_LINE_QUANTUM = 16
# Characters per token is rarely below 1.5 for code; reading more than this many characters
# of prefix per budget token is wasted tokenizer work (a 5 MB minified line stays cheap).
MAX_CHARS_PER_TOKEN = 6


class Tokenizer(Protocol):
    def tokenize(self, text: str, *, special: bool = False) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def bos_tokens(self) -> list[int]: ...


@dataclass
class Prompt:
    tokens: list[int]
    forced_prefix: str  # text taken back from the prefix end (token healing)
    n_context_tokens: int = 0
    n_prefix_tokens: int = 0
    n_suffix_tokens: int = 0
    chunks_used: list[ContextChunk] = field(default_factory=list)
    prefix_start_line: int = 0

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class PromptBudget:
    """How many tokens the prompt may have, and how they are shared."""

    total: int
    suffix_max: int = 128
    context_share: float = 0.35  # at most this share of ``total`` goes to retrieved context
    # The prefix starts on every n-th line of the file, so that its first tokens stay put
    # while the user types (a short quick prompt uses a finer grid).
    line_quantum: int = PREFIX_LINE_QUANTUM
    # Tokens the prefix may run over ``total`` to keep the start it had last time (a soft
    # budget: the quick prompt's, whose start would otherwise move every few keystrokes).
    slack: int = 0
    # Tokens retrieved context may take on top of ``total`` (0: it shares ``total`` by
    # ``context_share``): a quick prompt whose context the KV cache already holds.
    context_extra: int = 0

    @classmethod
    def for_model(cls, n_ctx: int, context_tokens: int, max_tokens: int, suffix_max: int = 128) -> PromptBudget:
        window = min(n_ctx, context_tokens)
        return cls(total=max(16, window - max_tokens - 1), suffix_max=suffix_max)


def _segments_tokens(tok: Tokenizer, segments: list[Segment]) -> list[int]:
    out: list[int] = []
    for seg in segments:
        if not seg.text:
            continue
        out.extend(tok.tokenize(seg.text, special=seg.kind == "control"))
    return out


def _heal(tok: Tokenizer, prefix: str, tokens: list[int], lead: str = "") -> tuple[list[int], str]:
    """Take back the last prefix token if it is a clean text boundary.  ``lead``: the
    space the tokens spell before ``prefix`` (a SentencePiece vocabulary's, see
    ``PromptTemplate.with_leading_space``); a last token that holds it stays."""
    if not tokens or not prefix:
        return tokens, ""
    head = tok.detokenize(tokens[:-1])
    if not head.startswith(lead):
        return tokens, ""
    head = head[len(lead) :]
    if not prefix.startswith(head):
        return tokens, ""
    forced = prefix[len(head) :]
    if not forced or len(forced) > 32:
        return tokens, ""
    return tokens[:-1], forced


class PromptBuilder:
    def __init__(self, tokenizer: Tokenizer, template: PromptTemplate, heal: bool = True) -> None:
        if adds_space_prefix(tokenizer):
            # SentencePiece: every text continues the one before it; the template says
            # where the vocabulary's leading space goes.
            tokenizer = ContinuationTokenizer(tokenizer)
            template = template.with_leading_space()
        self.tok = tokenizer
        self.template = template
        self.heal = heal

    def header_cost(self, path: str) -> int:
        """Tokens of the line that introduces the current file after retrieved context."""
        return len(_segments_tokens(self.tok, self.template.file_header(path, True)))

    def context_tokens(self, chunks: Sequence[ContextChunk], repo_name: str = "") -> list[int]:
        """``chunks`` laid out as retrieved context is at the start of a prompt (after the
        BOS): the workspace's likely context, evaluated ahead of any prompt that uses it."""
        if not chunks:
            return []
        return self.tok.bos_tokens() + _segments_tokens(self.tok, self.template.context_segments(list(chunks), repo_name))

    def build(
        self,
        prefix: str,
        suffix: str,
        budget: PromptBudget,
        chunks: Sequence[ContextChunk] = (),
        path: str = "",
        repo_name: str = "",
        keep_line: int | None = None,
    ) -> Prompt:
        """``keep_line``: the line the prefix started on last time for this document; kept
        when the prefix from there still fits (within ``budget.slack``), so that the KV
        cache of the last request stays a prefix of this one."""
        tpl = self.template
        tok = self.tok
        bos = tok.bos_tokens()
        # "hint" chunks (a line of this file like the one being written) go right above the
        # cursor's line as comments, not among the context sections.
        hints = [c for c in chunks if c.kind == HINT_KIND]
        chunks = [c for c in chunks if c.kind != HINT_KIND]
        hint_at, hint_lines = -1, 0
        if hints:
            prefix, hint_at, hint_lines = _with_hints(prefix, hints, path)
            if not hint_lines:
                hints = []

        use_suffix = tpl.is_fim
        suffix_tokens: list[int] = []
        if use_suffix and suffix:
            suffix_text = suffix[: budget.suffix_max * MAX_CHARS_PER_TOKEN]
            suffix_tokens = tok.tokenize(suffix_text)[: budget.suffix_max]
            # Cut back to what those tokens spell, so no half token is left dangling.
            suffix = tok.detokenize(suffix_tokens)
        else:
            suffix = ""

        # Fixed markup cost: control tokens of the completion layout with empty texts.
        fixed = len(bos) + len(_segments_tokens(tok, tpl.completion_segments("", "", use_suffix)))
        available = budget.total - fixed - len(suffix_tokens)
        if available < 1:
            # A tiny window: drop the suffix rather than the prefix.
            suffix, suffix_tokens, use_suffix = "", [], False
            fixed = len(bos) + len(_segments_tokens(tok, tpl.completion_segments("", "", False)))
            available = max(1, budget.total - fixed)

        # Context first: whole chunks in the order given, up to the context share (and never
        # more than half of what is left), so that a long file cannot crowd it out; the
        # prefix gets the rest.
        ctx_limit = budget.context_extra or min(int(budget.total * budget.context_share), available // 2)
        used: list[ContextChunk] = []
        ctx_segs: list[Segment] = []
        header_segs: list[Segment] = []
        n_ctx_tokens = 0
        if chunks and ctx_limit > 0:
            counts: dict[tuple[str, str], int] = {}  # segments tokenize independently

            def count(segs: list[Segment]) -> int:
                total = 0
                for seg in segs:
                    key = (seg.kind, seg.text)
                    if key not in counts:
                        counts[key] = len(tok.tokenize(seg.text, special=seg.kind == "control")) if seg.text else 0
                    total += counts[key]
                return total

            header = tpl.file_header(path, True)
            n_header = count(header)
            for chunk in chunks:
                segs = tpl.context_segments(used + [chunk], repo_name)
                n = count(segs) + n_header
                if n <= ctx_limit:
                    used.append(chunk)
                    ctx_segs, n_ctx_tokens = segs, n
            if used:
                header_segs = header

        # Prefix: start on a quantized line boundary, move forward until it fits.
        if not budget.context_extra:
            available -= n_ctx_tokens
        max_chars = available * MAX_CHARS_PER_TOKEN
        line_starts = _line_starts_from(prefix, max(0, len(prefix) - max_chars))
        lead = tpl.prefix_lead(bool(used), use_suffix)  # the tokens spell it before the text
        kept = self._keep_start(prefix, line_starts, available + budget.slack, keep_line, lead)
        if kept is not None:
            prefix_text, prefix_tokens, start_index = kept
        else:
            prefix_text, prefix_tokens, start_index = self._fit_prefix(
                prefix, line_starts, available, budget.line_quantum, lead
            )
        prefix_start_line = prefix[: line_starts[start_index]].count("\n") if line_starts else 0
        if hint_lines and line_starts and line_starts[start_index] > hint_at:
            prefix_start_line -= hint_lines  # a line of the file's own, not of the hint
        if hint_lines and not (line_starts and line_starts[start_index] <= hint_at):
            hints = []  # the window starts on the cursor's line: the hint is cut off

        healed_tokens, forced = (prefix_tokens, "")
        if self.heal:
            healed_tokens, forced = _heal(tok, prefix_text, prefix_tokens, lead)
            if forced:
                prefix_text = prefix_text[: len(prefix_text) - len(forced)]

        tokens = list(bos)
        for seg in tpl.assemble(ctx_segs, header_segs, "\0P", "\0S", use_suffix):
            if seg.role == "prefix":
                tokens.extend(healed_tokens)
            elif seg.role == "suffix":
                tokens.extend(suffix_tokens)
            elif seg.text:
                tokens.extend(tok.tokenize(seg.text, special=seg.kind == "control"))
        if not tokens and forced:
            # A one-token prefix and nothing else (no BOS, no markup): healing would leave
            # the model nothing to read, so the token stays in the prompt.
            tokens, healed_tokens, forced = list(prefix_tokens), prefix_tokens, ""
        return Prompt(
            tokens=tokens,
            forced_prefix=forced,
            n_context_tokens=n_ctx_tokens,
            n_prefix_tokens=len(healed_tokens),
            n_suffix_tokens=len(suffix_tokens),
            chunks_used=used + hints,
            prefix_start_line=prefix_start_line,
        )

    def _keep_start(
        self, prefix: str, line_starts: list[int], available: int, keep_line: int | None, lead: str = ""
    ) -> tuple[str, list[int], int] | None:
        if keep_line is None or not line_starts:
            return None
        first_line = prefix[: line_starts[0]].count("\n")
        idx = keep_line - first_line
        if not 0 <= idx < len(line_starts):
            return None
        text = prefix[line_starts[idx] :]
        tokens = self._prefix_tokens(text, lead)
        return (text, tokens, idx) if len(tokens) <= available else None

    def _prefix_tokens(self, text: str, lead: str) -> list[int]:
        return self.tok.tokenize(lead + text) if text else []  # no lone leading space

    def _fit_prefix(
        self, prefix: str, line_starts: list[int], available: int, quantum: int = PREFIX_LINE_QUANTUM, lead: str = ""
    ) -> tuple[str, list[int], int]:
        """The longest grid-aligned tail of ``prefix`` whose tokens (``lead`` + the text's)
        fit in ``available``."""
        tok = self.tok
        if not line_starts:
            line_starts = [0]
        # Grid: every ``quantum``-th line start, counted from the file's start so the grid
        # does not move while the user types on the last line.
        first_line = prefix[: line_starts[0]].count("\n")
        quantum = max(1, quantum)
        candidates = [i for i in range(len(line_starts)) if (first_line + i) % quantum == 0]
        if not candidates or candidates[0] != 0:
            candidates = [0] + candidates
        candidates.append(len(line_starts) - 1)  # the cursor's own line, last resort
        i = 0
        while i < len(candidates):
            idx = candidates[i]
            text = prefix[line_starts[idx] :]
            tokens = self._prefix_tokens(text, lead)
            if len(tokens) <= available:
                return text, tokens, idx
            # Jump ahead by about as many characters as the excess tokens span.
            chars_per_token = len(text) / max(1, len(tokens))
            target = line_starts[idx] + (len(tokens) - available) * chars_per_token
            j = i + 1
            while j < len(candidates) - 1 and line_starts[candidates[j]] < target:
                j += 1
            i = j
        # Even the cursor line alone is too long (a minified file): keep its last tokens.
        text = prefix[line_starts[-1] :]
        tokens = self._prefix_tokens(text, lead)[-available:]
        text = tok.detokenize(tokens)
        if lead and text.startswith(lead):
            text = text[len(lead) :]  # the tokens spell lead + text, as elsewhere
        return text, tokens, len(line_starts) - 1


HINT_KIND = "hint"
# Retrieved lines of the file itself that use its imported names (retrieval._usage_lines).
USAGE_KIND = "usage"


def _with_hints(prefix: str, hints: Sequence[ContextChunk], path: str) -> tuple[str, int, int]:
    """``prefix`` with the hints' lines as comments (the file's comment syntax, the cursor
    line's indentation) inserted above the cursor's line: (text, offset, lines inserted).
    Nothing when the cursor's line is blank so far (a hint then says too little about
    what comes) or the file's language is unknown."""
    line_start = prefix.rfind("\n") + 1
    current = prefix[line_start:]
    if not current.strip() or not path:
        return prefix, -1, 0
    indent = current[: len(current) - len(current.lstrip())]
    opening, closing = comment_for(path)
    lines = [
        f"{indent}{opening} {line.strip()}{' ' + closing if closing else ''}\n"
        for hint in hints
        for line in hint.text.split("\n")
        if line.strip()
    ]
    if not lines:
        return prefix, -1, 0
    return prefix[:line_start] + "".join(lines) + current, line_start, len(lines)


def _line_starts_from(text: str, start: int) -> list[int]:
    """Offsets of line starts in ``text`` at or after ``start`` (``start`` itself when the
    text is one long line)."""
    starts: list[int] = []
    if start == 0:
        starts.append(0)
    pos = text.find("\n", max(0, start - 1) if start else 0)
    while pos != -1:
        if pos + 1 >= start and pos + 1 <= len(text):
            starts.append(pos + 1)
        pos = text.find("\n", pos + 1)
    if not starts:
        starts.append(start)
    return sorted(set(starts))
