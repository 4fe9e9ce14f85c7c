"""Prompt templates per model family.

A template turns (context chunks, prefix, suffix) into a list of *segments*: control
tokens (tokenized with special-token parsing) and user text (tokenized without it, so code
that happens to contain ``<fim_prefix>`` can never inject a control token).  The prompt
builder tokenizes the segments with the model's own tokenizer and fits them to the budget.

Where retrieved context goes depends on what the family was trained on:
- repo-level formats (StarCoder2, Qwen2.5-Coder, CodeGemma) put each context file in its
  own ``<file_sep>``-style section *before* the FIM part of the current file;
- FIM families without a file separator (CodeLlama, StarCoder 1, DeepSeek-Coder,
  Codestral) saw only code after the FIM prefix token, so context goes *inside* the prefix
  section, each chunk under a path comment (``#utils.py`` for DeepSeek, as its README
  shows);
- plain-prefix models (SmolLM2, Mistral-7B, Phind) get path comments then the prefix.

Order matters for the KV cache: whatever does not change between keystrokes (retrieved
context, then the start of the prefix) comes first.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

SegmentKind = Literal["control", "text"]


@dataclass(frozen=True)
class Segment:
    kind: SegmentKind
    text: str
    role: str = ""  # "context", "header", "prefix", "suffix" or "" (fixed markup)


@dataclass(frozen=True)
class ContextChunk:
    """A piece of cross-file (or far in-file) context for the prompt."""

    path: str  # workspace-relative path, shown to the model
    text: str
    score: float = 0.0
    kind: str = "snippet"  # "definition", "import", "snippet", "scope"


def fit_chunks(chunks: Iterable[ContextChunk], token_budget: int, count_tokens: Callable[[str], int]) -> list[ContextChunk]:
    """Of ``chunks``, in order, each that still fits ``token_budget``, a chunk costing its
    text and a path line (as retrieval budgets its choice)."""
    fitted: list[ContextChunk] = []
    used = 0
    for c in chunks:
        cost = count_tokens(f"# {c.path}\n{c.text}\n\n")
        if used + cost <= token_budget:
            fitted.append(c)
            used += cost
    return fitted


# Line-comment syntax by file extension, for the path line that introduces a chunk when
# the family has no file-separator token.  Anything unknown gets "//".
_HASH = ("#", "")
_COMMENTS: dict[str, tuple[str, str]] = {
    **dict.fromkeys(
        (
            ".py",
            ".pyi",
            ".pyx",
            ".rb",
            ".sh",
            ".bash",
            ".zsh",
            ".fish",
            ".pl",
            ".pm",
            ".r",
            ".jl",
            ".ex",
            ".exs",
            ".nim",
            ".cmake",
            ".toml",
            ".yaml",
            ".yml",
            ".cfg",
            ".ini",
            ".mk",
            ".ps1",
            ".tcl",
            ".coffee",
            ".cr",
            ".gd",
            ".txt",
            "",
        ),
        _HASH,
    ),
    **dict.fromkeys((".lua", ".sql", ".hs", ".elm", ".ada", ".adb", ".ads", ".vhd", ".vhdl"), ("--", "")),
    **dict.fromkeys((".clj", ".cljs", ".lisp", ".el", ".scm", ".rkt"), (";;", "")),
    **dict.fromkeys((".erl", ".hrl", ".tex", ".m"), ("%", "")),
    **dict.fromkeys((".html", ".htm", ".xml", ".md", ".vue", ".svelte"), ("<!--", " -->")),
    ".css": ("/*", " */"),
    ".vim": ('"', ""),
    ".bat": ("REM", ""),
    ".ml": ("(*", " *)"),
}


def comment_for(path: str) -> tuple[str, str]:
    """(opening, closing) of a one-line comment in the language of ``path``."""
    ext = os.path.splitext(path)[1].lower()
    if not ext and os.path.basename(path) in ("Makefile", "Dockerfile", "CMakeLists.txt"):
        return _HASH
    return _COMMENTS.get(ext, ("//", ""))


@dataclass(frozen=True)
class PromptTemplate:
    """How one model family wants a completion prompt laid out."""

    name: str
    # FIM control tokens; None for plain-prefix templates.
    fim_prefix: str | None = None
    fim_suffix: str | None = None
    fim_middle: str | None = None
    suffix_first: bool = False  # Codestral/Mistral: [SUFFIX]...[PREFIX]...
    # Text between the control token and the user text (CodeLlama wants "<PRE> " ...).
    prefix_sep: str = ""
    suffix_sep: str = ""
    middle_sep: str = ""
    # Repo-level format: each file starts with this control token, then its path and a
    # newline (StarCoder2 ``<file_sep>``, Qwen2.5-Coder ``<|file_sep|>``).  Without it,
    # chunks are introduced by a path comment inside the prefix section.
    file_sep: str | None = None
    repo_name_token: str | None = None  # Qwen2.5-Coder / StarCoder2 repo-level format
    repo_name_sep: str = "\n"  # after the repo name: "\n" (Qwen2.5-Coder), "" (StarCoder2)
    # StarCoder2 puts the current file's path after <fim_prefix>:
    # "<file_sep><fim_prefix>path\ncode_pre<fim_suffix>..."
    path_in_prefix: bool = False
    # Path comment: None picks the comment syntax from the chunk's file extension.
    comment: str | None = None
    comment_space: bool = True  # "# utils.py" (True) or "#utils.py" (DeepSeek-Coder)
    stop: tuple[str, ...] = field(default_factory=tuple)
    # The space a SentencePiece vocabulary puts before a text of its own, where the prefix
    # section starts (see ``with_leading_space``); "" for other vocabularies.
    lead: str = ""

    @property
    def is_fim(self) -> bool:
        # Codestral has no middle token: the middle starts right after the prefix.
        return bool(self.fim_prefix and self.fim_suffix)

    # ----------------------------------------------------------------- pieces
    def _path_line(self, path: str) -> str:
        if self.comment is not None:
            opening, closing = self.comment, ""
        else:
            opening, closing = comment_for(path)
        space = " " if self.comment_space else ""
        return f"{opening}{space}{path}{closing}\n"

    def context_segments(self, chunks: list[ContextChunk], repo_name: str = "") -> list[Segment]:
        """Segments for the retrieved context, in the order given, before the current file.

        Adjacent chunks of the same file share one path line (or file separator).
        """
        segs: list[Segment] = []
        if not chunks:
            return segs
        if self.repo_name_token and self.file_sep:
            segs.append(Segment("control", self.repo_name_token))
            segs.append(Segment("text", (repo_name or "workspace") + self.repo_name_sep, "context"))
        for path, bodies in _group_by_path(chunks):
            body = "\n".join(bodies)
            if self.file_sep:
                segs.append(Segment("control", self.file_sep))
                segs.append(Segment("text", f"{path}\n{body}", "context"))
            else:
                # Context opens the prefix section here: the first chunk gets its space.
                lead = "" if segs else self.lead
                segs.append(Segment("text", f"{lead}{self._path_line(path)}{body}\n", "context"))
        return segs

    def file_header(self, path: str, have_context: bool) -> list[Segment]:
        """Introduces the current file (only when context chunks precede it)."""
        if not have_context or not path:
            return []
        if self.file_sep:
            return [Segment("control", self.file_sep), Segment("text", f"{path}\n", "header")]
        return [Segment("text", self._path_line(path), "header")]

    def prefix_lead(self, have_context: bool, use_suffix: bool = True) -> str:
        """The leading space (``lead``) the current file's prefix text gets: the prefix
        section's, unless context or a file header comes before the prefix in it."""
        if not have_context:
            return self.lead
        if self.file_sep and self.is_fim and use_suffix and not self.path_in_prefix:
            return self.lead  # context and header come before <fim_prefix>
        return ""

    def completion_segments(self, prefix: str, suffix: str, use_suffix: bool = True) -> list[Segment]:
        """The current file's prefix/suffix in this family's layout."""
        if not self.is_fim or not use_suffix:
            return [Segment("text", prefix, "prefix")]
        assert self.fim_prefix and self.fim_suffix
        pre = [Segment("control", self.fim_prefix)]
        if self.prefix_sep:
            pre.append(Segment("text", self.prefix_sep))
        suf = [Segment("control", self.fim_suffix)]
        if self.suffix_sep:
            suf.append(Segment("text", self.suffix_sep))
        mid = [Segment("control", self.fim_middle)] if self.fim_middle else []
        if self.middle_sep:
            mid.append(Segment("text", self.middle_sep))
        if self.suffix_first:
            return suf + [Segment("text", suffix, "suffix")] + pre + [Segment("text", prefix, "prefix")] + mid
        return pre + [Segment("text", prefix, "prefix")] + suf + [Segment("text", suffix, "suffix")] + mid

    # ----------------------------------------------------------------- layout
    def assemble(
        self,
        context: list[Segment],
        header: list[Segment],
        prefix: str = "",
        suffix: str = "",
        use_suffix: bool = True,
    ) -> list[Segment]:
        """The whole prompt (without BOS): context and header placed where this family
        expects them around the current file's completion segments."""
        completion = self.completion_segments(prefix, suffix, use_suffix)
        if not context and not header:
            return completion
        if not (self.is_fim and use_suffix):
            return context + header + completion
        at = next(i for i, seg in enumerate(completion) if seg.role == "prefix")
        if self.file_sep:
            if self.path_in_prefix:
                controls = [s for s in header if s.kind == "control"]
                texts = [s for s in header if s.kind != "control"]
                return context + controls + completion[:at] + texts + completion[at:]
            return context + header + completion
        # No file separator: the model only ever saw code after its prefix token.
        return completion[:at] + context + header + completion[at:]

    def with_leading_space(self) -> PromptTemplate:
        """This template for a vocabulary that puts a space before every text it tokenizes
        on its own (SentencePiece's dummy prefix: Llama 2, Code Llama, Mistral).

        Their models saw that space at the start of each document, and Code Llama's and
        Codestral's reference code encodes the FIM prefix with it and the suffix without
        (``encode_infilling``).  The prompt builder then tokenizes every text as the
        continuation of the text before it and puts this one space where the prefix
        section starts: before the first context chunk where the layout puts context
        there, else before the current file's prefix.  A ``prefix_sep`` of " " (Code
        Llama's "<PRE> {prefix}") is that space, not one more.  A template with any other
        separator keeps it as text and gets no leading space."""
        if self.lead or self.prefix_sep not in ("", " "):
            return self
        return dataclasses.replace(self, lead=" ", prefix_sep="")

    def with_control_tokens(self, prefix: str | None, suffix: str | None, middle: str | None) -> PromptTemplate:
        """This template with FIM token texts as a model's vocabulary spells them.

        CodeLlama GGUF files store ``▁<PRE>`` where the paper writes ``<PRE>``; a control
        token only parses as one when its exact vocabulary text is used.
        """
        changes: dict[str, Any] = {}
        for attr, vocab in (("fim_prefix", prefix), ("fim_suffix", suffix), ("fim_middle", middle)):
            ours = getattr(self, attr)
            if ours and vocab and vocab != ours and _bare(vocab) == _bare(ours):
                changes[attr] = vocab
        return dataclasses.replace(self, **changes) if changes else self


