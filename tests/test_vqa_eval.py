"""`clipcli vqa-eval`: the official VQA metric on hand-made cases, and runs on a tiny VQAv2-layout set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from makers.images import draw_shapes_image, write_image
from typer.testing import CliRunner

from clipcli.cli import app
from clipcli.media.images import load_image
from clipcli.models import load_clip
from clipcli.models.weights import file_sha256
from clipcli.pipelines import vqa
from clipcli.pipelines.vqa_eval import HumanAnswer, find_images, normalize_answer, percentage, question_accuracy

runner = CliRunner()


def humans(*answers: str) -> list[HumanAnswer]:
    """Ten (or any number of) human answers with the ids VQAv2 gives them."""
    return [HumanAnswer(answer, "yes", number) for number, answer in enumerate(answers, start=1)]


# ---------------------------------------------------------------- the metric


@pytest.mark.parametrize(
    "raw, normalised",
    [
        ("Two", "2"),
        ("a dog.", "dog"),
        ("The Cat!", "cat"),
        ("dont", "don't"),
        ("isnt it", "isn't it"),
        ("3.5", "3.5"),
        ("1,000", "1000"),
        ("black-and-white", "black and white"),
        ("yes ?", "yes"),
        ("none", "0"),
    ],
)
def test_answers_are_normalised_as_vqaeval_does(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_three_of_ten_humans_score_0_9_and_four_score_1():
    # Leaving out one of the 3 matching humans leaves 2 (2/3), leaving out any of the 7 others leaves 3 (1):
    # (3 * 2/3 + 7 * 1) / 10 = 0.9. With 4 matching, every subset keeps at least 3.
    assert question_accuracy("dog", humans(*["dog"] * 3, *["cat"] * 7)) == pytest.approx(0.9)
    assert question_accuracy("dog", humans(*["dog"] * 4, *["cat"] * 6)) == 1.0


def test_one_of_ten_humans_scores_0_3():
    # Left out: the matching human once (0 matches), the 9 others (1 match, 1/3): 9 * (1/3) / 10 = 0.3.
    assert question_accuracy("dog", humans("dog", *["cat"] * 9)) == pytest.approx(0.3)
    assert question_accuracy("bird", humans("dog", *["cat"] * 9)) == 0.0


def test_normalisation_applies_to_both_sides_only_when_humans_disagree():
    assert question_accuracy("Two", humans(*["2"] * 9, "3")) == 1.0
    assert question_accuracy("A dog.", humans(*["dog"] * 3, "cat", *["the dog"] * 6)) == 1.0
    assert question_accuracy("dont", humans(*["don't"] * 4, *["no"] * 6)) == 1.0
    # Ten identical answers: vqaEval.py compares the raw strings (whitespace trimmed only).
    assert question_accuracy("Two", humans(*["2"] * 10)) == 0.0
    assert question_accuracy(" 2\n", humans(*["2"] * 10)) == 1.0


def test_identical_human_records_are_left_out_together():
    # vqaEval.py drops every answer dict equal to the held-out one; distinct ids keep the usual 0.9.
    same_record = [HumanAnswer("dog", "yes", 1)] * 3 + humans(*["cat"] * 7)
    assert question_accuracy("dog", same_record) == pytest.approx((3 * 0 + 7 * 1) / 10)


def test_percentages_are_rounded_to_two_decimals():
    assert percentage([1.0, 0.0, 0.0]) == 33.33
    assert percentage([0.3, 0.9, 1.0]) == 73.33


# ---------------------------------------------------------------- a tiny VQAv2-layout set

# question_id: (image_id, question, answer_type, how many of the ten humans give vqa's own top answer)
QUESTIONS = {
    101: (1, "How many dogs are there?", "number", 4),
    103: (1, "Is there a car?", "yes/no", 3),
    201: (2, "Is it raining?", "yes/no", 1),
    202: (2, "What color is the car?", "other", 0),
    4201: (42, "What color is the sky?", "other", 3),
    4202: (42, "How many birds?", "number", 1),
}
# The accuracy for each number of matching humans, by the leave-one-out rule (worked out in the tests above).
SCORE_FOR_MATCHES = {0: 0.0, 1: 0.3, 3: 0.9, 4: 1.0}
IMAGE_FILES = {1: "COCO_val2014_000000000001.jpg", 2: "COCO_val2014_000000000002.jpg", 42: "img_0042.png"}


@pytest.fixture
def cli_model(tiny_vit_path) -> list[str]:
    return ["--model", str(tiny_vit_path), "--device", "cpu", "--quiet"]


@pytest.fixture
def images_dir(tmp_path) -> Path:
    folder = tmp_path / "val2014"
    folder.mkdir()
    for seed, (image_id, name) in enumerate(IMAGE_FILES.items()):
        write_image(folder / name, draw_shapes_image((96, 128), seed=seed + image_id))
    return folder


def vqa_top_answer(model_path: Path, image: Path, question: str, answers: str | None = None) -> str:
    """The answer `clipcli vqa` ranks first (its `score_answers` over its candidates), lower-cased as submitted."""
    model, preprocess = load_clip(model_path, device="cpu")
    names = vqa.resolve_answers(answers, vqa.rewrite_question(question)).names
    pixels = [load_image(image)]
    _, _, probabilities = vqa.score_answers(
        model, preprocess, pixels, question, names, model_id=file_sha256(model_path)
    )
    return names[int(probabilities[0].argmax())].lower()


def write_dataset(folder: Path, predictions: dict[int, str], questions: dict = QUESTIONS) -> tuple[Path, Path]:
    """The VQAv2 questions and annotations files; each question's humans give its prediction as often as asked."""
    entries, annotations = [], []
    for question_id, (image_id, question, answer_type, matches) in reversed(questions.items()):
        entries.append({"image_id": image_id, "question": question, "question_id": question_id})
        answers = [predictions.get(question_id, "?")] * matches + ["zebra crossing"] * (10 - matches)
        annotations.append(
            {
                "question_id": question_id,
                "image_id": image_id,
                "answer_type": answer_type,
                "question_type": question.lower().split(" ")[0],
                "multiple_choice_answer": answers[0],
                "answers": [
                    {"answer": answer, "answer_confidence": "yes", "answer_id": number}
                    for number, answer in enumerate(answers, start=1)
                ],
            }
        )
    questions_file = folder / "v2_OpenEnded_mscoco_val2014_questions.json"
    annotations_file = folder / "v2_mscoco_val2014_annotations.json"
    questions_file.write_text(json.dumps({"task_type": "Open-Ended", "questions": entries}))
    annotations_file.write_text(json.dumps({"annotations": annotations}))
    return questions_file, annotations_file


