"""Typed config of the training section (`train:` in the YAML). Unknown keys are rejected."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ScalingSection(BaseModel):
    """Mirrors `ray.train.ScalingConfig`; resolved once per run and logged with the run."""

    model_config = ConfigDict(extra="forbid")

    num_workers: int = Field(2, ge=1, description="Ray Train workers (DDP ranks).")
    use_gpu: bool = Field(False, description="One GPU per worker; NCCL on GPU, gloo on CPU.")
    cpus_per_worker: float = Field(
        0.5, gt=0, description="CPUs reserved per worker; fractional on a 2-CPU node so workers schedule."
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK",
        description="How the workers' placement group lays them over nodes (Ray Train's ScalingConfig): PACK fills one node first; STRICT_SPREAD puts each worker on its own node (one per node of a multi-node cluster).",
    )


class GeneratorEngineConfig(BaseModel):
    """vLLM engine arguments that differ between a CPU laptop and a GPU node."""

    model_config = ConfigDict(extra="forbid")

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32",
        description="Weights/activations dtype. float32 on CPUs without AVX-512 bf16 (bf16 is ~4x slower there); bfloat16 on GPUs.",
    )
    max_model_len: int = Field(2048, ge=128, description="Longest prompt + completion, in tokens.")
    max_num_seqs: int = Field(16, ge=1, description="Sequences vLLM batches together.")
    cpu_kvcache_gb: int = Field(1, ge=1, description="KV-cache space on the CPU backend, GiB (VLLM_CPU_KVCACHE_SPACE).")
    cpu_threads: int | None = Field(
        None, ge=1, description="OpenMP threads of the CPU engine; None = all cores it is given."
    )
    gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="Fraction of GPU memory vLLM may take (GPU only)."
    )
    enforce_eager: bool = Field(
        True, description="Skip graph capture: faster start-up, slower decode. Keep True on CPU."
    )


class ItemIndexConfig(BaseModel):
    """The FAISS index main retrieval searches: the recommender's item vectors, built when the model
    is exported and loaded by every Retriever replica as it is (ml.index.build_item_index)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["flat", "ivf", "hnsw"] = Field(
        "hnsw",
        description="flat: exact inner product (every item scored; fine to ~100k items). ivf / hnsw: approximate, over the item vectors made L2-searchable (ml.index.mips_augment). Catalogs under 1,000 items always get flat.",
    )
    nlist: int | None = Field(None, ge=1, description="IVF cells; None = 4*sqrt(N).")
    nprobe: int = Field(16, ge=1, description="IVF cells searched per query.")
    hnsw_m: int = Field(32, ge=4, le=256, description="HNSW neighbours per node (M).")
    ef_construction: int = Field(80, ge=8, description="HNSW candidate list size while building.")
    ef_search: int = Field(
        128, ge=10, description="HNSW candidate list size per query; at least the candidates asked for times overfetch."
    )
    overfetch: float = Field(
        2.0,
        ge=1.0,
        le=20.0,
        description="Candidates fetched per candidate asked for; all are re-scored exactly with the model's vectors and the best kept.",
    )
    recall_sample: int = Field(
        1000,
        ge=0,
        description="Seeded sample of users' query vectors for the export manifest's recall@10 vs exact; 0 = skip.",
    )

    @model_validator(mode="after")
    def _nprobe_within_nlist(self) -> ItemIndexConfig:
        if self.nlist is not None and self.nprobe > self.nlist:
            raise ValueError(
                f"nprobe ({self.nprobe}) exceeds nlist ({self.nlist}); set train.recommender.item_index.nprobe <= nlist"
            )
        return self


