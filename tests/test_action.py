"""ActionCLIP: templates, the test-time rule, label sets, fusion heads and checkpoints, windows, caching."""

from __future__ import annotations

import math

import clip
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from conftest import TINY_VIT, build_tiny_clip
from PIL import Image

from clipcli.errors import BadInputError
from clipcli.models.fusion import load_actionclip
from clipcli.models.text_encoder import encode_prompts
from clipcli.pipelines import action, action_text

# Written out from sallymmx/ActionCLIP utils/Text_Prompt.py, independently of the module under test.
OFFICIAL_TEMPLATES = [
    "a photo of action {}",
    "a picture of action {}",
    "Human action of {}",
    "{}, an action",
    "{} this is an action",
    "{}, a video of action",
    "Playing action of {}",
    "{}",
    "Playing a kind of action, {}",
    "Doing a kind of action, {}",
    "Look, the human is {}",
    "Can you recognize the action of {}?",
    "Video classification of {}",
    "A video of {}",
    "The man is {}",
    "The woman is {}",
]
NAMES = ["air drumming", "juggling balls", "riding a bike"]
# Text width 128 -> 2 heads in the Transf head (the official rule: ln_final width // 64).
TWO_HEAD_CLIP = {**TINY_VIT, "transformer_width": 128, "transformer_heads": 2}


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_clip(TINY_VIT, 3)


def test_templates_are_the_official_sixteen_in_order():
    assert list(action.TEMPLATES) == OFFICIAL_TEMPLATES
    prompts = action_text.template_prompts(["a", "b"])
    assert prompts[:3] == ["a photo of action a", "a photo of action b", "a picture of action a"]
    assert len(prompts) == 32


# ---------------------------------------------------------------- the test-time rule


def reference_probabilities(video: torch.Tensor, names: list[str], model) -> torch.Tensor:
    """test.py `validate`, written out: full 77-token encode_text, scale 100, per-template softmax, mean."""
    tokens = clip.tokenize([template.format(name) for template in OFFICIAL_TEMPLATES for name in names])
    with torch.no_grad():
        text = model.encode_text(tokens)
    text = text / text.norm(dim=-1, keepdim=True)
    video = video / video.norm(dim=-1, keepdim=True)
    similarity = 100.0 * video @ text.T
    return similarity.view(len(video), 16, len(names)).softmax(dim=-1).mean(dim=1)


