"""Text Transformers: decoder-only, encoder-only and encoder-decoder from one block.

Shapes: tokens, segment ids and positions int32 [B, T]; activations [B, T, D]
in `dtype`; logits float32 [B, T, vocab_size]. Parameters are float32 with
logical axis names ('vocab', 'embed', 'heads', 'kv', 'mlp', 'pos') for
fsdp/tensor sharding.

Which token may attend to which is decided in one place, `attention_mask`,
from segment ids and per-token "autoregressive" flags:

- all flags True: causal (decoder-only language model);
- all flags False: bidirectional (encoder, BERT);
- False on a prefix and True after it: prefix-LM, full attention within the
  prefix, causal after it;

and never across segments (packed documents), padding (segment 0) apart.
The models hand their blocks `block_mask`: that dense mask, or for the fused
TPU kernel (attention_impl 'flash') its factors, from which the kernel builds
each block of it.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl.data.multimodal import fill_placeholders
from jaxssl.errors import ConfigError
from jaxssl.models import xla_cpu
from jaxssl.models.layers import (LAYER_NORM_EPSILON, Attention, Initializer, MlpBlock,
                                  SegmentMask, activation, dense, layer_norm, xavier_uniform)
from jaxssl.objectives import language

POSEMB_KINDS = ("learned", "rotary", "relative")
INIT_KINDS = ("xavier", "gpt2")
_embedding_init = nn.initializers.normal(stddev=0.02)


def block_initializers(kind: str, depth: int) -> tuple[Initializer, Initializer]:
    """(kernel init of the q/k/v and first MLP projections, of the two residual outputs).

    'xavier': Xavier-uniform for both (as the ViT). 'gpt2': GPT-2's, which
    nanoGPT uses: normal(0.02), and normal(0.02 / sqrt(2 depth)) for the
    attention and MLP outputs that add into the residual stream.
    """
    if kind == "xavier":
        return xavier_uniform, xavier_uniform
    if kind == "gpt2":
        return nn.initializers.normal(0.02), nn.initializers.normal(0.02 / (2 * depth) ** 0.5)
    raise ConfigError(f"unknown init {kind!r}; valid: {INIT_KINDS}")


def attention_mask(q_segment_ids: jax.Array, kv_segment_ids: jax.Array,
                   autoregressive: Optional[jax.Array] = None) -> jax.Array:
    """bool [B, 1, Tq, Tk]: True where query i may attend to key j.

    Args:
      q_segment_ids: int [B, Tq]; kv_segment_ids: int [B, Tk]. Tokens attend
        only within their own segment (padding, segment 0, only to padding).
      autoregressive: bool [B, T] for self-attention (Tq = Tk = T), or None
        (bidirectional, also used for cross-attention). Query i may attend to
        key j when j <= i, or when neither i nor j is autoregressive.
    """
    allowed = q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]
    if autoregressive is not None:
        steps = jnp.arange(q_segment_ids.shape[1])
        causal = steps[None, :, None] >= steps[None, None, :]
        bidirectional = ~autoregressive[:, :, None] & ~autoregressive[:, None, :]
        allowed &= causal | bidirectional
    return allowed[:, None]


def block_mask(attention_impl: Optional[str], q_segment_ids: jax.Array,
               kv_segment_ids: jax.Array, autoregressive: Optional[jax.Array] = None):
    """The mask the blocks' attention takes: `attention_mask`'s bool [B, 1, Tq, Tk], or
    for the fused kernel (attention_impl 'flash') its factors, a `layers.SegmentMask`."""
    if attention_impl == "flash":
        return SegmentMask(q_segment_ids, kv_segment_ids, autoregressive)
    return attention_mask(q_segment_ids, kv_segment_ids, autoregressive)


def relative_position_bucket(relative: jax.Array, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> jax.Array:
    """T5's bucket (int32, < num_buckets) of each key - query distance `relative`: exact
    below num_buckets / 4 (per direction when `bidirectional`, else only looking back),
    then logarithmic up to max_distance, beyond which all share the last bucket."""
    buckets = jnp.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets = (relative > 0).astype(relative.dtype) * num_buckets
        relative = jnp.abs(relative)
    else:
        relative = -jnp.minimum(relative, 0)
    max_exact = num_buckets // 2
    scaled = (jnp.log(jnp.maximum(relative, 1).astype(jnp.float32) / max_exact)
              / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    large = jnp.minimum(max_exact + scaled.astype(relative.dtype), num_buckets - 1)
    return buckets + jnp.where(relative < max_exact, relative, large)


def relative_position_bias(table: jax.Array, positions: jax.Array, bidirectional: bool,
                           max_distance: int) -> jax.Array:
    """T5's self-attention logit bias float32 [B, heads, T, T]: the row of `table`
    [buckets, heads] for the `relative_position_bucket` of each key - query distance of
    `positions` int [B, T].

    The rows are picked by a one-hot product, as flaxformer does, not a gather: the
    gather's gradient is a scatter-add of [B, T, T, heads] into the table, for which the
    TPU compiler held 6.5 GiB more temporaries per chip than for the product in the T5-XL
    recipe on v5p-128 (ahead-of-time compiles, 2026-12-07); the product's gradient is a
    product. At a TPU's default precision the product rounds the
    table's entries to bfloat16, as every float32 product there."""
    buckets = relative_position_bucket(positions[:, None, :] - positions[:, :, None],
                                       bidirectional, table.shape[0], max_distance)
    one_hot = jax.nn.one_hot(buckets, table.shape[0], dtype=table.dtype)
    return jnp.einsum("bqkn,nh->bhqk", one_hot, table)


