"""VQAv2 evaluation of the zero-shot answer ranking of `clipcli.pipelines.vqa`.

The dataset is read in its official layout: the questions file
(`{"questions": [{"image_id", "question", "question_id"}]}`), the annotations
file (`{"annotations": [{"question_id", "image_id", "answer_type", "answers":
[{"answer", "answer_confidence", "answer_id"}] ...}]}`) and a folder of images
named `COCO_val2014_%012d.jpg` (any image whose name ends in the image id will do).

The metric is the one of the official evaluation, GT-Vision-Lab/VQA
PythonEvaluationTools/vqaEvaluation/vqaEval.py (`VQAEval.evaluate`,
`processPunctuation`, `processDigitArticle`), quirks included:

- answers are normalised (punctuation, number words, articles, contractions)
  only when the ten human answers are not all the same string;
- a question scores the mean, over each human answer left out in turn, of
  min(1, number of the other answers equal to the prediction / 3);
- percentages are rounded to two decimals.
"""

from __future__ import annotations

import json
import os
import re
import reprlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from clipcli.errors import BadInputError
from clipcli.media.images import IMAGE_EXTENSIONS, load_image
from clipcli.media.labels import Labels
from clipcli.models import load_clip
from clipcli.models.text_cache import text_embeddings
from clipcli.models.weights import file_sha256, resolve_weights
from clipcli.pipelines import vqa
from clipcli.runner import Executor, Job, Report, Result, run_job

ANSWER_TYPES = ("yes/no", "number", "other")
OFFICIAL_NAME = "COCO_val2014_{:012d}.jpg"
PUBLISHED = {
    "method": "TAP-C zero-shot (Song et al. 2022, 'CLIP Models are Few-shot Learners', ACL 2022)",
    "overall": 39.0,
    "approximate": True,
    "source": "secondary source: the emergentmind.com topic page on TAP-C ('around 39%' zero-shot on VQAv2);"
    " the paper's own table was not read, so its exact figure, split and backbone are unverified",
}

# ---------------------------------------------------------------- the official answer normalisation

