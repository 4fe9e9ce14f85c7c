"""Code actions, pure logic: regions and indentation, prompts, budget, output hygiene."""

from __future__ import annotations

import threading

import pytest
from tree_sitter_language_pack import get_parser

from lsp_server.engine import actions as act
from lsp_server.engine.actions import ActionKind, CodeRegion
from lsp_server.engine.model import LoadedModel
from lsp_server.families import chat
from lsp_server.families.completion import get_template
from tests.unit.fakes import FakeBackend

CHATML_JINJA = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SOURCE = '''import os


class Store:
    """A store."""

    @staticmethod
    def load(path):
        with open(path) as fh:
            return fh.read()

    def total(self, items):
        t = 0
        for i in range(len(items)):
            t = t + items[i]
        return t


def main():
    print(Store().total([1, 2]))
'''


def region_of(text: str, needle: str, *, whole_lines: bool = False) -> CodeRegion:
    start = text.index(needle)
    end = start + len(needle)
    if whole_lines:
        start = text.rfind("\n", 0, start) + 1
    return CodeRegion.from_document(text, start, end)


# ----------------------------------------------------------------------- regions


def test_region_strips_shared_indentation_and_puts_it_back() -> None:
    method = SOURCE[SOURCE.index("    def total") : SOURCE.index("\n\n\ndef main")]
    region = region_of(SOURCE, method)
    assert region.code.startswith("def total(self, items):\n    t = 0")
    assert region.base == "    "
    new = "def total(self, items):\n    return sum(items)"
    replacement = region.replacement(new)
    assert replacement == "    def total(self, items):\n        return sum(items)"
    out = region.apply(replacement)
    assert out[: region.start] == SOURCE[: region.start]
    assert out[region.start + len(replacement) :] == SOURCE[region.end :]


def test_selection_starting_after_the_indentation_keeps_the_indentation_outside_it() -> None:
    # Empty-selection targets start at `def` (the indentation is not part of the range).
    start = SOURCE.index("def total")
    end = SOURCE.index("return t") + len("return t")
    region = CodeRegion.from_document(SOURCE, start, end)
    assert region.lead == "    " and region.base == "    "
    assert region.code.startswith("def total(self, items):\n    t = 0\n")
    replacement = region.replacement("def total(self, items):\n    return sum(items)\n")
    assert replacement == "def total(self, items):\n        return sum(items)"


def test_model_output_indented_like_the_file_is_normalised() -> None:
    region = region_of(SOURCE, "        t = 0\n        for i", whole_lines=True)
    # The model echoed the absolute indentation: dedent, then re-indent once.
    assert region.replacement("        t = 0\n        for i") == "        t = 0\n        for i"


def test_selection_keeps_leading_blank_lines_and_trailing_whitespace() -> None:
    text = "x = 1\n\n\ndef f():\n    return 1\n\n\ny = 2\n"
    start = text.index("\n\n\ndef") + 1
    end = text.index("y = 2")
    region = CodeRegion.from_document(text, start, end)
    assert region.head == "\n\n" and region.tail == "\n\n\n"
    assert region.code == "def f():\n    return 1"
    replacement = region.replacement("```python\nignored\n```" if False else "def f() -> int:\n    return 1")
    assert replacement == "\n\ndef f() -> int:\n    return 1\n\n\n"


def test_inline_expression_selection() -> None:
    text = "def f(a, b):\n    return a + b  # sum\n"
    region = region_of(text, "a + b")
    assert region.inline and region.code == "a + b"
    assert region.replacement("  (a + b)\n") == "(a + b)"
    multi = region.replacement("sum(\n    [a, b]\n)")
    assert multi == "sum(\n        [a, b]\n    )"


def test_crlf_documents_keep_crlf() -> None:
    text = "def f():\r\n    x = 1\r\n    return x\r\n"
    region = CodeRegion.from_document(text, 0, len(text))
    assert "\r" not in region.code
    replacement = region.replacement("def f():\n    return 1")
    assert replacement == "def f():\r\n    return 1\r\n"


