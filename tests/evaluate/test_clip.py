"""CLIP: parity with transformers' CLIPModel on a tiny random config, BPE tokenizer parity, CLIPSIM end to end."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from lumiere_jax.evaluate import clip
from lumiere_jax.evaluate import clip_tokenizer
from lumiere_jax.evaluate import convert
from lumiere_jax.evaluate import networks
from lumiere_jax.evaluate import weights

START_ID, END_ID = 523, 524  # ids of the special tokens in the tiny vocabulary below (256 + 256 + 11 merges)
MERGES = ["h e", "l l", "he ll", "hell o</w>", "c a", "ca t", "cat s</w>", "o r", "w or", "wor l", "worl d</w>"]


@pytest.fixture(scope="module")
def hf_model():
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=600, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, eos_token_id=END_ID),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=24, intermediate_size=40, num_hidden_layers=2,
                           num_attention_heads=2),
        projection_dim=16)
    torch.manual_seed(0)
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():  # non-trivial LayerNorm parameters, so a swapped scale / bias would show
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.add_(0.1 * torch.randn_like(parameter))
    return model


@pytest.fixture(scope="module")
def vocab_files(tmp_path_factory):
    """A tiny byte-level BPE vocabulary in CLIP's layout: bytes, bytes + </w>, merges, special tokens."""
    folder = tmp_path_factory.mktemp("clip_vocab")
    symbols = list(clip_tokenizer.byte_to_unicode().values())
    tokens = symbols + [symbol + "</w>" for symbol in symbols] + ["".join(m.split()) for m in MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({token: index for index, token in enumerate(tokens)}))
    assert (len(tokens) - 2, len(tokens) - 1) == (START_ID, END_ID)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    return str(folder / "vocab.json"), str(folder / "merges.txt")


def convert_hf(model):
    config = convert.clip_config_from_hf(model.config.to_dict())
    state = {name: value.numpy() for name, value in model.state_dict().items()}
    return config, weights.load_variables(convert.convert_clip(state), convert.abstract_variables("clip", config))


def test_image_and_text_embeddings_match_transformers(hf_model):
    config, variables = convert_hf(hf_model)
    images = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    tokens = np.array([[START_ID, 5, 6, 7, END_ID, END_ID, END_ID], [START_ID, 10, 11, 12, 13, 14, END_ID],
                       [START_ID, END_ID, END_ID, END_ID, END_ID, END_ID, END_ID]])
    mask = np.zeros_like(tokens, bool)
    for row, length in enumerate([5, 7, 2]):
        mask[row, :length] = True
    with torch.no_grad():
        expected_image = hf_model.get_image_features(pixel_values=torch.from_numpy(images)).pooler_output.numpy()
        expected_text = hf_model.get_text_features(
            input_ids=torch.from_numpy(tokens), attention_mask=torch.from_numpy(mask.astype(np.int64))
        ).pooler_output.numpy()
    model = clip.CLIP(config)
    image = jax.jit(lambda x: model.apply(variables, x, method=clip.CLIP.encode_image))(images.transpose(0, 2, 3, 1))
    text = jax.jit(lambda t, m: model.apply(variables, t, m, method=clip.CLIP.encode_text))(tokens, mask)
    np.testing.assert_allclose(image, expected_image, atol=1e-4)
    np.testing.assert_allclose(text, expected_text, atol=1e-4)


def test_published_vit_b32_shapes_via_eval_shape():
    params = convert.abstract_variables("clip", clip.CLIPConfig())["params"]
    assert params["vision"]["position_embedding"].shape == (50, 768)  # 7 x 7 patches + class token
    assert params["text"]["token_embedding"]["embedding"].shape == (49408, 512)
    assert params["visual_projection"]["kernel"].shape == (768, 512)


def test_tokenizer_matches_transformers(vocab_files):
    vocab, merges = vocab_files
    reference = transformers.CLIPTokenizer(vocab, merges)
    ours = clip_tokenizer.CLIPTokenizer(vocab, merges, context_length=12)
    prompts = ["Hello  world", "cats, cats! 42 hello's", "a very long prompt that will certainly be truncated here"]
    tokens, mask = ours(prompts)
    expected = reference(prompts, padding="max_length", max_length=12, truncation=True, return_tensors="np")
    np.testing.assert_array_equal(tokens[mask], expected["input_ids"][expected["attention_mask"].astype(bool)])
    np.testing.assert_array_equal(mask, expected["attention_mask"].astype(bool))
    assert ours.encode("hello") == [ours.vocab["hello</w>"]]


def test_clip_similarity_from_converted_files(hf_model, vocab_files, tmp_path):
    hf_dir = tmp_path / "hf"
    hf_model.save_pretrained(hf_dir)
    output = str(tmp_path / "clip.safetensors")
    convert.main(["clip", "--input", str(hf_dir / "model.safetensors"), "--hf_config", str(hf_dir / "config.json"),
                  "--output", output])
    similarity = networks.CLIPSimilarity.from_files(output, *vocab_files, batch_size=2)
    rng = np.random.default_rng(3)
    videos = [rng.integers(0, 256, size=(4, 40, 48, 3), dtype=np.uint8) for _ in range(3)]
    prompts = ["hello world", "cats", "a cat"]
    scores = similarity(videos, prompts)
    # Reference: transformers on the same preprocessed frames and tokens, cosine per frame, mean over frames.
    frames = np.asarray(clip.preprocess_frames(jnp.asarray(networks.to_unit_range(videos)), similarity.config))
    tokens, mask = similarity.tokenizer(prompts)
    with torch.no_grad():
        pixel_values = torch.from_numpy(np.array(frames.transpose(0, 3, 1, 2)))
        image = hf_model.get_image_features(pixel_values=pixel_values).pooler_output.numpy()
        text = hf_model.get_text_features(input_ids=torch.from_numpy(tokens.astype(np.int64)),
                                          attention_mask=torch.from_numpy(mask.astype(np.int64))).pooler_output.numpy()
    image = image / np.linalg.norm(image, axis=-1, keepdims=True)
    text = text / np.linalg.norm(text, axis=-1, keepdims=True)
    expected = np.einsum("btp,bp->bt", image.reshape(3, 4, -1), text).mean(axis=1)
    np.testing.assert_allclose(scores, expected, atol=1e-4)


def test_preprocess_frames_cover_crops_and_normalises():
    video = jnp.ones((2, 3, 20, 40, 3))  # white frames, wider than tall
    frames = clip.preprocess_frames(video, clip.CLIPConfig(image_size=16))
    assert frames.shape == (6, 16, 16, 3)
    expected = (1.0 - np.array(clip.IMAGE_MEAN)) / np.array(clip.IMAGE_STD)
    np.testing.assert_allclose(np.asarray(frames[0, 8, 8]), expected, rtol=1e-5)


def test_clip_mapping_is_complete_and_strict(hf_model):
    config = convert.clip_config_from_hf(hf_model.config.to_dict())
    state = {name: value.numpy() for name, value in hf_model.state_dict().items()}
    abstract = convert.abstract_variables("clip", config)
    flat = convert.convert_clip(state)
    assert len(flat) == len(weights.flatten_variables(abstract))
    with pytest.raises(convert.ConversionError, match=r"\['text_model.pooler.weight'\]"):
        convert.convert_clip({**state, "text_model.pooler.weight": np.zeros((2, 2))})
    del state["vision_model.encoder.layers.1.mlp.fc2.bias"]
    with pytest.raises(ValueError, match=r"1 missing \['vision/layers_1/fc_2/bias'\]"):
        weights.load_variables(convert.convert_clip(state), abstract)