# Contracted forms, each with the spellings vqaEval.py maps onto it (its `contractions`, regrouped).
_CONTRACTED_SPELLINGS = {
    "ain't": ["aint"], "aren't": ["arent"], "can't": ["cant"], "could've": ["couldve"], "couldn't": ["couldnt"],
    "couldn't've": ["couldn'tve", "couldnt've"], "didn't": ["didnt"], "doesn't": ["doesnt"], "don't": ["dont"],
    "hadn't": ["hadnt"], "hadn't've": ["hadnt've", "hadn'tve"], "hasn't": ["hasnt"], "haven't": ["havent"],
    "he'd": ["hed"], "he'd've": ["hed've", "he'dve"], "he's": ["hes"], "how'd": ["howd"], "how'll": ["howll"],
    "how's": ["hows"], "I'd've": ["Id've", "I'dve"], "I'm": ["Im"], "I've": ["Ive"], "isn't": ["isnt"],
    "it'd": ["itd"], "it'd've": ["itd've", "it'dve"], "it'll": ["itll"], "let's": ["let's"], "ma'am": ["maam"],
    "mightn't": ["mightnt"], "mightn't've": ["mightnt've", "mightn'tve"], "might've": ["mightve"],
    "mustn't": ["mustnt"], "must've": ["mustve"], "needn't": ["neednt"], "not've": ["notve"],
    "o'clock": ["oclock"], "oughtn't": ["oughtnt"], "'ow's'at": ["ow's'at", "'ows'at", "'ow'sat"],
    "shan't": ["shant"], "she'd've": ["shed've", "she'dve"], "she's": ["she's"], "should've": ["shouldve"],
    "shouldn't": ["shouldnt"], "shouldn't've": ["shouldnt've", "shouldn'tve"],
    "somebodyd": ["somebody'd"], "somebody'd've": ["somebodyd've", "somebody'dve"],
    "somebody'll": ["somebodyll"], "somebody's": ["somebodys"], "someone'd": ["someoned"],
    "someone'd've": ["someoned've", "someone'dve"], "someone'll": ["someonell"], "someone's": ["someones"],
    "something'd": ["somethingd"], "something'd've": ["somethingd've", "something'dve"],
    "something'll": ["somethingll"], "that's": ["thats"], "there'd": ["thered"],
    "there'd've": ["thered've", "there'dve"], "there're": ["therere"], "there's": ["theres"], "they'd": ["theyd"],
    "they'd've": ["theyd've", "they'dve"], "they'll": ["theyll"], "they're": ["theyre"], "they've": ["theyve"],
    "'twas": ["twas"], "wasn't": ["wasnt"], "we'd've": ["wed've", "we'dve"], "we've": ["weve"],
    "weren't": ["werent"], "what'll": ["whatll"], "what're": ["whatre"], "what's": ["whats"],
    "what've": ["whatve"], "when's": ["whens"], "where'd": ["whered"], "where's": ["wheres"],
    "where've": ["whereve"], "who'd": ["whod"], "who'd've": ["whod've", "who'dve"], "who'll": ["wholl"],
    "who's": ["whos"], "who've": ["whove"], "why'll": ["whyll"], "why're": ["whyre"], "why's": ["whys"],
    "won't": ["wont"], "would've": ["wouldve"], "wouldn't": ["wouldnt"],
    "wouldn't've": ["wouldnt've", "wouldn'tve"], "y'all": ["yall"], "y'all'll": ["yall'll", "y'allll"],
    "y'all'd've": ["yall'd've", "y'alld've", "y'all'dve"], "you'd": ["youd"], "you'd've": ["youd've", "you'dve"],
    "you'll": ["youll"], "you're": ["youre"], "you've": ["youve"],
}  # fmt: skip
CONTRACTIONS = {
    spelling: contracted for contracted, spellings in _CONTRACTED_SPELLINGS.items() for spelling in spellings
}
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = {"a", "an", "the"}
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
# vqaEval.py's period rule: its `(?!<=\d)` is a lookahead that always holds, so every "." not before a digit goes.
_PERIOD = re.compile(r"\.(?!\d)")
_PERIODS_REMOVED = 32  # vqaEval.py passes re.UNICODE (32) where `sub` takes its count
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")


def strip_punctuation(text: str) -> str:
    """vqaEval.py's `processPunctuation`: marks beside a space (or in text with "1,000") go, others become spaces."""
    out = text
    for mark in PUNCTUATION:
        touches_space = f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if touches_space or _DIGIT_COMMA_DIGIT.search(text) else " ")
    return _PERIOD.sub("", out, count=_PERIODS_REMOVED)


def normalize_words(text: str) -> str:
    """vqaEval.py's `processDigitArticle`: lower case, number words to digits, no articles, contractions spelled out."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def normalize_answer(text: str) -> str:
    """An answer as vqaEval.py compares it when the humans disagree."""
    return normalize_words(strip_punctuation(text))


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


class HumanAnswer(NamedTuple):
    """One of a question's ten human answers; equal records count as one when one of them is left out."""

    answer: str
    confidence: str
    answer_id: int


def question_accuracy(prediction: str, humans: Sequence[HumanAnswer]) -> float:
    """The VQA accuracy in [0, 1]: mean over each human left out of min(1, matching others / 3)."""
    humans = [human._replace(answer=_clean(human.answer)) for human in humans]
    prediction = _clean(prediction)
    if len({human.answer for human in humans}) > 1:
        humans = [human._replace(answer=normalize_answer(human.answer)) for human in humans]
        prediction = normalize_answer(prediction)
    scores = []
    for left_out in humans:
        matching = sum(other.answer == prediction for other in humans if other != left_out)
        scores.append(min(1.0, matching / 3))
    return sum(scores) / len(scores)