class TransformerBlock(nn.Module):
    """Pre-norm block: self-attention, optional cross-attention, MLP; dropout on each branch.

    x [B, T, D] -> [B, T, D] in `dtype`. `encoded` [B, S, D] and `cross_mask`
    [B, 1, T, S] are given exactly when the block has cross-attention.
    `dropout` drops branch outputs, `attention_dropout` attention weights.
    Kernel initializers as in `block_initializers`. For imported weights:
    `layer_norm_epsilon` (GPT-2 1e-5, BERT 1e-12), `activation` (GPT-2's
    'gelu_tanh', see layers.activation) and `post_norm` (BERT: each norm after its residual sum,
    x = LN(x + branch(x)), instead of before the branch). For T5: `rms_norm`
    (RMS norms), `gated_mlp` (`MlpBlock.gated`) and `relative_table` [buckets, H], whose
    `relative_position_bias` of the positions (`bidirectional_positions`,
    `relative_max_distance`) is added to the self-attention logits.
    Without `use_bias` the attention and MLP projections have no biases (T5.1.1,
    PaLM, Llama).
    """
    num_heads: int
    mlp_dim: int
    dropout: float = 0.0
    rotary: bool = False
    dtype: Any = jnp.float32
    attention_impl: Optional[str] = None
    attention_dropout: float = 0.0
    kernel_init: Initializer = xavier_uniform
    out_kernel_init: Initializer = xavier_uniform
    layer_norm_epsilon: float = LAYER_NORM_EPSILON
    activation: str = "gelu"
    post_norm: bool = False
    rms_norm: bool = False
    gated_mlp: bool = False
    use_bias: bool = True
    relative_max_distance: int = 128
    bidirectional_positions: bool = True

    @nn.compact
    def __call__(self, x, mask, positions, deterministic: bool, encoded=None, cross_mask=None,
                 encoded_positions=None, relative_table=None):
        norm = lambda name, y: layer_norm(self.dtype, name, self.layer_norm_epsilon,
                                          self.rms_norm)(y)
        before = (lambda name, y: y) if self.post_norm else norm
        after = norm if self.post_norm else (lambda name, y: y)

        def residual(name, branch):
            return x + nn.Dropout(self.dropout, name=f"{name}_dropout")(branch, deterministic)

        attention = lambda name, rotary: Attention(
            self.num_heads, self.dtype, rotary, self.attention_impl, self.attention_dropout,
            self.kernel_init, self.out_kernel_init, self.use_bias, name=name)
        # Each block computes the bias again (under remat, also in the backward pass): a
        # bias kept for the whole stack would hold [B, H, T, T] for its whole pass.
        bias = None if relative_table is None else relative_position_bias(
            relative_table, positions, self.bidirectional_positions, self.relative_max_distance)
        y = before("self_attention_norm", x)
        x = after("self_attention_norm", residual("self_attention", attention(
            "self_attention", self.rotary)(y, None, mask, positions, None, deterministic, bias)))
        if encoded is not None:
            y = before("cross_attention_norm", x)
            # Relative (rotary) positions mean nothing across two sequences.
            x = after("cross_attention_norm", residual("cross_attention", attention(
                "cross_attention", False)(y, encoded, cross_mask, positions, encoded_positions,
                                          deterministic)))
        y = before("mlp_norm", x)
        return after("mlp_norm", residual("mlp", MlpBlock(
            self.mlp_dim, self.dtype, self.kernel_init, self.out_kernel_init,
            self.activation, self.gated_mlp, self.use_bias, name="mlp")(y)))


