"""Zero-shot VQA by answer scoring: a CLIP ranker over candidate answers, not a VQA model.

After TAP-C (Song et al. 2022, "CLIP Models are Few-shot Learners"): the
question becomes a declarative statement with a slot, each candidate answer
fills the slot, and the answers are ranked by `softmax(logit_scale * cos)`
between the image and the statements. TAP-C rewrites questions with a
dependency parse and T5 and filters answers with T5; here both steps are
small hand-written rules (docs/methods/clip-vil.md), so expect no more
than TAP-C's roughly 39% on VQAv2 (a secondary figure, unverified), and less
on questions the rules do not cover.

Rules, on the lower-cased question ("colour" read as "color"):

- yes/no (is/are/was/were/do/does/did/can/could/will/would/should/has/have/had
  first): "is the man wearing a hat" -> yes "the man is wearing a hat",
  no "the man is not wearing a hat"; "is there a dog" -> "there is a dog" /
  "there is no dog". Answers other than yes/no use the fallback.
- what colour: "what color is the car" -> "the car is {answer}".
- how many: "how many dogs are on the bed" -> "there are {answer} dogs on the bed".
- where: "where is the cat" -> "the cat is {place}", with "in the" put before
  answers that are not already a place phrase ("on the bed", "outside").
- what / which / who: "what is the man holding" -> "the man is holding {answer}";
  "what is on the table" -> "{answer} is on the table"; "what animal is this" ->
  "this animal is {answer}"; "who is holding the umbrella" -> "{answer} is
  holding the umbrella".
- anything else: "a photo of {answer}".
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipcli.errors import BadInputError, ParameterError
from clipcli.media.decoders import CPU_DECODERS, IMAGE, Decoder, select_decoder
from clipcli.media.images import load_image
from clipcli.media.labels import Labels, packaged_lines, read_labels
from clipcli.models import load_clip
from clipcli.models.text_cache import text_embeddings
from clipcli.models.weights import file_sha256, resolve_weights
from clipcli.runner import Executor, Job, Report, run_job

FALLBACK = "a photo of {answer}"
SLOT = "{answer}"
ANSWER_SETS = ("yesno", "colors", "counts", "objects")
SET_FOR_KIND = {"yesno": "yesno", "color": "colors", "count": "counts"}  # every other kind: objects
YES, NO = "yes", "no"
IMAGES_PER_BATCH = 8

BE = {"is", "are", "was", "were"}
DO = {"do", "does", "did"}
MODALS = {"can", "could", "will", "would", "should", "shall", "may", "might", "must", "has", "have", "had"}
AUXILIARIES = BE | DO | MODALS
PRONOUNS = {"it", "he", "she", "they", "you", "i", "we"}
DEMONSTRATIVES = {"this", "that", "these", "those"}
DETERMINERS = DEMONSTRATIVES | {
    "the", "a", "an", "his", "her", "its", "their", "my", "your", "our", "some", "any", "all", "both", "each",
    "every", "many", "several",
}  # fmt: skip
PREPOSITIONS = {
    "in", "on", "at", "under", "over", "above", "below", "behind", "near", "next", "beside", "besides", "inside",
    "outside", "by", "with", "without", "from", "into", "onto", "through", "across", "along", "around", "between",
    "against", "for", "of", "to", "up", "down", "off", "atop", "beneath", "underneath", "toward", "towards", "like",
}  # fmt: skip
PLACE_WORDS = {
    "outside", "inside", "outdoors", "indoors", "here", "there", "home", "upstairs", "downstairs", "everywhere",
    "nowhere", "away", "nearby", "overhead", "underwater", "abroad",
}  # fmt: skip
# Words that start a predicate after a be-auxiliary's subject ("is the fire hydrant | red").
PREDICATE_WORDS = {"a", "an", "the", "not", "no", "very", "too", "so", "more", "less", "being", "been", "made", "there"}
# Common verbs that start the predicate after do / can / will ... ("does the man | have a hat").
BASE_VERBS = {
    "have", "look", "like", "appear", "seem", "need", "want", "belong", "contain", "show", "live", "work", "eat",
    "play", "fly", "match", "go", "see", "hold", "wear", "use", "make", "know", "mean", "exist", "feel", "smell",
    "taste", "ride", "run", "get", "sell", "sit", "stand", "say", "take", "serve", "cut", "open", "drink", "allow",
    "help", "move", "fit", "come", "think", "read", "lead", "point", "face", "cover", "carry",
}  # fmt: skip
PARTICIPLES = {
    "made", "called", "used", "written", "shown", "pictured", "painted", "covered", "filled", "attached", "parked",
    "placed", "displayed", "taken", "held", "worn", "seen", "built", "located", "kept", "sold", "served", "stored",
}  # fmt: skip
ING_NOUNS = {
    "thing", "things", "king", "ring", "wing", "wings", "string", "ceiling", "building", "buildings", "clothing",
    "painting", "morning", "evening", "ping", "swing", "sling", "spring", "ingredients", "icing", "frosting",
    "stuffing", "filling", "topping", "toppings", "railing", "sibling", "wedding", "sing", "lighting", "awning",
}  # fmt: skip


@dataclass(frozen=True)
class Rewrite:
    """A question turned into statements: `template` with a {answer} slot, or a yes/no pair."""

    kind: str  # yesno, color, count, where, what, who or other
    template: str
    negative: str | None = None  # yes/no questions: the negated statement; `template` is the assertion

    def statement(self, answer: str) -> str:
        """The statement `answer` is scored by."""
        if self.kind == "yesno":
            word = answer.strip().lower()
            if word == YES:
                return self.template
            if word == NO:
                assert self.negative is not None  # every yes/no rewrite carries its negation
                return self.negative
            return FALLBACK.replace(SLOT, answer)
        if self.kind == "where":
            return self.template.replace(SLOT, place_phrase(answer))
        return self.template.replace(SLOT, answer)

    @property
    def answer_set(self) -> str:
        """The built-in answer set for this kind of question."""
        return SET_FOR_KIND.get(self.kind, "objects")


# ---------------------------------------------------------------- question -> statement


def normalize_question(question: str) -> list[str]:
    """Lower-cased words without the final punctuation; "colour" -> "color", "what's" -> "what is"."""
    text = question.strip().lower().replace("\u2019", "'")
    text = re.sub(r"\bcolou?r(s?)\b", r"color\1", text)
    text = re.sub(r"\b(what|where|who|how|that|it|there)'s\b", r"\1 is", text)
    text = re.sub(r"\b(what|where|who|how)'re\b", r"\1 are", text)
    return re.sub(r"[^\w\s'-]", " ", text).split()


def _join(*parts: str | Sequence[str]) -> str:
    words = []
    for part in parts:
        words += part.split() if isinstance(part, str) else list(part)
    return " ".join(words)


def _is_ing(word: str) -> bool:
    return len(word) > 4 and word.endswith("ing") and word not in ING_NOUNS


def _starts_predicate(word: str, verbs: bool) -> bool:
    if word in PREDICATE_WORDS or word in PREPOSITIONS:
        return True
    if verbs:
        return word in BASE_VERBS
    return word in PARTICIPLES or word in builtin_answers("colors") or _is_ing(word)


def split_subject(words: Sequence[str], verbs: bool = False) -> tuple[list[str], list[str]]:
    """`(subject, predicate)` of what follows a fronted auxiliary: "the fire hydrant" | "red".

    A pronoun is a subject alone; so is a demonstrative before a predicate
    word ("this" | "a kitchen"). After a determiner the next word always
    belongs to the subject, and further words join it until one that starts a
    predicate (a preposition, article, colour, -ing form, participle; with
    `verbs`, a common base verb). When none does, the subject is the
    determiner and one word ("the man" | "happy").
    """
    words = list(words)
    if not words:
        return [], []
    first = words[0]
    if first in PRONOUNS or (first in DEMONSTRATIVES and (len(words) == 1 or _starts_predicate(words[1], verbs))):
        return words[:1], words[1:]
    minimal = 2 if first in DETERMINERS or first.isdigit() else 1
    for index in range(minimal, len(words)):
        if _starts_predicate(words[index], verbs):
            return words[:index], words[index:]
    return words[:minimal], words[minimal:]


def _yes_no(aux: str, rest: list[str]) -> Rewrite:
    if rest[:1] == ["there"] and aux in BE:
        body = rest[1:]
        article = body[:1] and body[0] in ("a", "an", "any", "some")
        positive = ["some", *body[1:]] if body[:1] == ["any"] else body
        return Rewrite("yesno", _join("there", aux, positive), _join("there", aux, "no", body[1:] if article else body))
    subject, predicate = split_subject(rest, verbs=aux not in BE)
    return Rewrite("yesno", _join(subject, aux, predicate), _join(subject, aux, "not", predicate))


def place_phrase(answer: str) -> str:
    """'kitchen' -> 'in the kitchen'; place phrases ('on the bed', 'outside', 'the park') get less."""
    words = answer.lower().split()
    if not words or words[0] in PREPOSITIONS or words[0] in PLACE_WORDS:
        return answer
    if words[0] in DETERMINERS:
        return f"in {answer}"
    return f"in the {answer}"


def _color(words: list[str]) -> Rewrite:
    # words start with "what color" / "which color"
    rest = words[2:]
    if rest[:1] and rest[0] in BE:
        if rest[1:]:
            return Rewrite("color", _join(rest[1:], rest[0], SLOT))
    elif rest:
        noun = rest[: next((i for i, w in enumerate(rest) if w in AUXILIARIES), len(rest))]
        if noun:
            return Rewrite("color", _join("the", noun, "is", SLOT))
    return Rewrite("color", _join("the color is", SLOT))


def _count(words: list[str]) -> Rewrite:
    # words start with "how many"
    rest = words[2:]
    cut = next((i for i, w in enumerate(rest) if w in AUXILIARIES), len(rest))
    noun, tail = rest[:cut], rest[cut:]
    if not noun:
        return Rewrite("count", _join("there are", SLOT))
    after = tail[1:] if tail[:1] and tail[0] in BE else []
    if after[:1] == ["there"]:
        after = after[1:]
    return Rewrite("count", _join("there are", SLOT, noun, after))


def _where(words: list[str]) -> Rewrite:
    aux, rest = (words[1], words[2:]) if len(words) > 1 else ("", [])
    if aux in BE and rest:
        if len(rest) > 1 and (_is_ing(rest[-1]) or rest[-1] in PARTICIPLES):
            return Rewrite("where", _join(rest[:-1], aux, rest[-1], SLOT))
        return Rewrite("where", _join(rest, aux, SLOT))
    if aux in DO | MODALS and rest:
        subject, predicate = split_subject(rest, verbs=True)
        if predicate:
            return Rewrite("where", _join(subject, aux, predicate, SLOT))
    return Rewrite("other", FALLBACK)


def _verb_slot(subject: list[str], aux: str, verb_phrase: list[str]) -> str:
    """'holding' + 'in his hand' -> 'holding {answer} in his hand'; 'sitting on' -> 'sitting on {answer}'."""
    verb, after = verb_phrase[0], verb_phrase[1:]
    if verb == "doing":
        return _join(subject, aux, SLOT, after)
    if all(word in PREPOSITIONS for word in after):
        return _join(subject, aux, verb, after, SLOT)
    return _join(subject, aux, verb, SLOT, after)


def _what_be(aux: str, rest: list[str]) -> Rewrite:
    if not rest:
        return Rewrite("other", FALLBACK)
    if len(rest) == 1 and rest[0] in DEMONSTRATIVES | PRONOUNS:
        return Rewrite("what", _join(rest, aux, SLOT))
    if rest[0] in PREPOSITIONS:
        return Rewrite("what", _join(SLOT, aux, rest))
    verb_at = next((i for i, w in enumerate(rest) if i > 0 and (_is_ing(w) or w in PARTICIPLES)), None)
    if verb_at is not None:
        return Rewrite("what", _verb_slot(rest[:verb_at], aux, rest[verb_at:]))
    return Rewrite("what", _join(rest, aux, SLOT))


def _what(words: list[str]) -> Rewrite:
    # words start with "what" or "which"
    rest = words[1:]
    if not rest:
        return Rewrite("other", FALLBACK)
    if rest[0] in BE:
        return _what_be(rest[0], rest[1:])
    if rest[0] in DO | MODALS:
        subject, predicate = split_subject(rest[1:], verbs=True)
        if subject and predicate:
            return Rewrite("what", _verb_slot(subject, rest[0], predicate))
        return Rewrite("other", FALLBACK)
    cut = next((i for i, w in enumerate(rest) if w in AUXILIARIES), len(rest))
    noun, tail = rest[:cut], rest[cut:]
    if tail[:1] and tail[0] in BE and tail[1:2] and tail[1] in DEMONSTRATIVES and len(tail) == 2:
        return Rewrite("what", _join(tail[1], noun, tail[0], SLOT))
    verb = tail[0] if tail[:1] and tail[0] in BE else "is"
    return Rewrite("what", _join("the", noun, verb, SLOT))


def _who(words: list[str]) -> Rewrite:
    if len(words) > 2 and words[1] in BE:
        return Rewrite("who", _join(SLOT, words[1], words[2:]))
    return Rewrite("other", FALLBACK)


def rewrite_question(question: str) -> Rewrite:
    """The question's kind and its statement template(s); see the module docstring for the rules."""
    words = normalize_question(question)
    if not words:
        raise BadInputError("the question is empty")
    first = words[0]
    if first in ("what", "which") and words[1:2] == ["color"]:
        return _color(words)
    if first in AUXILIARIES and len(words) > 1:
        return _yes_no(first, words[1:])
    if words[:2] == ["how", "many"]:
        return _count(words)
    if first == "where":
        return _where(words)
    if first in ("what", "which"):
        rewrite = _what(words)
        return Rewrite("color", rewrite.template) if "color" in words and rewrite.kind == "what" else rewrite
    if first == "who":
        return _who(words)
    return Rewrite("other", FALLBACK)


