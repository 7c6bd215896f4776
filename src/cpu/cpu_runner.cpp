// CpuRunner: batch validation, the decoder-layer loop (gpt-oss-spec.md Appendix B, in order), the paged KV
// writes/reads, the MoE grouped by expert, the LM head on the rows that need logits, and sampling.
#include "cpu/cpu_runner.h"
#include "engine/step_batch_check.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "common/log.h"
#include "common/mxfp4.h"
#include "common/thread_pool.h"
#include "cpu/cpu_ops.h"
#include "cpu/sampler.h"

namespace mxs::cpu {

// The sequences of a StepBatch that passed validation, with their new tokens packed as rows
// [0, n_rows): the matrix every op of the forward pass works on.
struct CpuRunner::Plan {
  struct Seq {
    int batch_index;  // into StepBatch::seqs
    int row_begin;    // first row of this sequence in the packed rows
    int n_rows;
    int context_len;
    std::span<const int32_t> block_table;
    std::span<const int32_t> sliding_table;  // two KV groups only
  };
  std::vector<Seq> seqs;
  std::vector<int32_t> tokens;     // [n_rows]
  std::vector<int32_t> positions;  // [n_rows]
  std::vector<int> row_seq;        // [n_rows] -> index into seqs
  std::vector<float> cos, sin;     // [n_rows, head_dim / 2]: RoPE of each row's position
  int n_rows() const { return int(tokens.size()); }
};

namespace {

void expect_tensor(const TensorView& t, DType dtype, int64_t n_elems, const char* what) {
  const std::string name = t.name.empty() ? std::string(what) : t.name;
  MXS_CHECK(t.data != nullptr, strfmt("CpuRunner: tensor %s has no data", name.c_str()));
  MXS_CHECK(t.dtype == dtype, strfmt("CpuRunner: tensor %s has dtype %s, expected %s", name.c_str(),
                                     dtype_name(t.dtype), dtype_name(dtype)));
  MXS_CHECK(t.nbytes == size_t(n_elems) * dtype_size(dtype),
            strfmt("CpuRunner: tensor %s has %zu bytes, expected %lld elements of %s", name.c_str(), t.nbytes,
                   (long long)n_elems, dtype_name(dtype)));
}

void check_weights(const ModelWeights& w) {
  const ModelConfig& c = w.config;
  MXS_CHECK(w.format == CheckpointFormat::kHfMxfp4,
            strfmt("CpuRunner: checkpoint format %s is not supported (MXFP4 HF layout only)", format_name(w.format)));
  MXS_CHECK(c.head_dim == 64, strfmt("CpuRunner: head_dim = %d, supported: 64", c.head_dim));
  MXS_CHECK(c.hidden_size % kMxfp4BlockSize == 0 && c.intermediate_size % kMxfp4BlockSize == 0,
            "CpuRunner: hidden_size and intermediate_size must be multiples of 32 (MXFP4 blocks)");
  MXS_CHECK(int(w.layers.size()) == c.num_layers && int(c.layer_sliding.size()) == c.num_layers,
            strfmt("CpuRunner: %zu layers of weights for num_layers = %d", w.layers.size(), c.num_layers));
  const int64_t H = c.hidden_size, I = c.intermediate_size, E = c.num_experts, V = c.vocab_size;
  const DType B = DType::kBF16, U8 = DType::kU8;
  expect_tensor(w.embed, B, V * H, "embed_tokens");
  expect_tensor(w.final_norm, B, H, "norm");
  expect_tensor(w.lm_head, B, V * H, "lm_head");
  for (const LayerWeights& l : w.layers) {
    expect_tensor(l.input_norm, B, H, "input_layernorm");
    expect_tensor(l.q_w, B, c.q_dim() * H, "q_proj.weight");
    expect_tensor(l.q_b, B, c.q_dim(), "q_proj.bias");
    expect_tensor(l.k_w, B, c.kv_dim() * H, "k_proj.weight");
    expect_tensor(l.k_b, B, c.kv_dim(), "k_proj.bias");
    expect_tensor(l.v_w, B, c.kv_dim() * H, "v_proj.weight");
    expect_tensor(l.v_b, B, c.kv_dim(), "v_proj.bias");
    expect_tensor(l.o_w, B, H * c.q_dim(), "o_proj.weight");
    expect_tensor(l.o_b, B, H, "o_proj.bias");
    expect_tensor(l.sinks, B, c.num_heads, "sinks");
    expect_tensor(l.post_norm, B, H, "post_attention_layernorm");
    expect_tensor(l.router_w, B, E * H, "router.weight");
    expect_tensor(l.router_b, B, E, "router.bias");
    expect_tensor(l.experts.gate_up_blocks, U8, E * 2 * I * H / 2, "gate_up_proj_blocks");
    expect_tensor(l.experts.gate_up_scales, U8, E * 2 * I * H / 32, "gate_up_proj_scales");
    expect_tensor(l.experts.gate_up_bias, B, E * 2 * I, "gate_up_proj_bias");
    expect_tensor(l.experts.down_blocks, U8, E * H * I / 2, "down_proj_blocks");
    expect_tensor(l.experts.down_scales, U8, E * H * I / 32, "down_proj_scales");
    expect_tensor(l.experts.down_bias, B, E * H, "down_proj_bias");
  }
}

const bf16* as_bf16(const TensorView& t) { return reinterpret_cast<const bf16*>(t.data); }

int count_sliding_layers(const ModelConfig& c) {
  return int(std::count(c.layer_sliding.begin(), c.layer_sliding.end(), true));
}

// Layers in the pool that num_blocks sizes: all of them with one KV group, the full-attention ones with two.
int full_pool_layers(const ModelConfig& c, const CpuRunnerOptions& o) {
  return o.num_sliding_blocks > 0 ? c.num_layers - count_sliding_layers(c) : c.num_layers;
}

int resolve_blocks(const ModelConfig& c, const CpuRunnerOptions& o) {
  MXS_CHECK(o.num_sliding_blocks >= 0,
            strfmt("CpuRunner: num_sliding_blocks = %d, must be >= 0", o.num_sliding_blocks));
  MXS_CHECK(o.num_sliding_blocks == 0 || (count_sliding_layers(c) > 0 && c.sliding_window > 0),
            strfmt("CpuRunner: num_sliding_blocks = %d but the model has no sliding-window layer",
                   o.num_sliding_blocks));
  if (o.num_blocks > 0) return o.num_blocks;
  const size_t sliding_bytes =
      o.num_sliding_blocks > 0
          ? size_t(o.num_sliding_blocks) *
                PagedKvCache::bytes_per_block(count_sliding_layers(c), c.num_kv_heads, c.head_dim, o.block_size)
          : 0;
  const size_t per = PagedKvCache::bytes_per_block(full_pool_layers(c, o), c.num_kv_heads, c.head_dim, o.block_size);
  const size_t budget = o.kv_budget_bytes > sliding_bytes ? o.kv_budget_bytes - sliding_bytes : 0;
  const int n = per == 0 ? 0 : int(std::min<size_t>(budget / per, size_t(1) << 30));
  MXS_CHECK(n > 0, strfmt("CpuRunner: KV budget of %zu bytes holds no block (one block = %zu bytes, sliding pool "
                          "%zu bytes); set num_blocks or a larger budget",
                          o.kv_budget_bytes, per, sliding_bytes));
  return n;
}

}  // namespace

int kv_blocks_for_budget(const ModelConfig& c, int block_size, size_t budget_bytes) {
  const size_t per = PagedKvCache::bytes_per_block(c.num_layers, c.num_kv_heads, c.head_dim, block_size);
  return int(std::min<size_t>(budget_bytes / per, size_t(1) << 30));
}

CpuRunner::CpuRunner(ModelWeights weights, const CpuRunnerOptions& options)
    : w_((check_weights(weights), std::move(weights))),
      opt_(options),
      kv_(full_pool_layers(w_.config, options), w_.config.num_kv_heads, w_.config.head_dim, options.block_size,
          resolve_blocks(w_.config, options)),
      rope_(w_.config) {
  const ModelConfig& c = w_.config;
  int n_full = 0, n_sliding = 0;
  for (int l = 0; l < c.num_layers; ++l)
    group_layer_.push_back(options.num_sliding_blocks > 0 && c.is_sliding(l) ? n_sliding++ : n_full++);
  if (options.num_sliding_blocks > 0)
    sliding_kv_ = std::make_unique<PagedKvCache>(n_sliding, c.num_kv_heads, c.head_dim, options.block_size,
                                                 options.num_sliding_blocks);
}

void CpuRunner::step(const StepBatch& batch, StepOutput* out) { run(batch, out, nullptr); }

void CpuRunner::step_all_logits(const StepBatch& batch, StepOutput* out, std::vector<float>* all_logits) {
  run(batch, out, all_logits);
}

CpuRunner::Plan CpuRunner::plan_batch(const StepBatch& batch, std::vector<std::string>* errors) const {
  const ModelConfig& c = w_.config;
  const int n_batch = int(batch.tokens.size());
  MXS_CHECK(batch.positions.size() == batch.tokens.size(),
            strfmt("StepBatch: %zu positions for %d tokens", batch.positions.size(), n_batch));
  // Validation. Malformed offsets are caller bugs (throw); anything else fails only its sequence.
  Plan plan;
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const SequenceStep& q = batch.seqs[s];
    MXS_CHECK(q.num_tokens >= 1 && q.token_offset >= 0 && q.token_offset + q.num_tokens <= n_batch,
              strfmt("StepBatch: sequence %llu has tokens [%d, %d) outside the batch of %d tokens",
                     (unsigned long long)q.seq_id, q.token_offset, q.token_offset + q.num_tokens, n_batch));
    std::string& err = (*errors)[s];
    err = check_sequence_step(batch, q, c.vocab_size, c.max_position_embeddings, kv_.block_size(),
                              kv_.num_blocks());
    if (err.empty() && sliding_kv_)
      err = check_sliding_table(q, kv_.block_size(), sliding_kv_->num_blocks(), c.sliding_window);
    if (!err.empty()) continue;
    plan.seqs.push_back({int(s), plan.n_rows(), q.num_tokens, q.context_len, q.block_table,
                         sliding_kv_ ? q.sliding_block_table : std::span<const int32_t>()});
    for (int i = 0; i < q.num_tokens; ++i) {
      plan.tokens.push_back(batch.tokens[size_t(q.token_offset + i)]);
      plan.positions.push_back(batch.positions[size_t(q.token_offset + i)]);
      plan.row_seq.push_back(int(plan.seqs.size()) - 1);
    }
  }
  const int half = rope_.half_dim();
  plan.cos.resize(size_t(plan.n_rows()) * size_t(half));
  plan.sin.resize(size_t(plan.n_rows()) * size_t(half));
  for (int r = 0; r < plan.n_rows(); ++r)
    rope_.cos_sin(plan.positions[size_t(r)], &plan.cos[size_t(r * half)], &plan.sin[size_t(r * half)]);
  return plan;
}

