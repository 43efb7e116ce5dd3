"""Tiny random models that the tests build and save themselves (safetensors + tokenizer).

Each builder writes a folder that ``transformers`` and our engine both load, so outputs
can be compared on the same weights. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

WORDS = (
    "the a an of to in is was for on with as by at from that this it be are or and not "
    "capital france paris germany berlin city country river sea mountain music song film "
    "book python code function class list dict string number hello world my name what "
    "how why where when who which model token embed vector search query document passage "
    "rank score cat dog bird fish tree water fire earth air sun moon star day night"
).split()


def wordpiece_vocab() -> list[str]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused1]"]
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,!?'-")
    subwords = ["##" + c for c in chars[:26]]
    return list(dict.fromkeys(specials + chars + subwords + WORDS))


def save_bert_tokenizer(folder: Path, model_max_length: int = 128) -> Any:
    """A WordPiece BERT tokenizer over a small vocabulary."""
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(wordpiece_vocab()) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(
        vocab={t: i for i, t in enumerate(wordpiece_vocab())}, model_max_length=model_max_length
    )
    assert len(tok) == len(wordpiece_vocab()), "tokenizer did not take the vocabulary"
    tok.save_pretrained(folder)
    return tok


def save_generic_tokenizer(
    folder: Path, bos: str | None, eos: str | None, pad: str = "<pad>", model_max_length: int = 128
) -> Any:
    """A WordPiece tokenizer with custom special tokens, for RoBERTa-like and decoder models.

    ``bos``/``eos`` are added around each text when given (RoBERTa: ``<s> ... </s>``;
    decoders: only ``eos``).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    specials = [pad, "<unk>"] + [t for t in (bos, eos) if t] + ["<mask>"]
    vocab = {t: i for i, t in enumerate(specials + wordpiece_vocab()[7:])}
    tk = Tokenizer(models.WordPiece(vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    single = " ".join(t for t in (bos, "$A", eos) if t)
    pair = " ".join(t for t in (bos, "$A", eos, eos, "$B", eos) if t) if bos else "$A $B " + (eos or "")
    special = [(t, vocab[t]) for t in (bos, eos) if t]
    tk.post_processor = processors.TemplateProcessing(
        single=single, pair=pair.strip(), special_tokens=special
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_class="PreTrainedTokenizerFast",
        tokenizer_object=tk,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=model_max_length,
    )
    tok.save_pretrained(folder)
    return tok


def _save(model: torch.nn.Module, folder: Path) -> Path:
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def bert(folder: Path, cls: str = "BertModel", **config: Any) -> Path:
    """A 2-layer, 32-wide BERT (``cls`` picks the transformers class)."""
    import transformers

    tok = save_bert_tokenizer(folder)
    kwargs = dict(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=0,
    )
    kwargs.update(config)
    torch.manual_seed(0)
    model = getattr(transformers, cls)(transformers.BertConfig(**kwargs))
    return _save(model.eval(), folder)


def xlm_roberta(folder: Path, cls: str = "XLMRobertaModel", **config: Any) -> Path:
    """A 2-layer, 32-wide XLM-RoBERTa with a ``<s> ... </s>`` tokenizer."""
    import transformers

    tok = save_generic_tokenizer(folder, bos="<s>", eos="</s>")
    kwargs = dict(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        type_vocab_size=1,
    )
    kwargs.update(config)
    torch.manual_seed(0)
    model = getattr(transformers, cls)(transformers.XLMRobertaConfig(**kwargs))
    return _save(model.eval(), folder)


def qwen2(folder: Path, cls: str = "Qwen2ForCausalLM", **config: Any) -> Path:
    """A 2-layer, 32-wide Qwen2 decoder; texts end with ``<|endoftext|>``."""
    import transformers

    tok = save_generic_tokenizer(folder, bos=None, eos="<|endoftext|>", pad="<|pad|>")
    kwargs = dict(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    kwargs.update(config)
    torch.manual_seed(0)
    model = getattr(transformers, cls)(transformers.Qwen2Config(**kwargs))
    return _save(model.eval(), folder)


def sentence_transformer(
    folder: Path,
    base: Path,
    pooling: str = "cls",
    dense_out: int | None = 16,
    normalize: bool = True,
    max_seq_length: int = 64,
    do_lower_case: bool = False,
    include_prompt: bool = True,
    prompts: dict[str, str] | None = None,
    similarity_fn_name: str | None = None,
) -> Path:
    """A Sentence Transformers folder over ``base``: Pooling, optional Dense (Tanh), Normalize,
    with optional prompts and similarity function in ``config_sentence_transformers.json``."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    transformer = Transformer(str(base), max_seq_length=max_seq_length, do_lower_case=do_lower_case)
    dim = transformer.get_embedding_dimension() if hasattr(transformer, "get_embedding_dimension") else 32
    modules: list[torch.nn.Module] = [
        transformer,
        Pooling(dim, pooling_mode=pooling, include_prompt=include_prompt),
    ]
    if dense_out:
        torch.manual_seed(1)
        modules.append(Dense(dim, dense_out, activation_function=torch.nn.Tanh()))
    if normalize:
        modules.append(Normalize())
    SentenceTransformer(
        modules=modules, device="cpu", prompts=prompts, similarity_fn_name=similarity_fn_name
    ).save(str(folder))
    return folder


TEXTS = [
    "hello world",
    "what is the capital of france",
    "paris is the capital city of france and a city on a river",
    "python code with a function and a class",
    "a",
    "the cat and the dog and the bird in the tree by the water " * 3,
    "how to search a vector model for a query",
    "star",
]