# ---------------------------------------------------------------- answers


@functools.cache
def builtin_answers(name: str) -> tuple[str, ...]:
    """A built-in answer set: yesno, colors, counts (0-20) or objects (COCO's 80 + ImageNet's 1000 names)."""
    if name == "yesno":
        return (YES, NO)
    if name == "colors":
        return packaged_lines("color_words.txt")
    if name == "counts":
        return tuple(str(n) for n in range(21))
    if name == "objects":
        unique: dict[str, str] = {}
        for label in packaged_lines("coco_classes.txt") + packaged_lines("imagenet_classes.txt"):
            unique.setdefault(label.lower(), label)  # COCO's "mouse" and ImageNet's "Mouse" count once
        return tuple(unique.values())
    raise BadInputError(f"no built-in answer set {name!r}: choose one of {', '.join(ANSWER_SETS)}")


def resolve_answers(spec: str | None, rewrite: Rewrite) -> Labels:
    """`(source, answers)` from --answers, read as every label set is; none: the question's built-in set."""
    if spec is None:
        return Labels(rewrite.answer_set, list(builtin_answers(rewrite.answer_set)))
    builtin = {name: functools.partial(builtin_answers, name) for name in ANSWER_SETS}
    return read_labels(spec, builtin, option="--answers")


# ---------------------------------------------------------------- scoring