def test_tabs_are_kept_as_the_base_indentation() -> None:
    text = "class A:\n\tdef f(self):\n\t\treturn 1\n"
    region = region_of(text, "\tdef f(self):\n\t\treturn 1")
    assert region.base == "\t" and region.code == "def f(self):\n\treturn 1"
    assert region.replacement("def f(self) -> int:\n\treturn 1") == "\tdef f(self) -> int:\n\t\treturn 1"


def test_relocate_region_after_edits() -> None:
    region = region_of(SOURCE, "def main():\n    print(Store().total([1, 2]))")
    same = act.relocate_region(region, SOURCE)
    assert same is not None and same.start == region.start
    shifted = act.relocate_region(region, "# header\n" + SOURCE)
    assert shifted is not None and shifted.start == region.start + len("# header\n")
    assert act.relocate_region(region, SOURCE.replace("print(", "log(")) is None
    after = act.relocate_region(region, SOURCE + "# footer\n")  # edits after the code do not move it
    assert after is not None and after.start == region.start
    assert act.relocate_region(region, "# x\n" + SOURCE + SOURCE) is None  # moved, and ambiguous


# --------------------------------------------------------------- enclosing code


def _definition(text: str, needle: str, language: str = "python") -> str | None:
    tree = get_parser(language).parse(text.encode())  # type: ignore[arg-type]
    offset = act.probe_offset(text, text.index(needle))
    found = act.enclosing_definition(tree.root_node, act.index_to_byte(text, offset))
    if found is None:
        return None
    return text[act.byte_to_index(text, found[0]) : act.byte_to_index(text, found[1])]


def test_enclosing_definition_python() -> None:
    assert _definition(SOURCE, "t = t + items").startswith("def total(self, items):")  # type: ignore[union-attr]
    assert _definition(SOURCE, "with open").startswith("@staticmethod\n    def load")  # type: ignore[union-attr]
    assert _definition(SOURCE, "class Store").startswith("class Store:")  # type: ignore[union-attr]
    assert _definition(SOURCE, '"""A store."""').startswith("class Store:")  # type: ignore[union-attr]
    assert _definition(SOURCE, "import os") is None


def test_cursor_in_indentation_belongs_to_the_line() -> None:
    text = SOURCE
    line_start = text.index("    def total")
    assert act.probe_offset(text, line_start) == text.index("def total")
    tree = get_parser("python").parse(text.encode())
    found = act.enclosing_definition(tree.root_node, act.probe_offset(text, line_start))
    assert found is not None and text[found[0] : found[1]].startswith("def total")


def test_enclosing_definition_javascript_arrow_function() -> None:
    text = "const add = (a, b) => {\n  return a + b;\n};\n\nfunction g() {\n  return 1;\n}\n"
    assert _definition(text, "return a + b", "javascript") == "const add = (a, b) => {\n  return a + b;\n};"
    assert _definition(text, "return 1", "javascript") == "function g() {\n  return 1;\n}"


def test_unicode_offsets_round_trip() -> None:
    text = "s = 'é🙂'\ndef f():\n    return 'ü'\n"
    byte = act.index_to_byte(text, text.index("return"))
    assert act.byte_to_index(text, byte) == text.index("return")
    assert _definition(text, "return") == "def f():\n    return 'ü'"


# ------------------------------------------------------------------------ prompts


def test_prompt_style_from_registry_and_gguf() -> None:
    assert chat.prompt_style("chatml", None, has_manifest=True).name == "chatml"  # type: ignore[union-attr]
    assert chat.prompt_style("llama2", None, has_manifest=True).name == "llama2"  # type: ignore[union-attr]
    assert chat.prompt_style("starchat", None, has_manifest=True).name == "phi3"  # type: ignore[union-attr]
    assert chat.prompt_style("phind", None, has_manifest=True).name == "phind"  # type: ignore[union-attr]
    # A base model: the manifest says so, whatever the GGUF carries.
    assert chat.prompt_style(None, CHATML_JINJA, has_manifest=True) is None
    assert chat.prompt_style("none", CHATML_JINJA, has_manifest=True) is None
    # A bare .gguf: its own template decides.
    assert chat.prompt_style(None, CHATML_JINJA, has_manifest=False).name == "chatml"  # type: ignore[union-attr]
    assert chat.prompt_style("mystery", "<s>[INST] {{ x }} [/INST]", has_manifest=True).name == "mistral"  # type: ignore[union-attr]
    assert chat.prompt_style(None, None, has_manifest=False) is None


