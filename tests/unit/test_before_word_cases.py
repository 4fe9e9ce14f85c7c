"""The cases benchmarks/before_word.py cuts out of Python code."""

from pathlib import Path

from benchmarks.before_word import collect


def test_cases_cut_the_expression_before_the_continuing_word(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    code = (
        "def f(text, xs, a):\n"
        "    y = text.upper() if text else None\n"
        "    zs = [x * 2 for x in xs]\n"
        "    return a is None\n"
        "if (a and\n"
        "        b):\n"  # spans two lines: no case
        "    pass\n"
    )
    (pkg / "m.py").write_text(code)
    cases = {c["word"]: c for c in collect(tmp_path, 10, 0)}
    assert set(cases) == {"if", "for", "is"}
    c = cases["if"]
    assert c["truth"] == "text.upper()"
    assert c["prefix"].endswith("    y = ") and c["suffix"].startswith("if text else None\n")
    assert c["prefix"] + c["truth"] + " " + c["suffix"] == code
    assert (c["line"], c["character"]) == (1, 8)
    assert cases["for"]["truth"] == "x * 2" and cases["is"]["truth"] == "a"