def percentage(scores: Sequence[float]) -> float:
    """Mean accuracy in percent, rounded to two decimals as vqaEval.py's `setAccuracy` does."""
    return round(100 * sum(scores) / len(scores), 2)


# ---------------------------------------------------------------- the dataset


@dataclass(frozen=True)
class Question:
    """A question with its annotation."""

    question_id: int
    image_id: int
    question: str
    answer_type: str
    question_type: str
    humans: tuple[HumanAnswer, ...]


def _read_json(path: Path, key: str) -> list[dict]:
    """The list under `key` of a JSON file; a bad file is one BadInputError naming it."""
    try:
        with open(path, encoding="utf-8") as file:
            document = json.load(file)
    except FileNotFoundError:
        raise BadInputError("no such file", path) from None
    except json.JSONDecodeError as err:
        raise BadInputError(f"not valid JSON ({err.msg} at line {err.lineno} column {err.colno})", path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise BadInputError(f"cannot read the file ({err})", path) from None
    entries = document.get(key) if isinstance(document, dict) else None
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise BadInputError(f'expected a JSON object with a "{key}" list of objects (the VQAv2 layout)', path)
    return entries


def _field(entry: dict, name: str, kind: type, path: Path, position: int):
    value = entry.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadInputError(f"entry {position}: {name!r} should be a {kind.__name__}, got {reprlib.repr(value)}", path)
    return value


def _humans(entry: dict, path: Path, position: int) -> tuple[HumanAnswer, ...]:
    answers = _field(entry, "answers", list, path, position)
    try:
        humans = tuple(HumanAnswer(a["answer"], a.get("answer_confidence", ""), a.get("answer_id", i))
                       for i, a in enumerate(answers))  # fmt: skip
    except (TypeError, KeyError):
        raise BadInputError(f'entry {position}: every answer needs an "answer"', path) from None
    if not humans or not all(isinstance(human.answer, str) for human in humans):
        raise BadInputError(f"entry {position}: expected a list of human answers", path)
    return humans


def _read_questions(path: Path) -> list[tuple[int, int, str]]:
    """`(question_id, image_id, question)` of each entry, in the file's order."""
    return [
        (
            _field(entry, "question_id", int, path, position),
            _field(entry, "image_id", int, path, position),
            _field(entry, "question", str, path, position),
        )
        for position, entry in enumerate(_read_json(path, "questions"))
    ]


def read_dataset(questions_file: Path, annotations_file: Path, limit: int | None = None) -> list[Question]:
    """The questions in question_id order (the first `limit`), each with its annotation; others' are unused."""
    questions = sorted(_read_questions(questions_file))[:limit]
    annotations = _read_json(annotations_file, "annotations")
    by_id = {_field(entry, "question_id", int, annotations_file, i): i for i, entry in enumerate(annotations)}
    dataset = []
    for question_id, image_id, question in questions:
        if question_id not in by_id:
            raise BadInputError(f"no annotation for question_id {question_id}", annotations_file)
        index = by_id[question_id]
        annotation = annotations[index]
        if annotation.get("image_id", image_id) != image_id:
            where = f"image_id {annotation['image_id']}, not {image_id} as in {questions_file}"
            raise BadInputError(f"question_id {question_id} is on {where}", annotations_file)
        dataset.append(
            Question(
                question_id=question_id,
                image_id=image_id,
                question=question,
                answer_type=_field(annotation, "answer_type", str, annotations_file, index),
                question_type=str(annotation.get("question_type", "")),
                humans=_humans(annotation, annotations_file, index),
            )
        )
    return dataset


_TRAILING_DIGITS = re.compile(r"(\d+)$")


def find_images(folder: Path, image_ids: Iterable[int]) -> dict[int, list[Path]]:
    """The image files of each id in `folder`: COCO_val2014_%012d.jpg, else any image whose stem ends in the id.

    The id is read from the trailing digits of the name ("COCO_val2014_000000000042",
    "img_042", "42"); a folder holding the official name uses that file alone.
    """
    wanted = set(image_ids)
    found: dict[int, list[Path]] = {image_id: [] for image_id in wanted}
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except FileNotFoundError:
        raise BadInputError("no such folder", folder) from None
    except NotADirectoryError:
        raise BadInputError("not a folder (expected the folder of images)", folder) from None
    for entry in entries:
        stem, extension = os.path.splitext(entry.name)
        digits = _TRAILING_DIGITS.search(stem)
        if digits and int(digits.group(1)) in wanted and extension.lower() in IMAGE_EXTENSIONS:
            found[int(digits.group(1))].append(Path(entry.path))
    for image_id, paths in found.items():
        official = [path for path in paths if path.name == OFFICIAL_NAME.format(image_id)]
        found[image_id] = official or paths
    return found


# ---------------------------------------------------------------- evaluation


def _by_image(dataset: Sequence[Question]) -> dict[int, list[Question]]:
    """Questions grouped by image, images in the order of their first question."""
    groups: dict[int, list[Question]] = {}
    for question in dataset:
        groups.setdefault(question.image_id, []).append(question)
    return groups


def _image_problem(folder: Path, image_id: int, paths: Sequence[Path], questions: int) -> BadInputError | None:
    """Why an image id has no one file to read, or None."""
    if len(paths) == 1:
        return None
    skipped = f"{questions} question(s) skipped"
    if not paths:
        return BadInputError(f"no such image (image_id {image_id}; {skipped})", folder / OFFICIAL_NAME.format(image_id))
    names = ", ".join(path.name for path in paths)
    return BadInputError(f"image_id {image_id} matches {len(paths)} files ({names}); {skipped}", folder)


def rank_answers(model, features: torch.Tensor, questions: Sequence[Question], fixed: Labels | None,
                 model_id: str | None) -> list[str]:  # fmt: skip
    """The top answer to each question on one image (`features`: its `[1, D]` encoding).

    The ranking of `vqa.score_answers` (statements from `vqa.rewrite_question`,
    `vqa.answer_probabilities`), with the image encoded once and the
    statements of all its questions encoded in one batch through the text cache.
    """
    rewrites = [vqa.rewrite_question(question.question) for question in questions]
    candidates = [(fixed or vqa.resolve_answers(None, rewrite)).names for rewrite in rewrites]
    statements = [
        [rewrite.statement(answer) for answer in names] for rewrite, names in zip(rewrites, candidates, strict=True)
    ]
    text = text_embeddings(model, [statement for group in statements for statement in group], model_id)
    scale = float(model.logit_scale.detach().exp())
    answers, start = [], 0
    for names in candidates:
        probabilities = vqa.answer_probabilities(features, text[start : start + len(names)], scale)
        answers.append(names[int(probabilities[0].cpu().topk(1).indices[0])])
        start += len(names)
    return answers


def accuracy_table(rows: Sequence[dict]) -> dict:
    """Overall and per-answer-type accuracy (%) of scored question rows, summed in their order; None for no rows."""
    scores: dict[str, list[float]] = {}
    for row in rows:
        scores.setdefault(row["answer_type"], []).append(row["score"])
    kinds = [kind for kind in ANSWER_TYPES if kind in scores] + sorted(set(scores) - set(ANSWER_TYPES))
    return {
        "overall": percentage([row["score"] for row in rows]) if rows else None,
        "per_answer_type": {kind: percentage(scores[kind]) for kind in kinds},
    }


@dataclass
class VqaEvalJob(Job):
    """Each image read and encoded once, its questions answered by the zero-shot ranking and scored."""

    questions: dict[Path, list[Question]]
    answers: Labels | None = None  # None: each question's own built-in set, as `clipcli vqa` picks it
    model_name: str = "ViT-B/16"
    device: str = "auto"
    trust_checkpoint: bool = False
    name = "vqa-eval"
    read_workers = 2

    def setup(self) -> None:
        self._model, self._preprocess = load_clip(self.model_name, self.device, trust_checkpoint=self.trust_checkpoint)
        self._model_id = file_sha256(resolve_weights(self.model_name))

    def read(self, path: Path) -> np.ndarray:
        return load_image(path)

    def compute(self, path: Path, value: np.ndarray) -> list[str]:
        features = vqa.encode_images(self._model, self._preprocess, [value])
        return rank_answers(self._model, features, self.questions[path], self.answers, self._model_id)

    def write(self, path: Path, outcome: list[str]) -> dict:
        questions = self.questions[path]
        scored = [_scored(question, answer.lower()) for question, answer in zip(questions, outcome, strict=True)]
        return {"image_id": questions[0].image_id, "questions": scored}


def evaluate(
    questions_file: Path,
    annotations_file: Path,
    images_dir: Path,
    *,
    answers: str | None = None,
    limit: int | None = None,
    model_name: str = "ViT-B/16",
    device: str = "auto",
    trust_checkpoint: bool = False,
    executor: Executor | None = None,
) -> Report:
    """The VQA accuracy of the zero-shot ranking over a VQAv2-format set, with one result per image.

    The submitted answer is the top-ranked candidate in lower case (VQA's
    answers are). Questions whose image is missing or unreadable are reported
    and skipped; the accuracy is over the rest.
    """
    if limit is not None and limit < 1:
        raise BadInputError("--limit must be at least 1")
    for path, kind in ((questions_file, "file"), (annotations_file, "file"), (images_dir, "folder")):
        if not Path(path).exists():  # all three, before minutes of reading a full-size annotations file
            raise BadInputError(f"no such {kind}", path)
    dataset = read_dataset(Path(questions_file), Path(annotations_file), limit)
    groups = _by_image(dataset)
    files = find_images(Path(images_dir), groups)
    fixed = vqa.resolve_answers(answers, vqa.Rewrite("other", vqa.FALLBACK)) if answers is not None else None

    unusable: dict[int, Result] = {}
    for image_id, questions in groups.items():
        problem = _image_problem(Path(images_dir), image_id, files[image_id], len(questions))
        if problem is not None:
            unusable[image_id] = Result.failed(problem.path or Path(images_dir), problem)
    readable = {files[image_id][0]: groups[image_id] for image_id in groups if image_id not in unusable}
    job = VqaEvalJob(readable, fixed, model_name=model_name, device=device, trust_checkpoint=trust_checkpoint)
    run = iter(run_job(job, list(readable), executor=executor).results)
    results = [unusable[image_id] if image_id in unusable else next(run) for image_id in groups]
    for result, (image_id, questions) in zip(results, groups.items(), strict=True):
        if result.status != "ok":
            result.data = {"image_id": image_id, "question_ids": [question.question_id for question in questions]}
    scored = [question for result in results if result.status == "ok" for question in result.data["questions"]]
    summary = {
        "model": model_name,
        "answer_set": fixed.source if fixed else "per question: yesno, colors, counts or objects",
        "questions": len(dataset),
        "evaluated": len(scored),
        "skipped": len(dataset) - len(scored),
        "images": len(groups),
        "accuracy": accuracy_table(scored),
        "published": PUBLISHED,
    }
    return Report(job.name, results, summary)


def _scored(question: Question, prediction: str) -> dict:
    """A question's row: the answer submitted and its VQA accuracy (`score` in [0, 1], `accuracy` in %)."""
    score = question_accuracy(prediction, question.humans)
    return {
        "question_id": question.question_id,
        "question": question.question,
        "answer": prediction,
        "answer_type": question.answer_type,
        "accuracy": round(100 * score, 2),
        "score": score,
    }