def test_unknown_gguf_template_is_rendered_with_jinja() -> None:
    jinja = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "<<{{ m['role'] }}>>{{ m['content'] }}<<end>>{% endfor %}{% if add_generation_prompt %}<<bot>>{% endif %}"
    )
    style = chat.prompt_style(None, jinja, has_manifest=False)
    assert isinstance(style, chat.JinjaChatFormat)
    segs = style.segments("SYS", "USER <|im_end|>")
    assert segs is not None
    text = "".join(s.text for s in segs)
    assert text == "<<user>>SYS\n\nUSER <|im_end|><<end>><<bot>>"
    user = [s for s in segs if s.role == "user"]
    assert user and user[0].kind == "text"  # the code can never become a control token


def test_chat_segments_keep_user_code_as_text() -> None:
    segs = chat.CHAT_FORMATS["chatml"].segments("sys", "code with <|im_end|> inside")
    controls = [s.text for s in segs if s.kind == "control"]
    assert controls == ["<|im_start|>", "<|im_end|>", "<|im_start|>", "<|im_end|>", "<|im_start|>"]
    assert any(s.kind == "text" and "<|im_end|> inside" in s.text for s in segs)
    mistral = chat.CHAT_FORMATS["mistral"].segments("sys", "hi")
    assert "".join(s.text for s in mistral) == "[INST] sys\n\nhi [/INST]"


def test_rewrite_prompt_opens_a_fence_longer_than_any_in_the_code() -> None:
    req = act.ActionRequest(ActionKind.SIMPLIFY, 'doc = """```py\nx\n```"""', "python", "a.py")
    prompt = act.build_prompt(req, chat.CHAT_FORMATS["chatml"])
    assert prompt.fenced_answer and prompt.segments[-1].text == "````python\n"
    assert "````" in prompt.stop
    plain = act.build_prompt(req, None)
    assert plain.fenced_answer and plain.segments[-1].text.endswith("````python\n")
    explain = act.build_prompt(act.ActionRequest(ActionKind.EXPLAIN, "x = 1", "python"), chat.CHAT_FORMATS["chatml"])
    assert not explain.fenced_answer and explain.segments[-1].text == "assistant\n"


def test_task_wording_per_language() -> None:
    assert "PEP 257" in act.task_for(ActionKind.DOCSTRING, "python")
    assert "JSDoc" in act.task_for(ActionKind.TYPE_HINTS, "javascript")
    assert ActionKind.TYPE_HINTS in {s.kind for s in act.available_actions("python")}
    assert ActionKind.TYPE_HINTS not in {s.kind for s in act.available_actions("go")}
    assert len(act.available_actions(None)) == 4


def test_kind_filter() -> None:
    assert act.kind_matches("refactor.rewrite", ["refactor"])
    assert act.kind_matches("refactor.rewrite", None)
    assert not act.kind_matches("refactor.rewrite", ["quickfix"])
    assert not act.kind_matches("", ["refactor"])
    assert act.kind_matches("", [""])


# ------------------------------------------------------------------------- budget


def test_selection_too_large_for_the_window() -> None:
    backend = FakeBackend(lambda p: "", n_ctx=512)  # one token per character
    req = act.ActionRequest(ActionKind.REFACTOR, "x = 1\n" * 80, "python")
    with pytest.raises(act.SelectionTooLarge) as info:
        act.plan_prompt(backend, 512, req, None, "Fake")
    message = str(info.value)
    assert "480 tokens" in message and "context window of 512 tokens" in message
    small = act.plan_prompt(backend, 2048, act.ActionRequest(ActionKind.REFACTOR, "x = 1\n", "python"), None)
    assert small.code_tokens == 6
    assert len(small.tokens) + small.max_tokens <= 2048