void CpuRunner::run(const StepBatch& batch, StepOutput* out, std::vector<float>* all_logits) {
  const ModelConfig& c = w_.config;
  const int n_batch = int(batch.tokens.size());
  std::vector<std::string> errors(batch.seqs.size());
  const Plan plan = plan_batch(batch, &errors);
  for (size_t s = 0; all_logits && s < errors.size(); ++s)
    MXS_CHECK(errors[s].empty(),
              strfmt("step_all_logits: sequence %llu: %s", (unsigned long long)batch.seqs[s].seq_id,
                     errors[s].c_str()));
  const int n = plan.n_rows(), H = c.hidden_size;

  // Forward pass over the packed rows.
  std::vector<bf16> x(size_t(n) * size_t(H));
  embed_rows(as_bf16(w_.embed), H, plan.tokens.data(), n, x.data());
  forward_layers(plan, x);

  // Final norm + LM head, only on the rows whose logits are used.
  std::vector<int> logit_rows;            // packed row
  std::vector<int> seq_logit_index(plan.seqs.size(), -1);  // plan seq -> index into logit_rows (its last row)
  for (size_t p = 0; p < plan.seqs.size(); ++p) {
    const Plan::Seq& ps = plan.seqs[p];
    const SequenceStep& q = batch.seqs[size_t(ps.batch_index)];
    if (all_logits) {
      for (int i = 0; i < ps.n_rows; ++i) logit_rows.push_back(ps.row_begin + i);
      seq_logit_index[p] = int(logit_rows.size()) - 1;
    } else if (q.sample || q.return_logits) {
      logit_rows.push_back(ps.row_begin + ps.n_rows - 1);
      seq_logit_index[p] = int(logit_rows.size()) - 1;
    }
  }
  const int n_logits = int(logit_rows.size()), V = c.vocab_size;
  std::vector<bf16> logits(size_t(n_logits) * size_t(V));
  if (n_logits > 0) {
    std::vector<bf16> xs(size_t(n_logits) * size_t(H)), xn(xs.size());
    for (int i = 0; i < n_logits; ++i)
      std::memcpy(&xs[size_t(i) * size_t(H)], &x[size_t(logit_rows[size_t(i)]) * size_t(H)], sizeof(bf16) * size_t(H));
    rmsnorm(xs.data(), as_bf16(w_.final_norm), n_logits, H, c.rms_norm_eps, xn.data());
    linear_bf16(xn.data(), n_logits, H, as_bf16(w_.lm_head), nullptr, V, logits.data());
  }
  if (all_logits) {  // every sequence is valid here, so packed rows are batch rows in sequence order
    all_logits->assign(size_t(n_batch) * size_t(V), 0.0f);
    for (int i = 0; i < n_logits; ++i) {
      const Plan::Seq& ps = plan.seqs[size_t(plan.row_seq[size_t(logit_rows[size_t(i)])])];
      const int batch_row = batch.seqs[size_t(ps.batch_index)].token_offset + (logit_rows[size_t(i)] - ps.row_begin);
      bf16_to_f32_n(&logits[size_t(i) * size_t(V)], V, &(*all_logits)[size_t(batch_row) * size_t(V)]);
    }
  }

  // Outputs in batch order, one per sequence with sample or return_logits set (model_runner.h).
  out->samples.clear();
  std::vector<int> sample_batch_index;  // out->samples[i] samples batch.seqs[sample_batch_index[i]] (or -1)
  size_t next_plan = 0;
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const SequenceStep& q = batch.seqs[s];
    SampleOutput so;
    so.seq_id = q.seq_id;
    if (!errors[s].empty()) {
      so.ok = false;
      so.error = strfmt("sequence %llu: %s", (unsigned long long)q.seq_id, errors[s].c_str());
      if (q.sample || q.return_logits) {
        out->samples.push_back(std::move(so));
        sample_batch_index.push_back(-1);
      } else {  // the seam has no slot for it: a prefill chunk the engine built wrongly
        MXS_LOG_ERROR("CpuRunner: %s (no sample requested; its tokens were skipped)", so.error.c_str());
      }
      continue;
    }
    const int li = seq_logit_index[next_plan++];
    if (!q.sample && !q.return_logits) continue;
    so.logits.resize(size_t(V));  // the fp32 row; dropped below unless return_logits
    bf16_to_f32_n(&logits[size_t(li) * size_t(V)], V, so.logits.data());
    out->samples.push_back(std::move(so));
    sample_batch_index.push_back(q.sample ? int(s) : -1);
  }
  // Sampling is independent per sequence (a full-vocabulary pass or sort each): one sequence per thread.
  ThreadPool::global().parallel_for(int64_t(out->samples.size()), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      SampleOutput& so = out->samples[size_t(i)];
      if (sample_batch_index[size_t(i)] >= 0) {
        const SequenceStep& q = batch.seqs[size_t(sample_batch_index[size_t(i)])];
        try {
          SampleResult r = sample_token(so.logits, *q.sampling, q.prompt_tokens, q.output_tokens, q.allowed_tokens);
          so.token = r.token;
          so.logprob = r.logprob;
          so.top = std::move(r.top);
        } catch (const std::exception& e) {  // never escapes a pool thread
          so.ok = false;
          so.error = strfmt("sequence %llu: %s", (unsigned long long)q.seq_id, e.what());
        }
        if (!q.return_logits) std::vector<float>().swap(so.logits);
      }
    }
  });
}

