"""Examples -> pre-tokenised dataset -> padded model batches, by the objective's input kind.

Every kind becomes the same thing: a prompt and K answers (token ids), where the loss reads only the
answer tokens. Prompt+answer is tokenised with :func:`arc_lab.scoring.encode_pair`, exactly as lm-eval
scores it, once up front (:func:`tokenize_examples`); a step only pads and stacks (:func:`collate`).

==========  ==================================================  ========================================
kind        examples                                            prompt / answers
==========  ==================================================  ========================================
PACKED      LongTensor (N, seq_len) or lists of ids (blocks)    block[:1] / (block[1:],): every token
                                                                 after the first is predicted, K=1
ANSWER      objects with ``prompt``, ``completion``             K=1
PAIR        objects with ``prompt``, ``chosen``, ``rejected``   K=2, chosen at 0 (gold=0)
LIST        objects with ``prompt``, ``choices``, ``gold``      K=len(choices), padded to the batch max
==========  ==================================================  ========================================

Too long: if prompt + longest answer exceeds ``seq_len`` the prompt loses tokens from the LEFT (as
lm-eval truncates), counted in :attr:`TokenizedDataset.truncated` and logged; an answer that cannot fit
with at least one context token is an error, never silently dropped.

Public API: :class:`TokenizedExample`, :class:`TokenizedDataset` (``fingerprint()``), :class:`Batch`,
:func:`tokenize_examples`, :func:`collate`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from arc_lab.objectives.base import InputKind
from arc_lab.scoring import encode_pair

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenizedExample:
    """One prompt with K candidate answers, as token ids.

    Attributes:
        prompt: context token ids (already left-truncated to fit).
        answers: K tuples of answer token ids (the continuation ids of encode_pair).
        chars: K answer lengths in characters, without the leading space (acc_norm's unit).
        nbytes: K answer lengths in UTF-8 bytes, without the leading space.
        gold: index of the preferred answer (0 for PACKED/ANSWER/PAIR).
    """

    prompt: tuple[int, ...]
    answers: tuple[tuple[int, ...], ...]
    chars: tuple[int, ...]
    nbytes: tuple[int, ...]
    gold: int = 0


@dataclass
class TokenizedDataset:
    """Pre-tokenised training examples of one input kind.

    Attributes:
        kind: the input kind they were built for.
        examples: the tokenised examples, in input order.
        seq_len: max tokens of prompt + answer.
        append_eos: whether the tokenizer's EOS was appended to every answer.
        truncated: number of examples whose prompt lost tokens from the left.
    """

    kind: InputKind
    examples: list[TokenizedExample]
    seq_len: int
    append_eos: bool
    truncated: int = 0
    _fingerprint: str | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def max_k(self) -> int:
        """Largest number of answers of any example."""
        return max(len(e.answers) for e in self.examples)

    def fingerprint(self) -> str:
        """sha256 (16 hex) of kind, seq_len, append_eos and every token id, length and gold index."""
        if self._fingerprint is None:
            h = hashlib.sha256(f"{self.kind.value}|{self.seq_len}|{self.append_eos}|{len(self)}".encode())
            for e in self.examples:
                h.update(repr((e.prompt, e.answers, e.chars, e.nbytes, e.gold)).encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


@dataclass
class Batch:
    """A padded batch of R = sum_b K_b rows (every answer of every example is one row).

    Attributes:
        input_ids: (R, T) long, prompt + answer, right-padded.
        attention_mask: (R, T) long, 1 on real tokens.
        pred_pos: (A,) long, flat index into R*T of the positions whose next-token prediction is an
            answer token (A = total answer tokens of the batch).
        targets: (A,) long, the answer token each of those positions predicts.
        token_slot: (A,) long, flat index into B*K of the answer each answer token belongs to.
        tokens, chars, bytes: (B, K) float answer lengths (0 where masked).
        mask: (B, K) bool, True where a choice exists.
        gold: (B,) long.
        index: (B,) long, positions of the examples in their TokenizedDataset (reference-cache rows).
        n_tokens: number of real (non-pad) tokens, for tokens/s.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pred_pos: torch.Tensor
    targets: torch.Tensor
    token_slot: torch.Tensor
    tokens: torch.Tensor
    chars: torch.Tensor
    bytes: torch.Tensor
    mask: torch.Tensor
    gold: torch.Tensor
    index: torch.Tensor
    n_tokens: int

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with every tensor on ``device``."""
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()}
        return Batch(**moved)


def _text_len(text: str) -> tuple[int, int]:
    """(chars, bytes) of an answer text without its leading space, as acc_norm counts."""
    text = text.lstrip(" ")
    return len(text), len(text.encode("utf-8"))


def _prompt_and_answers(ex, kind: InputKind) -> tuple[str, list[str], int]:
    """(prompt, answer texts, gold) of one example object of ``kind``."""
    if kind is InputKind.ANSWER:
        return ex.prompt, [ex.completion], 0
    if kind is InputKind.PAIR:
        return ex.prompt, [ex.chosen, ex.rejected], 0
    if kind is InputKind.LIST:
        return ex.prompt, list(ex.choices), int(ex.gold)
    raise ValueError(f"no text layout for input kind {kind}")


def _tokenize_text(
    tokenizer, ex, kind: InputKind, seq_len: int, append_eos: bool
) -> tuple[TokenizedExample, bool]:
    """Tokenise one text example with encode_pair; return it and whether its prompt was truncated."""
    prompt, texts, gold = _prompt_and_answers(ex, kind)
    answers, ctx = [], None
    for text in texts:
        c, a = encode_pair(tokenizer, prompt, text)
        if ctx is None:
            ctx = c or [tokenizer.eos_token_id]  # lm-eval scores an empty context after the EOT token
        answers.append(tuple(a) + ((tokenizer.eos_token_id,) if append_eos else ()))
    longest = max(len(a) for a in answers)
    keep = seq_len - longest
    where = f"example {getattr(ex, 'item_id', '?')!r} ({getattr(ex, 'source', '?')})"
    if keep < 1:
        raise ValueError(
            f"{where}: an answer has {longest} tokens, which leaves no room for context within "
            f"seq_len={seq_len}; raise seq_len (answers are never truncated)"
        )
    truncated = len(ctx) > keep
    ctx = ctx[len(ctx) - keep :] if truncated else ctx
    lens = [_text_len(t) for t in texts]
    return TokenizedExample(
        tuple(ctx), tuple(answers), tuple(c for c, _ in lens), tuple(b for _, b in lens), gold
    ), truncated


def _tokenize_block(tokenizer, block: Sequence[int], seq_len: int) -> TokenizedExample:
    """A packed block: the first token is context, every later token is predicted."""
    ids = [int(i) for i in block]
    if len(ids) < 2 or len(ids) > seq_len:
        raise ValueError(f"packed block of {len(ids)} tokens: expected 2..seq_len={seq_len}")
    text = tokenizer.decode(ids[1:])
    return TokenizedExample((ids[0],), (tuple(ids[1:]),), (len(text),), (len(text.encode("utf-8")),), 0)


def tokenize_examples(
    tokenizer, examples, kind: InputKind, *, seq_len: int, append_eos: bool = False
) -> TokenizedDataset:
    """Tokenise every example once, for the input kind the objective declares.

    Args:
        tokenizer: a Hugging Face tokenizer (its own BOS default is kept, as lm-eval does).
        examples: PACKED: a LongTensor (N, seq_len) or a list of token-id lists; ANSWER / PAIR / LIST:
            objects with the attributes of the table in the module docstring.
        kind: the objective's ``input_kind``.
        seq_len: max tokens of prompt + answer.
        append_eos: append the tokenizer's EOS to every answer (TRL does; lm-eval never scores it).

    Raises:
        ValueError: no examples, an answer longer than ``seq_len - 1`` tokens, or a malformed block.
    """
    kind = InputKind(kind)
    if len(examples) == 0:
        raise ValueError(f"no training examples for input kind {kind.value!r}")
    if kind is InputKind.PACKED:
        rows = examples.tolist() if isinstance(examples, torch.Tensor) else examples
        return TokenizedDataset(kind, [_tokenize_block(tokenizer, r, seq_len) for r in rows], seq_len, False)
    out, truncated = [], 0
    for ex in examples:
        t, cut = _tokenize_text(tokenizer, ex, kind, seq_len, append_eos)
        out.append(t)
        truncated += cut
    if truncated:
        log.warning(
            "truncated the prompt of %d of %d %s examples from the left to fit seq_len=%d",
            truncated,
            len(out),
            kind.value,
            seq_len,
        )
    return TokenizedDataset(kind, out, seq_len, append_eos, truncated)


def collate(dataset: TokenizedDataset, indices: Sequence[int], pad_id: int) -> Batch:
    """Stack examples ``indices`` of ``dataset`` into one right-padded :class:`Batch`.

    Every answer of every example becomes its own row (chosen and rejected, all K choices share one
    forward); K is padded to the largest K in the batch and masked.
    """
    exs = [dataset.examples[i] for i in indices]
    b, k = len(exs), max(len(e.answers) for e in exs)
    rows = [(bi * k + ki, e.prompt, a) for bi, e in enumerate(exs) for ki, a in enumerate(e.answers)]
    t = max(len(p) + len(a) for _, p, a in rows)
    input_ids = torch.full((len(rows), t), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), t), dtype=torch.long)
    pred_pos, targets, token_slot = [], [], []
    for r, (slot, p, a) in enumerate(rows):
        seq = p + a
        input_ids[r, : len(seq)] = torch.tensor(seq)
        attention[r, : len(seq)] = 1
        pred_pos.extend(range(r * t + len(p) - 1, r * t + len(seq) - 1))  # logits at i predict token i+1
        targets.extend(a)
        token_slot.extend([slot] * len(a))
    lengths = torch.zeros((3, b, k))
    mask = torch.zeros((b, k), dtype=torch.bool)
    for bi, e in enumerate(exs):
        n = len(e.answers)
        lengths[0, bi, :n] = torch.tensor([len(a) for a in e.answers], dtype=torch.float)
        lengths[1, bi, :n] = torch.tensor(e.chars, dtype=torch.float)
        lengths[2, bi, :n] = torch.tensor(e.nbytes, dtype=torch.float)
        mask[bi, :n] = True
    return Batch(
        input_ids,
        attention,
        torch.tensor(pred_pos),
        torch.tensor(targets),
        torch.tensor(token_slot),
        lengths[0],
        lengths[1],
        lengths[2],
        mask,
        torch.tensor([e.gold for e in exs]),
        torch.tensor(list(indices), dtype=torch.long),
        int(attention.sum()),
    )