def test_explain_budget_is_capped() -> None:
    backend = FakeBackend(lambda p: "", n_ctx=4096)
    planned = act.plan_prompt(backend, 4096, act.ActionRequest(ActionKind.EXPLAIN, "x = 1", "python"), None)
    assert planned.max_tokens == act.EXPLAIN_MAX_TOKENS


# ------------------------------------------------------------------------ hygiene


def test_strip_chat_markup() -> None:
    assert act.strip_chat_markup("assistant\ndef f(): pass<|im_end|>\n<|im_start|>user") == "def f(): pass"
    assert act.strip_chat_markup("x = '</s>'") == "x = '</s>'"  # not this model's stop: code
    assert act.strip_chat_markup("x = 1</s>junk", ["</s>"]) == "x = 1"


@pytest.mark.parametrize(
    ("raw", "fenced", "expected"),
    [
        ("def f():\n    return 1\n", True, "def f():\n    return 1"),
        ("```python\ndef f():\n    return 1\n```\nThis works.", True, "def f():\n    return 1"),
        ("def f():\n    return 1\n````\nmore", True, "def f():\n    return 1"),
        ("Here is the simplified code:\n```py\nx = 2\n```\nDone.", False, "x = 2"),
        ("Sure, here it is:\nx = 2\n", False, "x = 2"),
        ("```python\nx = 1\n```\nBetter:\n```python\nx = 2\n```", False, "x = 2"),
        ("```python\nx = 3\n", False, "x = 3"),  # unclosed
    ],
)
def test_extract_code(raw: str, fenced: bool, expected: str) -> None:
    assert act.extract_code(raw, fenced_answer=fenced, original="x = 1") == expected


def test_clean_rewrite_refuses_what_cannot_be_used() -> None:
    with pytest.raises(act.RewriteRejected, match="cut off"):
        act.clean_rewrite("x = 2", fenced_answer=True, original="x = 1", stop_reason="length")
    with pytest.raises(act.RewriteRejected, match="no code"):
        act.clean_rewrite("<|im_end|>", fenced_answer=True, original="x = 1", stop_reason="stop")
    with pytest.raises(act.RewriteRejected, match="no change"):
        act.clean_rewrite("    x = 1   \n", fenced_answer=True, original="x = 1", stop_reason="stop")
    assert act.clean_rewrite("x = 2   \n<|im_end|>", fenced_answer=True, original="x = 1", stop_reason="eos") == "x = 2"


def test_clean_explanation() -> None:
    raw = "assistant\nIt adds.\nIt adds.\nIt adds.\n\n\n\n```python\nx = 1\n<|im_end|>ignored"
    text = act.clean_explanation(raw, stop_reason="stop")
    assert text == "It adds.\n\n```python\nx = 1\n```"
    assert "cut off" in act.clean_explanation("Partial", stop_reason="length")
    with pytest.raises(act.ActionError):
        act.clean_explanation("  <|im_end|>", stop_reason="stop")


def test_looping_detection() -> None:
    assert act.looping("a\nThe list.\nThe list.\nThe list.\n")
    assert not act.looping("a\nb\nc\n")
    assert not act.looping("x\nx\nx\n")  # too short to call a loop


# ------------------------------------------------------------------------- syntax


def _check(language: str) -> act.SyntaxCheck:
    checks = [act.tree_sitter_check(get_parser(language))]  # type: ignore[arg-type]
    if language == "python":
        checks.append(act.python_check)
    return act.combined_check(checks)