class RecommenderConfig(BaseModel):
    """SASRec hyper-parameters. Defaults follow the SASRec paper for sparse Amazon data
    (d=64, 2 blocks, dropout 0.5 is the paper's choice for Amazon; 0.2 with full softmax CE),
    with the full-softmax loss that is known to beat the paper's sampled BCE."""

    model_config = ConfigDict(extra="forbid")

    max_len: int = Field(
        50, ge=2, le=1024, description="Most recent items the model attends to (the paper uses 50 for Amazon data)."
    )
    hidden: int = Field(64, ge=8, description="Embedding and hidden size.")
    num_blocks: int = Field(2, ge=1, description="Self-attention blocks.")
    num_heads: int = Field(2, ge=1, description="Attention heads; must divide `hidden`.")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout on embeddings, attention and feed-forward layers.")
    loss: Literal["bce", "ce", "sampled_ce"] = Field(
        "ce",
        description="bce = the paper's one sampled negative; ce = full softmax; sampled_ce = softmax over shared sampled negatives.",
    )
    num_negatives: int = Field(256, ge=1, description="Negatives per batch for sampled_ce.")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(128, ge=1, description="Users per step per worker.")
    epochs: int = Field(30, ge=1, description="Maximum epochs over the training sequences.")
    patience: int = Field(5, ge=1, description="Stop after this many validations without a better `select_on` metric.")
    eval_every: int = Field(1, ge=1, description="Validate (and checkpoint) every N epochs.")
    select_on: Literal["full_ndcg@10", "full_mrr", "sampled_ndcg@10", "sampled_mrr"] = Field(
        "full_ndcg@10",
        description="Validation metric that keeps the best checkpoint and drives early stopping. Both protocols are computed every validation; "
        "sampled_mrr is S3-Rec's rule (its code stops on sampled-99 MRR).",
    )
    eval_users: int = Field(
        2000, ge=1, description="Validation users sampled per validation (both protocols); the final test uses all."
    )
    num_to_keep: int = Field(2, ge=1, description="Checkpoints Ray Train keeps (best by the `select_on` metric).")
    max_failures: int = Field(
        2, ge=0, description="Worker failures Ray Train recovers from by restarting from the last checkpoint."
    )
    amp: bool = Field(True, description="bf16 autocast when training on GPU (ignored on CPU).")
    item_attributes: bool = Field(
        False,
        description="Feature-enriched SASRec: add the pooled (attribute_pooling) learned attribute embeddings (brand, each category-path level) to every item's "
        "vector, in the input and the tied output layer. Needs products with category/brand (or an attribute table from the caller).",
    )
    prefixes: bool = Field(
        False,
        description="One training row per target (the items before it, loss at the last position, where serving reads the user vector) "
        "instead of one row per user with a loss at every position. Rows = training interactions: more compute per epoch.",
    )
    attribute_pooling: Literal["mean", "sum"] = Field(
        "sum",
        description="How an item's attribute embeddings combine into its vector when item_attributes is on. sum beat mean on Amazon Toys "
        "and on the sample data (README).",
    )
    item_bias: bool = Field(
        True,
        description="A learned score offset per item, started at log(1 + its training count): popularity gets a parameter of its own instead of "
        "bending the item vectors. Exported as one more vector dimension, so serving is unchanged.",
    )
    max_attributes: int = Field(
        8,
        ge=1,
        le=64,
        description="Attribute slots per item when item_attributes is on; an item's extra attributes are dropped.",
    )
    item_index: ItemIndexConfig = Field(
        default_factory=ItemIndexConfig, description="The index main retrieval searches, built at export."
    )

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> RecommenderConfig:
        if self.hidden % self.num_heads:
            raise ValueError(
                f"hidden ({self.hidden}) must be divisible by num_heads ({self.num_heads}); change train.recommender.num_heads"
            )
        return self


