"""Qwen3-Reranker in process with PyTorch: the reference implementation, CPU or GPU."""

from __future__ import annotations

import threading
from typing import Any

from rerank.engines.base import DEFAULT_MAX_TOKENS, Prompt, PromptFitter, Qwen3Engine


class TransformersEngine(Qwen3Engine):
    name = "transformers"

    def __init__(
        self,
        model: str,
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        device: str | None = None,
        dtype: Any = None,
        batch_size: int = 16,
        max_batch_tokens: int = 32768,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = model
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self._torch = torch
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype is None:
            # Half precision on GPU for speed; the two logits are still read in float32 below.
            dtype = torch.float32
            if self.device.type == "cuda":
                dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self._tokenizer: Any = AutoTokenizer.from_pretrained(model, padding_side="left")
        self._pad_id = self._tokenizer.pad_token_id
        if self._pad_id is None:
            self._pad_id = self._tokenizer.convert_tokens_to_ids("<|endoftext|>")
        self._fitter = PromptFitter(self._tokenizer, max_tokens)

        causal_lm: Any = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
        causal_lm.to(self.device).eval()
        no_id = self._tokenizer.convert_tokens_to_ids("no")
        yes_id = self._tokenizer.convert_tokens_to_ids("yes")
        if no_id is None or yes_id is None or no_id == yes_id:
            raise ValueError(f"{model}: the tokenizer has no single 'no'/'yes' tokens: not a Qwen3 reranker?")
        # Only the "no" and "yes" rows of the LM head matter: computing them from the last hidden
        # state in float32 avoids a (batch x length x vocab) logits tensor and bf16 ties.
        head = causal_lm.get_output_embeddings().weight
        self._head = head[[no_id, yes_id]].detach().to(torch.float32)
        self._backbone = causal_lm.base_model
        # One forward at a time: a threaded worker would otherwise multiply peak memory.
        self._lock = threading.Lock()

    def _score_prompts(self, prompts: list[Prompt]) -> list[float]:
        ids = [prompt.input_ids for prompt in prompts]
        scores: list[float] = [0.0] * len(ids)
        for batch in self._batches(ids):
            for index, score in zip(batch, self._forward([ids[i] for i in batch]), strict=True):
                scores[index] = score
        return scores

    def _batches(self, prompts: list[list[int]]) -> list[list[int]]:
        """Indexes grouped by similar length, so little compute goes to padding."""
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        batches: list[list[int]] = []
        current: list[int] = []
        for index in order:
            # Sorted ascending: this prompt is the longest of the batch if it joins.
            width = len(prompts[index])
            if current and (len(current) >= self.batch_size or width * (len(current) + 1) > self.max_batch_tokens):
                batches.append(current)
                current = []
            current.append(index)
        if current:
            batches.append(current)
        return batches

    def _forward(self, prompts: list[list[int]]) -> list[float]:
        torch = self._torch
        width = max(len(ids) for ids in prompts)
        input_ids = torch.full((len(prompts), width), self._pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            # Left padding: the last position of every row is the prompt's last token.
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        # Positions count from each prompt's first real token, as if it were alone.
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        with self._lock, torch.inference_mode():
            hidden = self._backbone(
                input_ids=input_ids.to(self.device),
                attention_mask=attention_mask.to(self.device),
                position_ids=position_ids.to(self.device),
                use_cache=False,
            ).last_hidden_state[:, -1, :]
            logits = hidden.to(torch.float32) @ self._head.T  # columns: no, yes
            scores = torch.log_softmax(logits, dim=-1)[:, 1].exp()
        return [float(score) for score in scores.cpu()]
