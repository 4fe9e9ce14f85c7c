from lsp_server.engine.prompt import PREFIX_LINE_QUANTUM, PromptBudget, PromptBuilder
from lsp_server.families.completion import ContextChunk, get_template

from .fakes import CharTokenizer


def builder(template="plain", heal=True):
    tpl = get_template(template)
    specials = [t for t in (tpl.fim_prefix, tpl.fim_suffix, tpl.fim_middle, tpl.file_sep, tpl.repo_name_token) if t]
    return PromptBuilder(CharTokenizer(specials), tpl, heal=heal)


def test_plain_prompt_is_bos_plus_prefix_with_healing():
    b = builder()
    p = b.build("def f():\n    ret", "\n", PromptBudget(total=100))
    assert b.tok.detokenize(p.tokens[1:]) == "def f():\n    re"
    assert p.forced_prefix == "t"
    assert p.tokens[0] == 1


def test_budget_is_never_exceeded_and_prefix_starts_on_grid_line():
    b = builder()
    lines = [f"line_{i} = {i}" for i in range(200)]
    prefix = "\n".join(lines) + "\nx = "
    for total in (50, 120, 400, 1000):
        p = b.build(prefix, "", PromptBudget(total=total))
        assert p.n_tokens <= total
        assert p.prefix_start_line % PREFIX_LINE_QUANTUM == 0 or p.prefix_start_line == 200


def test_typing_keeps_the_prompt_start_stable():
    b = builder()
    prefix = "\n".join(f"v{i} = {i}" for i in range(300)) + "\nresult = v1"
    p1 = b.build(prefix, "", PromptBudget(total=600))
    p2 = b.build(prefix + "0", "", PromptBudget(total=600))
    # Everything but the tail is shared, so the KV cache of p1 serves p2.
    common = 0
    for a, c in zip(p1.tokens, p2.tokens, strict=False):
        if a != c:
            break
        common += 1
    assert common >= len(p1.tokens) - 3


def test_fim_layout_starcoder():
    b = builder("starcoder", heal=False)
    p = b.build("a = ", "\nb = 2", PromptBudget(total=200, suffix_max=64))
    tok = b.tok
    s = tok.specials
    assert p.tokens[0] == 1
    assert p.tokens[1] == s["<fim_prefix>"]
    i_suf = p.tokens.index(s["<fim_suffix>"])
    assert tok.detokenize(p.tokens[2:i_suf]) == "a = "
    assert p.tokens[-1] == s["<fim_middle>"]
    assert tok.detokenize(p.tokens[i_suf + 1 : -1]) == "\nb = 2"


def test_codestral_puts_suffix_first():
    b = builder("codestral", heal=False)
    p = b.build("a = ", "\nb", PromptBudget(total=200))
    s = b.tok.specials
    assert p.tokens.index(s["[SUFFIX]"]) < p.tokens.index(s["[PREFIX]"])
    assert b.tok.detokenize(p.tokens[p.tokens.index(s["[PREFIX]"]) + 1 :]) == "a = "


def test_context_chunks_fill_only_their_share():
    b = builder()
    chunks = [ContextChunk(path=f"m{i}.py", text=f"def helper_{i}(x):\n    return x\n") for i in range(50)]
    p = b.build("import m0\nm0.", "", PromptBudget(total=300, context_share=0.5), chunks)
    assert p.n_tokens <= 300
    assert 0 < len(p.chunks_used) < 50
    assert p.n_context_tokens <= 150
    text = b.tok.detokenize(p.tokens[1:])
    assert text.startswith("# m0.py\ndef helper_0(x):")
    assert "# a.py" not in text  # no path given: no header


def test_user_text_cannot_inject_control_tokens():
    b = builder("starcoder", heal=False)
    p = b.build("x = '<fim_middle>'", "", PromptBudget(total=200))
    assert p.tokens.count(b.tok.specials["<fim_middle>"]) == 1


def test_a_one_token_prefix_is_not_healed_away_when_nothing_else_is_in_the_prompt():
    from lsp_server.engine.prompt import PromptBudget, PromptBuilder
    from lsp_server.families.completion import get_template

    from .fakes import CharTokenizer

    class NoBos(CharTokenizer):
        def bos_tokens(self) -> list[int]:
            return []

    prompt = PromptBuilder(NoBos(), get_template("plain")).build("x", "", PromptBudget(total=100))
    assert prompt.tokens == [ord("x")] and prompt.forced_prefix == ""


def test_hint_chunks_go_above_the_cursor_line_as_comments():
    b = builder(heal=False)
    prefix = "\n".join(f"v{i} = {i}" for i in range(40)) + "\nif ok:\n    total = "
    hint = ContextChunk(path="app/x.py", text="total = area(r)", kind="hint")
    other = ContextChunk(path="pkg/geo.py", text="def area(r): ...", kind="definition")
    p = b.build(prefix, "", PromptBudget(total=400), [other, hint], path="app/x.py")
    text = b.tok.detokenize(p.tokens[1:])
    assert text.endswith("if ok:\n    # total = area(r)\n    total = ")
    assert text.count("total = area(r)") == 1  # not also among the context sections
    assert "def area(r): ..." in text
    assert hint in p.chunks_used
    # The prefix start is counted in the file's own lines, the hint line left out.
    plain = b.build(prefix, "", PromptBudget(total=400), [other], path="app/x.py")
    assert p.prefix_start_line == plain.prefix_start_line
    # A JavaScript file gets its own comment syntax; a blank cursor line gets no hint.
    js = b.build("if (ok) {\n  total = ", "", PromptBudget(total=400), [hint], path="x.js")
    assert b.tok.detokenize(js.tokens[1:]).endswith("if (ok) {\n  // total = area(r)\n  total = ")
    blank = b.build(prefix + "\n    ", "", PromptBudget(total=400), [hint], path="app/x.py")
    assert "area" not in b.tok.detokenize(blank.tokens[1:]) and hint not in blank.chunks_used