def vqa_predictions(images_dir: Path, model_path: Path, answers: str | None = None) -> dict[int, str]:
    return {
        question_id: vqa_top_answer(model_path, images_dir / IMAGE_FILES[image_id], question, answers)
        for question_id, (image_id, question, _, _) in QUESTIONS.items()
    }


def expected_accuracy(question_ids) -> dict:
    """Overall and per-answer-type accuracy (%) from SCORE_FOR_MATCHES, computed here."""
    by_type: dict[str, list[float]] = {}
    for question_id in question_ids:
        _, _, answer_type, matches = QUESTIONS[question_id]
        by_type.setdefault(answer_type, []).append(SCORE_FOR_MATCHES[matches])
    every = [SCORE_FOR_MATCHES[QUESTIONS[question_id][3]] for question_id in sorted(question_ids)]
    return {
        "overall": round(100 * sum(every) / len(every), 2),
        "per_answer_type": {kind: round(100 * sum(s) / len(s), 2) for kind, s in by_type.items()},
    }


def vqa_eval(questions_file: Path, annotations_file: Path, images_dir: Path, *options: str, **invoke):
    arguments = ["vqa-eval", str(questions_file), str(annotations_file), str(images_dir), *options]
    return runner.invoke(app, arguments, **invoke)


def answered(report: dict) -> dict[int, str]:
    return {q["question_id"]: q["answer"] for row in report["results"] for q in row.get("questions", [])}


