"""Zero-shot VQA: question -> statement rules, answer sets, the softmax scoring rule, the text cache, CLI."""

from __future__ import annotations

import json

import clip
import numpy as np
import pytest
import torch
from makers.images import draw_shapes_image, write_image
from PIL import Image
from typer.testing import CliRunner

from clipcli.cli import app
from clipcli.errors import BadInputError
from clipcli.media.labels import packaged_lines
from clipcli.models import load_clip, text_cache
from clipcli.pipelines import vqa

runner = CliRunner()

# question, kind, statement template (the assertion for yes/no), negated statement for yes/no
REWRITES = [
    ("Is the man wearing a hat?", "yesno", "the man is wearing a hat", "the man is not wearing a hat"),
    ("Is there a dog on the bed?", "yesno", "there is a dog on the bed", "there is no dog on the bed"),
    ("Are there any people?", "yesno", "there are some people", "there are no people"),
    ("Is this a kitchen?", "yesno", "this is a kitchen", "this is not a kitchen"),
    ("Are these bananas ripe?", "yesno", "these bananas are ripe", "these bananas are not ripe"),
    ("Is the fire hydrant red?", "yesno", "the fire hydrant is red", "the fire hydrant is not red"),
    ("Is the man happy?", "yesno", "the man is happy", "the man is not happy"),
    ("Is it raining?", "yesno", "it is raining", "it is not raining"),
    ("Does the man have a hat?", "yesno", "the man does have a hat", "the man does not have a hat"),
    ("Can you see the ocean?", "yesno", "you can see the ocean", "you can not see the ocean"),
    ("Is the little girl holding a kite?", "yesno", "the little girl is holding a kite",
     "the little girl is not holding a kite"),
    ("Is the building tall?", "yesno", "the building is tall", "the building is not tall"),
    ("Has the train stopped?", "yesno", "the train has stopped", "the train has not stopped"),
    ("What color is the car?", "color", "the car is {answer}", None),
    ("What colour are the flowers?", "color", "the flowers are {answer}", None),
    ("What color shirt is the man wearing?", "color", "the shirt is {answer}", None),
    ("What is the color of the bus?", "color", "the color of the bus is {answer}", None),
    ("How many dogs are on the bed?", "count", "there are {answer} dogs on the bed", None),
    ("How many people are there?", "count", "there are {answer} people", None),
    ("How many zebras can you see?", "count", "there are {answer} zebras", None),
    ("How many birds?", "count", "there are {answer} birds", None),
    ("Where is the cat?", "where", "the cat is {answer}", None),
    ("Where was this picture taken?", "where", "this picture was taken {answer}", None),
    ("Where is the man sitting?", "where", "the man is sitting {answer}", None),
    ("Where does the man sit?", "where", "the man does sit {answer}", None),
    ("What is the man holding?", "what", "the man is holding {answer}", None),
    ("What is the man holding in his hand?", "what", "the man is holding {answer} in his hand", None),
    ("What is the woman sitting on?", "what", "the woman is sitting on {answer}", None),
    ("What are the people doing?", "what", "the people are {answer}", None),
    ("What is on the table?", "what", "{answer} is on the table", None),
    ("What's on the plate?", "what", "{answer} is on the plate", None),
    ("What is this?", "what", "this is {answer}", None),
    ("What animal is this?", "what", "this animal is {answer}", None),
    ("What sport is being played?", "what", "the sport is {answer}", None),
    ("What kind of dog is this?", "what", "this kind of dog is {answer}", None),
    ("What is the table made of?", "what", "the table is made of {answer}", None),
    ("What is the name of the dog?", "what", "the name of the dog is {answer}", None),
    ("What does the sign say?", "what", "the sign does say {answer}", None),
    ("Which animal is bigger?", "what", "the animal is {answer}", None),
    ("Who is holding the umbrella?", "who", "{answer} is holding the umbrella", None),
    ("Why is the sky blue?", "other", "a photo of {answer}", None),
    ("How old is the man?", "other", "a photo of {answer}", None),
    ("Describe the scene", "other", "a photo of {answer}", None),
]  # fmt: skip


@pytest.mark.parametrize("question, kind, template, negative", REWRITES)
def test_question_to_statement_table(question, kind, template, negative):
    rewrite = vqa.rewrite_question(question)
    assert (rewrite.kind, rewrite.template, rewrite.negative) == (kind, template, negative)


def test_statements_for_answers():
    yes_no = vqa.rewrite_question("is there a dog")
    assert [yes_no.statement(a) for a in ("yes", "No", "maybe")] == ["there is a dog", "there is no dog",
                                                                     "a photo of maybe"]  # fmt: skip
    where = vqa.rewrite_question("where is the cat")
    places = ["kitchen", "on the bed", "outside", "the park"]
    assert [where.statement(a) for a in places] == ["the cat is in the kitchen", "the cat is on the bed",
                                                    "the cat is outside", "the cat is in the park"]  # fmt: skip
    assert vqa.rewrite_question("how many dogs are there").statement("3") == "there are 3 dogs"
    assert vqa.rewrite_question("why?").statement("rain") == "a photo of rain"
    with pytest.raises(BadInputError, match="empty"):
        vqa.rewrite_question(" ?? ")


