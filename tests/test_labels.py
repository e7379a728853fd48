"""The one label-set reader behind --labels (action, audio, point) and --answers (vqa)."""

from __future__ import annotations

import pytest

from clipcli.errors import BadInputError
from clipcli.media.labels import Labels, read_labels
from clipcli.pipelines import action, audio, point_prompts, vqa

BUILTIN = {"animals": lambda: ["cat", "dog", "cow"]}

# Each command's reader, and a built-in set name it knows.
COMMAND_READERS = [
    (action.parse_labels, "hmdb51"),
    (audio.parse_labels, "esc50"),
    (lambda spec: Labels("", point_prompts.parse_labels(spec)), "modelnet40"),
    (lambda spec: vqa.resolve_answers(spec, vqa.rewrite_question("what color is it")), "colors"),
]


def test_built_in_set_names_are_case_insensitive():
    assert read_labels(" Animals ", BUILTIN) == ("animals", ["cat", "dog", "cow"])


def test_a_label_file_drops_its_bom_comments_and_blank_lines(tmp_path):
    file = tmp_path / "labels.txt"
    file.write_bytes("\ufeffcat\r\n# a comment\n\n  dog  \n".encode())
    assert read_labels(str(file), BUILTIN) == (str(file), ["cat", "dog"])


def test_an_id_name_csv_gives_its_names_in_order(tmp_path):
    file = tmp_path / "official.csv"
    file.write_text("\ufeffid, name\n0,brush hair\n1,cartwheel, twice\n", encoding="utf-8")
    assert read_labels(str(file), BUILTIN).names == ["brush hair", "cartwheel, twice"]


def test_a_comma_list_is_stripped_and_keeps_case():
    assert read_labels(" Dog , rain,, ", BUILTIN) == ("list", ["Dog", "rain"])


def test_duplicates_are_refused_not_dropped(tmp_path):
    file = tmp_path / "labels.txt"
    file.write_text("cat\ndog\ncat\n", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"labels\.txt'?: duplicate labels: cat$"):
        read_labels(str(file), BUILTIN)


def test_a_bare_word_is_one_label_only_where_one_is_enough():
    assert read_labels("thunder", BUILTIN, minimum=1) == ("list", ["thunder"])
    with pytest.raises(BadInputError, match=r"'thunder': not a built-in set \(animals\), an existing file"):
        read_labels("thunder", BUILTIN)


def test_a_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(BadInputError, match=r"nope\.txt: no such labels file"):
        read_labels(str(missing), BUILTIN)


@pytest.mark.parametrize(
    ("content", "message"), [(b"# only a comment\n", "no labels in the file"), (b"\xff\xfe", "cannot read")]
)
def test_an_empty_or_undecodable_file_is_one_line_error(tmp_path, content, message):
    file = tmp_path / "labels.txt"
    file.write_bytes(content)
    with pytest.raises(BadInputError, match=message) as caught:
        read_labels(str(file), BUILTIN)
    assert str(caught.value).startswith(str(file)) and "\n" not in str(caught.value)


def test_too_few_labels_name_the_option():
    with pytest.raises(BadInputError, match=r"--answers 'red,': need at least 2 answers, got 1"):
        read_labels("red,", BUILTIN, option="--answers")


@pytest.mark.parametrize(("reader", "set_name"), COMMAND_READERS)
def test_every_command_reads_labels_by_the_same_rules(tmp_path, reader, set_name):
    file = tmp_path / "labels.txt"
    file.write_text("\ufeff# mine\nRed\n\nblue\n", encoding="utf-8")
    assert reader(str(file)).names == ["Red", "blue"]
    assert reader(set_name.upper()).names == reader(set_name).names
    with pytest.raises(BadInputError, match="duplicate"):
        reader("red,blue,red")


def test_a_comma_list_longer_than_a_file_name_can_be_is_still_a_list():
    names = [f"label number {n}" for n in range(40)]  # over 255 bytes: the OS refuses it as a file name
    assert read_labels(",".join(names), BUILTIN).names == names


def test_an_id_name_csv_row_without_a_name_is_refused(tmp_path):
    file = tmp_path / "official.csv"
    file.write_text("id,name\n0,brush hair\n1,\n", encoding="utf-8")
    with pytest.raises(BadInputError, match="needs an id and a name on every line"):
        read_labels(str(file), BUILTIN)


def test_duplicates_among_many_labels_are_found_quickly():
    names = [f"class {n}" for n in range(20_000)] + ["class 7"]
    with pytest.raises(BadInputError, match="duplicate labels: class 7$"):
        read_labels(",".join(names), BUILTIN)