def test_vqa_eval_scores_vqas_own_answers_with_the_official_metric(tmp_path, images_dir, cli_model, tiny_vit_path):
    predictions = vqa_predictions(images_dir, tiny_vit_path)
    questions_file, annotations_file = write_dataset(tmp_path, predictions)

    result = vqa_eval(questions_file, annotations_file, images_dir, "--json", *cli_model)

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert answered(report) == predictions
    assert report["accuracy"] == expected_accuracy(QUESTIONS)
    assert list(report["accuracy"]["per_answer_type"]) == ["yes/no", "number", "other"]
    assert (report["questions"], report["evaluated"], report["skipped"], report["images"]) == (6, 6, 0, 3)
    assert report["command"] == "vqa-eval" and report["counts"] == {"ok": 3, "skipped": 0, "failed": 0}
    assert set(report["results"][0]) == {"input", "status", "image_id", "questions"}
    assert set(report["results"][0]["questions"][0]) == {
        "question_id", "question", "answer", "answer_type", "accuracy", "score"
    }  # fmt: skip
    assert [row["image_id"] for row in report["results"]] == [1, 2, 42]
    assert report["results"][2]["input"] == str(images_dir / "img_0042.png")
    assert "secondary source" in report["published"]["source"] and report["published"]["overall"] == 39.0
    scores = {q["question_id"]: q["accuracy"] for row in report["results"] for q in row["questions"]}
    assert scores == {qid: round(100 * SCORE_FOR_MATCHES[QUESTIONS[qid][3]], 2) for qid in QUESTIONS}


