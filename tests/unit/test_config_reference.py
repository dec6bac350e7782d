"""docs/config.md, the generated config-key reference: current, complete, and its generator."""

from __future__ import annotations

import dataclasses
import textwrap

from jaxlm import config_reference as ref
from jaxlm.config import RunConfig, load_config, to_dict

from helpers import REPO_ROOT

DOC = REPO_ROOT / "docs" / "config.md"


def test_every_config_key_has_a_description():
    missing = ref.undocumented()
    assert not missing, (
        f"config keys without a description: {missing}; add a trailing `# comment` to each "
        f"field in jaxlm/config.py, then run `python -m jaxlm.config_reference`")


def test_docs_config_md_is_current():
    assert DOC.is_file(), "docs/config.md is missing: run `python -m jaxlm.config_reference`"
    assert DOC.read_text(encoding="utf-8") == ref.render(), (
        "docs/config.md is stale: run `python -m jaxlm.config_reference`")


def test_reference_covers_every_key_with_defaults_that_load():
    keys = [k for s in ref.sections() for k in s.keys]
    assert [k.name for k in keys] == [f"{section}.{key}" for section, values
                                      in to_dict(RunConfig()).items() for key in values]
    text = ref.render()
    for k in keys:
        assert f"| `{k.name}` |" in text
    # each default, written as the reference shows it, is a valid override giving that default
    assert load_config(None, [f"{k.name}={k.default}" for k in keys]) == RunConfig()
    by_name = {k.name: k for k in keys}
    assert by_name["train.sample_prompt"].default == '"def "'  # trailing space: quoted
    assert by_name["model.vocab_size"].default == "null"
    assert by_name["model.family"].meaning == "transformer | lstm"
    assert "`DistributedConfig`: Multi-host" in text  # class docstrings introduce sections
    assert "transformer \\| lstm" in text  # pipes escaped inside table cells


def test_field_comments_trailing_preceding_and_missing():
    source = textwrap.dedent('''
        @dataclasses.dataclass(frozen=True)
        class Demo:
            """Doc."""

            a: int = 1  # trailing
            # unrelated, separated by a blank line

            # above, first line
            # above, second line
            b: str = "x"  # values: x | y
            c: float = 0.5
            # only above
            d: list[int] = dataclasses.field(
                default_factory=list)  # on the last line
            e: int = 2  # e, then a comment line that belongs to f
            # f's own
            f: int = 3
            x = 4  # not a field
    ''')
    assert ref.field_comments(source, "Demo") == {
        "a": "trailing",
        "b": "above, first line above, second line — values: x | y",
        "c": "",
        "d": "only above — on the last line",
        "e": "e, then a comment line that belongs to f",
        "f": "f's own",
    }


def test_undocumented_field_is_reported_and_fails_the_generator(monkeypatch, capsys, tmp_path):
    secs = ref.sections()
    model = secs[0]
    blank = dataclasses.replace(model.keys[0], meaning="")
    broken = [dataclasses.replace(model, keys=(blank,) + model.keys[1:])] + secs[1:]
    assert ref.undocumented(broken) == [blank.name]
    monkeypatch.setattr(ref, "sections", lambda: broken)
    out = tmp_path / "config.md"
    assert ref.main(["--output", str(out)]) == 1
    assert not out.exists()
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and blank.name in err and "jaxlm/config.py" in err


def test_check_flags_a_missing_or_stale_file_in_one_line(tmp_path, capsys):
    out = tmp_path / "docs" / "config.md"
    assert ref.main(["--check", "--output", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and out.name in err and "missing" in err

    assert ref.main(["--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == ref.render()
    capsys.readouterr()
    assert ref.main(["--check", "--output", str(out)]) == 0
    assert capsys.readouterr().err == ""

    out.write_text(ref.render().replace("peak learning rate", "a learning rate"), encoding="utf-8")
    assert ref.main(["--check", "--output", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and out.name in err and "stale" in err
