"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

Causal self-attention over a user's last `max_len` items, learned positions, and item
embeddings shared with the output layer, so an item's score is the dot product of the
sequence state with that item's embedding. That shared space is also what the FAISS index
serves: `item_vectors()` is the index, `predict()` gives the query.

`forward` (training: every position's state) is kept apart from `predict` (serving: the
last position only), as in SASRec.pytorch.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class SASRecConfig:
    num_items: int  # dense ids 1..num_items; 0 is padding
    max_len: int = 50
    hidden: int = 64
    num_blocks: int = 2
    num_heads: int = 2
    dropout: float = 0.2
    # Feature-enriched items (off when 0): an item's vector is its ID embedding plus the mean
    # of its attribute embeddings (brand, category levels; ids 1..num_attributes, 0 = padding),
    # in the input and the tied output layer alike. Rare items then share what their
    # attributes learned from frequent ones -- the side information S3-Rec exploits through
    # pre-training, here used directly. The item -> attributes table is a buffer in the
    # state dict, so a loaded model scores exactly as it was trained.
    num_attributes: int = 0
    max_attributes: int = 0  # attribute slots per item (rows padded with 0)
    attribute_pooling: str = "mean"  # how an item's attribute embeddings combine: mean | sum
    # A learned score offset per item (off when False): score = state . vector + bias. Without
    # it, an item's popularity must be carried by the geometry of the dot product, and a
    # popular item then loses to random rare ones for users whose context points elsewhere.
    # The bias travels as one more dimension (item vector [v, b], query [h, 1]), so the
    # exported vectors keep serving from an inner-product index unchanged.
    item_bias: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class _Block(nn.Module):
    """Pre-LN transformer block with a causal mask (SASRec's layer order)."""

    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        self.attn_norm = nn.LayerNorm(cfg.hidden, eps=1e-8)
        self.attn = nn.MultiheadAttention(cfg.hidden, cfg.num_heads, dropout=cfg.dropout, batch_first=True)
        self.ffn_norm = nn.LayerNorm(cfg.hidden, eps=1e-8)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor, causal: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        q = self.attn_norm(x)
        # Queries are normalized, keys/values are not (the paper's order). Padding keys are
        # zero vectors rather than masked: with left padding and a causal mask, masking them
        # would leave the padding rows with no key at all (NaN).
        attn, _ = self.attn(q, x, x, attn_mask=causal, need_weights=False)
        x = q + attn
        x = x + self.ffn(self.ffn_norm(x))
        return x * pad