def _bare(token: str) -> str:
    return token.lstrip("\u2581 ")


def _group_by_path(chunks: list[ContextChunk]) -> list[tuple[str, list[str]]]:
    groups: list[tuple[str, list[str]]] = []
    for chunk in chunks:
        body = chunk.text if chunk.text.endswith("\n") else chunk.text + "\n"
        if groups and groups[-1][0] == chunk.path:
            groups[-1][1].append(body)
        else:
            groups.append((chunk.path, [body]))
    return groups


_STARCODER_STOP = ("<|endoftext|>", "<file_sep>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>")

# Published FIM layouts of each family (model cards, papers, reference code):
TEMPLATES: dict[str, PromptTemplate] = {
    # No FIM training (SmolLM2, Mistral-7B, Phind-CodeLlama): path comments, then prefix.
    "plain": PromptTemplate(name="plain"),
    # Code Llama (facebookresearch/codellama generation.py): tokens
    # [<PRE>] + encode(prefix) + [<SUF>] + encode_infilling(suffix) + [<MID>], where
    # encode() adds SentencePiece's leading space: "<PRE> {prefix} <SUF>{suffix} <MID>".
    "codellama": PromptTemplate(
        name="codellama",
        fim_prefix="<PRE>",
        fim_suffix="<SUF>",
        fim_middle="<MID>",
        prefix_sep=" ",
        stop=("<EOT>",),
    ),
    # StarCoder / StarCoderBase / WizardCoder-15B: "<fim_prefix>{pre}<fim_suffix>{suf}<fim_middle>".
    "starcoder": PromptTemplate(
        name="starcoder",
        fim_prefix="<fim_prefix>",
        fim_suffix="<fim_suffix>",
        fim_middle="<fim_middle>",
        stop=_STARCODER_STOP,
    ),
    # StarCoder2 (paper, section 5): "<repo_name>name<file_sep>path0\ncode0<file_sep>
    # <fim_prefix>path1\ncode1_pre<fim_suffix>code1_suf<fim_middle>".
    "starcoder2": PromptTemplate(
        name="starcoder2",
        fim_prefix="<fim_prefix>",
        fim_suffix="<fim_suffix>",
        fim_middle="<fim_middle>",
        file_sep="<file_sep>",
        repo_name_token="<repo_name>",
        repo_name_sep="",
        path_in_prefix=True,
        stop=_STARCODER_STOP,
    ),
    # DeepSeek-Coder base: "<｜fim▁begin｜>{pre}<｜fim▁hole｜>{suf}<｜fim▁end｜>"; repo-level
    # files are introduced by a path comment without a space ("#utils.py").
    "deepseek": PromptTemplate(
        name="deepseek",
        fim_prefix="<｜fim▁begin｜>",
        fim_suffix="<｜fim▁hole｜>",
        fim_middle="<｜fim▁end｜>",
        comment_space=False,
        stop=("<|EOT|>", "<｜end▁of▁sentence｜>"),
    ),
    # Qwen2.5-Coder base (technical report, figure 4): "<|repo_name|>{name}\n
    # <|file_sep|>{path1}\n{content1}\n<|file_sep|>{path}\n<|fim_prefix|>{pre}
    # <|fim_suffix|>{suf}<|fim_middle|>".
    "qwen25coder": PromptTemplate(
        name="qwen25coder",
        fim_prefix="<|fim_prefix|>",
        fim_suffix="<|fim_suffix|>",
        fim_middle="<|fim_middle|>",
        file_sep="<|file_sep|>",
        repo_name_token="<|repo_name|>",
        stop=("<|endoftext|>", "<|file_sep|>", "<|fim_pad|>", "<|repo_name|>", "<|im_start|>", "<|fim_prefix|>"),
    ),
    # CodeGemma (ai.google.dev "CodeGemma prompt structure"): FIM tokens without spaces,
    # <|file_separator|> between the files of a multi-file context.
    "codegemma": PromptTemplate(
        name="codegemma",
        fim_prefix="<|fim_prefix|>",
        fim_suffix="<|fim_suffix|>",
        fim_middle="<|fim_middle|>",
        file_sep="<|file_separator|>",
        stop=("<|file_separator|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<eos>"),
    ),
    # Codestral / Mistral FIM (mistral-common): "[SUFFIX]{suf}[PREFIX]{pre}", the middle
    # follows the prefix directly.
    "codestral": PromptTemplate(
        name="codestral",
        fim_prefix="[PREFIX]",
        fim_suffix="[SUFFIX]",
        fim_middle=None,
        suffix_first=True,
        stop=("</s>",),
    ),
}
# Families that share a layout with one above.
TEMPLATES["wizardcoder"] = dataclasses.replace(TEMPLATES["starcoder"], name="wizardcoder")
TEMPLATES["deepseek-v2"] = dataclasses.replace(TEMPLATES["deepseek"], name="deepseek-v2")
TEMPLATES["codeqwen"] = dataclasses.replace(  # CodeQwen1.5: StarCoder-style tokens, <reponame>
    TEMPLATES["starcoder2"], name="codeqwen", repo_name_token="<reponame>", path_in_prefix=False, repo_name_sep="\n"
)


