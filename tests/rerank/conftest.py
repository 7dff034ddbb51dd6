"""A tiny random Qwen3 reranker built at test time: the real weights cannot be downloaded here.

The tokenizer mimics Qwen's (byte-level BPE behind Qwen2's split regex, the chat special tokens,
``yes``/``no`` as whole tokens) so that prompt formatting and truncation are exercised as they are
with the real model; the weights are random with a fixed seed, so scores are arbitrary but exact.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

# Qwen2/Qwen3 pre-tokenizer: the split decides where token boundaries fall between the query part
# and the document part, which is what vLLM's query+document concatenation depends on.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK_TOKENS = ["<think>", "</think>"]
MAX_VOCAB_SIZE = 1024  # BPE stops earlier on this small corpus (~700 tokens)
SEED = 20240613

_CORPUS = [
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided.",
    'Note that the answer can only be "yes" or "no".',
    "Given a customer's support question, judge whether the FAQ entry solves it",
    "Given a web search query, retrieve relevant passages that answer the query",
    "<Instruct>: <Query>: <Document>: system user assistant",
    "How do I reset my password? Open Settings, choose Account, then Reset password.",
    "Refunds are paid back to the original card within five working days.",
    "You can delete your account from the privacy page; the data is removed after two weeks.",
    "Shipping to Europe takes three to seven days. Tracking numbers are sent by e-mail.",
    "如何修改密码？打开设置，选择账户，然后点击重置密码。",
    "退款将在五个工作日内退回原支付卡。",
    "发货到欧洲需要三到七天，物流单号会通过邮件发送。",
    "yes no yes no Yes No yes, no. yes! no?",
]


def _train_tokenizer(path: Path) -> None:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=MAX_VOCAB_SIZE - len(SPECIAL_TOKENS) - len(THINK_TOKENS),
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # "yes"/"no" repeated so BPE merges them into whole tokens, as in Qwen's vocabulary.
    tokenizer.train_from_iterator(_CORPUS * 20 + ["yes no"] * 200, trainer=trainer)
    # Qwen3 declares <think>/</think> as added, non-special tokens.
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in THINK_TOKENS])
    for token in [*SPECIAL_TOKENS, *THINK_TOKENS, "yes", "no"]:
        assert tokenizer.token_to_id(token) is not None, token

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        model_max_length=32768,
    )
    wrapped.save_pretrained(path)


def _build_model(path: Path, vocab_size: int) -> None:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,  # vLLM's CPU attention needs head_dim >= 64
        max_position_embeddings=4096,
        tie_word_embeddings=True,  # as in Qwen3-Reranker-0.6B
        bos_token_id=None,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(SEED)
    model = Qwen3ForCausalLM(config)
    # The default init (std 0.02) gives every pair a score of ~0.5. These scales (found by trial)
    # spread scores over ~0.6-0.9 with real dependence on the document, so a padding, position or
    # token-order bug moves a score by far more than the tolerances.
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() >= 2:
                std = 0.6 if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.2
                parameter.normal_(0.0, std, generator=generator)
            elif name.endswith(("q_norm.weight", "k_norm.weight")) or name == "model.norm.weight":
                parameter.fill_(0.5)  # flatter attention: the last token reads the whole prompt
    model.save_pretrained(path)


def build_tiny_qwen3_reranker(path: Path) -> Path:
    from transformers import AutoTokenizer

    _train_tokenizer(path)
    vocab_size = len(AutoTokenizer.from_pretrained(path))
    _build_model(path, vocab_size)
    return path


def reference_scorer(path: Path) -> Callable[[str, str, str], float]:
    """The model card's recipe, written out without padding, batching or truncation: one pair at a time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    no_id = tokenizer.convert_tokens_to_ids("no")
    yes_id = tokenizer.convert_tokens_to_ids("yes")

    def score(instruction: str, query: str, document: str) -> float:
        prompt = (
            "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and "
            'the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
            "<|im_start|>user\n"
            f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"
            "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
        )
        input_ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(input_ids=input_ids).logits[0, -1, :]
        pair = torch.stack([logits[no_id], logits[yes_id]]).to(torch.float32)
        return float(torch.log_softmax(pair, dim=0)[1].exp())

    return score