class RankerConfig(BaseModel):
    """Second-stage ranker over the retriever's candidates (a small listwise MLP)."""

    model_config = ConfigDict(extra="forbid")

    candidates: int = Field(
        100, ge=2, description="Retrieval candidates per user that the ranker reorders (the Serve retriever's top-K)."
    )
    hidden: int = Field(32, ge=4, description="Hidden units of the ranker MLP.")
    lr: float = Field(3e-3, gt=0, description="AdamW learning rate.")
    epochs: int = Field(10, ge=1, description="Epochs over the validation users' candidate lists.")
    batch_size: int = Field(64, ge=1, description="Users (candidate lists) per step per worker.")
    recent_items: int = Field(
        5,
        ge=1,
        description="Most recent history items behind the co-occurrence, text-similarity and 'because you...' evidence.",
    )
    cooccurrence_window: int = Field(
        3, ge=1, description="Steps ahead within which a later item counts as following an earlier one."
    )


class EvaluationConfig(BaseModel):
    """`shopgraph train evaluate`: the recommender's protocols and the size of the other parts of the harness."""

    model_config = ConfigDict(extra="forbid")

    ks: list[int] = Field([5, 10, 20], min_length=1, description="Cut-offs for HR@k and NDCG@k.")
    num_negatives: int = Field(
        100, ge=1, description="Negatives per user in the sampled protocol (SASRec: 100; S3-Rec's tables: 99)."
    )
    max_users: int | None = Field(None, ge=1, description="Evaluate a seeded sample of users (None = all).")
    # The rest sizes the other parts of `shopgraph train evaluate` (cluster/evaluate.py).
    generator_max_examples: int = Field(
        16,
        ge=1,
        description="Held-out (split == 'eval') examples per task that `shopgraph train evaluate` scores the "
        "fine-tuned generator on: small, so the harness stays minutes on CPU; `shopgraph train eval-generator` "
        "is the full base-vs-fine-tuned run.",
    )
    serving_requests: int = Field(50, ge=1, description="Timed recommendation requests of the in-process probe.")
    serving_warmup: int = Field(5, ge=0, description="Untimed requests before the timed ones (first-call costs).")
    serving_k: int = Field(10, ge=1, le=100, description="Items per probe request (`k` of POST /v1/recommendations).")

    @field_validator("ks")
    @classmethod
    def _positive(cls, ks: list[int]) -> list[int]:
        if any(k <= 0 for k in ks):
            raise ValueError(f"every k must be >= 1, got {ks}; change train.evaluation.ks")
        return sorted(set(ks))


class LoraSection(BaseModel):
    """Optional LoRA adapters (peft); merged into the base weights on export, so serving sees one plain model."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        False,
        description="Train LoRA adapters instead of all weights (a 135M model trains fully on CPU; LoRA pays off for 1B+ models on GPU).",
    )
    r: int = Field(16, ge=1, description="Adapter rank.")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
        description="Module names that get adapters (Llama-family names; SmolLM2 and Qwen use them too).",
    )


class GeneratorEvalSection(BaseModel):
    """`shopgraph train eval-generator`: held-out products, base vs fine-tuned."""

    model_config = ConfigDict(extra="forbid")

    max_examples: int = Field(200, ge=1, description="Held-out (split == 'eval') examples per task, in corpus order.")
    max_new_tokens: int = Field(
        384,
        ge=8,
        description="Generation budget per PDP output; the longest answer the PDP schema allows is ~380 tokens.",
    )
    reason_max_new_tokens: int = Field(
        64,
        ge=8,
        description="Generation budget per personalized reason (one sentence; serving cuts at serve.generation.reason_max_tokens = 48), so a rambling model is scored on what serving would show, not timed on 384 tokens.",
    )
    compare_base: bool = Field(True, description="Also evaluate the base model (models.generator) in the same report.")
    guided_json: bool = Field(
        True, description="Constrain PDP outputs to the PDP JSON schema with vLLM structured outputs."
    )


class ContentSection(BaseModel):
    """`shopgraph data generate-content`: PDP copy for the catalog with Ray Data + vLLM."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(32, ge=1, description="Products per vLLM call (one `map_batches` batch).")
    concurrency: int = Field(1, ge=1, description="vLLM engine actors (one model copy each).")
    num_cpus: float = Field(
        1.0,
        gt=0,
        description="CPUs reserved per engine actor; fractional on a 2-CPU node so it schedules beside the driver.",
    )
    num_gpus: float = Field(0, ge=0, description="GPUs per engine actor (1 on GPU nodes).")
    max_new_tokens: int = Field(
        384, ge=8, description="Generation budget per product; the longest answer the PDP schema allows is ~380 tokens."
    )
    max_products: int | None = Field(
        None, ge=1, description="Only the first N products in id order (None = whole catalog)."
    )
    ground: bool = Field(
        True, description="Drop sentences with claims the facts do not support (ml/grounding.py) before writing."
    )
    reasons_max_products: int = Field(
        200,
        ge=0,
        description="Precompute generated recommendation reasons for this many of the most popular products (train/batch_reasons.py); 0 = none.",
    )
    reasons_anchors: int = Field(
        2,
        ge=0,
        description="Per product, reasons for the N items most often viewed just before it ('often bought next').",
    )
    reason_max_new_tokens: int = Field(48, ge=8, description="Generation budget per precomputed reason.")


