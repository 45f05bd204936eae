"""Tests for stlib.options: config fields declare their command-line form; parsers and configs round-trip."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from stlib.options import (
    accept_former_keywords,
    add_options,
    check_options,
    config_from,
    is_option,
    option,
    option_of,
    require,
)


@dataclasses.dataclass(frozen=True)
class Inner:
    depth: int = option(3, "how deep", check="positive", flag="--deep")
    shiny: bool = option(False, "polish it")
    hidden: str = "not on the command line"


@dataclasses.dataclass
class Settings:
    source: str = option(help="where from", positional=True)
    size: int | None = option(256, "a side; 0: as given", none=0, group="shape")
    counts: int | tuple[int, ...] = option(5, "one count or several", check="positive", group="shape")
    layers: dict[str, float] = option(help="weighted layers", factory=lambda: {"a": 1.0}, metavar="L[:W]")
    names: tuple[str, ...] = option(("x", "y"), "names")
    ratio: float = option(0.5, "a fraction", check="fraction")
    mode: str = option("fast", "how", choices=("fast", "slow"))
    fancy: bool = option(False, "turn it on")
    progress: bool = option(True, "no progress bar", flag="--quiet")
    sharp: bool = option(True, "sharpen (on unless --no-sharp)")
    inner: Inner = dataclasses.field(default_factory=Inner, metadata={"group": "inner"})
    internal: int = 7


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="test", exit_on_error=False)
    add_options(p, Settings)
    return p


def test_defaults_round_trip_and_only_options_reach_the_command_line():
    args = parser().parse_args(["here"])
    assert config_from(Settings, args) == Settings(source="here")
    dests = {a.dest for a in parser()._actions}
    assert {"size", "counts", "layers", "names", "ratio", "mode", "fancy", "progress", "sharp", "depth"} <= dests
    assert not {"internal", "hidden", "inner"} & dests
    assert [f.name for f in dataclasses.fields(Settings) if is_option(f)][:2] == ["source", "size"]


def test_values_are_converted_as_the_field_types_say():
    argv = ["here", "--size", "0", "--counts", "2", "--layers", "b:2", "c", "--names", "z", "--ratio", "1"]
    argv += ["--mode", "slow", "--fancy", "--quiet", "--deep", "9"]
    settings = config_from(Settings, parser().parse_args(argv), internal=8)
    assert settings.size is None and settings.counts == 2 and settings.layers == {"b": 2.0, "c": 1.0}
    assert settings.names == ("z",) and settings.ratio == 1.0 and settings.mode == "slow"
    assert settings.fancy and not settings.progress and settings.inner == Inner(depth=9) and settings.internal == 8
    assert config_from(Settings, parser().parse_args(["here", "--counts", "2", "3"])).counts == (2, 3)


@pytest.mark.parametrize(
    "argv", [["--counts", "0"], ["--ratio", "1.5"], ["--deep", "-1"], ["--mode", "medium"], ["--layers", "a:-1"]]
)
def test_checks_and_choices_refuse_bad_values(argv):
    with pytest.raises((argparse.ArgumentError, SystemExit)):
        parser().parse_args(["here", *argv])


def test_help_shows_every_option_with_its_default_in_its_group():
    text = parser().format_help()
    for fragment in ("shape:", "inner:", "--deep N", "how deep (default: 3)", "(default: x y)", "L[:W]", "--quiet"):
        assert fragment in text, fragment
    assert "(default: a)" in text  # a dict of equal weights shows its keys


def test_option_refuses_an_unknown_check():
    with pytest.raises(ValueError, match="check must be one of"):
        option(1, "x", check="prime")


@dataclasses.dataclass
class Outer:
    kind: str = option("a", "which kind", choices=("a", "b"))
    inner: Inner | dict | None = dataclasses.field(
        default=None, metadata={"group": "inner", "nested": Inner, "partial": True}
    )


def test_partial_nested_options_pass_on_only_what_was_given():
    p = argparse.ArgumentParser(prog="test", exit_on_error=False)
    add_options(p, Outer)
    assert config_from(Outer, p.parse_args([])).inner == {}  # the outer config picks the defaults (e.g. by task)
    assert config_from(Outer, p.parse_args(["--deep", "4"])).inner == {"depth": 4}
    # a flag of a partial config can say either value: the outer config's default may be True
    assert config_from(Outer, p.parse_args(["--shiny"])).inner == {"shiny": True}
    assert config_from(Outer, p.parse_args(["--no-shiny"])).inner == {"shiny": False}
    assert "default" not in p.format_help().split("--deep")[1].split("\n")[0]  # the default is the outer's choice


def test_a_boolean_on_by_default_without_its_own_flag_can_be_turned_off_and_on():
    assert config_from(Settings, parser().parse_args(["here"])).sharp
    assert not config_from(Settings, parser().parse_args(["here", "--no-sharp"])).sharp
    assert config_from(Settings, parser().parse_args(["here", "--sharp"])).sharp
    assert "--no-quiet" not in parser().format_help()  # a flag of its own only turns it off
    assert "(on unless --no-sharp) (default: on)" in " ".join(parser().format_help().split())


@dataclasses.dataclass
class Numbers:
    count: int | None = 3
    rate: float = 0.5


@pytest.mark.parametrize(
    ("rule", "value", "none_ok", "message"),
    [
        ("positive_int", 0, False, "Numbers.count must be a positive integer, got 0."),
        ("positive_int", True, False, "Numbers.count must be a positive integer, got True."),
        ("positive_int", 2.0, False, "Numbers.count must be a positive integer, got 2.0."),
        ("non_negative_int", -1, True, "Numbers.count must be None or an integer >= 0, got -1."),
        ("positive", 0.0, False, "Numbers.count must be a positive number, got 0.0."),
        ("non_negative", float("nan"), False, "Numbers.count must be a finite number >= 0, got nan."),
        ("non_negative", float("inf"), False, "Numbers.count must be a finite number >= 0, got inf."),
        ("non_negative", None, False, "Numbers.count must be a finite number >= 0, got None."),
    ],
)
def test_require_names_the_setting_the_rule_and_the_value(rule, value, none_ok, message):
    with pytest.raises(ValueError) as error:
        require(Numbers(count=value), rule, "count", none_ok=none_ok)
    assert str(error.value) == message


def test_require_accepts_what_its_rule_allows():
    require(Numbers(count=None), "positive_int", "count", none_ok=True)
    require(Numbers(count=0, rate=0), "non_negative", "count", "rate")  # ints are numbers
    require(Numbers(count=1, rate=2.5), "positive", "count", "rate")
    require(Numbers(count=0), "non_negative_int", "count")


def test_require_reports_the_first_setting_outside_its_rule():
    with pytest.raises(ValueError, match=r"Numbers\.rate must be a positive number, got -1"):
        require(Numbers(count=0, rate=-1), "positive", "rate", "count")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"counts": 0}, "Settings.counts must be a positive integer, got 0."),
        ({"counts": (2, 0)}, "Settings.counts must be a positive integer, got (2, 0)."),
        ({"ratio": 1.5}, "Settings.ratio must be a number between 0 and 1, got 1.5."),
        ({"mode": "medium"}, "Settings.mode must be one of fast, slow, got 'medium'."),
    ],
)
def test_check_options_applies_the_declared_limits_to_a_config_built_in_python(changes, message):
    check_options(Settings(source="here"))  # the defaults are within their limits
    check_options(Settings(source="here", counts=(1, 2), size=None))
    with pytest.raises(ValueError) as error:
        check_options(Settings(source="here", **changes))
    assert str(error.value) == message


def test_former_keywords_are_translated_before_the_config_is_made():
    @dataclasses.dataclass
    class Renamed:
        depth: int = 1

    accept_former_keywords(Renamed, lambda kw: {"depth": kw.pop("levels")} | kw if "levels" in kw else kw)
    assert Renamed(levels=4) == Renamed(depth=4) and dataclasses.replace(Renamed(levels=4), depth=2).depth == 2

    @dataclasses.dataclass
    class Moved:
        out: str = "o"

    accept_former_keywords(Moved, {"output": "out"})  # a plain rename
    assert Moved(output="x") == Moved(out="x")
    with pytest.raises(TypeError, match="Moved takes out or its former name output, not both."):
        Moved(output="x", out="y")


def test_an_option_lent_to_another_config_keeps_its_limits_and_flags_with_its_own_default():
    @dataclasses.dataclass
    class Borrower:
        depth: int = option_of(Inner, "depth", 7)
        mode: str = option_of(Settings, "mode", "slow", help="how, here")

    assert Borrower() == Borrower(depth=7, mode="slow")
    with pytest.raises(ValueError, match="Borrower.depth must be a positive integer, got 0"):
        check_options(Borrower(depth=0))  # Inner's check, applied to the borrower
    parser = argparse.ArgumentParser()
    add_options(parser, Borrower)
    args = parser.parse_args(["--deep", "2"])  # Inner's flag
    assert config_from(Borrower, args) == Borrower(depth=2, mode="slow")
    assert "how, here" in parser.format_help() and "(default: 7)" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "medium"])  # Settings' choices