void CpuRunner::forward_layers(const Plan& plan, std::vector<bf16>& x) {
  const ModelConfig& c = w_.config;
  const int n = plan.n_rows(), H = c.hidden_size, half = rope_.half_dim();
  const size_t N = size_t(n);
  std::vector<bf16> xn(N * H), q(N * c.q_dim()), k(N * c.kv_dim()), v(N * c.kv_dim());
  std::vector<bf16> attn(N * c.q_dim()), proj(N * H), moe_out(N * H);
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = w_.layers[size_t(l)];
    const bool own_pool = sliding_kv_ && c.is_sliding(l);  // two groups: this layer's K/V live in sliding_kv_
    PagedKvCache& pool = own_pool ? *sliding_kv_ : kv_;
    const int pl = group_layer_[size_t(l)];
    // Attention block: x = bf(x + o_proj(attn(rope(qkv(rmsnorm(x)))))).
    rmsnorm(x.data(), as_bf16(lw.input_norm), n, H, c.rms_norm_eps, xn.data());
    linear_bf16(xn.data(), n, H, as_bf16(lw.q_w), as_bf16(lw.q_b), c.q_dim(), q.data());
    linear_bf16(xn.data(), n, H, as_bf16(lw.k_w), as_bf16(lw.k_b), c.kv_dim(), k.data());
    linear_bf16(xn.data(), n, H, as_bf16(lw.v_w), as_bf16(lw.v_b), c.kv_dim(), v.data());
    for (int r = 0; r < n; ++r) {
      const float* cs = &plan.cos[size_t(r * half)];
      const float* sn = &plan.sin[size_t(r * half)];
      rope_.apply(&q[size_t(r) * c.q_dim()], c.num_heads, cs, sn);
      rope_.apply(&k[size_t(r) * c.kv_dim()], c.num_kv_heads, cs, sn);
      // K/V of the new token go to the cache before attention, so that the chunk attends to itself.
      const Plan::Seq& ps = plan.seqs[size_t(plan.row_seq[size_t(r)])];
      const int pos = plan.positions[size_t(r)], bs = kv_.block_size();
      const int block = (own_pool ? ps.sliding_table : ps.block_table)[size_t(pos / bs)];
      std::memcpy(pool.key(pl, block, pos % bs), &k[size_t(r) * c.kv_dim()], sizeof(bf16) * c.kv_dim());
      std::memcpy(pool.value(pl, block, pos % bs), &v[size_t(r) * c.kv_dim()], sizeof(bf16) * c.kv_dim());
    }
    attention(plan, l, q, attn);
    linear_bf16(attn.data(), n, c.q_dim(), as_bf16(lw.o_w), as_bf16(lw.o_b), H, proj.data());
    for (size_t i = 0; i < N * H; ++i) x[i] = f32_to_bf16(bf16_to_f32(x[i]) + bf16_to_f32(proj[i]));

    // MoE block: x = bf(x + moe(rmsnorm(x))).
    rmsnorm(x.data(), as_bf16(lw.post_norm), n, H, c.rms_norm_eps, xn.data());
    moe(l, xn, n, moe_out);
    for (size_t i = 0; i < N * H; ++i) x[i] = f32_to_bf16(bf16_to_f32(x[i]) + bf16_to_f32(moe_out[i]));
    if (layer_hook_) layer_hook_(l, x.data(), n);
  }
}

