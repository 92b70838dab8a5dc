"""Build a small T5 encoder folder for CPU smoke runs: random weights (uncalibrated: it knows
no language) and a Unigram tokenizer trained on the texts you pass. Real runs point
``--t5-path`` at a local copy of t5-base instead."""
from __future__ import annotations

import os
import pathlib


def build_tiny_t5(folder: str | os.PathLike, texts: list[str], *, d_model: int = 32, vocab_size: int = 400,
                  seed: int = 0) -> pathlib.Path:
    import torch
    from tokenizers import SentencePieceUnigramTokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel
    out = pathlib.Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator(texts, vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    sp.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", sp.token_to_id("</s>"))])
    tok = PreTrainedTokenizerFast(tokenizer_object=sp, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                  model_max_length=512)
    tok.save_pretrained(str(out))
    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=len(tok), d_model=d_model, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                   is_encoder_decoder=False, use_cache=False, pad_token_id=0, eos_token_id=1)
    T5EncoderModel(cfg).save_pretrained(str(out))
    (out / "SAO_UNCALIBRATED.txt").write_text("random T5 weights for CPU smoke runs; not a language model\n")
    return out
