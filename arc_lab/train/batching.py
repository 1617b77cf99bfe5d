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

Prefix sharing (``collate(..., shared=True)``, the training default for ANSWER / PAIR / LIST): one packed
row per distinct prompt of the batch holds the prompt once and each distinct answer once (a question's
gold answer, repeated in each of its pairs, runs once), under a block mask (:mod:`arc_lab.packing`); the
per-answer log-probs are gathered back into the (B, K) slots. For ARC pairs (prompt ~30 tokens, answers
~5) a question's 3 pairs cost ~1/4 of the forward tokens of one row per answer. Equal to the unshared
layout up to fp32 rounding (tests/test_train_prefix.py).

Data order and weighting (:func:`epoch_batches`): the examples that share a prompt form a question (PAIR:
the c - 1 pairs of a c-choice question, built in a row by ``build_pairs``); an epoch visits the questions
in a seeded random order, and a micro-batch holds whole questions, about ``batch_size`` examples. The loss
is the objective's mean over the micro-batch's examples, so **each pair weighs the same: a 4-choice ARC
question weighs 3 pairs, a 3-choice one 2, a 5-choice one 4**. (LIST objectives see one example per
question: every question weighs the same.) Per-question weighting of pairs is not offered.

Public API: :class:`TokenizedExample`, :class:`TokenizedDataset` (``fingerprint()``, ``groups``),
:class:`Batch`, :func:`tokenize_examples`, :func:`collate`, :func:`epoch_batches`.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from arc_lab.objectives.base import InputKind
from arc_lab.packing import prefix_block_mask
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
    _groups: list[list[int]] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def max_k(self) -> int:
        """Largest number of answers of any example."""
        return max(len(e.answers) for e in self.examples)

    @property
    def groups(self) -> list[list[int]]:
        """Indices of the examples that share one prompt (the pairs of one question), in order of first
        appearance; singletons for PACKED blocks (their one-token "prompts" are not questions)."""
        if self._groups is None:
            if self.kind is InputKind.PACKED:
                self._groups = [[i] for i in range(len(self))]
            else:
                by_prompt: dict[tuple[int, ...], list[int]] = {}
                for i, e in enumerate(self.examples):
                    by_prompt.setdefault(e.prompt, []).append(i)
                self._groups = list(by_prompt.values())
        return self._groups

    def fingerprint(self) -> str:
        """sha256 (16 hex) of kind, seq_len, append_eos and every token id, length and gold index."""
        if self._fingerprint is None:
            h = hashlib.sha256(f"{self.kind.value}|{self.seq_len}|{self.append_eos}|{len(self)}".encode())
            for e in self.examples:
                h.update(repr((e.prompt, e.answers, e.chars, e.nbytes, e.gold)).encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


@dataclass(kw_only=True)
class Batch:
    """A padded batch of B examples with up to K answers each, laid out in R rows of T tokens.

    Two layouts compute the same log-probs:

    * unshared (``block_mask`` None): one row per answer, ``prompt + answer``, under the model's causal
      mask; R = sum_b K_b.
    * prefix-shared: one row per distinct prompt of the batch, ``prompt + answer_1 + answer_2 + ...`` with
      every distinct answer once, under a block mask (:func:`arc_lab.packing.prefix_block_mask`): an answer
      sees its prompt and itself, and its position ids restart after the prompt.

    Attributes:
        input_ids: (R, T) long, right-padded.
        attention_mask: (R, T) long, 1 on real tokens.
        pred_pos: (A,) long, flat index into R*T of the positions whose next-token prediction is an
            answer token (A = answer tokens computed).
        targets: (A,) long, the answer token each of those positions predicts.
        token_answer: (A,) long, which computed answer (0..U-1) each answer token belongs to.
        answer_slot: (B*K,) long, the computed answer of each (example, choice) slot; U (a zero) where
            masked. Slots with the same prompt and answer ids share one computed answer.
        n_answers: U, the number of computed answers.
        tokens, chars, bytes: (B, K) float answer lengths (0 where masked).
        mask: (B, K) bool, True where a choice exists.
        gold: (B,) long.
        index: (B,) long, positions of the examples in their TokenizedDataset (reference-cache rows).
        n_tokens: number of real (non-pad) tokens run through the model, for tokens/s.
        block_mask: (R, T, T) bool (query, key) for the prefix-shared layout, else None.
        position_ids: (R, T) long for the prefix-shared layout, else None.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pred_pos: torch.Tensor
    targets: torch.Tensor
    token_answer: torch.Tensor
    answer_slot: torch.Tensor
    n_answers: int
    tokens: torch.Tensor
    chars: torch.Tensor
    bytes: torch.Tensor
    mask: torch.Tensor
    gold: torch.Tensor
    index: torch.Tensor
    n_tokens: int
    block_mask: torch.Tensor | None = None
    position_ids: torch.Tensor | None = None

    @property
    def shared(self) -> bool:
        """Whether this batch uses the prefix-shared layout."""
        return self.block_mask is not None

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
    answers: list[tuple[int, ...]] = []
    ctx: list[int] | None = None
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
    assert ctx is not None  # every example has at least one answer text
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


def collate(dataset: TokenizedDataset, indices: Sequence[int], pad_id: int, *, shared: bool = False) -> Batch:
    """Stack examples ``indices`` of ``dataset`` into one right-padded :class:`Batch`.

    Args:
        dataset: the tokenised examples.
        indices: which examples, in batch order.
        pad_id: padding token id.
        shared: the prefix-shared layout (each distinct prompt once, each of its distinct answers once,
            under a block mask); else one row per answer. PACKED data is always unshared (K=1, no prompt).
    """
    exs = [dataset.examples[i] for i in indices]
    b, k = len(exs), max(len(e.answers) for e in exs)
    if shared and dataset.kind is not InputKind.PACKED:
        rows, answer_slot, n_answers = _shared_rows(exs, k)
    else:
        rows = [(e.prompt, [a]) for e in exs for a in e.answers]
        answer_slot = torch.full((b * k,), len(rows), dtype=torch.long)
        answer_slot[[bi * k + ki for bi, e in enumerate(exs) for ki in range(len(e.answers))]] = torch.arange(
            len(rows)
        )
        n_answers, shared = len(rows), False
    # the shared layout feeds answer[:-1] (the last token's output predicts nothing); unshared rows are
    # prompt + answer, as lm-eval-style scoring lays them out
    fed = [[a[:-1] if shared else a for a in answers] for _, answers in rows]
    t = max(len(p) + sum(len(f) for f in fs) for (p, _), fs in zip(rows, fed, strict=True))
    input_ids = torch.full((len(rows), t), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), t), dtype=torch.long)
    pred_pos: list[int] = []
    targets: list[int] = []
    token_answer: list[int] = []
    u = 0
    for r, ((p, answers), fs) in enumerate(zip(rows, fed, strict=True)):
        seq = list(p) + [tok for f in fs for tok in f]
        input_ids[r, : len(seq)] = torch.tensor(seq)
        attention[r, : len(seq)] = 1
        start = len(p)
        for a, f in zip(answers, fs, strict=True):  # the prompt's last position predicts token 0
            pred_pos.extend([r * t + len(p) - 1] + list(range(r * t + start, r * t + start + len(a) - 1)))
            targets.extend(a)
            token_answer.extend([u] * len(a))
            start, u = start + len(f), u + 1
    block_mask = position_ids = None
    if shared:
        block_mask, position_ids = prefix_block_mask(
            [len(p) for p, _ in rows], [[len(f) for f in fs] for fs in fed], t
        )
    lengths = torch.zeros((3, b, k))
    mask = torch.zeros((b, k), dtype=torch.bool)
    for bi, e in enumerate(exs):
        n = len(e.answers)
        lengths[0, bi, :n] = torch.tensor([len(a) for a in e.answers], dtype=torch.float)
        lengths[1, bi, :n] = torch.tensor(e.chars, dtype=torch.float)
        lengths[2, bi, :n] = torch.tensor(e.nbytes, dtype=torch.float)
        mask[bi, :n] = True
    return Batch(
        input_ids=input_ids,
        attention_mask=attention,
        pred_pos=torch.tensor(pred_pos),
        targets=torch.tensor(targets),
        token_answer=torch.tensor(token_answer),
        answer_slot=answer_slot,
        n_answers=n_answers,
        tokens=lengths[0],
        chars=lengths[1],
        bytes=lengths[2],
        mask=mask,
        gold=torch.tensor([e.gold for e in exs]),
        index=torch.tensor(list(indices), dtype=torch.long),
        n_tokens=int(attention.sum()),
        block_mask=block_mask,
        position_ids=position_ids,
    )


def _shared_rows(
    exs: list[TokenizedExample], k: int
) -> tuple[list[tuple[tuple[int, ...], list[tuple[int, ...]]]], torch.Tensor, int]:
    """One row per distinct prompt with its distinct answers, the slot -> computed-answer map, and U."""
    rows: dict[tuple[int, ...], dict[tuple[int, ...], int]] = {}
    for e in exs:
        answers = rows.setdefault(e.prompt, {})
        for a in e.answers:
            answers.setdefault(a, -1)
    u = 0
    for answers in rows.values():  # number the computed answers in row order, as collate lays them out
        for a in answers:
            answers[a], u = u, u + 1
    answer_slot = torch.full((len(exs) * k,), u, dtype=torch.long)
    for bi, e in enumerate(exs):
        for ki, a in enumerate(e.answers):
            answer_slot[bi * k + ki] = rows[e.prompt][a]
    return [(p, list(ans)) for p, ans in rows.items()], answer_slot, u


def epoch_batches(dataset: TokenizedDataset, batch_size: int, seed: int) -> list[list[int]]:
    """One epoch's micro-batches of example indices: whole questions, ``ceil(n / batch_size)`` batches.

    The questions (:attr:`TokenizedDataset.groups`) are visited in ``randperm(n_questions, seed)`` order,
    each with its examples in input order. Batch ``j`` ends at the question boundary nearest to
    ``(j + 1) * batch_size`` examples (ties: the earlier one), so a batch holds whole questions and about
    ``batch_size`` examples (ARC pairs, 3 per 4-choice question, batch_size 8: batches of 6 or 9). A
    question is split only where whole questions cannot give every batch at least one example. With one
    example per question (LIST, ANSWER, PACKED) this is exactly ``randperm(n)`` cut every ``batch_size``.
    """
    groups = dataset.groups
    perm = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed)).tolist()
    order = [i for g in perm for i in groups[g]]
    n = len(order)
    per_epoch = -(-n // batch_size)
    bounds, total = [0], 0
    for g in perm:
        total += len(groups[g])
        bounds.append(total)
    cuts = [0]
    for j in range(1, per_epoch):
        lo, hi, target = cuts[-1] + 1, n - (per_epoch - j), j * batch_size
        at = bisect.bisect_left(bounds, target)
        near = [x for x in bounds[max(at - 1, 0) : at + 1] if lo <= x <= hi]
        cuts.append(min(near, key=lambda x: (abs(x - target), x)) if near else min(max(target, lo), hi))
    cuts.append(n)
    return [order[a:b] for a, b in itertools.pairwise(cuts)]