class SASRec(nn.Module):
    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        self.cfg = cfg
        self.item_emb = nn.Embedding(cfg.num_items + 1, cfg.hidden, padding_idx=0)
        self.attr_emb: nn.EmbeddingBag | None = None
        if cfg.num_attributes > 0:
            if cfg.max_attributes < 1:
                raise ValueError(f"max_attributes must be >= 1 when num_attributes > 0, got {cfg.max_attributes}")
            # mean (or sum) over the item's attributes; padding slots (0) are left out
            self.attr_emb = nn.EmbeddingBag(
                cfg.num_attributes + 1, cfg.hidden, mode=cfg.attribute_pooling, padding_idx=0
            )
            self.register_buffer("item_attrs", torch.zeros(cfg.num_items + 1, cfg.max_attributes, dtype=torch.long))
        self.item_bias = nn.Parameter(torch.zeros(cfg.num_items + 1)) if cfg.item_bias else None
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.num_blocks))
        self.final_norm = nn.LayerNorm(cfg.hidden, eps=1e-8)
        causal = torch.triu(torch.ones(cfg.max_len, cfg.max_len, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            nn.init.normal_(module.weight, std=0.02)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    def set_item_attributes(self, item_attrs: torch.Tensor) -> None:
        """Fill the (num_items + 1, max_attributes) item -> attribute-ids table (row 0 = padding)."""
        if self.attr_emb is None:
            raise ValueError("this model has no attribute embeddings (num_attributes=0)")
        if tuple(item_attrs.shape) != tuple(self.item_attrs.shape):
            raise ValueError(
                f"item attribute table has shape {tuple(item_attrs.shape)}, the model expects {tuple(self.item_attrs.shape)}"
            )
        with torch.no_grad():
            self.item_attrs.copy_(item_attrs)

    def item_table(self) -> torch.Tensor:
        """Vectors of every item, row 0 = padding (zeros): the input embedding and the output layer."""
        weight = self.item_emb.weight
        if self.attr_emb is not None:
            weight = weight + self.attr_emb(self.item_attrs)
        return weight

    def set_item_bias(self, bias: torch.Tensor) -> None:
        """Start the per-item bias from given values (e.g. log-frequencies); row 0 = padding."""
        if self.item_bias is None:
            raise ValueError("this model has no item bias (item_bias=False)")
        with torch.no_grad():
            self.item_bias.copy_(bias)

    def output_table(self) -> torch.Tensor:
        """The output layer: item vectors, with the bias as a last column when enabled."""
        table = self.item_table()
        if self.item_bias is None:
            return table
        return torch.cat([table, self.item_bias.unsqueeze(1).to(table.dtype)], dim=1)

    def query(self, states: torch.Tensor) -> torch.Tensor:
        """States -> the vectors scored against `output_table()` (a constant 1 meets the bias)."""
        if self.item_bias is None:
            return states
        return torch.cat([states, torch.ones_like(states[..., :1])], dim=-1)

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """States for every position: (batch, max_len) item ids -> (batch, max_len, hidden)."""
        length = seqs.shape[1]
        pad = (seqs > 0).unsqueeze(-1).to(self.item_emb.weight.dtype)
        positions = torch.arange(length, device=seqs.device).unsqueeze(0)
        items = self.item_emb(seqs) if self.attr_emb is None else F.embedding(seqs, self.item_table())
        x = items * math.sqrt(self.cfg.hidden) + self.pos_emb(positions)
        x = self.drop(x) * pad
        causal = self.causal[:length, :length]
        for block in self.blocks:
            x = block(x, causal, pad)
        return self.final_norm(x)

    @torch.no_grad()
    def predict(self, seqs: torch.Tensor) -> torch.Tensor:
        """The user (query) vector: the state at the last position. (batch, hidden [+ 1 with item_bias])."""
        return self.query(self.forward(seqs)[:, -1, :])

    def item_vectors(self) -> torch.Tensor:
        """Output vectors of items 1..num_items (row i-1 is item i), what `predict` is scored against."""
        return self.output_table()[1:]

    def score_all(self, seqs: torch.Tensor) -> torch.Tensor:
        """Scores of every item (column 0 = padding, set to -inf)."""
        scores = self.predict(seqs) @ self.output_table().T
        scores[:, 0] = float("-inf")
        return scores


def sequence_loss(
    states: torch.Tensor,
    targets: torch.Tensor,
    item_weight: torch.Tensor,
    *,
    loss: str,
    num_negatives: int = 100,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next-item loss at every non-padding position.

    `states` come from the (possibly DDP-wrapped) model's forward, through `SASRec.query`;
    `item_weight` is the output layer (`SASRec.output_table()`, row 0 = padding).

    - "bce": one uniformly sampled negative per position, binary cross-entropy (the paper).
    - "ce": full softmax cross-entropy over all items (stronger; Klenitskiy & Vasilev 2023).
    - "sampled_ce": softmax over the positive and `num_negatives` negatives shared by the
      batch, for catalogs too large for a full softmax.
    Sampled negatives may hit a positive by chance; with thousands of items that is rare,
    and it is how the reference implementations do it.
    """
    mask = targets > 0
    h = states[mask]  # (n, hidden)
    pos = targets[mask]
    if loss == "ce":
        return F.cross_entropy(h @ item_weight[1:].T, pos - 1)  # padding (row 0) is never a class
    num_items = item_weight.shape[0] - 1
    if loss == "bce":
        neg = torch.randint(1, num_items + 1, pos.shape, device=pos.device, generator=generator)
        pos_logit = (h * item_weight[pos]).sum(-1)
        neg_logit = (h * item_weight[neg]).sum(-1)
        return F.binary_cross_entropy_with_logits(
            pos_logit, torch.ones_like(pos_logit)
        ) + F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit))
    if loss == "sampled_ce":
        neg = torch.randint(1, num_items + 1, (num_negatives,), device=pos.device, generator=generator)
        pos_logit = (h * item_weight[pos]).sum(-1, keepdim=True)
        neg_logit = (h @ item_weight[neg].T).masked_fill(neg.unsqueeze(0) == pos.unsqueeze(1), float("-inf"))
        logits = torch.cat([pos_logit, neg_logit], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long, device=pos.device))
    raise ValueError(f"unknown loss {loss!r}; set --set train.recommender.loss to bce, ce or sampled_ce")


def pad_left(histories: list[np.ndarray], max_len: int) -> np.ndarray:
    out = np.zeros((len(histories), max_len), dtype=np.int64)
    for i, h in enumerate(histories):
        h = h[-max_len:]
        if len(h):
            out[i, -len(h) :] = h
    return out


def load_exported(path: str | Path) -> tuple[SASRec, SASRecConfig, np.ndarray]:
    """(model in eval mode, its config, item vectors) of an exported recommender directory.

    The directory must verify against its manifest (`core.manifest.verify_dir`); the ranker's
    training, the recommender's re-evaluation and serving all load it here.
    """
    from core.manifest import verify_dir

    path = Path(path)
    verify_dir(path)
    config = SASRecConfig(**json.loads((path / "model_config.json").read_text()))
    model = SASRec(config)
    model.load_state_dict(torch.load(path / "model.pt", map_location="cpu"))
    model.eval()
    vectors = np.ascontiguousarray(np.load(path / "item_vectors.npy"), dtype=np.float32)
    return model, config, vectors