def test_class_probabilities_is_the_official_rule(tiny):
    video = torch.randn(4, 32, generator=torch.Generator().manual_seed(0))
    ours = action.class_probabilities(video, NAMES, tiny)
    expected = reference_probabilities(video, NAMES, tiny)
    assert ours.shape == (4, 3)
    torch.testing.assert_close(ours, expected, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(ours.sum(dim=1), torch.ones(4))
    # Averaging per-template softmaxes is not a softmax of averaged logits: the rule really is the official one.
    assert not torch.allclose(ours, (100 * F.normalize(video) @ action.text_features(tiny, NAMES).T).view(4, 16, 3)
                              .mean(1).softmax(-1), atol=1e-3)  # fmt: skip


def test_trimmed_text_encoding_equals_encode_text(tiny):
    prompts = ["x", "a photo of action passing American football (not in game)", "Yo Yo", "The woman is typing"]
    with torch.no_grad():
        expected = tiny.encode_text(clip.tokenize(prompts))
    torch.testing.assert_close(encode_prompts(tiny, prompts, batch_size=3), expected, atol=1e-5, rtol=1e-4)


def test_probabilities_follow_the_video_feature(tiny):
    text = action.text_features(tiny, NAMES)
    # A video feature equal to the mean of class 1's prompt embeddings must pick class 1.
    video = text.view(16, 3, -1)[:, 1].mean(0, keepdim=True)
    probabilities = action.class_probabilities(video, NAMES, tiny, text=text)
    assert probabilities.argmax().item() == 1


# ---------------------------------------------------------------- label sets


@pytest.mark.parametrize(
    ("name", "count", "first", "last"),
    [
        ("kinetics400", 400, "abseiling", "zumba"),
        ("ucf101", 101, "Apply Eye Makeup", "Yo Yo"),
        ("hmdb51", 51, "brush hair", "wave"),
    ],
)
def test_label_sets_have_the_official_counts_and_order(name, count, first, last):
    labels = action_text.load_label_set(name)
    assert len(labels) == count == len(set(labels))
    assert labels[0] == first and labels[-1] == last
    assert all(label == label.strip() and label for label in labels)


def test_kinetics_keeps_official_spelling():
    labels = action_text.load_label_set("kinetics400")
    assert labels[1] == "air drumming"
    assert "passing American football (in game)" in labels


@pytest.mark.parametrize(
    ("camel", "words"),
    [
        ("ApplyEyeMakeup", "Apply Eye Makeup"),
        ("YoYo", "Yo Yo"),
        ("CleanAndJerk", "Clean And Jerk"),
        ("Skijet", "Skijet"),
        ("brush hair", "brush hair"),
    ],
)
def test_camel_case_split(camel, words):
    assert action_text.split_camel_case(camel) == words


def test_ucf101_names_are_all_split_into_words():
    labels = action_text.load_label_set("ucf101")
    assert "Handstand Pushups" in labels and "Playing Daf" in labels and "Tai Chi" in labels
    assert all(word[:1].isupper() for label in labels for word in label.split())


def test_labels_from_a_list_file_and_official_csv(tmp_path):
    assert action.parse_labels("run, jump ,swim") == ("list", ["run", "jump", "swim"])
    plain = tmp_path / "labels.txt"
    plain.write_text("# my actions\nrunning\n\njumping\n", encoding="utf-8")
    assert action.parse_labels(str(plain))[1] == ["running", "jumping"]
    csv = tmp_path / "official.csv"
    csv.write_text("id,name\r\n0,brush hair\r\n1,cartwheel\r\n", encoding="utf-8")
    assert action.parse_labels(str(csv))[1] == ["brush hair", "cartwheel"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [("run,run,jump", "duplicate label"), ("run,", "need at least 2 labels"), ("nonexistent", "not a built-in set")],
)
def test_bad_label_specs_are_clear(spec, message):
    with pytest.raises(BadInputError, match=message):
        action.parse_labels(spec)


# ---------------------------------------------------------------- ActionCLIP checkpoints


def random_tensor(*shape: int, scale: float = 0.1) -> torch.Tensor:
    return torch.randn(*shape) * scale


def transf_state(width: int, layers: int = 6) -> dict:
    """visual_prompt('Transf') keys, from modules/Visual_Prompt.py."""
    state = {"frame_position_embeddings.weight": random_tensor(77, width, scale=0.5)}
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        state |= {
            p + "attn.in_proj_weight": random_tensor(3 * width, width, scale=0.3),
            p + "attn.in_proj_bias": random_tensor(3 * width),
            p + "attn.out_proj.weight": random_tensor(width, width, scale=0.3),
            p + "attn.out_proj.bias": random_tensor(width),
            p + "ln_1.weight": 1 + random_tensor(width),
            p + "ln_1.bias": random_tensor(width),
            p + "mlp.c_fc.weight": random_tensor(4 * width, width, scale=0.3),
            p + "mlp.c_fc.bias": random_tensor(4 * width),
            p + "mlp.c_proj.weight": random_tensor(width, 4 * width, scale=0.3),
            p + "mlp.c_proj.bias": random_tensor(width),
            p + "ln_2.weight": 1 + random_tensor(width),
            p + "ln_2.bias": random_tensor(width),
        }
    return state


def head_state(kind: str, width: int, frames: int = 4) -> dict:
    torch.manual_seed(7)
    if kind == "meanP":
        return {}
    if kind == "Transf":
        return transf_state(width)
    positions = {"frame_position_embeddings.weight": random_tensor(77, width)}
    if kind == "LSTM":
        return positions | {
            "lstm_visual.weight_ih_l0": random_tensor(4 * width, width, scale=0.3),
            "lstm_visual.weight_hh_l0": random_tensor(4 * width, width, scale=0.3),
            "lstm_visual.bias_ih_l0": random_tensor(4 * width),
            "lstm_visual.bias_hh_l0": random_tensor(4 * width),
        }
    if kind == "Conv_1D":
        return positions | {"shift.weight": random_tensor(width, 1, 3, scale=1.0)}
    layer = torch.nn.TransformerEncoderLayer(width, 8)
    encoder = torch.nn.TransformerEncoder(layer, 6, norm=torch.nn.LayerNorm(width), enable_nested_tensor=False)
    cls = {f"transformer.transformer_enc.{k}": v for k, v in encoder.state_dict().items()}
    cls["transformer.cls_token"] = random_tensor(1, 1, width)
    cls["transformer.pos_embed"] = random_tensor(1, frames + 1, width)
    return positions | cls


def write_actionclip(path, clip_model, kind: str, frames: int = 4):
    """The dict utils/saving.py writes; the head saved from DataParallel, so keys start with 'module.'."""
    width = clip_model.text_projection.shape[1]
    parameter = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.AdamW([parameter], lr=5e-6, weight_decay=0.2)
    parameter.sum().backward()
    optimizer.step()
    torch.save(
        {
            "epoch": 49,
            "model_state_dict": clip_model.state_dict(),
            "fusion_model_state_dict": {f"module.{k}": v for k, v in head_state(kind, width, frames).items()},
            "optimizer_state_dict": optimizer.state_dict(),
        },
        path,
    )
    return path


def reference_transf(state: dict, x: torch.Tensor, heads: int) -> torch.Tensor:
    """Visual_Prompt.py 'Transf' written out with tensors: TF LayerNorm (eps 1e-12), QuickGELU, no mask."""
    batch, frames, width = x.shape
    h = x + state["frame_position_embeddings.weight"][:frames]
    for i in range(6):
        p = f"transformer.resblocks.{i}."

        def norm(z, name, p=p):
            mean = z.mean(-1, keepdim=True)
            var = (z - mean).pow(2).mean(-1, keepdim=True)
            return state[p + name + ".weight"] * (z - mean) / torch.sqrt(var + 1e-12) + state[p + name + ".bias"]

        q, k, v = (norm(h, "ln_1") @ state[p + "attn.in_proj_weight"].T + state[p + "attn.in_proj_bias"]).chunk(3, -1)
        q, k, v = (z.view(batch, frames, heads, -1).transpose(1, 2) for z in (q, k, v))
        weights = (q @ k.transpose(-1, -2) / math.sqrt(width // heads)).softmax(-1)
        attended = (weights @ v).transpose(1, 2).reshape(batch, frames, width)
        h = h + attended @ state[p + "attn.out_proj.weight"].T + state[p + "attn.out_proj.bias"]
        m = norm(h, "ln_2") @ state[p + "mlp.c_fc.weight"].T + state[p + "mlp.c_fc.bias"]
        m = m * torch.sigmoid(1.702 * m)
        h = h + m @ state[p + "mlp.c_proj.weight"].T + state[p + "mlp.c_proj.bias"]
    return (h + x).mean(dim=1)


def test_transf_checkpoint_loads_and_matches_the_official_head(tmp_path):
    clip_model = build_tiny_clip(TWO_HEAD_CLIP, 4)
    path = write_actionclip(tmp_path / "model_best.pt", clip_model, "Transf")
    model, fusion = load_actionclip(path)
    assert fusion.kind == "Transf" and fusion.num_frames is None
    assert len(fusion.transformer.resblocks) == 6 and fusion.transformer.resblocks[0].attn.num_heads == 2
    torch.testing.assert_close(model.text_projection, clip_model.text_projection.half().float())  # as clip.load
    x = torch.randn(3, 8, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = fusion(x)
    assert out.shape == (3, 32)
    torch.testing.assert_close(out, reference_transf(head_state("Transf", 32), x, heads=2), atol=1e-4, rtol=1e-4)
    # Order matters to Transf (learned positions, attention), not to a plain mean.
    with torch.no_grad():
        shuffled = fusion(x[:, torch.tensor([3, 1, 0, 2, 7, 5, 6, 4])])
    assert (shuffled - out).abs().max() > 1e-3


def test_meanp_checkpoint_ignores_frame_order(tmp_path):
    path = write_actionclip(tmp_path / "meanp.pt", build_tiny_clip(TINY_VIT, 4), "meanP")
    _, fusion = load_actionclip(path)
    x = torch.randn(2, 8, 32)
    assert fusion.kind == "meanP"
    torch.testing.assert_close(fusion(x), x.mean(1))
    torch.testing.assert_close(fusion(x.flip(1)), fusion(x))


def test_conv1d_head_keeps_the_official_view_layout(tmp_path):
    path = write_actionclip(tmp_path / "conv.pt", build_tiny_clip(TINY_VIT, 4), "Conv_1D")
    _, fusion = load_actionclip(path)
    weight = head_state("Conv_1D", 32)["shift.weight"]
    x = torch.randn(2, 8, 32)
    scrambled = x.reshape(2, 32, 8)  # x.view(-1, c, t), not a permute
    padded = F.pad(scrambled, (1, 1))
    conv = sum(weight[:, 0, k, None] * padded[:, :, k : k + 8] for k in range(3))
    expected = (conv.permute(0, 2, 1) + x).mean(1)
    torch.testing.assert_close(fusion(x), expected, atol=1e-5, rtol=1e-5)


def test_lstm_head_is_residual_lstm_then_mean(tmp_path):
    path = write_actionclip(tmp_path / "lstm.pt", build_tiny_clip(TINY_VIT, 4), "LSTM")
    _, fusion = load_actionclip(path)
    s = head_state("LSTM", 32)
    x = torch.randn(2, 5, 32)
    h, c, outputs = torch.zeros(2, 32), torch.zeros(2, 32), []
    for t in range(5):
        gates = x[:, t] @ s["lstm_visual.weight_ih_l0"].T + s["lstm_visual.bias_ih_l0"]
        gates = gates + h @ s["lstm_visual.weight_hh_l0"].T + s["lstm_visual.bias_hh_l0"]
        i, f, g, o = gates.chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    expected = (torch.stack(outputs, 1) + x).mean(1)
    with torch.no_grad():
        torch.testing.assert_close(fusion(x), expected, atol=1e-5, rtol=1e-5)


def test_transf_cls_fixes_the_frame_count(tmp_path):
    path = write_actionclip(tmp_path / "cls.pt", build_tiny_clip(TINY_VIT, 4), "Transf_cls", frames=4)
    _, fusion = load_actionclip(path)
    assert fusion.kind == "Transf_cls" and fusion.num_frames == 4
    with torch.no_grad():
        assert fusion(torch.randn(2, 4, 32)).shape == (2, 32)
    with pytest.raises(BadInputError, match="trained on 4 frames"):
        fusion(torch.randn(2, 8, 32))
    assert action.resolve_frames(None, fusion) == 4
    with pytest.raises(BadInputError, match="^frames: 8: this Transf_cls checkpoint was trained on 4 frames$"):
        action.resolve_frames(8, fusion)


def test_not_an_actionclip_checkpoint(tmp_path, tiny_vit_path):
    with pytest.raises(BadInputError, match="not an ActionCLIP checkpoint"):
        load_actionclip(tiny_vit_path)
    odd = tmp_path / "odd.pt"
    torch.save({"model_state_dict": build_tiny_clip(TINY_VIT, 0).state_dict(),
                "fusion_model_state_dict": {"module.something.weight": torch.zeros(2)}}, odd)  # fmt: skip
    with pytest.raises(BadInputError, match="unknown ActionCLIP fusion head"):
        load_actionclip(odd)


# ---------------------------------------------------------------- frames and windows


def test_preprocessing_matches_the_official_pil_transform():
    rng = np.random.default_rng(0)
    official = T.Compose(
        [
            T.Resize(256, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
        ]
    )
    for shape in ((240, 320), (341, 256), (256, 455)):
        frame = cv2.GaussianBlur(rng.integers(0, 256, (*shape, 3), dtype=np.uint8), (9, 9), 3)
        ours = action.preprocess_frames(frame[None], 224)[0]
        expected = official(Image.fromarray(frame))
        assert ours.shape == expected.shape == (3, 224, 224)
        assert (ours - expected).abs().max() < 0.03  # one grey level is about 0.0145
        assert (ours - expected).abs().mean() < 0.006


@pytest.mark.parametrize(
    ("duration", "window", "stride", "spans"),
    [
        (10.0, 4.0, 2.0, [(0, 4), (2, 6), (4, 8), (6, 10)]),
        (10.0, 4.0, 4.0, [(0, 4), (4, 8), (6, 10)]),
        (3.0, 4.0, 1.0, [(0, 3)]),
        (8.0, 2.0, 3.0, [(0, 2), (3, 5), (6, 8)]),
        (9.0, 2.0, 3.0, [(0, 2), (3, 5), (6, 8), (7, 9)]),
    ],
)
def test_windows_cover_the_video(duration, window, stride, spans):
    got = action.window_spans(duration, window, stride)
    assert got == [(float(a), float(b)) for a, b in spans]
    assert got[0][0] == 0 and got[-1][1] == duration


def test_window_frames_lie_inside_their_windows():
    spans = action.window_spans(10.0, 4.0, 2.0)
    indices = action.window_frame_indices(100, 10.0, spans, 8)
    assert indices.shape == (4, 8)
    for (start, end), row in zip(spans, indices, strict=True):
        assert start * 10 <= row.min() and row.max() < end * 10
        assert np.all(np.diff(row) > 0)
    # Window [0, 4) holds frames 0..39: segment centres int(i*5 + 2) = 2, 7, ...
    assert indices[0].tolist() == [2, 7, 12, 17, 22, 27, 32, 37]


@pytest.mark.parametrize(
    ("window", "stride", "message"),
    [(0.0, 1.0, "^window: must be positive, got 0.0$"), (2.0, -1.0, "^stride: must be positive, got -1.0$")],
)
def test_bad_windows_name_the_parameter_that_is_not_positive(window, stride, message):
    with pytest.raises(BadInputError, match=message):
        action.window_spans(10.0, window, stride)


# ---------------------------------------------------------------- text cache


def test_text_features_are_cached_on_disk_per_model_and_labels(isolated_home, monkeypatch):
    first = action.text_features(build_tiny_clip(TINY_VIT, 5), NAMES, model_id="abc")
    files = list((isolated_home / ".cache" / "clipcli").rglob("*.npy"))
    assert len(files) == 1
    assert first.shape == (48, 32)

    def fail(*args, **kwargs):
        raise AssertionError("encoded again despite the disk cache")

    encode = action_text._encode_templates
    monkeypatch.setattr(action_text, "_encode_templates", fail)
    again = action.text_features(build_tiny_clip(TINY_VIT, 5), NAMES, model_id="abc")  # a new model object
    torch.testing.assert_close(again, first)
    monkeypatch.setattr(action_text, "_encode_templates", encode)
    action.text_features(build_tiny_clip(TINY_VIT, 5), NAMES[:2], model_id="abc")
    action.text_features(build_tiny_clip(TINY_VIT, 6), NAMES, model_id="other")
    assert len(list((isolated_home / ".cache" / "clipcli").rglob("*.npy"))) == 3
    files[0].write_bytes(b"not numpy")  # a damaged entry is re-encoded and rewritten
    fresh = action.text_features(build_tiny_clip(TINY_VIT, 5), NAMES, model_id="abc")
    torch.testing.assert_close(fresh, first)
    assert np.load(files[0]).shape == (48, 32)


def test_in_memory_text_cache_follows_in_place_weight_changes():
    model = build_tiny_clip(TINY_VIT, 8)
    before = action.text_features(model, NAMES)
    assert action.text_features(model, NAMES) is before  # cached
    with torch.no_grad():
        model.text_projection.mul_(-1)  # an in-place update, as an optimiser step makes
    after = action.text_features(model, NAMES)
    torch.testing.assert_close(after, -before)


def test_more_frames_than_a_transf_head_has_positions_for(tmp_path):
    _, fusion = load_actionclip(write_actionclip(tmp_path / "t.pt", build_tiny_clip(TINY_VIT, 4), "Transf"))
    assert action.resolve_frames(16, fusion) == 16
    with pytest.raises(BadInputError, match="positions for 77"):
        action.resolve_frames(78, fusion)
