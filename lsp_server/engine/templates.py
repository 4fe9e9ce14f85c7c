"""Prompt templates per model family.

A template turns (context chunks, prefix, suffix) into a list of *segments*: control
tokens (tokenized with special-token parsing) and user text (tokenized without it, so code
that happens to contain ``<fim_prefix>`` can never inject a control token).  The prompt
builder tokenizes the segments with the model's own tokenizer and fits them to the budget.

Order matters for the KV cache: whatever does not change between keystrokes (retrieved
context, then the start of the prefix) comes first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SegmentKind = Literal["control", "text"]


@dataclass(frozen=True)
class Segment:
    kind: SegmentKind
    text: str
    role: str = ""  # "context", "prefix", "suffix" or "" (fixed markup)


@dataclass(frozen=True)
class ContextChunk:
    """A piece of cross-file (or far in-file) context for the prompt."""

    path: str  # workspace-relative path, shown to the model
    text: str
    score: float = 0.0
    kind: str = "snippet"  # "definition", "import", "snippet", "scope"


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
    # How a cross-file chunk is introduced: a control token (e.g. "<file_sep>") followed by
    # the path and a newline, or a comment line with the path.
    file_sep: str | None = None
    repo_name_token: str | None = None  # Qwen2.5-Coder / StarCoder2 repo-level format
    comment: str = "#"
    stop: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_fim(self) -> bool:
        # Codestral has no middle token: the middle starts right after the prefix.
        return bool(self.fim_prefix and self.fim_suffix)

    def context_segments(self, chunks: list[ContextChunk], repo_name: str = "") -> list[Segment]:
        """Segments for the retrieved context, stable order, before the current file."""
        segs: list[Segment] = []
        if self.repo_name_token and chunks:
            segs.append(Segment("control", self.repo_name_token))
            segs.append(Segment("text", (repo_name or "workspace") + "\n", "context"))
        for chunk in chunks:
            body = chunk.text if chunk.text.endswith("\n") else chunk.text + "\n"
            if self.file_sep:
                segs.append(Segment("control", self.file_sep))
                segs.append(Segment("text", f"{chunk.path}\n{body}", "context"))
            else:
                segs.append(Segment("text", f"{self.comment} {chunk.path}\n{body}\n", "context"))
        return segs

    def file_header(self, path: str, have_context: bool) -> list[Segment]:
        """Introduces the current file (only when context chunks precede it)."""
        if not have_context or not path:
            return []
        if self.file_sep:
            return [Segment("control", self.file_sep), Segment("text", f"{path}\n", "header")]
        return [Segment("text", f"{self.comment} {path}\n", "header")]

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


# Published FIM layouts of each family (see each model card / tokenizer_config.json).
TEMPLATES: dict[str, PromptTemplate] = {
    "plain": PromptTemplate(name="plain"),
    # Code Llama: "<PRE> {prefix} <SUF>{suffix} <MID>", ends with <EOT>.
    "codellama": PromptTemplate(
        name="codellama",
        fim_prefix="<PRE>",
        fim_suffix="<SUF>",
        fim_middle="<MID>",
        prefix_sep=" ",
        suffix_sep="",
        stop=("<EOT>",),
    ),
    # StarCoder / StarCoderBase / WizardCoder-15B / StarCoder2 (StarCoder2 adds <file_sep>).
    "starcoder": PromptTemplate(
        name="starcoder",
        fim_prefix="<fim_prefix>",
        fim_suffix="<fim_suffix>",
        fim_middle="<fim_middle>",
        stop=("<|endoftext|>", "<file_sep>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    ),
    "starcoder2": PromptTemplate(
        name="starcoder2",
        fim_prefix="<fim_prefix>",
        fim_suffix="<fim_suffix>",
        fim_middle="<fim_middle>",
        file_sep="<file_sep>",
        repo_name_token="<repo_name>",
        stop=("<|endoftext|>", "<file_sep>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    ),
    # DeepSeek-Coder base.
    "deepseek": PromptTemplate(
        name="deepseek",
        fim_prefix="<｜fim▁begin｜>",
        fim_suffix="<｜fim▁hole｜>",
        fim_middle="<｜fim▁end｜>",
        stop=("<|EOT|>", "<｜end▁of▁sentence｜>"),
    ),
    # Qwen2.5-Coder base, with the repo-level <|repo_name|>/<|file_sep|> format.
    "qwen25coder": PromptTemplate(
        name="qwen25coder",
        fim_prefix="<|fim_prefix|>",
        fim_suffix="<|fim_suffix|>",
        fim_middle="<|fim_middle|>",
        file_sep="<|file_sep|>",
        repo_name_token="<|repo_name|>",
        stop=("<|endoftext|>", "<|file_sep|>", "<|fim_pad|>", "<|repo_name|>", "<|im_start|>", "<|fim_prefix|>"),
    ),
    # CodeGemma.
    "codegemma": PromptTemplate(
        name="codegemma",
        fim_prefix="<|fim_prefix|>",
        fim_suffix="<|fim_suffix|>",
        fim_middle="<|fim_middle|>",
        file_sep="<|file_separator|>",
        stop=("<|file_separator|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<eos>"),
    ),
    # Codestral / Mistral FIM: suffix first.
    "codestral": PromptTemplate(
        name="codestral",
        fim_prefix="[PREFIX]",
        fim_suffix="[SUFFIX]",
        fim_middle=None,  # the model starts the middle right after the prefix
        suffix_first=True,
        stop=("</s>",),
    ),
}


def get_template(name: str) -> PromptTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise KeyError(f"unknown prompt template {name!r}; known: {', '.join(sorted(TEMPLATES))}") from None


def template_from_fim_tokens(prefix: str | None, suffix: str | None, middle: str | None, eot: tuple[str, ...]) -> PromptTemplate:
    """A template for a .gguf without a manifest, from the FIM tokens in its vocabulary."""
    if not (prefix and suffix and middle):
        return TEMPLATES["plain"]
    for tpl in TEMPLATES.values():
        if (tpl.fim_prefix, tpl.fim_suffix, tpl.fim_middle) == (prefix, suffix, middle):
            return tpl
    return PromptTemplate(name="gguf-fim", fim_prefix=prefix, fim_suffix=suffix, fim_middle=middle, stop=eot)