void CpuRunner::attention(const Plan& plan, int layer, const std::vector<bf16>& q, std::vector<bf16>& out) {
  const ModelConfig& c = w_.config;
  const int bs = kv_.block_size(), D = c.head_dim;
  const bool sliding = c.is_sliding(layer);
  const bool own_pool = sliding_kv_ && sliding;
  const PagedKvCache& pool = own_pool ? *sliding_kv_ : kv_;
  const int pl = group_layer_[size_t(layer)];
  // Per sequence: position lo[s] + j -> pointer to its [kv_heads, head_dim] key / value rows in this layer,
  // for the positions the step reads: [0, context_len), or from the window start of its first new token on a
  // sliding layer (with two groups the table holds kNoBlock below it).
  std::vector<std::vector<const bf16*>> keys(plan.seqs.size()), values(plan.seqs.size());
  std::vector<int> lo(plan.seqs.size(), 0);
  for (size_t s = 0; s < plan.seqs.size(); ++s) {
    const Plan::Seq& ps = plan.seqs[s];
    const std::span<const int32_t> table = own_pool ? ps.sliding_table : ps.block_table;
    if (sliding) lo[s] = sliding_window_start(ps.context_len - ps.n_rows, c.sliding_window);
    keys[s].resize(size_t(ps.context_len - lo[s]));
    values[s].resize(size_t(ps.context_len - lo[s]));
    for (int p = lo[s]; p < ps.context_len; ++p) {
      const int block = table[size_t(p / bs)];
      keys[s][size_t(p - lo[s])] = pool.key(pl, block, p % bs);
      values[s][size_t(p - lo[s])] = pool.value(pl, block, p % bs);
    }
  }
  std::vector<float> sinks(size_t(c.num_heads));
  bf16_to_f32_n(as_bf16(w_.layers[size_t(layer)].sinks), c.num_heads, sinks.data());
  const float scale = float(1.0 / std::sqrt(double(D)));
  const int64_t jobs = int64_t(plan.n_rows()) * c.num_heads;
  int64_t max_keys = 0;
  for (const Plan::Seq& ps : plan.seqs) max_keys = std::max<int64_t>(max_keys, ps.context_len);
  parallel_rows(jobs, 2 * D * std::min<int64_t>(max_keys, sliding ? c.sliding_window : max_keys),
                [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scratch;
    for (int64_t job = begin; job < end; ++job) {
      const int r = int(job / c.num_heads), h = int(job % c.num_heads);
      const int s = plan.row_seq[size_t(r)];
      const int pos = plan.positions[size_t(r)];
      // Causal; a sliding layer sees the token itself + (window - 1) previous ones.
      const int first = sliding ? std::max(0, pos - c.sliding_window + 1) : 0;
      const int n_keys = pos - first + 1;
      if (scratch.size() < size_t(n_keys)) scratch.resize(size_t(n_keys));
      const int kv_head = h / c.kv_group();
      const int skip = first - lo[size_t(s)];  // keys[s] starts at position lo[s]
      attention_with_sink(&q[size_t(r) * c.q_dim() + size_t(h * D)], keys[size_t(s)].data() + skip,
                          values[size_t(s)].data() + skip, kv_head * D, n_keys, D, scale, sinks[size_t(h)],
                          &out[size_t(r) * c.q_dim() + size_t(h * D)], scratch.data());
    }
  });
}