def answer_probabilities(
    image_features: torch.Tensor, statement_features: torch.Tensor, logit_scale: float
) -> torch.Tensor:
    """`[B,D]`, `[K,D]` -> `[B,K]`: softmax over answers of `logit_scale * cos(image, statement)`."""
    image = image_features.float()
    image = image / image.norm(dim=-1, keepdim=True)
    text = statement_features.float().to(image.device)
    text = text / text.norm(dim=-1, keepdim=True)
    return (logit_scale * image @ text.T).softmax(dim=-1)


@torch.no_grad()
def encode_images(model, preprocess, images: Sequence[np.ndarray]) -> torch.Tensor:
    """`encode_image` of RGB uint8 arrays through CLIP's own preprocessing (resize, centre crop)."""
    device = next(model.parameters()).device
    batch = torch.stack([preprocess(Image.fromarray(rgb)) for rgb in images]).to(device)
    return model.encode_image(batch)


@torch.no_grad()
def score_answers(
    model, preprocess, images: Sequence[np.ndarray], question: str, answers: Sequence[str], *,
    model_id: str | None = None,
) -> tuple[Rewrite, list[str], torch.Tensor]:  # fmt: skip
    """`(rewrite, statements, probabilities [B, K])` for RGB images and candidate answers."""
    rewrite = rewrite_question(question)
    statements = [rewrite.statement(answer) for answer in answers]
    text = text_embeddings(model, statements, model_id)
    scale = float(model.logit_scale.detach().exp())
    return rewrite, statements, answer_probabilities(encode_images(model, preprocess, images), text, scale)


