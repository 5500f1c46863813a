"""The Transform graph: tokens, vocabulary ids, padding and lengths."""

import tensorflow as tf

from models import features, preprocessing
from tests.helpers import TINY_TEXTS, run_transform


def _tokens(text):
    return [t.decode() for t in preprocessing.tokenize(tf.constant([text]))[0].numpy()]


def test_tokenize_lowercases_splits_punctuation_and_drops_html_breaks():
    assert _tokens("Bad movie.<br /><br />Really BAD!") == ["bad", "movie", ".", "really", "bad", "!"]
    assert _tokens("I didn't like it;the end") == ["i", "didn't", "like", "it", ";", "the", "end"]
    assert _tokens("<br/>Élan, naïve<br>") == ["élan", ",", "naïve"]
    assert _tokens("   ") == []


def test_ids_follow_vocabulary_with_zero_padding_and_true_lengths(tiny_transform):
    transformed, tft_output = tiny_transform
    vocab = tft_output.vocabulary_by_name(features.VOCABULARY_NAME)
    vocab = [v.decode() for v in vocab]
    first = transformed[0]
    expected_tokens = _tokens(TINY_TEXTS[0])
    assert first[features.LENGTH] == len(expected_tokens) == 8
    ids = list(first[features.TOKEN_IDS])
    assert len(ids) == 12
    # Vocabulary ids start at 1: id = position in the vocabulary file + 1.
    assert [vocab[i - 1] for i in ids[:8]] == expected_tokens
    assert ids[8:] == [features.PADDING_ID] * 4
    # Most frequent tokens come first in the vocabulary.
    assert vocab[0] in {"good", "bad", "."}


def test_long_texts_keep_their_first_quarter_and_last_three_quarters(tiny_transform):
    transformed, tft_output = tiny_transform
    vocab = [v.decode() for v in tft_output.vocabulary_by_name(features.VOCABULARY_NAME)]
    longest = transformed[3]  # 15 tokens, max_len 12: keeps 3 from the start, 9 from the end
    assert longest[features.LENGTH] == 12
    tokens = _tokens(TINY_TEXTS[3])
    assert len(tokens) == 15
    assert [vocab[i - 1] for i in longest[features.TOKEN_IDS]] == tokens[:3] + tokens[-9:]
    assert preprocessing.truncate_list(tokens, 12) == tokens[:3] + tokens[-9:]
    assert preprocessing.truncate_list(tokens[:5], 12) == tokens[:5]


def test_truncation_keeps_short_texts_whole_and_cuts_long_ones_at_head_and_tail():
    ragged = tf.ragged.constant([list(range(10)), list(range(3)), []], dtype=tf.int64)
    assert preprocessing.truncate(ragged, 8).to_list() == [[0, 1, 4, 5, 6, 7, 8, 9], [0, 1, 2], []]
    assert preprocessing.head_and_tail(400) == (100, 300)


def test_tokens_outside_top_k_share_the_oov_id(tmp_path):
    texts = ["good good good bad bad rare", "good bad other"]
    transformed, tft_output = run_transform(texts, [1, 0], vocab_size=2, max_len=8, output_dir=tmp_path)
    vocab = [v.decode() for v in tft_output.vocabulary_by_name(features.VOCABULARY_NAME)]
    assert vocab == ["good", "bad"]
    oov_id = len(vocab) + 1
    assert list(transformed[0][features.TOKEN_IDS]) == [1, 1, 1, 2, 2, oov_id, 0, 0]
    assert list(transformed[1][features.TOKEN_IDS]) == [1, 2, oov_id, 0, 0, 0, 0, 0]
    assert [int(r[features.LABEL]) for r in transformed] == [1, 0]


def test_character_level_tokens_keep_single_spaces_and_drop_html(tmp_path):
    chars = [c.decode() for c in preprocessing.tokenize(tf.constant(["Ab<br />  c!"]), "char")[0].numpy()]
    assert chars == ["a", "b", " ", "c", "!"]
    transformed, tft_output = run_transform(["ab ab", "ba!"], [1, 0], vocab_size=100, max_len=6,
                                            output_dir=tmp_path, token_level="char")
    vocab = [v.decode() for v in tft_output.vocabulary_by_name(features.VOCABULARY_NAME)]
    assert set(vocab) == {"a", "b", " ", "!"}
    assert transformed[0][features.LENGTH] == 5 and transformed[1][features.LENGTH] == 3
    assert [vocab[i - 1] for i in transformed[1][features.TOKEN_IDS][:3]] == ["b", "a", "!"]


def test_pretrained_vocabulary_gives_unseen_words_their_own_ids_in_training_and_serving(tmp_path):
    texts = ["good good film", "bad film"]
    pretrained = ["the", "superb", "good", "awful"]
    transformed, tft_output = run_transform(texts, [1, 0], vocab_size=10, max_len=6, output_dir=tmp_path,
                                            pretrained_words=pretrained)
    vocab = [v.decode() for v in tft_output.vocabulary_by_name(features.VOCABULARY_NAME)]
    first = features.first_pretrained_id(10)
    assert first == 12
    good, film = vocab.index("good") + 1, vocab.index("film") + 1
    assert list(transformed[0][features.TOKEN_IDS]) == [good, good, film, 0, 0, 0]
    # A new text, through the exported Transform graph as serving runs it: a word
    # of the training vocabulary keeps its id ("good" is in both lists), a word
    # only the pretrained vectors know gets first + its rank, any other is OOV.
    layer = tft_output.transform_features_layer()
    out = layer({features.TEXT: tf.constant([["superb film , awful"]])})
    oov = len(vocab) + 1
    assert list(out[features.TOKEN_IDS].numpy()[0]) == [first + 1, film, oov, first + 3, 0, 0]
    assert int(out[features.LENGTH].numpy()[0]) == 4


def test_control_characters_are_spaces_and_never_cut_the_text():
    # tf.strings.lower stops at a NUL: the text after it must not be lost.
    assert _tokens("GOOD\x00 BAD") == ["good", "bad"]
    assert _tokens("good\x00bad") == ["good", "bad"]
    assert _tokens("a\x01b\x1fc\x7fd\te\r\nf") == ["a", "b", "c", "d", "e", "f"]
    assert _tokens("\x00") == []


def test_the_served_model_reads_past_a_nul(tiny_transform, tmp_path):
    from pipeline import predict
    from tests import serving_models

    _, tft_output = tiny_transform
    signature = predict.load_signature(serving_models.export_tiny_model(tft_output, str(tmp_path / "m")))
    with_nul, spaced, cut = predict.predict(signature, ["good\x00bad", "good bad", "good"], with_tokens=False)
    assert with_nul["length"] == spaced["length"] == 2 and cut["length"] == 1
    assert with_nul["probability"] == spaced["probability"] != cut["probability"]