def get_template(name: str) -> PromptTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise KeyError(f"unknown prompt template {name!r}; known: {', '.join(sorted(TEMPLATES))}") from None


# Families that share their FIM tokens with another one, told apart by the GGUF's
# ``general.architecture``: StarCoder2 spells them as StarCoder 1 does, but was trained on
# the repository-level layout.
ARCHITECTURE_TEMPLATES = {"starcoder2": "starcoder2"}


def template_from_fim_tokens(
    prefix: str | None, suffix: str | None, middle: str | None, eot: tuple[str, ...], architecture: str = ""
) -> PromptTemplate:
    """A template for a .gguf without a manifest, from the FIM tokens in its vocabulary
    (and its architecture, where two families share those tokens)."""
    if not (prefix and suffix and middle):
        return TEMPLATES["plain"]
    by_arch = ARCHITECTURE_TEMPLATES.get(architecture)
    candidates = ([TEMPLATES[by_arch]] if by_arch else []) + list(TEMPLATES.values())
    for tpl in candidates:
        if (tpl.fim_prefix, tpl.fim_suffix, tpl.fim_middle) == (prefix, suffix, middle):
            return tpl
    for tpl in candidates:
        if (
            tpl.fim_prefix
            and tpl.fim_suffix
            and tpl.fim_middle
            and (
                (_bare(tpl.fim_prefix), _bare(tpl.fim_suffix), _bare(tpl.fim_middle))
                == (_bare(prefix), _bare(suffix), _bare(middle))
            )
        ):
            return tpl.with_control_tokens(prefix, suffix, middle)
    return PromptTemplate(name="gguf-fim", fim_prefix=prefix, fim_suffix=suffix, fim_middle=middle, stop=eot)