def ranked_answers(probabilities: torch.Tensor, answers: Sequence[str], statements: Sequence[str], top_k: int) -> dict:
    """One image's best answer and its `top_k` answers by probability, each with the statement it was scored by."""
    values, order = probabilities.cpu().topk(min(top_k, len(answers)))
    top = [{"answer": answers[i], "probability": round(float(p), 6), "statement": statements[i]}
           for p, i in zip(values.tolist(), order.tolist(), strict=True)]  # fmt: skip
    return {"answer": top[0]["answer"], "top": top}


@dataclass
class VqaJob(Job):
    """Answers ranked for each image: images decoded on read-ahead threads, several per CLIP batch."""

    question: str
    answers: Labels
    top_k: int = 5
    model_name: str = "ViT-B/16"
    device: str = "auto"
    trust_checkpoint: bool = False
    decoder: Decoder = CPU_DECODERS[IMAGE]
    name = "vqa"
    batch_size = IMAGES_PER_BATCH
    read_workers = 2

    def setup(self) -> None:
        self._model, self._preprocess = load_clip(self.model_name, self.device, trust_checkpoint=self.trust_checkpoint)
        self._model_id = file_sha256(resolve_weights(self.model_name))

    def read(self, path: Path) -> np.ndarray:
        return load_image(path, decoder=self.decoder)

    def compute_batch(self, items: Sequence[tuple[Path, np.ndarray]]) -> list[dict]:
        if not items:
            return []
        images = [pixels for _, pixels in items]
        _, statements, probabilities = score_answers(
            self._model, self._preprocess, images, self.question, self.answers.names, model_id=self._model_id
        )
        return [ranked_answers(row, self.answers.names, statements, self.top_k) for row in probabilities]

    def summary(self) -> dict:
        rewrite = rewrite_question(self.question)
        yes_no = rewrite.kind == "yesno"
        return {
            "question": self.question,
            "kind": rewrite.kind,
            "template": None if yes_no else rewrite.template,
            "statements": {YES: rewrite.template, NO: rewrite.negative} if yes_no else None,
            "answer_set": self.answers.source,
            "answers": len(self.answers.names),
            "model": self.model_name,
        }


def run(
    images: Sequence[Path],
    question: str,
    *,
    answers: str | None = None,
    top_k: int = 5,
    model_name: str = "ViT-B/16",
    device: str = "auto",
    trust_checkpoint: bool = False,
    executor: Executor | None = None,
    decode: str = "auto",
) -> Report:
    """Rank candidate answers for each image; one result per image (failures included), the question in the summary."""
    if top_k < 1:
        raise ParameterError("top_k", "must be at least 1")
    decoder = select_decoder(decode, device, IMAGE)
    candidates = resolve_answers(answers, rewrite_question(question))
    job = VqaJob(question, candidates, top_k=top_k, model_name=model_name, device=device,
                 trust_checkpoint=trust_checkpoint, decoder=decoder)  # fmt: skip
    return run_job(job, images, executor=executor)