def test_table_prints_ours_beside_the_published_tap_c_figure(tmp_path, images_dir, cli_model, tiny_vit_path):
    questions_file, annotations_file = write_dataset(tmp_path, vqa_predictions(images_dir, tiny_vit_path))

    result = vqa_eval(questions_file, annotations_file, images_dir, *cli_model, env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    expected = expected_accuracy(QUESTIONS)
    this_run = next(line for line in result.stdout.splitlines() if "this run (6 questions)" in line)
    assert f"{expected['overall']:.2f}" in this_run and f"{expected['per_answer_type']['number']:.2f}" in this_run
    assert any("TAP-C" in line and "≈39" in line for line in result.stdout.splitlines())
    assert "published: secondary source" in result.stdout


def test_limit_takes_the_first_questions_by_question_id(tmp_path, images_dir, cli_model, tiny_vit_path):
    predictions = vqa_predictions(images_dir, tiny_vit_path)
    questions_file, annotations_file = write_dataset(tmp_path, predictions)

    result = vqa_eval(questions_file, annotations_file, images_dir, "--limit", "3", "--json", *cli_model)

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert sorted(answered(report)) == [101, 103, 201]
    assert report["accuracy"] == expected_accuracy([101, 103, 201])
    assert (report["questions"], report["images"]) == (3, 2)
    assert vqa_eval(questions_file, annotations_file, images_dir, "--limit", "0", *cli_model).exit_code == 2


def test_missing_and_unreadable_images_skip_their_questions_and_exit_4(tmp_path, images_dir, cli_model, tiny_vit_path):
    predictions = vqa_predictions(images_dir, tiny_vit_path)
    with_missing = {**QUESTIONS, 700: (7, "Is there a dog?", "yes/no", 10), 701: (7, "How many cats?", "number", 10)}
    questions_file, annotations_file = write_dataset(tmp_path, predictions, with_missing)

    result = vqa_eval(questions_file, annotations_file, images_dir, "--json", *cli_model)

    assert result.exit_code == 4, result.output
    report = json.loads(result.stdout)
    assert (report["questions"], report["evaluated"], report["skipped"]) == (8, 6, 2)
    assert report["accuracy"] == expected_accuracy(QUESTIONS)
    missing = next(row for row in report["results"] if row["image_id"] == 7)
    assert missing["status"] == "failed" and missing["question_ids"] == [700, 701]
    assert report["counts"] == {"ok": 3, "skipped": 0, "failed": 1}
    expected_file = images_dir / "COCO_val2014_000000000007.jpg"
    errors = result.stderr.strip().splitlines()
    assert errors[0].startswith(f"error: {expected_file}: no such image") and "2 question(s) skipped" in errors[0]
    assert errors[-1] == "error: 1 of 4 inputs failed" and "Traceback" not in result.output

    (images_dir / IMAGE_FILES[2]).write_bytes(b"\xff\xd8 not a jpeg")
    result = vqa_eval(questions_file, annotations_file, images_dir, "--json", *cli_model)
    assert result.exit_code == 4, result.output
    report = json.loads(result.stdout)
    assert (report["evaluated"], report["skipped"]) == (4, 4)
    assert report["accuracy"] == expected_accuracy([101, 103, 4201, 4202])
    unreadable = next(row for row in report["results"] if row["image_id"] == 2)
    assert unreadable["status"] == "failed" and unreadable["question_ids"] == [201, 202]
    assert unreadable["error"].startswith(str(images_dir / IMAGE_FILES[2]))


def test_answers_option_gives_every_question_the_same_candidates(tmp_path, images_dir, cli_model, tiny_vit_path):
    answers_file = tmp_path / "answers.txt"
    answers_file.write_text("red\nblue\n2\nyes\n")
    predictions = vqa_predictions(images_dir, tiny_vit_path, str(answers_file))
    questions_file, annotations_file = write_dataset(tmp_path, predictions)

    result = vqa_eval(
        questions_file, annotations_file, images_dir, "--answers", str(answers_file), "--json", *cli_model
    )

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert answered(report) == predictions and set(predictions.values()) <= {"red", "blue", "2", "yes"}
    assert report["answer_set"] == str(answers_file)
    assert report["accuracy"] == expected_accuracy(QUESTIONS)


@pytest.mark.parametrize(
    "which, content, problem",
    [
        ("questions", "{not json", "not valid JSON (Expecting property name enclosed in double quotes at line 1"),
        ("annotations", '{"annotations": [', "not valid JSON"),
        ("questions", '{"questions": {}}', 'expected a JSON object with a "questions" list'),
        ("annotations", '[{"question_id": 1}]', 'expected a JSON object with a "annotations" list'),
        ("questions", '{"questions": [{"image_id": 1, "question": "why?"}]}', "entry 0: 'question_id' should be"),
    ],
)
def test_malformed_json_exits_2_with_one_line_naming_the_file(tmp_path, images_dir, cli_model, which, content, problem):
    files = dict(zip(("questions", "annotations"), write_dataset(tmp_path, {}), strict=True))
    files[which].write_text(content)

    result = vqa_eval(files["questions"], files["annotations"], images_dir, *cli_model)

    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {files[which]}: {problem}"), lines


def test_questions_without_annotations_or_images_folder_exit_2(tmp_path, images_dir, cli_model):
    questions_file, annotations_file = write_dataset(tmp_path, {})
    document = json.loads(annotations_file.read_text())
    document["annotations"] = [a for a in document["annotations"] if a["question_id"] != 202]
    annotations_file.write_text(json.dumps(document))
    result = vqa_eval(questions_file, annotations_file, images_dir, *cli_model)
    assert (
        result.exit_code == 2
        and result.stderr.strip() == f"error: {annotations_file}: no annotation for question_id 202"
    )

    absent = tmp_path / "absent"
    result = vqa_eval(*write_dataset(tmp_path, {}), absent, *cli_model)
    assert result.exit_code == 2 and result.stderr.strip().startswith(f"error: {absent}: no such folder")


def test_two_files_for_one_image_id_are_refused_naming_both(tmp_path, images_dir, cli_model):
    for name in ("5.png", "img_5.png"):
        write_image(images_dir / name, draw_shapes_image((32, 32), seed=5))
    questions_file, annotations_file = write_dataset(tmp_path, {}, {500: (5, "Is it red?", "yes/no", 0)})

    result = vqa_eval(questions_file, annotations_file, images_dir, *cli_model)

    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {images_dir}: image_id 5 matches 2 files (5.png, img_5.png); 1 question(s) skipped"
    )


def test_images_are_found_by_the_official_name_or_a_trailing_id(tmp_path):
    for name in ("COCO_val2014_000000000001.jpg", "1.png", "img_0042.png", "142.png", "42.txt", "photo_5.JPG"):
        (tmp_path / name).write_bytes(b"")

    found = find_images(tmp_path, [1, 5, 42, 9])

    assert found == {
        1: [tmp_path / "COCO_val2014_000000000001.jpg"],
        5: [tmp_path / "photo_5.JPG"],
        42: [tmp_path / "img_0042.png"],
        9: [],
    }