class GeneratorConfig(BaseModel):
    """SFT of the generator LM (train/generator.py) with DeepSpeed; base model = models.generator.

    Defaults are sized for a 2-core CPU smoke run of SmolLM2-135M; the GPU profile raises them.
    """

    model_config = ConfigDict(extra="forbid")

    tasks: list[Literal["pdp", "reasons"]] = Field(
        ["pdp", "reasons"],
        min_length=1,
        description="Corpora (data/corpora/<task>.jsonl) trained together; the task is stated in each prompt.",
    )
    max_seq_len: int = Field(
        512,
        ge=32,
        description="Longest prompt + answer in tokens; longer examples are dropped (checked against the base model's context before training).",
    )
    micro_batch_size: int = Field(2, ge=1, description="Examples per forward pass per worker.")
    grad_accum_steps: int = Field(4, ge=1, description="Micro-batches accumulated per optimizer step.")
    epochs: int = Field(1, ge=1, description="Passes over the training examples.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (None = run all epochs); for smoke runs."
    )
    lr: float = Field(5e-5, gt=0, description="Peak AdamW learning rate (full fine-tune; use ~2e-4 with LoRA).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(
        0.05, ge=0, lt=1, description="Share of optimizer steps with linear warm-up before the cosine decay."
    )
    grad_clip: float = Field(1.0, gt=0, description="Gradient-norm clipping.")
    gradient_checkpointing: bool = Field(
        True, description="Recompute activations in backward: less memory, ~30% more compute."
    )
    bucket_window: int = Field(
        64,
        ge=1,
        description="Length bucketing: examples are shuffled, then sorted by length within windows of this many micro-batches, so a batch pads little.",
    )
    zero_stage: int = Field(
        1,
        description="DeepSpeed ZeRO stage: 0 (plain data parallel), 1 (optimizer states sharded), 2 (+ gradients), 3 (+ parameters).",
    )
    offload_optimizer: bool = Field(
        False, description="ZeRO-Offload the optimizer states to CPU RAM (stage >= 1; JIT-builds DeepSpeed's CPU Adam)."
    )
    offload_params: bool = Field(False, description="Offload parameters to CPU RAM (ZeRO stage 3 only).")
    bf16: bool = Field(
        True,
        description="bf16 weights/compute on GPU. Ignored on CPU, which trains in fp32 (this CPU has no AVX-512 bf16).",
    )
    cpu_shm_comm: bool = Field(
        False,
        description="On CPU, build DeepSpeed's shared-memory allreduce op (a one-time C++ JIT compile of minutes); False = plain gloo allreduce.",
    )
    eval_max_examples: int = Field(
        64, ge=0, description="Held-out examples for the eval loss after each epoch (0 = none)."
    )
    num_to_keep: int = Field(2, ge=1, description="Checkpoints Ray Train keeps (lowest eval loss, else latest).")
    max_failures: int = Field(
        2, ge=0, description="Worker failures Ray Train recovers from by resuming from the last checkpoint."
    )
    lora: LoraSection = Field(default_factory=LoraSection, description="Optional LoRA adapters, merged on export.")
    eval: GeneratorEvalSection = Field(
        default_factory=GeneratorEvalSection, description="Base vs fine-tuned evaluation on held-out products."
    )
    content: ContentSection = Field(
        default_factory=ContentSection, description="Batch PDP content generation over the catalog."
    )

    @field_validator("zero_stage")
    @classmethod
    def _zero_stage(cls, value: int) -> int:
        if value not in (0, 1, 2, 3):
            raise ValueError(
                f"DeepSpeed ZeRO stage must be 0, 1, 2 or 3, got {value}; change train.generator.zero_stage"
            )
        return value

    @model_validator(mode="after")
    def _offload_needs_zero(self) -> GeneratorConfig:
        if self.offload_params and self.zero_stage != 3:
            raise ValueError(
                f"offload_params needs ZeRO stage 3, got zero_stage={self.zero_stage}; set train.generator.zero_stage=3 or train.generator.offload_params=false"
            )
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError(
                "offload_optimizer needs ZeRO stage 1, 2 or 3; set train.generator.zero_stage or train.generator.offload_optimizer=false"
            )
        return self


