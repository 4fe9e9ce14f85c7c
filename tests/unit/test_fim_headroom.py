"""The self-consistency choice in benchmarks/fim_headroom.py."""

from benchmarks.fim_headroom import majority


def test_the_suggestion_written_most_often_wins_whitespace_aside() -> None:
    shown = ["x + 1", "y", "x  +\t1", "y", "x + 1"]
    assert majority(shown) == "x + 1"


def test_a_tie_goes_to_the_greedy_suggestion_and_empty_ones_do_not_vote() -> None:
    assert majority(["a", "", "", "b", "b", "a"]) == "a"
    assert majority(["", "b", "c", "c"]) == "c"
    assert majority(["", ""]) == ""