@pytest.mark.parametrize(
    "question, answer_set",
    [("Is the cat asleep?", "yesno"), ("What colour is the sky?", "colors"), ("How many cats are there?", "counts"),
     ("What is on the table?", "objects"), ("Where is the dog?", "objects"), ("Why is it wet?", "objects")],
)  # fmt: skip
def test_answer_set_follows_the_question(question, answer_set):
    source, answers = vqa.resolve_answers(None, vqa.rewrite_question(question))
    assert source == answer_set and answers == list(vqa.builtin_answers(answer_set))


def test_builtin_answer_sets():
    assert vqa.builtin_answers("yesno") == ("yes", "no")
    assert vqa.builtin_answers("counts") == tuple(str(n) for n in range(21))
    assert {"red", "blue", "white", "black"} <= set(vqa.builtin_answers("colors"))
    objects = vqa.builtin_answers("objects")
    assert objects[:3] == ("person", "bicycle", "car") and objects[79] == "toothbrush" and objects[80] == "tench"
    lowered = [name.lower() for name in objects]
    assert len(lowered) == len(set(lowered)) and 1000 < len(objects) < 1080
    assert "kite (bird of prey)" in objects and objects.count("kite") == 1
    with pytest.raises(BadInputError, match="built-in answer set"):
        vqa.builtin_answers("animals")


def test_answers_option(tmp_path):
    rewrite = vqa.rewrite_question("what color is the car")
    listing = tmp_path / "answers.txt"
    listing.write_text("# car colours\nred\n\nblue\n", encoding="utf-8")
    assert vqa.resolve_answers(str(listing), rewrite) == (str(listing), ["red", "blue"])
    assert vqa.resolve_answers("red, blue ,green", rewrite) == ("list", ["red", "blue", "green"])
    assert vqa.resolve_answers("counts", rewrite)[1][:2] == ["0", "1"]
    with pytest.raises(BadInputError, match="not a built-in set"):
        vqa.resolve_answers("crimson", rewrite)
    with pytest.raises(BadInputError, match="duplicate answers: red"):
        vqa.resolve_answers("red,red", rewrite)
    with pytest.raises(BadInputError, match="need at least 2 answers"):
        vqa.resolve_answers("red,", rewrite)


def test_scores_are_the_softmax_of_scaled_cosines(tiny_vit_path):
    model, preprocess = load_clip(tiny_vit_path, device="cpu")
    images = [draw_shapes_image((90, 120), seed=seed) for seed in (5, 6)]
    answers = ["red", "blue", "green", "yellow"]
    rewrite, statements, probabilities = vqa.score_answers(model, preprocess, images, "What colour is the car?",
                                                           answers)  # fmt: skip
    assert statements == ["the car is red", "the car is blue", "the car is green", "the car is yellow"]
    with torch.no_grad():
        image = model.encode_image(torch.stack([preprocess(Image.fromarray(rgb)) for rgb in images]))
        text = model.encode_text(clip.tokenize(statements))
        image = image / image.norm(dim=-1, keepdim=True)
        text = text / text.norm(dim=-1, keepdim=True)
        expected = torch.softmax(model.logit_scale.exp() * image @ text.T, dim=-1)
    assert rewrite.kind == "color" and probabilities.shape == (2, 4)
    torch.testing.assert_close(probabilities, expected, rtol=1e-4, atol=1e-5)


def test_run_ranks_each_image_by_score_answers_the_tested_scoring_function(tmp_path, tiny_vit_path, monkeypatch):
    images = [tmp_path / f"street{seed}.png" for seed in (5, 6)]
    for seed, path in zip((5, 6), images, strict=True):
        write_image(path, draw_shapes_image((90, 120), seed=seed))
    score_answers, scored = vqa.score_answers, []

    def recording_score_answers(*args, **kwargs):
        scored.append(score_answers(*args, **kwargs))
        return scored[-1]

    monkeypatch.setattr(vqa, "score_answers", recording_score_answers)
    report = vqa.run(images, "What colour is the car?", answers="red,blue,green", model_name=str(tiny_vit_path),
                     device="cpu")  # fmt: skip

    assert len(scored) == 1  # both images in one batch
    _, statements, probabilities = scored[0]
    assert len(probabilities) == 2
    for result, row in zip(report.rows(), probabilities, strict=True):
        expected = sorted(zip(row.tolist(), ["red", "blue", "green"], statements, strict=True), reverse=True)
        assert [(item["answer"], item["statement"]) for item in result["top"]] == [(a, s) for _, a, s in expected]
        assert [item["probability"] for item in result["top"]] == [round(p, 6) for p, _, _ in expected]