def test_validate_rewrite_refuses_broken_python() -> None:
    region = region_of(SOURCE, "def main():\n    print(Store().total([1, 2]))")
    good = "def main():\n    store = Store()\n    print(store.total([1, 2]))"
    act.validate_rewrite(_check("python"), region, region.replacement(good), good, "python")
    broken = "def main(:\n    print(1)"
    with pytest.raises(act.RewriteRejected, match="not valid Python"):
        act.validate_rewrite(_check("python"), region, region.replacement(broken), broken, "python")
    # Tree-sitter accepts an empty body followed by a dedented line; Python does not.
    dedented = "def main():\nprint(1)"
    with pytest.raises(act.RewriteRejected):
        act.validate_rewrite(_check("python"), region, region.replacement(dedented), dedented, "python")


def test_validate_rewrite_javascript_and_documents_with_errors_elsewhere() -> None:
    text = "function f() {\n  return 1;\n}\n"
    region = CodeRegion.from_document(text, 0, len(text) - 1)
    bad = "function f() {\n  return 1;\n"
    with pytest.raises(act.RewriteRejected, match="JavaScript"):
        act.validate_rewrite(_check("javascript"), region, region.replacement(bad), bad, "javascript")
    # The file is already broken elsewhere: judge the selected code alone.
    broken_doc = "def f():\n    return 1\n\ndef g(:\n"
    region = CodeRegion.from_document(broken_doc, 0, broken_doc.index("\n\ndef g"))
    ok = "def f() -> int:\n    return 1"
    act.validate_rewrite(_check("python"), region, region.replacement(ok), ok, "python")
    with pytest.raises(act.RewriteRejected):
        act.validate_rewrite(_check("python"), region, region.replacement("def f(:"), "def f(:", "python")
    act.validate_rewrite(None, region, "anything", "anything", None)  # no grammar: nothing to check


# ---------------------------------------------------------------------------- job


def _model(reply: str, step_s: float = 0.0, chat_template: str | None = None) -> LoadedModel:
    backend = FakeBackend(lambda prompt: reply, step_s=step_s)
    backend.info.chat_template = chat_template
    return LoadedModel(backend=backend, template=get_template("plain"), stop=("<|im_end|>",))


def test_run_action_rewrite_with_chat_template() -> None:
    model = _model("def f():\n    return 2\n```\n", chat_template=CHATML_JINJA)
    progress: list[tuple[int, int]] = []
    req = act.ActionRequest(ActionKind.SIMPLIFY, "def f():\n    x = 2\n    return x", "python", "m.py")
    result = act.run_action(model, req, threading.Event(), lambda n, m: progress.append((n, m)), progress_every=4)
    assert result.text == "def f():\n    return 2"
    assert result.style == "chatml"
    assert progress and progress[0][0] == 1
    prompt_text = model.backend.calls[0]  # type: ignore[attr-defined]
    assert prompt_text.max_tokens > 0


def test_run_action_explain_plain_prompt() -> None:
    model = _model("It returns two.\n<|im_end|>")
    req = act.ActionRequest(ActionKind.EXPLAIN, "def f():\n    return 2", "python")
    result = act.run_action(model, req, threading.Event())
    assert result.text == "It returns two." and result.style == "plain"


def test_run_action_cancel() -> None:
    model = _model("x = 2\n" * 200, step_s=0.001)
    req = act.ActionRequest(ActionKind.REFACTOR, "x = 1", "python")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(act.ActionCancelled):
        act.run_action(model, req, cancel)  # cancelled while queued: the model never runs
    assert not model.backend.calls  # type: ignore[attr-defined]

    cancel = threading.Event()

    def stop_after_first(n: int, m: int) -> None:
        cancel.set()

    with pytest.raises(act.ActionCancelled):
        act.run_action(model, req, cancel, stop_after_first, progress_every=1)


def test_action_slot_latest_wins() -> None:
    slot = act.ActionSlot()
    first = slot.start()
    second = slot.start()
    assert first.cancelled and first.reason == act.ActionSlot.SUPERSEDED
    assert not second.cancelled
    slot.finish(first)  # finishing a superseded action leaves the current one alone
    slot.cancel_all("shutdown")
    assert second.cancelled and second.reason == "shutdown"


# ------------------------------------------------------------------------ intent

AREA = "def circle_area(radius):\n    return math.pi * radius ** 2"


