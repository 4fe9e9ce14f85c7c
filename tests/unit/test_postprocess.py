from lsp_server.context.parser import SyntaxHint
from lsp_server.engine.postprocess import (
    LOOKAHEAD_MIN_S,
    CursorText,
    Mode,
    decide_mode,
    finalize,
    lookahead_capped,
    stop_condition,
)


def cur(prefix: str, suffix: str = "") -> CursorText:
    return CursorText.from_prefix_suffix(prefix, suffix)


def test_inside_a_word_gives_nothing():
    assert decide_mode(cur("x = fo", "o(1)\n")) is Mode.NONE


def test_end_of_line_is_one_line():
    assert decide_mode(cur("x = foo(", ")\n")) is Mode.LINE
    assert decide_mode(cur("    return fib", "\n")) is Mode.LINE


def test_after_block_opener_is_a_block():
    assert decide_mode(cur("def f(x):\n    ", "\n")) is Mode.BLOCK
    assert decide_mode(cur("def f(x):", "\n")) is Mode.BLOCK
    assert decide_mode(cur("function f() {\n  ", "\n}\n")) is Mode.BLOCK


def test_in_comment_is_one_line():
    assert decide_mode(cur("def f(x):\n    ", "\n"), SyntaxHint(in_comment=True)) is Mode.LINE


def test_line_cut_and_suffix_overlap():
    c = cur("print(foo(", "))\n")
    assert finalize("a, b))\nmore", Mode.LINE, c) == "a, b"
    c2 = cur("if (x", ")\n")
    assert finalize(" > 0):", Mode.LINE, c2) == " > 0"


def test_forced_prefix_is_removed_and_enforced():
    c = cur("    ret", "\n")
    assert finalize("return n", Mode.LINE, cur("    ", "\n"), forced_prefix="    ") == ""  # refused: did not start with it
    assert finalize("    return n", Mode.LINE, cur("    ", "\n"), forced_prefix="    ") == "return n"
    assert finalize("retval = 1", Mode.LINE, c, forced_prefix="ret") == "val = 1"


def test_block_stops_at_dedent_and_does_not_repeat_suffix():
    c = cur("def f(x):\n    ", "\n\ndef g():\n    pass\n")
    text = "if x:\n        return 1\n    return 2\ndef g():\n    pass"
    assert finalize(text, Mode.BLOCK, c) == "if x:\n        return 1\n    return 2"


def test_block_after_opener_starts_on_next_line():
    c = cur("def f(x):", "\n")
    assert finalize("\n    return x * 2\n\nprint(f(2))", Mode.BLOCK, c) == "\n    return x * 2"


def test_repeat_of_next_line_is_dropped():
    c = cur("x = 1\n", "\ny = 2\n")
    assert finalize("y = 2", Mode.LINE, c) == ""


def test_stop_conditions():
    line = stop_condition(Mode.LINE, cur("x = "))
    assert not line("foo(1")
    assert line("foo(1)\n")
    block = stop_condition(Mode.BLOCK, cur("def f():\n    ", "\n"))
    assert not block("a = 1\n    b = 2\n")
    assert block("a = 1\n    b = 2\nprint(1)\n")


def test_insert_before_a_word_needs_the_line_to_meet_it():
    c = cur("    return ", "string)\n")
    assert decide_mode(c) is Mode.LINE  # before a word, not inside one
    assert finalize("len(string)", Mode.LINE, c) == "len("
    assert finalize("sorted(string) + 1", Mode.LINE, c) == "sorted("
    assert finalize("len(x)", Mode.LINE, c) == ""  # never meets the text after the cursor


def test_a_line_that_opens_a_block_stays_one_line():
    # Its body is the next suggestion (prepared in idle time once this one is shown).
    c = cur("    for n in numbers", "\n\n    return result\n")
    text = "[:-1]:\n        result.append(n)\n\n    return result\n"
    assert finalize(text, Mode.LINE, c) == "[:-1]:"
    assert stop_condition(Mode.LINE, c)("[:-1]:\n")


def test_an_ended_line_suggests_the_next_lines_up_to_the_code_below():
    c = cur("    count = 0", "\n    return count\n")
    text = "\n    for ch in s:\n        count += 1\n    return count\n"
    assert finalize(text, Mode.LINE, c) == "\n    for ch in s:\n        count += 1"
    stop = stop_condition(Mode.LINE, c)
    assert not stop("\n")
    assert not stop("\n    for ch in s:\n")
    assert stop(text)
    # Never meeting the code below: the next line alone.
    assert finalize("\n    x = 1\n    y = 2\n    z = 3\n", Mode.LINE, c) == "\n    x = 1"
    # Repeating the code below is noise.
    assert finalize("\n    return count\n", Mode.LINE, c) == ""
    # Past the code's indentation: stop there.
    assert stop("\n    x = 1\ndef g():\n")


def test_a_blank_line_fills_the_gap_when_it_meets_the_code_below():
    c = cur("    x = 1\n    ", "\n    return y\n")
    assert decide_mode(c) is Mode.LINE
    assert finalize("y = x + 1\n    y *= 2\n    return y\n", Mode.LINE, c) == "y = x + 1\n    y *= 2"
    assert finalize("y = x + 1\n    z = 2\n", Mode.LINE, c) == "y = x + 1"
    assert finalize("return y\n", Mode.LINE, c) == ""