class _ScannedBlock(TransformerBlock):
    """TransformerBlock with the (carry, output) signature `nn.scan` expects."""

    def __call__(self, x, mask, positions, deterministic: bool, encoded=None, cross_mask=None,
                 encoded_positions=None, relative_table=None):
        return super().__call__(x, mask, positions, deterministic, encoded, cross_mask,
                                encoded_positions, relative_table), None


# remat setting -> what the backward pass keeps of each block's forward pass
# (None: nothing, the whole block is recomputed). 'dots' keeps the outputs of the
# matmuls with the weights and recomputes the rest (attention scores included).
REMAT_POLICIES = {"full": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


class TransformerStack(nn.Module):
    """`depth` TransformerBlocks and a final LayerNorm: [B, T, D] -> [B, T, D].

    `initialization`: 'xavier' or 'gpt2' (`block_initializers`, scaled by this stack's
    depth). `layer_norm_epsilon`, `activation`, `post_norm`: see
    TransformerBlock; `final_norm` False leaves out the final LayerNorm (BERT).
    T5: `rms_norm`, `gated_mlp`, `use_bias` (TransformerBlock) and, with `relative_buckets`
    > 0, a learned 'relative_attention_bias' [buckets, heads] of the
    `relative_position_bucket` of every key - query distance (looking back
    only unless `bidirectional_positions`), added to every block's
    self-attention logits.

    With `scan_layers` the blocks are one `nn.scan`ned module 'blocks' whose
    parameters are stacked on a leading axis named 'layers' (one compiled block
    whatever the depth); otherwise they are 'block0' ... 'block{depth-1}'.
    `remat` ('none', 'full' or 'dots', see `REMAT_POLICIES`) recomputes each
    block's activations in the backward pass. Both change memory and compile
    time, not the function computed.
    """
    depth: int
    num_heads: int
    mlp_dim: int
    dropout: float = 0.0
    rotary: bool = False
    dtype: Any = jnp.float32
    attention_impl: Optional[str] = None
    attention_dropout: float = 0.0
    initialization: str = "xavier"  # (a field named `init` would hide Module.init)
    layer_norm_epsilon: float = LAYER_NORM_EPSILON
    activation: str = "gelu"
    post_norm: bool = False
    final_norm: bool = True
    rms_norm: bool = False
    gated_mlp: bool = False
    relative_buckets: int = 0
    relative_max_distance: int = 128
    bidirectional_positions: bool = True
    scan_layers: bool = False
    remat: str = "none"
    use_bias: bool = True

    @nn.compact
    def __call__(self, x, mask, positions, deterministic: bool, encoded=None, cross_mask=None,
                 encoded_positions=None):
        kernel_init, out_kernel_init = block_initializers(self.initialization, self.depth)
        table = None
        if self.relative_buckets:
            table = self.param(
                "relative_attention_bias",
                nn.with_logical_partitioning(_embedding_init, (None, "heads")),
                (self.relative_buckets, self.num_heads), jnp.float32)
        block_cls = _ScannedBlock if self.scan_layers else TransformerBlock
        if self.remat != "none":
            if self.remat not in REMAT_POLICIES:
                raise ConfigError(f"remat must be 'none' or one of {sorted(REMAT_POLICIES)}, "
                                  f"got {self.remat!r}")
            # static_argnums counts `self` as 0: `deterministic` is argument 4.
            block_cls = nn.remat(block_cls, prevent_cse=not self.scan_layers,
                                 policy=REMAT_POLICIES[self.remat], static_argnums=(4,))
        block_args = (self.num_heads, self.mlp_dim, self.dropout, self.rotary, self.dtype,
                      self.attention_impl, self.attention_dropout, kernel_init, out_kernel_init,
                      self.layer_norm_epsilon, self.activation, self.post_norm, self.rms_norm,
                      self.gated_mlp, self.use_bias, self.relative_max_distance,
                      self.bidirectional_positions)
        inputs = (mask, positions, deterministic, encoded, cross_mask, encoded_positions, table)
        if self.scan_layers:
            stack = nn.scan(block_cls, variable_axes={"params": 0},
                            split_rngs={"params": True, "dropout": True},
                            in_axes=(nn.broadcast,) * len(inputs), length=self.depth,
                            metadata_params={nn.PARTITION_NAME: "layers"})
            x, _ = stack(*block_args, name="blocks")(x, *inputs)
        else:
            for i in range(self.depth):
                x = block_cls(*block_args, name=f"block{i}")(x, *inputs)
        if not self.final_norm:
            return x
        return layer_norm(self.dtype, "final_norm", self.layer_norm_epsilon, self.rms_norm)(x)


class Embedder(nn.Module):
    """Token (+ learned position) embedding in, vocabulary logits out.

    `embed(tokens, positions)` -> [B, T, D] in `dtype`; `logits(x)` -> float32
    [B, T, vocab_size], through the transposed token embedding when `tied`,
    else through its own 'output_kernel' [D, V] and 'output_bias' [V].

    Options for imported BERT weights: `type_vocab_size` > 0 adds row 0 of a
    'type_embedding' [type_vocab_size, D] (every token of type 0);
    `embedding_norm` puts a LayerNorm 'embedding_norm' after the sum;
    `logits_transform` applies Dense(D) 'transform' -> exact GELU -> LayerNorm
    'transform_norm' before the logits; `tied_bias` adds an 'output_bias' [V]
    to tied logits. `layer_norm_epsilon` is that of both norms.
    """
    vocab_size: int
    hidden: int
    max_length: int
    posemb: str = "learned"
    tied: bool = True
    dtype: Any = jnp.float32
    type_vocab_size: int = 0
    embedding_norm: bool = False
    logits_transform: bool = False
    tied_bias: bool = False
    layer_norm_epsilon: float = LAYER_NORM_EPSILON

    def setup(self):
        if self.posemb not in POSEMB_KINDS:
            raise ConfigError(f"unknown posemb {self.posemb!r}; valid: {POSEMB_KINDS}")
        self.token_embedding = self.param(
            "token_embedding", nn.with_logical_partitioning(_embedding_init, ("vocab", "embed")),
            (self.vocab_size, self.hidden), jnp.float32)
        if self.posemb == "learned":
            self.position_embedding = self.param(
                "position_embedding",
                nn.with_logical_partitioning(_embedding_init, ("pos", "embed")),
                (self.max_length, self.hidden), jnp.float32)
        if self.type_vocab_size:
            self.type_embedding = self.param(
                "type_embedding", nn.with_logical_partitioning(_embedding_init, (None, "embed")),
                (self.type_vocab_size, self.hidden), jnp.float32)
        if self.embedding_norm:
            self.embedding_norm_layer = layer_norm(self.dtype, "embedding_norm",
                                                   self.layer_norm_epsilon)
        if self.logits_transform:
            self.transform = dense(self.hidden, ("embed", "mlp"), self.dtype, "transform",
                                   kernel_init=_embedding_init)
            self.transform_norm = layer_norm(self.dtype, "transform_norm", self.layer_norm_epsilon)
        if not self.tied:
            self.output_kernel = self.param(
                "output_kernel", nn.with_logical_partitioning(_embedding_init, ("embed", "vocab")),
                (self.hidden, self.vocab_size), jnp.float32)
        if not self.tied or self.tied_bias:
            self.output_bias = self.param(
                "output_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
                (self.vocab_size,), jnp.float32)

    def embed(self, tokens, positions, placeholders=None):
        x = jnp.take(self.token_embedding, tokens, axis=0)
        if placeholders is not None:
            x = fill_placeholders(x, *placeholders)
        if self.posemb == "learned":
            x = x + jnp.take(self.position_embedding, positions, axis=0)
        if self.type_vocab_size:
            x = x + self.type_embedding[0]
        if self.embedding_norm:
            x = self.embedding_norm_layer(x)
        return x.astype(self.dtype)

    def logits(self, x):
        return self._projection()(self._transformed(x))

    def token_nll(self, x, targets, chunk_length: int = 0):
        """float32 [B, T]: -log softmax(logits(x))[targets] for targets int [B, T], the
        logits computed `chunk_length` positions at a time (`language.chunked_token_nll`)."""
        return language.chunked_token_nll(self._projection(), self._transformed(x), targets,
                                          chunk_length)

    def _transformed(self, x):
        if self.logits_transform:
            x = self.transform_norm(activation(self.transform(x), "gelu"))
        return x

    def _projection(self):
        """A pure function x [..., D] -> float32 logits [..., V] over this module's
        output weights, which it holds as arrays (so jax transforms may call it)."""
        kernel = (self.token_embedding.T if self.tied else self.output_kernel).astype(self.dtype)
        bias = self.output_bias if not self.tied or self.tied_bias else None

        def project(x):
            y = xla_cpu.dense_dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
            return (y if bias is None else xla_cpu.add_bias(y, bias)).astype(jnp.float32)
        return project


class _Sizes(nn.Module):
    """Fields shared by the two model classes (a base, never instantiated itself)."""
    vocab_size: int
    max_length: int
    hidden: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_dim: int = 512
    dropout: float = 0.0
    posemb: str = "learned"       # learned | rotary | relative (T5's bias; see below)
    tied_embeddings: bool = True
    dtype: Any = jnp.float32
    attention_impl: Optional[str] = None
    attention_dropout: float = 0.0
    initialization: str = "xavier"
    # Options of imported models (jaxssl.interop): see TransformerBlock and Embedder.
    layer_norm_epsilon: float = LAYER_NORM_EPSILON
    activation: str = "gelu"
    post_norm: bool = False
    type_vocab_size: int = 0
    embedding_norm: bool = False
    logits_transform: bool = False
    tied_bias: bool = False
    rms_norm: bool = False
    gated_mlp: bool = False
    relative_buckets: int = 32        # posemb 'relative': T5's buckets per stack
    relative_max_distance: int = 128
    scan_layers: bool = False     # see TransformerStack
    remat: str = "none"
    use_bias: bool = True         # False: no biases in the blocks (T5.1.1, PaLM, Llama)
    cross_entropy_chunk: int = 0  # with targets: positions per chunk of logits (0: all)

    def _embedder(self) -> Embedder:
        return Embedder(self.vocab_size, self.hidden, self.max_length, self.posemb,
                        self.tied_embeddings, self.dtype, self.type_vocab_size,
                        self.embedding_norm, self.logits_transform, self.tied_bias,
                        self.layer_norm_epsilon, name="embedder")

    def _stack(self, name: str, depth: int, bidirectional: bool = True) -> TransformerStack:
        relative = self.relative_buckets if self.posemb == "relative" else 0
        return TransformerStack(depth, self.num_heads, self.mlp_dim, self.dropout,
                                self.posemb == "rotary", self.dtype, self.attention_impl,
                                self.attention_dropout, self.initialization,
                                self.layer_norm_epsilon, self.activation, self.post_norm,
                                not self.post_norm, self.rms_norm, self.gated_mlp, relative,
                                self.relative_max_distance, bidirectional, self.scan_layers,
                                self.remat, self.use_bias, name=name)

    def _embed(self, embedder, tokens, positions, train: bool, placeholders=None):
        return nn.Dropout(self.dropout)(embedder.embed(tokens, positions, placeholders),
                                        deterministic=not train)

    def _output(self, embedder: Embedder, x, targets):
        """Logits float32 [B, T, vocab_size] of x [B, T, D], or with targets int [B, T]
        their token nll float32 [B, T], computed `cross_entropy_chunk` positions at a time."""
        if targets is None:
            return embedder.logits(x)
        return embedder.token_nll(x, targets, self.cross_entropy_chunk)


class LanguageModel(_Sizes):
    """Decoder-only (autoregressive flags True), encoder-only (False) or prefix-LM Transformer.

    __call__(tokens, segment_ids, positions, autoregressive bool [B, T], train,
             prefix=None, placeholders=None, targets=None) -> logits float32 [B, T,
             vocab_size], or with targets int [B, T] their nll float32 [B, T].

    `placeholders` (kinds, slots, tables) replaces the token embedding of each
    image / vector placeholder of a multimodal sequence by its encoder output
    (`jaxssl.data.multimodal.fill_placeholders`; tables [B, N, D] at the model
    width) before position embeddings are added.

    `prefix` [B, P, D] (e.g. image tokens) is put before the token embeddings
    as a fully visible, non-autoregressive part of segment 1 that carries its
    own position information; for rotary attention it takes positions
    0..P-1 and the tokens' positions are shifted by P. Logits are for the
    tokens only.
    """

    @nn.compact
    def __call__(self, tokens, segment_ids, positions, autoregressive, train: bool, prefix=None,
                 placeholders=None, targets=None):
        embedder = self._embedder()
        x = self._embed(embedder, tokens, positions, train, placeholders)
        if prefix is not None:
            batch, length = prefix.shape[:2]
            x = jnp.concatenate([prefix.astype(x.dtype), x], axis=1)
            segment_ids = jnp.concatenate([jnp.ones((batch, length), segment_ids.dtype),
                                           segment_ids], axis=1)
            positions = jnp.concatenate([jnp.broadcast_to(jnp.arange(length), (batch, length)),
                                         positions + length], axis=1)
            autoregressive = jnp.concatenate([jnp.zeros((batch, length), bool), autoregressive],
                                             axis=1)
        mask = block_mask(self.attention_impl, segment_ids, segment_ids, autoregressive)
        x = self._stack("stack", self.depth)(x, mask, positions, not train)
        return self._output(embedder, x[:, x.shape[1] - tokens.shape[1]:], targets)


class EncoderDecoder(_Sizes):
    """Bidirectional encoder, causal decoder with cross-attention, one shared embedding.

    `depth` encoder blocks, `decoder_depth` decoder blocks. Decoder segment k
    attends only to encoder segment k.
    __call__(encoder_tokens, encoder_segment_ids, encoder_positions,
             decoder_tokens, decoder_segment_ids, decoder_positions, train,
             encoder_placeholders=None, targets=None)
    -> decoder logits float32 [B, T_dec, vocab_size], or with targets int [B, T_dec]
    their nll float32 [B, T_dec].

    `encoder_placeholders` (kinds, slots, tables) fills the encoder input's
    image / vector placeholders, as `placeholders` does in LanguageModel.
    """
    decoder_depth: int = 4

    @nn.compact
    def __call__(self, encoder_tokens, encoder_segment_ids, encoder_positions,
                 decoder_tokens, decoder_segment_ids, decoder_positions, train: bool,
                 encoder_placeholders=None, targets=None):
        embedder = self._embedder()
        bidirectional = jnp.zeros(encoder_tokens.shape, bool)
        encoded = self._stack("encoder", self.depth)(
            self._embed(embedder, encoder_tokens, encoder_positions, train, encoder_placeholders),
            block_mask(self.attention_impl, encoder_segment_ids, encoder_segment_ids,
                       bidirectional),
            encoder_positions, not train)
        causal = jnp.ones(decoder_tokens.shape, bool)
        y = self._stack("decoder", self.decoder_depth, bidirectional=False)(
            self._embed(embedder, decoder_tokens, decoder_positions, train),
            block_mask(self.attention_impl, decoder_segment_ids, decoder_segment_ids, causal),
            decoder_positions, not train, encoded,
            block_mask(self.attention_impl, decoder_segment_ids, encoder_segment_ids),
            encoder_positions)
        return self._output(embedder, y, targets)