def test_docstring_primer_opens_the_docstring() -> None:
    assert act.python_docstring_primer(AREA) == 'def circle_area(radius):\n    """'
    assert act.python_docstring_primer("@cache\ndef f(x):\n\treturn x") == '@cache\ndef f(x):\n\t"""'
    assert act.python_docstring_primer('def f():\n    """Has one."""\n') == ""
    assert act.python_docstring_primer("def f(\n    a,\n):\n    pass") == ""  # multi-line header
    assert act.python_docstring_primer("x = 1") == ""
    req = act.ActionRequest(ActionKind.DOCSTRING, AREA, "python")
    prompt = act.build_prompt(req, chat.CHAT_FORMATS["chatml"])
    assert prompt.segments[-1].text.endswith('def circle_area(radius):\n    """')
    assert prompt.answer_prefix == 'def circle_area(radius):\n    """'


def test_run_action_continues_the_primer() -> None:
    model = _model('Area of a circle."""\n    return math.pi * radius ** 2\n```\n', chat_template=CHATML_JINJA)
    result = act.run_action(model, act.ActionRequest(ActionKind.DOCSTRING, AREA, "python"), threading.Event())
    assert result.text == 'def circle_area(radius):\n    """Area of a circle."""\n    return math.pi * radius ** 2'


def test_docstring_must_only_add_documentation() -> None:
    act.check_intent(ActionKind.DOCSTRING, "python", AREA, AREA.replace(":\n", ':\n    """Area."""\n', 1))
    with pytest.raises(act.RewriteRejected, match="did not add any documentation"):
        act.check_intent(ActionKind.DOCSTRING, "python", AREA, AREA.replace("radius ** 2", "radius**2"))
    with pytest.raises(act.RewriteRejected, match="changed the code itself"):
        act.check_intent(ActionKind.DOCSTRING, "python", AREA, '"""Doc."""\n' + AREA.replace("** 2", "* radius"))
    # A docstring may replace a `pass`.
    act.check_intent(ActionKind.DOCSTRING, "python", "class A:\n    pass", 'class A:\n    """An A."""')
    # Part of a statement: not judged here (the syntax check still is).
    act.check_intent(ActionKind.DOCSTRING, "python", "return (", "return (")


def test_type_hints_must_only_add_annotations() -> None:
    typed = "from typing import Any\n\ndef circle_area(radius: float) -> float:\n    return math.pi * radius ** 2"
    act.check_intent(ActionKind.TYPE_HINTS, "python", AREA, typed)
    act.check_intent(ActionKind.TYPE_HINTS, "python", "x = 1", "x: int = 1")
    with pytest.raises(act.RewriteRejected, match="did not add any type annotations"):
        act.check_intent(ActionKind.TYPE_HINTS, "python", AREA, AREA)
    with pytest.raises(act.RewriteRejected, match="changed the code itself"):
        act.check_intent(ActionKind.TYPE_HINTS, "python", AREA, typed.replace("math.pi", "3.14"))
    act.check_intent(ActionKind.REFACTOR, "python", AREA, "anything")  # other actions may change code


def test_intent_in_other_languages() -> None:
    ts = get_parser("typescript")
    code = "function add(a, b) {\n  return a + b;\n}"
    act.check_intent(
        ActionKind.TYPE_HINTS, "typescript", code, code.replace("(a, b)", "(a: number, b: number): number"), ts
    )
    with pytest.raises(act.RewriteRejected, match="changed the code itself"):
        act.check_intent(
            ActionKind.TYPE_HINTS,
            "typescript",
            code,
            code.replace("a + b", "b + a").replace("(a, b)", "(a: number, b)"),
            ts,
        )
    go = get_parser("go")
    func = "func Add(a, b int) int {\n\treturn a + b\n}"
    act.check_intent(ActionKind.DOCSTRING, "go", func, "// Add adds.\n" + func, go)
    with pytest.raises(act.RewriteRejected, match="did not add any documentation"):
        act.check_intent(ActionKind.DOCSTRING, "go", func, func.replace("\t", "    "), go)
