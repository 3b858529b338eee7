"""`storyapp bench --clustering`: labeled files in, a scored table out, bad files one line."""

import io
import json

import pytest

from storyapp.cli import main
from storyapp.clusterbench import LabeledFileError, builtin_corpora, load_labeled, report
from storyapp.corpus import same_kind_day
from storyapp.models import utcnow


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_a_labeled_file_is_scored_in_a_table(tmp_path):
    records = same_kind_day(20, 5, now=utcnow(), seed=2)
    # One file in each shape the bench reads: `text`, and title/summary/content with times.
    as_text = [{"text": f"{r['title']}. {r['summary']}", "event": r["event"]} for r in records]
    files = [
        write_jsonl(tmp_path / "text.jsonl", as_text),
        write_jsonl(tmp_path / "full.jsonl", records),
    ]
    out = io.StringIO()
    report(files, out, builtin=False)
    rows = [line.split("|") for line in out.getvalue().splitlines() if line.startswith("| ")]
    assert [row[1].strip() for row in rows[1:]] == [str(f) for f in files]
    for row in rows[1:]:
        assert row[2].strip() == str(len(records))
        assert row[3].strip() == "20"
        assert float(row[7].strip(" *")) > 0.9


def test_articles_without_a_time_are_spread_over_a_day_the_same_way_each_run(tmp_path):
    path = write_jsonl(
        tmp_path / "a.jsonl", [{"text": f"word {i}", "event": i % 3} for i in range(50)]
    )
    articles, labels = load_labeled(path)
    again, _ = load_labeled(path)
    times = [a["published_at"] for a in articles]
    assert times == [a["published_at"] for a in again]
    assert 20 * 3600 < (max(times) - min(times)).total_seconds() <= 24 * 3600
    assert labels == [i % 3 for i in range(50)]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not json", "line 2"),
        ('{"text": "no event"}', "`event`"),
        ('{"event": 1}', "`text` or `title`"),
        ('{"title": 5, "event": 1}', "strings"),
        ('{"title": "t", "event": 1, "published_at": "yesterday"}', "line 2"),
    ],
)
def test_a_bad_line_is_named(tmp_path, line, reason):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine", "event": 1}\n' + line + "\n")
    with pytest.raises(LabeledFileError, match=reason):
        load_labeled(path)


def test_the_command_says_what_is_wrong_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no event"}\n')
    for args, message in (
        (["bench", "--clustering", str(bad)], "bad.jsonl, line 1"),
        (["bench", str(bad)], "labeled files go with --clustering"),
        (["bench", "--clustering", str(tmp_path / "missing.jsonl")], "does not exist"),
    ):
        with pytest.raises(SystemExit) as exit:
            main(args)
        assert exit.value.code != 0
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def test_the_builtin_corpora_are_the_ones_the_docstring_names():
    names = list(builtin_corpora(utcnow()))
    assert names[0].startswith("data/sample")
    for expected in (
        "bench corpus",
        "same-kind day",
        "titles only",
        "lowercased",
        "boilerplate",
        "500-article",
    ):
        assert any(expected in name for name in names), expected