void CpuRunner::moe(int layer, const std::vector<bf16>& xn, int n, std::vector<bf16>& out) {
  const ModelConfig& c = w_.config;
  const LayerWeights& lw = w_.layers[size_t(layer)];
  const ExpertWeights& ew = lw.experts;
  const int H = c.hidden_size, I = c.intermediate_size, E = c.num_experts, K = c.experts_per_token;

  // Router: bf16 logits [n, E], top-K, softmax over the K.
  std::vector<bf16> router_logits(size_t(n) * size_t(E));
  linear_bf16(xn.data(), n, H, as_bf16(lw.router_w), as_bf16(lw.router_b), E, router_logits.data());
  std::vector<int32_t> sel(size_t(n) * size_t(K));
  std::vector<float> sel_w(size_t(n) * size_t(K));
  for (int r = 0; r < n; ++r)
    router_topk_softmax(&router_logits[size_t(r) * size_t(E)], E, K, &sel[size_t(r * K)], &sel_w[size_t(r * K)]);

  std::vector<float> xf(size_t(n) * size_t(H));
  bf16_to_f32_n(xn.data(), int64_t(xf.size()), xf.data());
  // Accumulators: bf16 values for kSequentialBf16 (rounded after each add), fp32 sums for kDenseFp32.
  std::vector<float> acc(size_t(n) * size_t(H), 0.0f);

  const int64_t gu_row_bytes = int64_t(H) / 2, gu_row_scales = H / kMxfp4BlockSize;   // per row of 2I
  const int64_t dn_row_bytes = int64_t(I) / 2, dn_row_scales = I / kMxfp4BlockSize;   // per row of H
  std::vector<int> rows;
  std::vector<float> weights, xe, actf;
  std::vector<bf16> gu, act, y;
  // Experts in ascending id: the order of HF's eager loop, hence of the bf16 index_add_ chain.
  for (int e = 0; e < E; ++e) {
    rows.clear();
    weights.clear();
    for (int r = 0; r < n; ++r)
      for (int k = 0; k < K; ++k)
        if (sel[size_t(r * K + k)] == e) {
          rows.push_back(r);
          weights.push_back(sel_w[size_t(r * K + k)]);
        }
    const int m = int(rows.size());
    if (m == 0) continue;
    xe.resize(size_t(m) * size_t(H));
    for (int i = 0; i < m; ++i)
      std::memcpy(&xe[size_t(i) * size_t(H)], &xf[size_t(rows[size_t(i)]) * size_t(H)], sizeof(float) * size_t(H));

    // gate_up = bf(bf(x . Wgu_e) + b_gu_e)  [m, 2I], interleaved gate/up.
    gu.resize(size_t(m) * size_t(2 * I));
    linear_mxfp4(xe.data(), m, H, ew.gate_up_blocks.data + e * int64_t(2 * I) * gu_row_bytes,
                 ew.gate_up_scales.data + e * int64_t(2 * I) * gu_row_scales, 2 * I, gu.data());
    const bf16* b_gu = as_bf16(ew.gate_up_bias) + int64_t(e) * 2 * I;
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < 2 * I; ++j) {
        bf16& g = gu[size_t(i) * size_t(2 * I) + size_t(j)];
        g = f32_to_bf16(bf16_to_f32(g) + bf16_to_f32(b_gu[j]));
      }
    act.resize(size_t(m) * size_t(I));
    for (int i = 0; i < m; ++i)
      swiglu_clamped(&gu[size_t(i) * size_t(2 * I)], I, c.swiglu_alpha, c.swiglu_limit, &act[size_t(i) * size_t(I)]);
    actf.resize(act.size());
    bf16_to_f32_n(act.data(), int64_t(act.size()), actf.data());

    // y = bf(bf(act . Wd_e) + b_d_e)  [m, H];  contribution c = bf(y * w).
    y.resize(size_t(m) * size_t(H));
    linear_mxfp4(actf.data(), m, I, ew.down_blocks.data + e * int64_t(H) * dn_row_bytes,
                 ew.down_scales.data + e * int64_t(H) * dn_row_scales, H, y.data());
    const bf16* b_d = as_bf16(ew.down_bias) + int64_t(e) * H;
    for (int i = 0; i < m; ++i) {
      float* a = &acc[size_t(rows[size_t(i)]) * size_t(H)];
      for (int j = 0; j < H; ++j) {
        const float yv = bf(bf16_to_f32(y[size_t(i) * size_t(H) + size_t(j)]) + bf16_to_f32(b_d[j]));
        const float contribution = bf(yv * weights[size_t(i)]);
        a[j] = opt_.combine == ExpertCombine::kSequentialBf16 ? bf(a[j] + contribution) : a[j] + contribution;
      }
    }
  }
  for (size_t i = 0; i < acc.size(); ++i) out[i] = f32_to_bf16(acc[i]);
}

}  // namespace mxs::cpu