def test_the_lookahead_gives_up_in_time_but_never_the_line():
    c = cur("    count = 0", "\n    return count\n")
    now = [0.0]
    stop = lookahead_capped(stop_condition(Mode.LINE, c), c, until=10.0, clock=lambda: now[0], start=0.0)
    now[0] = 2.0
    assert not stop("\n")  # the ended line's next line is the suggestion: not there yet
    assert not stop("\n    for ch in s")
    assert not stop("\n    for ch in s:\n")  # there after 2 s: the search may take 2 s more
    now[0] = 3.9
    assert not stop("\n    for ch in s:\n        count += 1\n")
    now[0] = 4.0
    assert stop("\n    for ch in s:\n        count += 1\n        x\n")
    assert finalize("\n    for ch in s:\n        count += 1\n        x\n", Mode.LINE, c) == "\n    for ch in s:"
    # A quick line still gets LOOKAHEAD_MIN_S of search; the meeting line ends it at once.
    now[0] = 0.0
    stop = lookahead_capped(stop_condition(Mode.LINE, c), c, until=10.0, clock=lambda: now[0], start=0.0)
    now[0] = 0.05
    assert not stop("\n    for ch in s:\n")
    now[0] = 0.05 + LOOKAHEAD_MIN_S / 2
    assert stop("\n    for ch in s:\n        count += 1\n    return count\n")
    # Past the latency target: the line alone.
    blank = cur("    x = 1\n    ", "\n    return y\n")
    now[0] = 0.0
    stop = lookahead_capped(stop_condition(Mode.LINE, blank), blank, until=1.0, clock=lambda: now[0], start=0.0)
    now[0] = 2.0
    assert not stop("y = x + 1")
    assert stop("y = x + 1\n    y")
    uncapped = stop_condition(Mode.LINE, blank)
    assert lookahead_capped(uncapped, blank, None) is uncapped


def test_a_runaway_line_stops_generation_and_is_not_shown():
    c = cur("    x = foo(", "\n")
    ramble = "a" + "_t" * 70
    stop = stop_condition(Mode.LINE, c)
    assert not stop("a, b")
    assert stop(ramble)  # long before the token limit
    assert finalize(ramble, Mode.LINE, c) == ""
    assert finalize("a, b)", Mode.LINE, c) == "a, b)"
    # Counted with the text before the cursor: a line of 100 after 30 columns runs away.
    deep = cur(" " * 30 + "y = ", "\n")
    assert finalize("z" * 90, Mode.LINE, deep) == ""
    assert finalize("z" * 80, Mode.LINE, deep) == "z" * 80
    # In a block, the lines before the runaway stay.
    b = cur("def f():\n    ", "\n")
    assert finalize("a = 1\n    b = " + "1 + " * 40 + "\n", Mode.BLOCK, b) == "a = 1"
    assert stop_condition(Mode.BLOCK, b)("a = 1\n    b = " + "1 + " * 40)


def test_text_after_the_cursor_keeps_one_line():
    c = cur("x = foo(", ")\n    y = 2\n")
    stop = stop_condition(Mode.LINE, c)
    assert stop("a):\n")
    assert finalize("a)\n    y = 2\n", Mode.LINE, c) == "a"


def test_a_blank_line_fills_with_a_block_up_to_the_code_below():
    c = cur("def f(n):\n    x = 1\n", "\n    return x\n")
    text = "    if n == 0:\n        return 0\n    return x\n"
    assert finalize(text, Mode.LINE, c) == "    if n == 0:\n        return 0"
    assert finalize("    if n == 0:\n        return 0\n    y = 2\n", Mode.LINE, c) == "    if n == 0:"


def test_multiline_off_keeps_one_line():
    c = cur("    for n in numbers", "\n\n    return result\n")
    text = "[:-1]:\n        result.append(n)\n\n    return result\n"
    assert finalize(text, Mode.LINE, c, grow=False) == "[:-1]:"
    assert stop_condition(Mode.LINE, c, grow=False)("[:-1]:\n")
    c2 = cur("    count = 0", "\n    return count\n")
    assert finalize("\n    x = 1\n    return count\n", Mode.LINE, c2, grow=False) == ""


def test_lines_go_above_the_code_after_the_cursor_when_they_meet_it():
    # Enter pressed before a statement: indentation, then the statement after the cursor.
    c = cur("def f(n):\n    x = 1\n    ", "return x\n")
    text = "if n:\n        x = n\n    return x\n"
    assert finalize(text, Mode.LINE, c) == "if n:\n        x = n\n    "
    stop = stop_condition(Mode.LINE, c)
    assert not stop("if n:\n        x = n\n")
    assert stop(text)
    # At column 0 of an indented line.
    c0 = cur("def f(n):\n    x = 1\n", "    return x\n")
    assert finalize("    y = x\n    return x\n", Mode.LINE, c0) == "    y = x\n"
    # Met at another indentation, or never: nothing (the code would move or be repeated).
    assert finalize("if n:\n        x = n\n        return x\n", Mode.LINE, c) == ""
    assert finalize("y = 2\n    z = 3\n", Mode.LINE, c) == ""
    # Met on the same line: the part before it.
    assert finalize("2 * x + 1\n", Mode.LINE, cur("    a = ", "x + 1\n")) == "2 * "