class SentimentConfig(BaseModel):
    """Review sentiment model (`shopgraph train sentiment`, `ml.sentiment`)."""

    model_config = ConfigDict(extra="forbid")

    labelled: list[str] = Field(
        default_factory=list,
        description="Files of labelled reviews to train on: CSV with label,review (and cat) columns, or text lines 'sentence<TAB>label' (1 positive, 0 negative).",
    )
    shop_reviews: bool = Field(
        True,
        description="Also train on the shop's own reviews: rating events with text in the events shards, labelled by their rating (see positive_min, negative_max).",
    )
    positive_min: float = Field(4.0, description="A shop review rated at least this is positive.")
    negative_max: float = Field(
        2.0, description="A shop review rated at most this is negative; ratings between are left out (counted)."
    )
    c: float = Field(4.0, gt=0, description="Inverse L2 strength of the logistic regressions (scikit-learn's C).")
    holdout: float = Field(
        0.2,
        ge=0.05,
        le=0.5,
        description="Seeded, stratified share of the reviews held out to measure the trained model.",
    )
    summary_min_reviews: int = Field(
        5,
        ge=1,
        description="Reviews with text a product needs before its page gets a per-aspect summary (fewer: it says so).",
    )

    @model_validator(mode="after")
    def _bands(self) -> SentimentConfig:
        if self.negative_max >= self.positive_min:
            raise ValueError("negative_max must be below positive_min; set train.sentiment.negative_max lower")
        return self


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="Seed for model init, sampling and data order.")
    scaling: ScalingSection = Field(
        default_factory=ScalingSection, description="Ray Train worker shape shared by all recipes."
    )
    recommender: RecommenderConfig = Field(
        default_factory=RecommenderConfig, description="Sequential recommender (SASRec) recipe."
    )
    ranker: RankerConfig = Field(default_factory=RankerConfig, description="Second-stage ranker recipe.")
    evaluation: EvaluationConfig = Field(
        default_factory=EvaluationConfig,
        description="Recommender evaluation protocols and the evaluation harness (`shopgraph train evaluate`).",
    )
    generator: GeneratorConfig = Field(
        default_factory=GeneratorConfig,
        description="Generator LM fine-tuning (DeepSpeed), evaluation and batch content generation.",
    )
    sentiment: SentimentConfig = Field(
        default_factory=SentimentConfig, description="Review sentiment model (per review, Chinese and English)."
    )
