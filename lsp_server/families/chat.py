"""Chat formats per model family, for the code actions' prompts.

A chat format is markup around ``{system}`` and ``{user}``: its control tokens are
tokenized as such, while the user's code is plain text, so code that contains
``<|im_end|>`` can never end a turn.  ``prompt_style`` picks the format for a model from
its manifest's name for it, else from the GGUF's own Jinja template.  Data about model
families, read by the registry and the engine; nothing here imports from above.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from lsp_server.families.completion import Segment

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatFormat:
    """A chat template as markup around ``{system}`` and ``{user}``.

    ``controls`` are the special tokens in the markup: they are tokenized as control
    tokens, while the user's code is tokenized as plain text, so code that contains
    ``<|im_end|>`` can never end the turn.  ``system`` False: the family has no system
    role; the system text goes at the top of the user turn.
    """

    name: str
    template: str
    controls: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()
    system: bool = True

    def segments(self, system: str, user: str) -> list[Segment]:
        if not self.system or "{system}" not in self.template:
            user = f"{system}\n\n{user}" if system else user
        out: list[Segment] = []
        for part in re.split(r"(\{system\}|\{user\})", self.template):
            if part == "{system}":
                out.append(Segment("text", system, "system"))
            elif part == "{user}":
                out.append(Segment("text", user, "user"))
            elif part:
                out.extend(_split_controls(part, self.controls))
        return out


def _split_controls(markup: str, controls: Sequence[str]) -> list[Segment]:
    if not controls:
        return [Segment("text", markup)]
    pattern = "(" + "|".join(re.escape(c) for c in sorted(controls, key=len, reverse=True)) + ")"
    out = []
    for piece in re.split(pattern, markup):
        if piece:
            out.append(Segment("control" if piece in controls else "text", piece))
    return out


_CHATML = ChatFormat(
    "chatml",
    "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n",
    ("<|im_start|>", "<|im_end|>"),
    ("<|im_end|>", "<|im_start|>", "<|endoftext|>"),
)
_LLAMA2 = ChatFormat(
    "llama2", "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]", ("[INST]", "[/INST]"), ("</s>", "[INST]")
)
_MISTRAL = ChatFormat("mistral", "[INST] {user} [/INST]", ("[INST]", "[/INST]"), ("</s>", "[INST]"), system=False)
_LLAMA3 = ChatFormat(
    "llama3",
    "<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    ("<|eot_id|>", "<|end_of_text|>", "<|start_header_id|>"),
)
_GEMMA = ChatFormat(
    "gemma",
    "<start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n",
    ("<start_of_turn>", "<end_of_turn>"),
    ("<end_of_turn>", "<start_of_turn>", "<eos>"),
    system=False,
)
_DEEPSEEK = ChatFormat(
    "deepseek", "{system}\n### Instruction:\n{user}\n### Response:\n", (), ("<|EOT|>", "\n### Instruction:")
)
_ALPACA = ChatFormat(
    "alpaca", "{system}\n\n### Instruction:\n{user}\n\n### Response:\n", (), ("### Instruction:", "</s>")
)
_PHI3 = ChatFormat(
    "phi3",
    "<|system|>\n{system}<|end|>\n<|user|>\n{user}<|end|>\n<|assistant|>\n",
    ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
    ("<|end|>", "<|user|>", "<|endoftext|>"),
)
_ZEPHYR = ChatFormat(
    "zephyr",
    "<|system|>\n{system}</s>\n<|user|>\n{user}</s>\n<|assistant|>\n",
    ("<|system|>", "<|user|>", "<|assistant|>", "</s>"),
    ("</s>", "<|user|>"),
)
_STARCODER2_INSTRUCT = ChatFormat(
    "starcoder2-instruct",
    "{system}\n\n### Instruction\n{user}\n\n### Response\n",
    (),
    ("### Instruction", "<|endoftext|>"),
)

_PHIND = ChatFormat(
    "phind",
    "### System Prompt\n{system}\n\n### User Message\n{user}\n\n### Assistant\n",
    (),
    ("</s>", "\n### User Message"),
)

CHAT_FORMATS: dict[str, ChatFormat] = {
    f.name: f
    for f in (
        _CHATML,
        _LLAMA2,
        _MISTRAL,
        _LLAMA3,
        _GEMMA,
        _DEEPSEEK,
        _ALPACA,
        _PHI3,
        _ZEPHYR,
        _STARCODER2_INSTRUCT,
        _PHIND,
    )
}
# Names by which a manifest says "a base model: no chat template".
BASE_MODEL_NAMES = frozenset({"none", "plain", "base", "completion", "false"})
# Names a manifest may use for the same layout.
CHAT_ALIASES = {
    "qwen": "chatml",
    "qwen2": "chatml",
    "qwen2.5": "chatml",
    "qwen25": "chatml",
    "smollm": "chatml",
    "smollm2": "chatml",
    "im_start": "chatml",
    "llama-2": "llama2",
    "codellama": "llama2",
    "codellama-instruct": "llama2",
    "inst": "mistral",
    "mistral-instruct": "mistral",
    "codestral": "mistral",
    "mixtral": "mistral",
    "llama-3": "llama3",
    "llama3.1": "llama3",
    "llama-3.1": "llama3",
    "codegemma": "gemma",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "deepseek-coder": "deepseek",
    "deepseek-instruct": "deepseek",
    "phi-3": "phi3",
    "phi3.5": "phi3",
    "starchat": "phi3",
    "phind-codellama": "phind",
    "wizardcoder": "alpaca",
    "starcoder2": "starcoder2-instruct",
}
# Markers of each layout in a GGUF ``tokenizer.chat_template`` (Jinja) string.
_JINJA_MARKERS: tuple[tuple[str, str], ...] = (
    ("<|im_start|>", "chatml"),
    ("<|start_header_id|>", "llama3"),
    ("<start_of_turn>", "gemma"),
    ("<<SYS>>", "llama2"),
    ("[INST]", "mistral"),
    ("<|end|>", "phi3"),
    ("<|user|>", "zephyr"),
    ("### Instruction:", "deepseek"),
)

# Chat/FIM markup that never belongs in code or prose, whatever the family.  Markers that
# could be real code (``</s>`` is an HTML tag, ``[INST]`` could be in a string) are cut only
# when they are the running model's own stop strings.
CHAT_MARKUP = (
    "<|im_end|>",
    "<|im_start|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end_of_text|>",
    "<end_of_turn>",
    "<start_of_turn>",
    "<|EOT|>",
    "<｜end▁of▁sentence｜>",
    "<|end|>",
    "<|user|>",
    "<|assistant|>",
    "<|system|>",
    "<|file_separator|>",
    "<|fim_prefix|>",
    "<|fim_suffix|>",
    "<|fim_middle|>",
    "<fim_prefix>",
    "<fim_suffix>",
    "<fim_middle>",
    "<|file_sep|>",
    "<file_sep>",
    "<|repo_name|>",
)


def _normalize_name(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def chat_format_named(name: str | None) -> ChatFormat | None:
    if not name:
        return None
    key = _normalize_name(name)
    key = CHAT_ALIASES.get(key, CHAT_ALIASES.get(key.replace("-", ""), key))
    return CHAT_FORMATS.get(key)


def detect_chat_format(jinja: str | None) -> ChatFormat | None:
    """A known layout recognised in a GGUF chat template."""
    if not jinja:
        return None
    for marker, name in _JINJA_MARKERS:
        if marker in jinja:
            return CHAT_FORMATS[name]
    return None


@dataclass(frozen=True)
class JinjaChatFormat:
    """A chat template we do not know by name: rendered from the GGUF's Jinja template
    (sandboxed), with the system and user text cut back out as plain-text segments."""

    template: str
    name: str = "gguf"
    stop: tuple[str, ...] = ()

    _SYSTEM = "\x1eQUILL-SYSTEM\x1e"
    _USER = "\x1eQUILL-USER\x1e"

    def render(self, system: str, user: str) -> str | None:
        try:
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ImportError:  # pragma: no cover - jinja2 comes with llama-cpp-python
            return None

        def raise_exception(message: str) -> None:
            raise ValueError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        try:
            tpl = env.from_string(self.template)
        except Exception:
            return None
        attempts = (
            [{"role": "system", "content": self._SYSTEM}, {"role": "user", "content": self._USER}],
            [{"role": "user", "content": self._SYSTEM + "\n\n" + self._USER}],  # no system role
        )
        for messages in attempts:
            try:
                text = tpl.render(messages=messages, add_generation_prompt=True, bos_token="", eos_token="")
            except Exception:
                continue
            if text.count(self._USER) == 1 and text.count(self._SYSTEM) == 1:
                return text
        return None

    def segments(self, system: str, user: str) -> list[Segment] | None:
        text = self.render(system, user)
        if text is None:
            return None
        out: list[Segment] = []
        for part in re.split(f"({re.escape(self._SYSTEM)}|{re.escape(self._USER)})", text):
            if part == self._SYSTEM:
                out.append(Segment("text", system, "system"))
            elif part == self._USER:
                out.append(Segment("text", user, "user"))
            elif part:
                # Template markup: parse special tokens in it (that is what it is made of).
                out.append(Segment("control", part))
        return out


PromptStyle = ChatFormat | JinjaChatFormat | None  # None: a base model, plain instruction prompt


def prompt_style(chat_template: str | None, gguf_template: str | None, *, has_manifest: bool) -> PromptStyle:
    """How to prompt a model for a code action.

    The registry's ``chat_template`` name wins when we know it.  A manifest without one
    describes a base model: plain instruction prompt.  Without a manifest (a bare .gguf
    path), or with a name we do not know, the GGUF's own Jinja template decides: a layout
    we recognise in it, else the template rendered as is.
    """
    named = chat_format_named(chat_template)
    if named is not None:
        return named
    if has_manifest and (not chat_template or _normalize_name(chat_template) in BASE_MODEL_NAMES):
        return None
    if chat_template:
        logger.info("unknown chat template name %r; using the model's own template if it has one", chat_template)
    detected = detect_chat_format(gguf_template)
    if detected is not None:
        return detected
    if gguf_template:
        jinja = JinjaChatFormat(gguf_template)
        if jinja.render("s", "u") is not None:
            return jinja
    return None