def test_statement_embeddings_are_cached_on_disk(tiny_vit_path, monkeypatch):
    model, _ = load_clip(tiny_vit_path, device="cpu")
    texts = ["the car is red", "the car is blue"]
    first = text_cache.text_embeddings(model, texts, model_id="f" * 64)
    assert text_cache.cache_file("f" * 64, model).is_file()
    text_cache._MEMORY.clear()
    monkeypatch.setattr(text_cache, "_encode", lambda *_: pytest.fail("encoded again instead of reading the cache"))
    again = text_cache.text_embeddings(model, list(reversed(texts)), model_id="f" * 64)
    torch.testing.assert_close(again, first.flip(0), rtol=0, atol=0)
    torch.testing.assert_close(first.norm(dim=-1), torch.ones(2))


def test_vqa_cli(tmp_path, tiny_vit_path):
    image = tmp_path / "street.png"
    write_image(image, draw_shapes_image((100, 140), seed=7))
    common = ["--model", str(tiny_vit_path), "--device", "cpu", "--quiet"]
    result = runner.invoke(app, ["vqa", str(image), "What colour is the car?", "--answers", "red,blue,green",
                                 "--json", *common])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["kind"], report["template"], report["answers"]) == ("color", "the car is {answer}", 3)
    top = report["results"][0]["top"]
    assert sorted(item["answer"] for item in top) == ["blue", "green", "red"]
    assert abs(sum(item["probability"] for item in top) - 1) < 1e-4
    assert [item["probability"] for item in top] == sorted((item["probability"] for item in top), reverse=True)
    assert report["results"][0]["answer"] == top[0]["answer"]

    yes_no = runner.invoke(app, ["vqa", str(image), "is there a car", "--top-k", "1", "--json", *common])
    assert yes_no.exit_code == 0, yes_no.output
    report = json.loads(yes_no.stdout)
    assert report["statements"] == {"yes": "there is a car", "no": "there is no car"}
    assert len(report["results"][0]["top"]) == 1

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    bad = runner.invoke(app, ["vqa", str(broken), "is it red", *common])
    assert bad.exit_code == 2 and bad.stderr.strip().splitlines()[0].startswith(f"error: {broken}:")
    wrong = runner.invoke(app, ["vqa", str(image), "is it red", "--answers", "crimson", *common])
    assert wrong.exit_code == 2 and "--answers 'crimson'" in wrong.stderr


def test_images_ranked_in_one_batch_rank_as_each_alone_and_a_bad_one_fails_alone(tmp_path, tiny_vit_path):
    images = [tmp_path / f"street{seed}.png" for seed in (5, 6)]
    for seed, path in zip((5, 6), images, strict=True):
        write_image(path, draw_shapes_image((90, 120), seed=seed))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    settings = {"answers": "red,blue,green", "model_name": str(tiny_vit_path), "device": "cpu"}
    together = vqa.run([images[0], broken, images[1]], "What colour is the car?", **settings)
    assert [row["status"] for row in together.rows()] == ["ok", "failed", "ok"]
    assert together.rows()[1]["error"].startswith(f"{broken}:")
    for image, row in zip(images, (together.rows()[0], together.rows()[2]), strict=True):
        [alone] = vqa.run([image], "What colour is the car?", **settings).rows()
        assert [item["answer"] for item in row["top"]] == [item["answer"] for item in alone["top"]]
        assert [item["probability"] for item in row["top"]] == pytest.approx(
            [item["probability"] for item in alone["top"]], abs=1e-5
        )
    assert together.summary == {
        "question": "What colour is the car?",
        "kind": "color",
        "template": "the car is {answer}",
        "statements": None,
        "answer_set": "list",
        "answers": 3,
        "model": str(tiny_vit_path),
    }
    with pytest.raises(BadInputError, match="^top_k: must be at least 1$"):
        vqa.run(images, "What colour is the car?", top_k=0, **settings)


def test_cli_names_the_answers_flag_of_a_bad_answer_set_in_one_line(tmp_path, tiny_vit_path):
    image = tmp_path / "street.png"
    write_image(image, draw_shapes_image((100, 140), seed=7))
    result = runner.invoke(app, ["vqa", str(image), "is it red", "--answers", "crimson", "--model",
                                 str(tiny_vit_path), "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("error: --answers 'crimson': not a built-in set (yesno, colors, counts, objects)")


def test_cli_table_heads_with_the_question_facts_and_lists_each_answer(tmp_path, tiny_vit_path):
    image = tmp_path / "street.png"
    write_image(image, draw_shapes_image((100, 140), seed=7))
    result = runner.invoke(app, ["vqa", str(image), "is there a car", "--model", str(tiny_vit_path), "--device",
                                 "cpu"], env={"COLUMNS": "200"})  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "yesno question; 2 answers (yesno); statement: yes: there is a car / no: there is no car"
    assert any("there is no car" in line and "no" in line.split() for line in lines[1:])


def test_data_files_are_complete():
    assert len(packaged_lines("imagenet_classes.txt")) == 1000
    assert packaged_lines("imagenet_classes.txt")[0] == "tench"
    assert packaged_lines("imagenet_classes.txt")[-1] == "toilet paper"
    assert len(packaged_lines("coco_classes.txt")) == 80
    assert np.all([line == line.strip() for line in packaged_lines("color_words.txt")])
