// CudaRunner implementation: arenas, per-step input staging, the layer loop over the kernel families,
// CUDA graphs per (batch bucket, attention split count) for pure-decode steps, GPU sampling.
#include "cuda/cuda_runner.h"
#include "engine/step_batch_check.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <type_traits>
#include <unordered_map>

#include "common/error.h"
#include "common/log.h"
#include "common/timer.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/attention_decode.h"
#include "cuda/kernels/attention_prefill.h"
#include "cuda/kernels/dense_gemm.h"
#include "cuda/kernels/gemv_bf16.h"
#include "cuda/kernels/lm_head_screen.h"
#include "cuda/kernels/moe_gemm_mxfp4.h"
#include "cuda/kernels/moe_gemm_pack.h"
#include "cuda/kernels/moe_gemv_mxfp4.h"
#include "cuda/kernels/moe_combine_rows.h"
#include "cuda/kernels/moe_router.h"
#include "cuda/kernels/moe_router_rows.h"
#include "cuda/kernels/skinny_gemm.h"
#include "cuda/kernels/qkv_rope.h"
#include "cuda/kernels/rmsnorm.h"
#include "cuda/kernels/sampling.h"
#include "cuda/token_handoff.h"
#include "engine/penalty_lists.h"
#include "cuda/weights_upload.h"

namespace mxs::cuda {

namespace {
constexpr int kMaxGraphBatch = 256;  // largest graph bucket
constexpr int kMaxTimedKernels = 1024;
// Steps of at least this many tokens route through the router GEMM + moe_router_from_logits and combine with
// moe_combine_rows (prefill chunks, large decode batches); fewer keep moe_router / moe_combine (latency).
// MXS_SMALL_STEP_MOE=1 forces the small-step kernels at every size (A/B and debugging).
constexpr int kRowsMoeMinTokens = 64;

int next_pow2(int v) {
  int p = 1;
  while (p < v) p <<= 1;
  return p;
}

}  // namespace

// Every size up to 8 is its own bucket; past it powers of two and 1.5 x powers of two keep padding below a third of
// the rows. H100, ms per step with powers of two alone vs these buckets: batch 24 6.72 vs 6.28, 48 8.10 vs 7.48, 96
// 9.75 vs 8.72, 192 11.23 vs 10.03. 5-7 rows padded to 8 lost while they took the GEMVs (batch 6 as its own bucket
// 5.79, padded 4.47); on the dense path (kDenseGemmMinRows) they run faster unpadded: 20b eagerly 3.53 / 3.78 / 3.96
// ms at 5 / 6 / 7 vs the bucket-8 graph's 3.69 / 3.86 / 4.00 (H100, session 23). Graphs are captured on first use.
int graph_batch_bucket(int n) {
  if (n <= 8) return n;
  int p = 8;
  while (p < n) {
    if (p + p / 2 >= n) return p + p / 2;
    p <<= 1;
  }
  return p;
}

// The card's peak DRAM bandwidth: double data rate x memory clock (kHz) x bus width (bits) / 8 (H100 SXM 3.35 TB/s,
// H200 4.8 TB/s).
static double peak_dram_bytes_per_s(int device) {
  int mem_khz = 0, bus_bits = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, device));
  CUDA_CHECK(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device));
  return 2.0 * mem_khz * 1e3 * bus_bits / 8.0;
}

struct CudaRunner::Impl {
  CudaRunnerOptions opt;
  DeviceWeights w;
  const ModelConfig& cfg() const { return w.config; }
  std::string device_name;

  DeviceArena kv_arena, ws_arena;
  int num_blocks = 0;      // exposed to the engine; block id num_blocks is the scratch block (graph padding)
  int num_sliding_blocks = 0;  // > 0: the sliding layers' own pool (id num_sliding_blocks = its scratch block)
  std::vector<size_t> layer_kv_bytes;  // per layer
  std::vector<void*> kv_layers;  // per layer: [pool blocks + 1][2][n_kv][block_size][64] bf16
  int max_blocks_per_seq = 0;
  int num_sms = 0;  // sizes the tensor-core attention's key splits
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;  // dense projections of steps with >= kDenseGemmMinRows rows

  // Workspaces ([max_tokens] rows unless noted).
  void *x = nullptr, *xn = nullptr, *q = nullptr, *attn = nullptr, *act = nullptr, *yw = nullptr, *logits = nullptr;
  void* x_alt = nullptr;  // [max_tokens, H] bf16: the residual's second buffer (the fused combine writes x there)
  float *part_o = nullptr, *part_ml = nullptr;
  float* proj = nullptr;    // [max_tokens, max(qkv rows, H, experts)] fp32 cuBLAS output (dense path, router GEMM)
  size_t proj_floats = 0;   // its size (the skinny GEMM's split partials must fit)
  void* lm_in = nullptr;    // [max_seqs, H] bf16 LM-head input rows gathered (dense path)
  size_t partial_rows = 0;  // capacity in (token, head, split) rows
  int32_t* topk_idx = nullptr;
  float* topk_w = nullptr;
  float* router_logits = nullptr;
  unsigned* router_counter = nullptr;
  unsigned* oproj_counter = nullptr;
  int32_t* route_work = nullptr;  // moe_router_from_logits' counts, cursors and arrival counter (kept zero)
  unsigned* gemm_sched = nullptr;  // [2] the grouped GEMMs' dynamic tile scheduler (kept zero)
  unsigned* attn_counters = nullptr;  // [max_tokens * n_kv] per (token, kv head): split CTAs done
  PrefillTile* dev_tiles = nullptr;   // [2 * max_tiles]: full-layer tiles, then sliding-layer tiles
  PrefillTile* host_tiles = nullptr;  // pinned mirror (the current staging set's)
  int max_tiles = 0;
  float* norm_partials = nullptr;     // [max_tokens, 16] moe_combine's partial sums of squares
  unsigned* norm_counters = nullptr;  // [max_tokens] moe_combine's per-token arrival counters
  float* moe_partials = nullptr;      // MoE GEMVs: K-piece partial dots (moe_gemv_partial_floats)
  unsigned* moe_tile_counters = nullptr;  // MoE GEMVs: per (expert slot, row group) arrival counters
  int gemm_min_pairs = 0;                 // MoE steps of >= this many pairs run the grouped GEMM
  unsigned long long* lm_argmax = nullptr;  // [max_seqs] LM-head argmax keys (greedy fast path)
  MoeRouteIndex route;
  // Sampling workspaces ([max_seqs] rows of vocab).
  SamplingParamsDev samp;
  size_t ids_capacity = 0;
  size_t bias_capacity = 0;  // logit bias entries per step: every row's most (SamplingParams limits)
  size_t mask_words = 0;     // words of one allowed-token mask: ceil(vocab / 32)

  // Step inputs: pinned host staging (`host`, capacity layout) and, per step, their packed device copies (`dev`).
  // handoff: [max_seqs][2] (dst token index, src results row) of input_from_last_sample rows (token_handoff.h).
  // A step's used parts travel in ONE host-to-device copy: the block tables are staged straight into the set's
  // pinned `send` buffer (its start), pack_inputs appends the other arrays and points `dev` at their places in
  // `dev_in`. Each small copy costs ~2.4 us of the GPU's time (H100, docs/PERF.md session 19): seven per
  // batch-1 step were ~17 us between steps. The packed offsets depend only on (sequence rows, tokens, LM-head
  // rows), so a graph bucket (all three = the bucket) finds its inputs where its capture did; what follows them
  // (sampling parameters, handoff) is read by launches outside the graphs. Penalty id lists (rare, large
  // capacity) keep their own arrays and copy.
  struct Inputs {
    int32_t *tokens, *positions, *token_seq, *block_tables, *sliding_block_tables, *lm_rows, *ids, *counts, *handoff;
    int32_t* n_real;  // [1] the step's tokens before a graph bucket's padding rows (which follow them)
    SampleSeqParams* seq_params;
    int32_t* bias_ids;   // [bias_capacity] the LM-head rows' logit bias entries (SampleSeqParams::bias_offset)
    float* bias_values;
    uint32_t* allowed;   // [max_seqs * mask_words] masked rows' allowed-token masks (SampleSeqParams::mask_offset)
  } dev{}, host{};
  char* dev_in = nullptr;         // packed step inputs on the device
  size_t in_capacity = 0;         // bytes of dev_in and of each set's send buffer
  char* send_sets[2] = {};        // pinned: the packed image of a set's inputs
  char* send = nullptr;           // the current set's
  SampleResultDev* host_results = nullptr;
  uint16_t* host_logits = nullptr;  // [vocab] bf16 bits, for return_logits
  char* host_pinned = nullptr;
  // Two-phase stepping (async scheduling): two pinned staging sets, the k-th submit() stages into set k % 2, so
  // step N + 1's inputs are written while step N's copies may still be queued; `host`, `host_results` and
  // `host_tiles` point into the current set. At most two steps are outstanding, so the set being written
  // belongs to a collected step.
  Inputs host_sets[2]{};
  SampleResultDev* host_results_sets[2] = {};
  PrefillTile* host_tiles_sets[2] = {};
  cudaEvent_t done_events[2] = {};  // recorded after each set's step (its results copied to the host)
  // Results copies of pipelined steps (submitted while another is outstanding) run on copy_stream, so that the
  // next step's input copy and graph do not queue behind them (~2-4 us per step); the next sampling, which
  // overwrites samp.results, waits for results_copied. A step submitted alone copies on `stream` (no
  // cross-stream hop on the synchronous path).
  cudaStream_t copy_stream = nullptr;
  cudaEvent_t sampled = nullptr, results_copied = nullptr;
  bool side_copy_queued = false;  // the last results copy went to copy_stream
  uint64_t num_submits = 0;
  // What collect() needs of a submitted step (the batch's spans are not kept).
  struct PendingSeq {
    uint64_t seq_id = 0;
    bool sample = false, return_logits = false, logprobs = false;
    int top_logprobs = 0;
    int row = -1;       // LM-head / results row
    std::string error;  // the sequence was left out of the step
  };
  struct Pending {
    int set = 0;
    bool launched = false;  // GPU work queued (done_events[set] recorded)
    bool ready = false;     // `out` already built (steps with return_logits complete inside submit())
    StepOutput out;
    std::vector<PendingSeq> seqs;
  };
  std::deque<Pending> pending;
  // seq_id -> results row of the sampled rows of the last submitted step: the sources of its successor's
  // input_from_last_sample tokens.
  std::unordered_map<uint64_t, int> last_rows;
  // Every sampled sequence's penalty id lists, extended step by step (the host side of sampling's steps 1-2).
  PenaltyLists penalty_lists;

  std::map<std::pair<int, int>, cudaGraphExec_t> graphs;
  cudaGraphExec_t last_graph = nullptr;  // the graph of the last step that replayed one (time_last_graph_ms)
  // Greedy LM head by screening (CudaRunnerOptions::lm_head_screen): workspaces, and whether this step takes it
  // (set by submit before forward: every LM-head row greedy without penalties, logprobs or returned logits).
  float* screen_upper = nullptr;     // [kLmScreenMaxRows][V]
  unsigned* screen_lower = nullptr;  // [kLmScreenMaxRows]
  unsigned* screen_counter = nullptr;
  bool lm_screen_step = false;
  // CudaRunnerOptions::exact_attention (MXS_EXACT_ATTENTION overrides it): short steps on the exact attention path.
  const bool exact_attention;
  bool timing = false;
  KernelTimes times;
  std::vector<cudaEvent_t> events;
  std::vector<std::string> event_names;  // one name per (begin, end) pair
  int events_used = 0;
  cudaEvent_t span_events[2] = {nullptr, nullptr};  // timing: the whole step's device span

  explicit Impl(const CudaRunnerOptions& o)
      : opt(o), exact_attention([&o] {
          const char* v = std::getenv("MXS_EXACT_ATTENTION");
          return v != nullptr ? std::string(v) != "0" : o.exact_attention;
        }()) {}
  ~Impl() {
    for (auto& [k, g] : graphs) cudaGraphExecDestroy(g);
    for (auto e : events) cudaEventDestroy(e);
    for (auto e : done_events)
      if (e) cudaEventDestroy(e);
    for (auto e : span_events)
      if (e) cudaEventDestroy(e);
    for (auto e : {sampled, results_copied})
      if (e) cudaEventDestroy(e);
    if (copy_stream) cudaStreamDestroy(copy_stream);
    if (cublas) cublasDestroy(cublas);
    if (host_pinned) cudaFreeHost(host_pinned);
    if (stream) cudaStreamDestroy(stream);
  }

  void init();
  // The packed copies of dense weights: bf12 (CudaRunnerOptions::bf12_dense; MXS_BF12 overrides it) and the LM head's
  // int8 screening copy (CudaRunnerOptions::lm_head_screen; MXS_LM_SCREEN overrides it).
  void pack_weight_copies() {
    const char* env = std::getenv("MXS_BF12");
    const std::string list =
        resolve_bf12_dense(env != nullptr ? std::string(env) : opt.bf12_dense, peak_dram_bytes_per_s(opt.device));
    Bf12Set which;
    size_t at = 0;
    while (at <= list.size()) {
      const size_t end = std::min(list.find(',', at), list.size());
      const std::string name = list.substr(at, end - at);
      if (name == "lm_head") which.lm_head = true;
      else if (name == "o_proj") which.o_proj = true;
      else if (name == "qkv") which.qkv = true;
      else if (!name.empty() && name != "0")
        throw Error("bf12 dense weights: unknown matrix '" + name + "' (known: lm_head, o_proj, qkv)");
      at = end + 1;
    }
    pack_dense_bf12(&w, which);
    const char* screen_env = std::getenv("MXS_LM_SCREEN");
    if (screen_env != nullptr ? std::string(screen_env) != "0" : opt.lm_head_screen) pack_lm_head_screen(&w);
  }
  // Prefill attention of a step: tokens [0, n_dec) are single-token (decode) sequences and run the decode
  // attention (attention_decode_mma); the rest run attention_prefill over the uploaded tile lists (full / sliding
  // layers). (Steps on the exact attention path run every token through attention_decode and have no plan.)
  struct PrefillPlan {
    bool active = false;
    int n_dec = 0;
    int n_full_tiles = 0, tile_q_full = kPrefillTileQ16, n_slide_tiles = 0;
    int slide_tiles_offset = 0;  // into dev_tiles: 0 when sliding layers share the full layers' 16-query tiles
  };
  void forward(int n_tokens, int n_lm_rows, int n_splits, int keys_per_split, const PrefillPlan& plan);
  // Decode-sized dense projections (8-64 rows) take the skinny GEMM (in the PDL chain) when its split partials
  // fit the projection workspace; else cuBLAS.
  bool skinny_fits(int n_rows, int k, int n_out) const {
    return skinny_gemm_supports(n_rows, k, n_out) &&
           size_t(skinny_gemm_splits(n_rows, k, n_out)) * n_rows * n_out <= proj_floats;
  }
  template <typename F>
  void timed(const char* name, F&& launch);
  void collect_times();
  void pack_inputs(int n_tok, int n_seq_rows, int n_lm_rows, int n_lm, int n_handoff, size_t n_bias,
                   size_t n_mask_words);
  // What stage_sampling says about a step's LM-head rows.
  struct SamplingStage {
    size_t n_ids = 0;               // staged penalty ids (host.ids / host.counts)
    size_t n_bias = 0;              // staged logit bias entries (host.bias_ids / host.bias_values)
    size_t n_mask_words = 0;        // staged allowed-token mask words (host.allowed)
    bool spread_wanted = false;     // some row is not plain greedy (sampling_is_plain_greedy): the spread path
    bool spread_penalties = false;  // some row has a logit bias or a penalty (sampling_edits_logits)
    int spread_selects = 0;         // SamplingParamsDev::spread_selects: bit 0 top-k, 1 top-p, 2 top logprobs
    bool screen_ok = true;          // every row may take the screened LM head (lm_screen_step)
    // Rows whose mask comes in supply_masks(): (batch index, word offset of its slot in host.allowed).
    std::vector<std::pair<int, size_t>> deferred_masks;
  };
  // A submitted step whose sampling waits for supply_masks().
  struct DeferredSampling {
    bool active = false;
    bool launched = false;          // its forward pass was queued (it had rows to run)
    SamplingStage st;
    int n_lm = 0, n_argmax_rows = 0, set = 0;
    std::vector<int> batch_index;   // the batch's allowed_tokens_deferred sequences, in batch order
  };
  DeferredSampling deferred;
  void supply_masks(const std::vector<std::span<const uint32_t>>& masks);
  SamplingStage stage_sampling(const StepBatch& batch, const std::vector<int>& lm_seq);
  void submit(const StepBatch& batch);
  // submit()'s phases, in order.
  std::vector<int> validate_step(const StepBatch& batch, const std::unordered_map<uint64_t, int>& prev_rows,
                                 std::vector<std::string>* errors) const;
  struct StagedRows {
    int n_tok = 0;             // tokens staged (graph padding rows included)
    int n_valid = 0;           // sequences the step runs
    int max_ctx = 1;           // the longest context among them
    int n_handoff = 0;         // input_from_last_sample rows (host.handoff pairs)
    bool use_graph = false;    // a decode step replayed from its graph bucket's graph
    int n_rows = 0;            // that bucket (padded sequences); 0 without a graph
    std::vector<int> lm_seq;   // batch index of each LM-head row
  };
  StagedRows stage_rows(const StepBatch& batch, const std::vector<int>& valid,
                        const std::unordered_map<uint64_t, int>& prev_rows);
  void launch_graph(int n_rows, int max_ctx);
  void launch_eager(const StepBatch& batch, const std::vector<int>& valid, const StagedRows& r, int n_lm);
  bool launch_sampling(const SamplingStage& st, int n_lm, int n_argmax_rows);
  Pending pending_of(const StepBatch& batch, int set, bool launched, const std::vector<int>& lm_seq,
                     std::vector<std::string>* errors);
  void h2d(void* d, const void* h, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, stream));
  }
  void collect(StepOutput* out);
  void build_output(Pending& p, StepOutput* out);
};

void CudaRunner::Impl::init() {
  const ModelConfig& c = cfg();
  MXS_CHECK(c.head_dim == 64, strfmt("CudaRunner: head_dim = %d is not supported (supported: 64)", c.head_dim));
  MXS_CHECK(opt.block_size >= 1 && opt.max_seqs >= 1 && opt.max_tokens >= opt.max_seqs && opt.max_model_len >= 1,
            "CudaRunner: block_size, max_seqs >= 1, max_tokens >= max_seqs and max_model_len >= 1 are required");
  opt.max_model_len = std::min(opt.max_model_len, c.max_position_embeddings);
  // A graph pads a decode step of n sequences to graph_batch_bucket(n) rows (scratch-block padding), so every
  // [max_seqs] / [max_tokens] buffer holds the bucket of max_seqs: a runner of max_seqs = 6 ran its 5- and
  // 6-sequence steps without graphs (20b, H100: 5.08 / 5.51 ms per step vs 3.71 / 3.87 padded to 8, session 23).
  opt.max_seqs = std::max(opt.max_seqs, graph_batch_bucket(std::min(opt.max_seqs, kMaxGraphBatch)));
  opt.max_tokens = std::max(opt.max_tokens, opt.max_seqs);
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, opt.device));
  device_name = prop.name;
  num_sms = prop.multiProcessorCount;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  CUDA_CHECK(cudaStreamCreateWithFlags(&copy_stream, cudaStreamNonBlocking));
  CUDA_CHECK(cudaEventCreateWithFlags(&sampled, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventCreateWithFlags(&results_copied, cudaEventDisableTiming));
  max_blocks_per_seq = (opt.max_model_len + opt.block_size - 1) / opt.block_size;

  // Workspaces.
  const size_t T = size_t(opt.max_tokens), S = size_t(opt.max_seqs), H = size_t(c.hidden_size);
  const size_t V = size_t(c.vocab_size), K = size_t(c.experts_per_token);
  // Attention partials: the largest graph bucket configuration, or one split per token of a full step.
  partial_rows = T * size_t(c.num_heads);
  for (int b = 1; b <= std::min<int>(int(S), kMaxGraphBatch); b = graph_batch_bucket(b + 1)) {
    partial_rows = std::max(partial_rows, size_t(b) * c.num_heads *
                                              attention_decode_mma_max_splits(b, c.num_kv_heads, opt.max_model_len, num_sms));
  }
  ids_capacity = 2 * S * size_t(opt.max_model_len) + 1024;
  bias_capacity = S * size_t(SamplingParams::kMaxLogitBias + SamplingParams::kMaxMinTokensIds);
  mask_words = (V + 31) / 32;
  size_t ws_bytes = 0;
  auto add = [&](size_t b) { ws_bytes += DeviceArena::aligned(b); };
  add(T * H * 2); add(T * H * 2); add(T * H * 2); add(T * c.q_dim() * 2); add(T * c.q_dim() * 2);
  add(partial_rows * 64 * 4); add(partial_rows * 2 * 4);
  add(T * c.num_kv_heads * 4); add(T * 16 * 4); add(T * 4);
  gemm_min_pairs = opt.moe_gemm_min_pairs > 0 ? opt.moe_gemm_min_pairs : 8 * c.num_experts;
  gemm_min_pairs = std::min(gemm_min_pairs, std::min(kMoeGemvMaxPairs, int(T * K)) + 1);
  const size_t moe_partial_floats =
      moe_gemv_partial_floats(int(H), c.intermediate_size, std::max(1, gemm_min_pairs - 1));
  const size_t moe_counters = moe_gemv_counter_count(int(H), c.intermediate_size, c.num_experts);
  add(moe_partial_floats * 4); add(moe_counters * 4);
  max_tiles = max_prefill_tiles(int(T), int(S), kPrefillTileQ16);
  add(size_t(2) * max_tiles * sizeof(PrefillTile));
  const size_t qkv_rows = size_t(c.num_heads + 2 * c.num_kv_heads) * c.head_dim;
  add(T * std::max({qkv_rows, H, size_t(c.num_experts)}) * 4); add(S * H * 2); add(kCublasWorkspaceBytes);
  add(T * K * 4); add(T * K * 4); add(T * c.num_experts * 4); add(4); add(4); add(moe_router_rows_work_ints(c.num_experts) * 4); add(2 * 4); add((c.num_experts + 1) * 4); add(T * K * 4); add(c.num_experts * 4); add(4);
  add(T * K * c.intermediate_size * 2); add(T * K * H * 2); add(S * V * 2);
  add(S * V * 4);
  add(S * sizeof(SampleResultDev)); add(S * 8); add(spread_workspace_bytes(int(S), int(V)));
  // One add() per region below: each region is rounded up to the arena alignment on its own (grouping
  // regions undercounts when they are small, e.g. max_tokens = 16).
  // Packed step inputs (pack_inputs): every array's capacity, each rounded up to 64 bytes.
  in_capacity = 2 * (S * max_blocks_per_seq * 4 + 64) + 3 * (T * 4 + 64) + 64 + (S * 4 + 64) +
                (S * sizeof(SampleSeqParams) + 64) + (S * 8 + 64) + 2 * (bias_capacity * 4 + 64) +
                (S * mask_words * 4 + 64);
  add(in_capacity);
  add(ids_capacity * 4); add(ids_capacity * 4);
  add(size_t(kLmScreenMaxRows) * V * 4); add(kLmScreenMaxRows * 4); add(4);
  ws_arena = DeviceArena("workspaces", ws_bytes);
  x = ws_arena.alloc("x", T * H * 2);
  x_alt = ws_arena.alloc("x_alt", T * H * 2);
  xn = ws_arena.alloc("xn", T * H * 2);
  q = ws_arena.alloc("q", T * c.q_dim() * 2);
  attn = ws_arena.alloc("attn", T * c.q_dim() * 2);
  part_o = ws_arena.alloc_as<float>("attn_partial_o", partial_rows * 64);
  part_ml = ws_arena.alloc_as<float>("attn_partial_ml", partial_rows * 2);
  proj_floats = T * std::max({qkv_rows, H, size_t(c.num_experts)});
  proj = ws_arena.alloc_as<float>("dense_proj_f32", proj_floats);
  lm_in = ws_arena.alloc("lm_head_rows", S * H * 2);
  void* cublas_ws = ws_arena.alloc("cublas_workspace", kCublasWorkspaceBytes);
  // A fixed workspace and stream: cuBLAS calls may then be captured into the decode graphs.
  if (cublasCreate(&cublas) != CUBLAS_STATUS_SUCCESS || cublasSetStream(cublas, stream) != CUBLAS_STATUS_SUCCESS ||
      cublasSetWorkspace(cublas, cublas_ws, kCublasWorkspaceBytes) != CUBLAS_STATUS_SUCCESS)
    throw Error("CudaRunner: cuBLAS handle/stream/workspace setup failed");
  attn_counters = ws_arena.alloc_as<unsigned>("attn_counters", T * c.num_kv_heads);
  dev_tiles = ws_arena.alloc_as<PrefillTile>("prefill_tiles", size_t(2) * max_tiles);
  norm_partials = ws_arena.alloc_as<float>("combine_norm_partials", T * 16);
  norm_counters = ws_arena.alloc_as<unsigned>("combine_norm_counters", T);
  CUDA_CHECK(cudaMemset(norm_counters, 0, T * sizeof(unsigned)));
  moe_partials = ws_arena.alloc_as<float>("moe_gemv_partials", moe_partial_floats);
  moe_tile_counters = ws_arena.alloc_as<unsigned>("moe_gemv_tile_counters", moe_counters);
  CUDA_CHECK(cudaMemset(moe_tile_counters, 0, moe_counters * sizeof(unsigned)));
  CUDA_CHECK(cudaMemset(attn_counters, 0, T * c.num_kv_heads * sizeof(unsigned)));
  topk_idx = ws_arena.alloc_as<int32_t>("topk_idx", T * K);
  topk_w = ws_arena.alloc_as<float>("topk_w", T * K);
  router_logits = ws_arena.alloc_as<float>("router_logits", T * c.num_experts);
  router_counter = ws_arena.alloc_as<unsigned>("router_counter", 1);
  oproj_counter = ws_arena.alloc_as<unsigned>("oproj_counter", 1);
  CUDA_CHECK(cudaMemset(router_counter, 0, sizeof(unsigned)));
  CUDA_CHECK(cudaMemset(oproj_counter, 0, sizeof(unsigned)));
  route_work = ws_arena.alloc_as<int32_t>("route_work", moe_router_rows_work_ints(c.num_experts));
  CUDA_CHECK(cudaMemset(route_work, 0, moe_router_rows_work_ints(c.num_experts) * sizeof(int32_t)));
  gemm_sched = ws_arena.alloc_as<unsigned>("moe_gemm_sched", 2);
  CUDA_CHECK(cudaMemset(gemm_sched, 0, 2 * sizeof(unsigned)));
  route.expert_offsets = ws_arena.alloc_as<int32_t>("expert_offsets", c.num_experts + 1);
  route.pair_list = ws_arena.alloc_as<int32_t>("pair_list", T * K);
  route.active_experts = ws_arena.alloc_as<int32_t>("active_experts", c.num_experts);
  route.num_active = ws_arena.alloc_as<int32_t>("num_active", 1);
  act = ws_arena.alloc("moe_act", T * K * c.intermediate_size * 2);
  yw = ws_arena.alloc("moe_yw", T * K * H * 2);
  logits = ws_arena.alloc("logits", S * V * 2);
  samp.z = ws_arena.alloc_as<float>("sample_z", S * V);
  samp.results = ws_arena.alloc_as<SampleResultDev>("sample_results", S);
  samp.vocab = int(V);
  lm_argmax = ws_arena.alloc_as<unsigned long long>("lm_argmax", S);
  CUDA_CHECK(cudaMemset(lm_argmax, 0, S * sizeof(unsigned long long)));  // zero between steps (SamplingParamsDev)
  samp.row_argmax = lm_argmax;
  {
    const size_t bytes = spread_workspace_bytes(int(S), int(V));
    void* spread = ws_arena.alloc("sample_spread", bytes);
    CUDA_CHECK(cudaMemset(spread, 0, bytes));  // its zeroed parts are left zeroed
    samp.spread = spread_workspace_at(spread, int(S), int(V));
  }
  dev_in = static_cast<char*>(ws_arena.alloc("step_inputs", in_capacity));
  dev.ids = ws_arena.alloc_as<int32_t>("in_penalty_ids", ids_capacity);
  dev.counts = ws_arena.alloc_as<int32_t>("in_penalty_counts", ids_capacity);
  screen_upper = ws_arena.alloc_as<float>("lm_screen_upper", size_t(kLmScreenMaxRows) * V);
  screen_lower = ws_arena.alloc_as<unsigned>("lm_screen_lower", kLmScreenMaxRows);
  screen_counter = ws_arena.alloc_as<unsigned>("lm_screen_counter", 1);
  CUDA_CHECK(cudaMemset(screen_lower, 0, kLmScreenMaxRows * sizeof(unsigned)));
  CUDA_CHECK(cudaMemset(screen_counter, 0, sizeof(unsigned)));

  // Pinned host mirrors, one allocation: two staging sets (two-phase stepping), then the logits row.
  // (the block tables are staged in the send buffer: in_capacity)
  const size_t set_bytes = T * 4 * 3 + 64 + 64 + 2 * size_t(max_tiles) * sizeof(PrefillTile) + 64 + S * 4 +
                           S * sizeof(SampleSeqParams) + ids_capacity * 8 + bias_capacity * 8 +
                           S * mask_words * 4 + S * sizeof(SampleResultDev) + S * 8 + 64 * 19 + in_capacity + 64;
  const size_t host_bytes = 2 * set_bytes + V * 2 + 64;
  CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&host_pinned), host_bytes));
  char* hp = host_pinned;
  auto take = [&](size_t b) {
    char* r = hp;
    hp += (b + 63) / 64 * 64;
    return r;
  };
  for (int k = 0; k < 2; ++k) {
    Inputs& h = host_sets[k];
    h.tokens = reinterpret_cast<int32_t*>(take(T * 4));
    h.positions = reinterpret_cast<int32_t*>(take(T * 4));
    h.token_seq = reinterpret_cast<int32_t*>(take(T * 4));
    h.n_real = reinterpret_cast<int32_t*>(take(4));
    h.block_tables = h.sliding_block_tables = nullptr;  // per step, in the send buffer (submit)
    h.lm_rows = reinterpret_cast<int32_t*>(take(S * 4));
    h.seq_params = reinterpret_cast<SampleSeqParams*>(take(S * sizeof(SampleSeqParams)));
    h.ids = reinterpret_cast<int32_t*>(take(ids_capacity * 4));
    h.counts = reinterpret_cast<int32_t*>(take(ids_capacity * 4));
    h.bias_ids = reinterpret_cast<int32_t*>(take(bias_capacity * 4));
    h.bias_values = reinterpret_cast<float*>(take(bias_capacity * 4));
    h.allowed = reinterpret_cast<uint32_t*>(take(S * mask_words * 4));
    h.handoff = reinterpret_cast<int32_t*>(take(S * 2 * 4));
    host_results_sets[k] = reinterpret_cast<SampleResultDev*>(take(S * sizeof(SampleResultDev)));
    host_tiles_sets[k] = reinterpret_cast<PrefillTile*>(take(2 * size_t(max_tiles) * sizeof(PrefillTile)));
    send_sets[k] = take(in_capacity);
    CUDA_CHECK(cudaEventCreateWithFlags(&done_events[k], cudaEventDisableTiming));
  }
  host_logits = reinterpret_cast<uint16_t*>(take(V * 2));
  MXS_CHECK(size_t(hp - host_pinned) <= host_bytes, "CudaRunner: pinned staging overflow");
  host = host_sets[0], host_results = host_results_sets[0], host_tiles = host_tiles_sets[0], send = send_sets[0];

  // KV pools: [layer][block (pool blocks + 1 scratch)][K|V][n_kv][block_size][64] bf16. With two groups the
  // sliding layers index their own, smaller pool (only the windows of the running sequences).
  const size_t block_bytes_layer = size_t(2) * c.num_kv_heads * opt.block_size * c.head_dim * 2;
  const int n_sliding = int(std::count(c.layer_sliding.begin(), c.layer_sliding.end(), true));
  if (n_sliding > 0 && c.sliding_window > 0 && opt.num_sliding_kv_blocks != 0)
    num_sliding_blocks = opt.num_sliding_kv_blocks > 0
                             ? opt.num_sliding_kv_blocks
                             : std::max(sliding_pool_blocks(c.sliding_window, opt.block_size, opt.max_seqs, opt.max_tokens),
                                        min_sliding_pool_blocks(c.sliding_window, opt.block_size));
  const int n_full_layers = num_sliding_blocks > 0 ? c.num_layers - n_sliding : c.num_layers;
  const size_t sliding_bytes = num_sliding_blocks > 0 ? block_bytes_layer * size_t(num_sliding_blocks + 1) * n_sliding : 0;
  const size_t block_bytes = block_bytes_layer * size_t(std::max(n_full_layers, 1));
  if (opt.num_kv_blocks > 0) {
    num_blocks = opt.num_kv_blocks;
  } else {
    size_t free_b = 0, total_b = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    const double budget = double(total_b) * opt.device_memory_utilization - double(total_b - free_b) -
                          double(512u << 20) - double(sliding_bytes);  // graphs, CUB, cuBLAS-free slack
    MXS_CHECK(budget > double(block_bytes) * 2,
              strfmt("CudaRunner: no room for the KV cache: %.2f GiB free of %.2f GiB after weights and workspaces "
                     "at --device-memory-utilization %.2f; raise it or lower --max-batch-size/--max-length",
                     free_b / 1073741824.0, total_b / 1073741824.0, opt.device_memory_utilization));
    num_blocks = int(std::min<double>(budget / double(block_bytes) - 1, double(1 << 30)));
  }
  size_t kv_total = 0;
  for (int l = 0; l < c.num_layers; ++l) {
    const bool own_pool = num_sliding_blocks > 0 && c.is_sliding(l);
    layer_kv_bytes.push_back(block_bytes_layer * size_t((own_pool ? num_sliding_blocks : num_blocks) + 1));
    kv_total += DeviceArena::aligned(layer_kv_bytes.back());
  }
  kv_arena = DeviceArena("kv_pool", kv_total);
  for (int l = 0; l < c.num_layers; ++l)
    kv_layers.push_back(kv_arena.alloc("layer" + std::to_string(l), layer_kv_bytes[size_t(l)]));
  if (num_sliding_blocks > 0)
    MXS_LOG_INFO("CudaRunner: %d sliding-window layers use their own KV pool of %d blocks", n_sliding, num_sliding_blocks);
  MXS_LOG_INFO("CudaRunner on %s: %s; %s; %s (%d blocks of %d tokens = %lld tokens)", device_name.c_str(),
               w.arena.summary().c_str(), ws_arena.summary().c_str(), kv_arena.summary().c_str(), num_blocks,
               opt.block_size, (long long)num_blocks * opt.block_size);

  events.resize(2 * kMaxTimedKernels);
  for (auto& e : events) CUDA_CHECK(cudaEventCreate(&e));
  for (auto& e : span_events) CUDA_CHECK(cudaEventCreate(&e));
}

// MXS_REPEAT_KERNEL=NAME[:N] (measurement only; results are wrong): launches kernel NAME N times (default 2)
// wherever it runs, so that `bench decode` shows its marginal cost inside the PDL chain of a graph replay:
// (step ms with the repeat - step ms without) / (N - 1) / layers. Only for kernels that may run twice
// (o_proj_residual, qkv_rope, attention_decode, moe_router_norm, moe_gemv_mxfp4_gate_up / _down, lm_head), not
// moe_router (its grouping counts would not match). Unset: one getenv per process, nothing per launch.
static int repeat_count_for(const char* name) {
  static const char* spec = std::getenv("MXS_REPEAT_KERNEL");
  if (!spec) return 1;
  const char* colon = std::strchr(spec, ':');
  const size_t len = colon ? size_t(colon - spec) : std::strlen(spec);
  if (std::strlen(name) != len || std::strncmp(spec, name, len) != 0) return 1;
  return colon ? std::max(1, std::atoi(colon + 1)) : 2;
}

template <typename F>
void CudaRunner::Impl::timed(const char* name, F&& launch) {
  for (int i = repeat_count_for(name); i > 1; --i) launch();
  if (!timing || events_used + 2 > int(events.size())) return launch();
  CUDA_CHECK(cudaEventRecord(events[size_t(events_used)], stream));
  launch();
  CUDA_CHECK(cudaEventRecord(events[size_t(events_used) + 1], stream));
  event_names.push_back(name);
  events_used += 2;
}

void CudaRunner::Impl::collect_times() {
  if (!timing) return;
  CUDA_CHECK(cudaStreamSynchronize(stream));
  for (int i = 0; i < events_used / 2; ++i) {
    float ms = 0.f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, events[size_t(2 * i)], events[size_t(2 * i + 1)]));
    times.ms[event_names[size_t(i)]] += ms;
  }
  times.steps += 1;
  events_used = 0;
  event_names.clear();
}

// The forward pass over the staged inputs: n_tokens rows, LM head on n_lm_rows rows (dev.lm_rows).
void CudaRunner::Impl::forward(int n_tokens, int n_lm_rows, int n_splits, int keys_per_split, const PrefillPlan& plan) {
  const ModelConfig& c = cfg();
  const int H = c.hidden_size;
  const TokenMeta meta_full{dev.positions, dev.token_seq, dev.block_tables, max_blocks_per_seq};
  const TokenMeta meta_sliding{dev.positions, dev.token_seq,
                               num_sliding_blocks > 0 ? dev.sliding_block_tables : dev.block_tables, max_blocks_per_seq};

  // At 1-2 tokens the q/k/v GEMV runs the previous layer's MoE combine and this layer's input norm in its
  // prologue (qkv_rope's moe_yw): no moe_combine launch between layers. The residual then alternates between
  // x and x_alt (the GEMV's CTAs read x_mid while CTA 0 writes the combined row), so `x` below is the
  // current buffer; the last layer's combine (which feeds the LM head's norm) stays its own kernel.
  // Only at 1-2 tokens: at 4 the serial combine in CTA 0 costs more than the launch it saves (H200, batch 4:
  // 1,003 unfused vs 937 tok/s fused; batch 1: 479 vs 511).
  static const bool no_fused_combine = std::getenv("MXS_NO_FUSED_COMBINE") != nullptr;  // A/B and debugging
  const bool fuse_combine = n_tokens <= 2 && H == 2880 && !no_fused_combine;
  // The first layer's q/k/v GEMV gathers the embeddings and runs the input norm in the same prologue (no
  // embed_rmsnorm launch: H100, batch 1, that launch and its dependent loads held the first q/k/v ~12 us).
  if (!fuse_combine)
    timed("embed_rmsnorm", [&] {
      RmsNormParams p;
      p.embed = w.embed, p.tokens = dev.tokens, p.x_out = this->x, p.weight = w.layers[0].input_norm, p.out = xn;
      p.n_rows = n_tokens, p.dim = H, p.eps = c.rms_norm_eps;
      embed_rmsnorm(p, stream);
    });
  static const bool small_step_moe = std::getenv("MXS_SMALL_STEP_MOE") != nullptr;
  const bool rows_moe = n_tokens >= kRowsMoeMinTokens && !small_step_moe;
  // One-token steps (batch-1 decode): the post-attention norm and the router in one launch (moe_router_norm)
  // instead of o_proj's last-CTA norm + moe_router. MXS_NO_ROUTER_NORM=1: the latter (A/B).
  static const bool no_router_norm = std::getenv("MXS_NO_ROUTER_NORM") != nullptr;
  const bool router_norm = n_tokens == 1 && c.num_experts <= kRouterNormMaxExperts && !no_router_norm;
  void* x = this->x;
  void* x_next = x_alt;
  for (int l = 0; l < c.num_layers; ++l) {
    const DeviceLayerWeights& lw = w.layers[size_t(l)];
    const KvLayerView kv{kv_layers[size_t(l)], opt.block_size, c.num_kv_heads};
    const TokenMeta& meta = c.is_sliding(l) ? meta_sliding : meta_full;
    const bool dense = n_tokens >= kDenseGemmMinRows;
    QkvRopeParams qp;
    qp.xn = xn, qp.w_qkv = lw.w_qkv, qp.w_qkv_bf12 = lw.w_qkv_bf12, qp.b_qkv = lw.b_qkv, qp.inv_freq = w.inv_freq, qp.mscale = w.mscale;
    qp.q_out = q, qp.kv = kv, qp.meta = meta;
    qp.n_tokens = n_tokens, qp.hidden = H, qp.n_heads = c.num_heads, qp.n_kv_heads = c.num_kv_heads;
    if (fuse_combine && l > 0) {  // layer l - 1's routing and expert outputs are still in topk_idx / yw
      qp.moe_x_mid = x, qp.moe_yw = yw, qp.moe_topk_idx = topk_idx, qp.moe_top_k = c.experts_per_token;
      qp.norm_w = lw.input_norm, qp.x_out = x_next, qp.eps = c.rms_norm_eps;
      std::swap(x, x_next);
    } else if (fuse_combine) {  // layer 0: x = the token embeddings
      qp.embed = w.embed, qp.embed_tokens = dev.tokens;
      qp.norm_w = lw.input_norm, qp.x_out = x, qp.eps = c.rms_norm_eps;
    }
    if (dense) {
      const int qkv_rows = (c.num_heads + 2 * c.num_kv_heads) * c.head_dim;
      int splits = 1;
      if (skinny_fits(n_tokens, H, qkv_rows))
        timed("qkv_gemm", [&] { splits = skinny_gemm_bf16_f32(xn, lw.w_qkv, proj, n_tokens, H, qkv_rows, stream); });
      else
        timed("qkv_gemm", [&] { gemm_bf16_f32(cublas, xn, lw.w_qkv, proj, n_tokens, H, qkv_rows); });
      timed("qkv_rope_epilogue", [&] { qkv_rope_from_f32(qp, proj, stream, splits); });
    } else {
      timed("qkv_rope", [&] { qkv_rope(qp, stream); });
    }
    if (plan.active) {
      const bool sliding = c.is_sliding(l);
      timed("attention_prefill", [&] {
        AttentionPrefillParams p;
        p.q = q, p.kv = kv, p.meta = meta, p.sinks = lw.sinks, p.out = attn;
        p.tiles = sliding ? dev_tiles + plan.slide_tiles_offset : dev_tiles;
        p.n_tiles = sliding ? plan.n_slide_tiles : plan.n_full_tiles;
        p.tile_q = sliding ? kPrefillTileQ16 : plan.tile_q_full;
        p.n_tokens = n_tokens, p.n_heads = c.num_heads, p.n_kv_heads = c.num_kv_heads;
        p.window = sliding ? c.sliding_window : 0;
        attention_prefill(p, stream);
      });
    }
    if (!plan.active || plan.n_dec > 0) timed("attention_decode", [&] {
      AttentionDecodeParams p;
      p.q = q, p.kv = kv, p.meta = meta, p.sinks = lw.sinks, p.part_o = part_o, p.part_ml = part_ml, p.out = attn;
      p.n_tokens = plan.active ? plan.n_dec : n_tokens, p.n_heads = c.num_heads, p.n_kv_heads = c.num_kv_heads;
      p.counters = attn_counters;
      static const bool global_merge = std::getenv("MXS_ATTN_GLOBAL_MERGE") != nullptr;  // A/B and debugging
      p.cluster_merge = !global_merge;
      if (exact_attention && n_splits == 1 && keys_per_split <= kExactAttentionMaxKeys) {  // the exact path
        p.window = c.is_sliding(l) ? c.sliding_window : 0;
        p.n_splits = 1, p.keys_per_split = keys_per_split, p.exact = true;
        attention_decode(p, stream);
        return;
      }
      // Tensor cores (attention_decode_mma): sliding layers split the window by the launch's token count alone
      // (graph-safe; one split if the partials would not fit); full layers take the caller's split.
      if (c.is_sliding(l)) {
        const int w = c.sliding_window;
        int kps = attention_decode_mma_keys_per_split(p.n_tokens, c.num_kv_heads, w, num_sms);
        if (size_t(p.n_tokens) * c.num_heads * size_t((w + kps - 1) / kps) > partial_rows) kps = (w + 15) / 16 * 16;
        p.window = w, p.keys_per_split = kps, p.n_splits = (w + kps - 1) / kps;
      } else {
        p.window = 0, p.n_splits = n_splits, p.keys_per_split = keys_per_split;
      }
      attention_decode_mma(p, stream);
    });
    bool fold_norm = false;  // the post-attention norm runs in moe_router's CTAs
    if (dense) {
      int splits = 1;
      if (skinny_fits(n_tokens, c.q_dim(), H))
        timed("o_proj_gemm", [&] { splits = skinny_gemm_bf16_f32(attn, lw.w_o, proj, n_tokens, c.q_dim(), H, stream); });
      else
        timed("o_proj_gemm", [&] { gemm_bf16_f32(cublas, attn, lw.w_o, proj, n_tokens, c.q_dim(), H); });
      timed("residual_rmsnorm", [&] {
        ResidualNormParams p;
        p.acc = proj, p.bias = lw.b_o, p.x = x, p.norm_weight = lw.post_norm, p.xn = xn;
        p.n_rows = n_tokens, p.dim = H, p.eps = c.rms_norm_eps, p.acc_splits = splits;
        residual_rmsnorm_from_f32(p, stream);
      });
    } else {
      // The post-attention norm runs in the router's launch (moe_router_norm at one token, moe_router's CTAs at
      // 2-4), else as its own kernel. The last o_proj CTA can run it (arrival counter) for up to MXS_FUSED_NORM_MAX
      // tokens (default 1: only when moe_router_norm is switched off): at 2-4 tokens that tail cost more than the
      // launch (H100, ms per step, 3 interleaved runs, fused vs own kernel: batch 2 3.03-3.06 vs 2.97-2.99, 3
      // 3.50-3.53 vs 3.42-3.45, 4 3.87-3.91 vs 3.76-3.79).
      static const int fused_norm_max = [] {
        const char* v = std::getenv("MXS_FUSED_NORM_MAX");  // A/B and debugging
        return v ? std::min(4, std::atoi(v)) : 1;
      }();
      // At 2-4 tokens every moe_router CTA normalizes its token's row itself instead of a launch before it (H200,
      // 20b graph ms per step, session 26: batch 2 / 3 / 4 2.030 / 2.359 / 2.630 vs 2.114 / 2.444 / 2.722).
      // MXS_NO_ROUTER_NORM_FOLD=1: the rmsnorm launch (A/B).
      static const bool no_fold = std::getenv("MXS_NO_ROUTER_NORM_FOLD") != nullptr;
      const bool fuse_norm = n_tokens <= fused_norm_max && !router_norm;
      fold_norm = !router_norm && !fuse_norm && !no_fold;
      const bool norm_kernel = !router_norm && !fuse_norm && !fold_norm;
      timed("o_proj_residual", [&] {
        GemvBf16Params p;
        p.a = attn, p.w = lw.w_o, p.w_bf12 = lw.w_o_bf12, p.bias = lw.b_o, p.y = x, p.n_rows = n_tokens, p.k = c.q_dim(), p.n_out = H;
        if (fuse_norm) p.norm_weight = lw.post_norm, p.norm_out = xn, p.done_counter = oproj_counter;
        p.eps = c.rms_norm_eps;
        gemv_bf16_residual(p, stream);
      });
      if (norm_kernel)
        timed("rmsnorm", [&] {
          RmsNormParams p;
          p.x = x, p.weight = lw.post_norm, p.out = xn, p.n_rows = n_tokens, p.dim = H, p.eps = c.rms_norm_eps;
          rmsnorm(p, stream);
        });
    }
    MoeRouterParams rp;
    rp.xn = xn, rp.w = lw.router_w, rp.b = lw.router_b, rp.topk_idx = topk_idx, rp.topk_w = topk_w;
    rp.logits = router_logits, rp.done_counter = router_counter;
    rp.n_tokens = n_tokens, rp.hidden = H, rp.n_experts = c.num_experts, rp.top_k = c.experts_per_token;
    if (rows_moe) {  // proj is free here: residual_rmsnorm consumed the o_proj output
      timed("router_gemm", [&] { gemm_bf16_f32(cublas, xn, lw.router_w, proj, n_tokens, H, c.num_experts); });
      timed("router_topk_place", [&] { moe_router_from_logits(rp, proj, route, route_work, stream); });
    } else if (router_norm) {
      rp.x = x, rp.norm_w = lw.post_norm, rp.xn_out = xn, rp.eps = c.rms_norm_eps;
      timed("moe_router_norm", [&] { moe_router_norm(rp, route, stream); });
    } else {
      rp.n_real = dev.n_real;  // a graph's padding rows take real tokens' experts (no expert read for them alone)
      if (fold_norm) rp.x = x, rp.norm_w = lw.post_norm, rp.xn_out = xn, rp.eps = c.rms_norm_eps;
      timed("moe_router", [&] { moe_router(rp, route, stream); });
    }
    MoeGemvParams mp;
    mp.w = lw.experts, mp.index = route, mp.topk_idx = topk_idx, mp.topk_w = topk_w, mp.xn = xn;
    mp.act = act, mp.yw = yw, mp.x = x, mp.xn_out = xn;
    mp.norm_partials = norm_partials, mp.norm_counters = norm_counters;
    mp.next_norm = l + 1 < c.num_layers ? w.layers[size_t(l) + 1].input_norm : w.final_norm;
    mp.n_tokens = n_tokens, mp.hidden = H, mp.intermediate = c.intermediate_size, mp.n_experts = c.num_experts;
    mp.top_k = c.experts_per_token, mp.swiglu_alpha = c.swiglu_alpha, mp.swiglu_limit = c.swiglu_limit;
    static const bool global_combine = std::getenv("MXS_COMBINE_GLOBAL_NORM") != nullptr;  // A/B and debugging
    mp.cluster_combine = !global_combine;
    mp.eps = c.rms_norm_eps;
    mp.partials = moe_partials, mp.tile_counters = moe_tile_counters;
    const int n_pairs = n_tokens * c.experts_per_token;
    if (n_pairs >= gemm_min_pairs) {
      MoeGemmParams gp;
      gp.w = lw.experts, gp.index = route, gp.topk_w = topk_w, gp.xn = xn, gp.act = act, gp.yw = yw;
      gp.n_pairs = n_pairs, gp.hidden = H, gp.intermediate = c.intermediate_size, gp.n_experts = c.num_experts;
      gp.top_k = c.experts_per_token, gp.swiglu_alpha = c.swiglu_alpha, gp.swiglu_limit = c.swiglu_limit;
      gp.sched = gemm_sched;  // gate_up and down run one after the other (plain launches): one workspace
      timed("moe_gemm_mxfp4_gate_up", [&] { moe_gemm_mxfp4_gate_up(gp, stream); });
      timed("moe_gemm_mxfp4_down", [&] { moe_gemm_mxfp4_down(gp, stream); });
    } else {
      timed("moe_gemv_mxfp4_gate_up", [&] { moe_gemv_mxfp4_gate_up(mp, stream); });
      timed("moe_gemv_mxfp4_down", [&] { moe_gemv_mxfp4_down(mp, stream); });
    }
    if (!fuse_combine || l + 1 == c.num_layers) {
      if (rows_moe)
        timed("moe_combine_rows", [&] { moe_combine_rows(mp, stream); });
      else
        timed("moe_combine", [&] { moe_combine(mp, stream); });
    }
  }
  if (n_lm_rows == 0) return;  // a step of prefill chunks that sample nothing
  // MXS_LM_DENSE_MIN_ROWS=N (A/B): the rows from which the LM head runs as a GEMM (default kLmHeadGemmMinRows).
  static const int lm_dense_min = [] {
    const char* v = std::getenv("MXS_LM_DENSE_MIN_ROWS");
    return v ? std::max(1, std::atoi(v)) : kLmHeadGemmMinRows;
  }();
  // Greedy steps of 1-8 rows: the screen (0.58 GB) instead of the bf12 GEMV (0.87 GB) or the GEMM (1.16 GB).
  if (lm_screen_step && n_lm_rows <= kLmScreenMaxRows) {
    timed("lm_head_screen", [&] {
      LmScreenParams p;
      p.a = xn, p.src_rows = dev.lm_rows, p.screen = w.lm_head_screen, p.w = w.lm_head, p.w_bf12 = w.lm_head_bf12;
      p.y = logits, p.row_argmax = lm_argmax;  // (zero here: sampling zeroes the keys it reads)
      p.upper = screen_upper, p.lower_max = screen_lower, p.done_counter = screen_counter;
      p.n_rows = n_lm_rows, p.k = H, p.n_out = c.vocab_size;
      ::mxs::cuda::lm_head_screen(p, stream);
    });
    return;
  }
  if (n_lm_rows >= lm_dense_min) {
    timed("lm_head_gemm", [&] {
      gather_rows_bf16(xn, dev.lm_rows, lm_in, n_lm_rows, H, stream);
      gemm_bf16_bf16(cublas, lm_in, w.lm_head, logits, n_lm_rows, H, c.vocab_size);
    });
    timed("lm_argmax", [&] { row_argmax_bf16(logits, lm_argmax, n_lm_rows, c.vocab_size, stream); });
    return;
  }
  timed("lm_head", [&] {
    GemvBf16Params p;
    p.a = xn, p.src_rows = dev.lm_rows, p.w = w.lm_head, p.y = logits, p.n_rows = n_lm_rows, p.k = H;
    p.w_bf12 = w.lm_head_bf12;  // read instead of w when packed (CudaRunnerOptions::bf12_dense)
    p.n_out = c.vocab_size, p.row_argmax = lm_argmax;  // zero here: sampling zeroes the keys it reads
    gemv_bf16_lm_head(p, stream);
  });
}

// The block tables of n_seq_rows rows at the start of the send buffer (submit stages them there), then the
// graph-read arrays, then the rest (see Inputs). Returns the bytes of the tables.
static size_t tables_bytes(int n_seq_rows, int max_blocks_per_seq, bool sliding) {
  const size_t one = (size_t(n_seq_rows) * max_blocks_per_seq * 4 + 63) / 64 * 64;
  return sliding ? 2 * one : one;
}

// Packs the step's staged inputs after the tables in the current set's send buffer, points `dev` at their places
// in dev_in and queues the one copy (see Inputs).
void CudaRunner::Impl::pack_inputs(int n_tok, int n_seq_rows, int n_lm_rows, int n_lm, int n_handoff,
                                   size_t n_bias, size_t n_mask_words) {
  const size_t table = (size_t(n_seq_rows) * max_blocks_per_seq * 4 + 63) / 64 * 64;
  dev.block_tables = reinterpret_cast<int32_t*>(dev_in);
  dev.sliding_block_tables = num_sliding_blocks > 0 ? reinterpret_cast<int32_t*>(dev_in + table) : dev.block_tables;
  size_t off = tables_bytes(n_seq_rows, max_blocks_per_seq, num_sliding_blocks > 0);
  auto add = [&](auto* src, size_t n) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(src)>>;
    T* d = reinterpret_cast<T*>(dev_in + off);
    MXS_CHECK(off + n * sizeof(T) <= in_capacity, "CudaRunner: packed step inputs overflow");
    if (n) std::memcpy(send + off, src, n * sizeof(T));
    off += (n * sizeof(T) + 63) / 64 * 64;
    return d;
  };
  dev.tokens = add(host.tokens, size_t(n_tok));
  dev.positions = add(host.positions, size_t(n_tok));
  dev.token_seq = add(host.token_seq, size_t(n_tok));
  dev.n_real = add(host.n_real, 1);  // (its offset, like the arrays above, depends on n_tok only)
  dev.lm_rows = add(host.lm_rows, size_t(n_lm_rows));
  dev.seq_params = add(host.seq_params, size_t(n_lm));
  dev.handoff = add(host.handoff, size_t(n_handoff) * 2);
  dev.bias_ids = add(host.bias_ids, n_bias);
  dev.bias_values = add(host.bias_values, n_bias);
  dev.allowed = add(host.allowed, n_mask_words);
  CUDA_CHECK(cudaMemcpyAsync(dev_in, send, off, cudaMemcpyHostToDevice, stream));
}

// Stages the sampling parameters of the LM-head rows (host.seq_params; rows without `sample` run greedy, their result
// unused) and their penalty id lists (host.ids / host.counts, extended by this step's new tokens only), and says which
// sampling kernels the step needs. host.lm_rows must be staged (a pending token's place in the step's input).
CudaRunner::Impl::SamplingStage CudaRunner::Impl::stage_sampling(const StepBatch& batch,
                                                                 const std::vector<int>& lm_seq) {
  const ModelConfig& c = cfg();
  SamplingStage st;
  const int n_lm = int(lm_seq.size());
  for (int r = 0; r < n_lm; ++r) {
    const SequenceStep& q = batch.seqs[size_t(lm_seq[size_t(r)])];
    SampleSeqParams sp{};
    if (q.sample) {
      const SamplingParams& a = *q.sampling;
      sp.temperature = a.temperature, sp.top_p = a.top_p, sp.min_p = a.min_p, sp.top_k = a.top_k;
      sp.frequency_penalty = a.frequency_penalty, sp.presence_penalty = a.presence_penalty;
      sp.repetition_penalty = a.repetition_penalty, sp.seed = a.seed;
      sp.step = q.output_tokens.size() + (q.input_from_last_sample ? 1 : 0);  // + the token not on the host
      sp.want_logprob = a.logprobs, sp.top_logprobs = a.top_logprobs;
      if (!a.logit_bias.empty() || a.min_tokens > 0) {
        const std::vector<LogitBias> bias = step_logit_bias(a, sp.step);
        MXS_CHECK(st.n_bias + bias.size() <= bias_capacity,
                  "CudaRunner: logit bias entries exceed the staging capacity");
        sp.bias_offset = int(st.n_bias), sp.n_bias = int(bias.size());
        for (const LogitBias& e : bias) {
          host.bias_ids[st.n_bias] = e.token, host.bias_values[st.n_bias] = e.bias;
          ++st.n_bias;
        }
      }
      if (!q.allowed_tokens.empty() || q.allowed_tokens_deferred) {  // (validate_step checked its size)
        sp.mask_offset = int(st.n_mask_words);
        if (q.allowed_tokens_deferred)  // (its slot is filled by supply_masks)
          st.deferred_masks.emplace_back(lm_seq[size_t(r)], st.n_mask_words);
        else
          std::copy(q.allowed_tokens.begin(), q.allowed_tokens.end(), host.allowed + st.n_mask_words);
        st.n_mask_words += mask_words;
      }
      const bool want_rep = a.repetition_penalty != 1.0f;
      const bool want_out = a.frequency_penalty != 0.0f || a.presence_penalty != 0.0f;
      if (want_rep || want_out) {  // the sequence's lists, extended by this step's new tokens only, staged in bulk
        const PenaltyLists::Lists lists = penalty_lists.update(q.seq_id, q.prompt_tokens, q.output_tokens, want_rep,
                                                               want_out, int(c.vocab_size));
        size_t& n_ids = st.n_ids;
        MXS_CHECK(n_ids + lists.rep_ids.size() + lists.out_ids.size() <= ids_capacity,
                  "CudaRunner: penalty token lists exceed the staging capacity");
        sp.rep_offset = int(n_ids), sp.n_rep = int(lists.rep_ids.size());
        std::copy(lists.rep_ids.begin(), lists.rep_ids.end(), host.ids + n_ids);  // (its counts slots: unread)
        n_ids += lists.rep_ids.size();
        sp.out_offset = int(n_ids), sp.n_out = int(lists.out_ids.size());
        std::copy(lists.out_ids.begin(), lists.out_ids.end(), host.ids + n_ids);
        std::copy(lists.out_counts.begin(), lists.out_counts.end(), host.counts + n_ids);
        n_ids += lists.out_ids.size();
        // async scheduling: the last output token is this step's input, on the device only (token_handoff.h)
        if (q.input_from_last_sample) sp.pending_index = host.lm_rows[r];
      }
    }
    host.seq_params[r] = sp;
    const bool plain_greedy = sampling_is_plain_greedy(sp);
    st.spread_wanted |= !plain_greedy;
    st.spread_penalties |= sampling_edits_logits(sp);
    st.spread_selects |= (sampling_has_top_k(sp, int(c.vocab_size)) ? 1 : 0) | (sampling_has_top_p(sp) ? 2 : 0) |
                         (sp.top_logprobs > 0 ? 4 : 0);
    // The screened LM head writes only its candidates' logits: every row must take its token from the argmax key
    // (the kernels' test on the same fields) or not be sampled at all, and none may return its logits.
    st.screen_ok &= !q.return_logits && (!q.sample || plain_greedy);
  }
  penalty_lists.end_step();  // (sequences without a penalty row in this step are forgotten)
  return st;
}

// Validates and stages a batch into the next pinned set, queues its copies, the token handoff, the forward pass
// (or graph replay), sampling and the copy of the results on the stream, records the set's event and returns.
// With kernel timing on (bench breakdowns) the step completes here, so that its device span can be read.
void CudaRunner::Impl::submit(const StepBatch& batch) {
  const Stopwatch step_clock;
  const ModelConfig& c = cfg();
  MXS_CHECK(batch.positions.size() == batch.tokens.size(),
            strfmt("StepBatch: %zu positions for %zu tokens", batch.positions.size(), batch.tokens.size()));
  MXS_CHECK(pending.size() < 2, "CudaRunner::submit: two steps are already outstanding");
  MXS_CHECK(!deferred.active, "CudaRunner::submit: the step before waits for its masks (supply_masks)");
  std::vector<int> deferred_seqs;
  for (size_t i = 0; i < batch.seqs.size(); ++i)
    if (batch.seqs[i].allowed_tokens_deferred) deferred_seqs.push_back(int(i));
  MXS_CHECK(deferred_seqs.empty() || !timing, "CudaRunner: deferred masks with kernel timing on");
  const int set = int(num_submits % 2);
  host = host_sets[set], host_results = host_results_sets[set], host_tiles = host_tiles_sets[set];
  send = send_sets[set];
  // The previous step's sampled rows: sources of this step's input_from_last_sample tokens (cleared first, so
  // that a submit that throws leaves no stale sources).
  std::unordered_map<uint64_t, int> prev_rows;
  prev_rows.swap(last_rows);

  std::vector<std::string> errors(batch.seqs.size());
  const std::vector<int> valid = validate_step(batch, prev_rows, &errors);
  const StagedRows r = stage_rows(batch, valid, prev_rows);
  const int n_lm = int(r.lm_seq.size());
  const SamplingStage st = stage_sampling(batch, r.lm_seq);
  lm_screen_step = st.screen_ok && n_lm > 0 && w.lm_head_screen.q != nullptr;

  if (r.n_tok > 0) {
    if (timing) CUDA_CHECK(cudaEventRecord(span_events[0], stream));
    pack_inputs(r.n_tok, r.use_graph ? r.n_rows : r.n_valid, r.use_graph ? r.n_rows : n_lm, n_lm, r.n_handoff,
                st.n_bias, st.n_mask_words);
    h2d(dev.ids, host.ids, st.n_ids * 4);  // (penalties only)
    h2d(dev.counts, host.counts, st.n_ids * 4);
    // Async scheduling: the previous step's samples (still in samp.results: this step's sampling comes later on
    // the stream) become the input tokens of its continuing sequences.
    if (r.n_handoff > 0) copy_sampled_tokens(dev.tokens, samp.results, dev.handoff, r.n_handoff, c.vocab_size, stream);
    if (r.use_graph) {
      launch_graph(r.n_rows, r.max_ctx);
    } else {
      last_graph = nullptr;
      launch_eager(batch, valid, r, n_lm);
    }
    if (!deferred_seqs.empty()) {  // sampling, the results copy and `done` come with the masks (supply_masks)
      deferred.launched = true;
      deferred.st = st, deferred.n_lm = n_lm, deferred.n_argmax_rows = r.use_graph ? r.n_rows : n_lm;
    } else {
      // done: the forward pass and sampling (stream) and, after them, the results copy (copy_stream if side_copy)
      const bool side_copy = n_lm > 0 && launch_sampling(st, n_lm, r.use_graph ? r.n_rows : n_lm);
      CUDA_CHECK(cudaEventRecord(done_events[set], side_copy ? copy_stream : stream));
    }
    const double enqueue_ms = step_clock.ms();
    if (timing) CUDA_CHECK(cudaEventRecord(span_events[1], stream));
    if (timing) {
      CUDA_CHECK(cudaEventSynchronize(span_events[1]));
      float span = 0.f;
      CUDA_CHECK(cudaEventElapsedTime(&span, span_events[0], span_events[1]));
      times.gpu_span_ms += span, times.host_enqueue_ms += enqueue_ms;
    }
  }
  if (timing) times.step_wall_ms += step_clock.ms();

  Pending p = pending_of(batch, set, r.n_tok > 0, r.lm_seq, &errors);
  ++num_submits;
  if (!deferred_seqs.empty()) {
    MXS_CHECK(!p.ready, "CudaRunner: deferred masks on a step that returns logits");
    deferred.active = true, deferred.set = set, deferred.batch_index = std::move(deferred_seqs);
  }
  if (p.ready) {  // the logits buffer is overwritten by the next step: read it now
    if (p.launched) CUDA_CHECK(cudaEventSynchronize(done_events[set]));
    collect_times();
    build_output(p, &p.out);
  }
  pending.push_back(std::move(p));
}

// Malformed offsets are caller bugs (throw); anything else fails only its sequence (its error in `errors`), which
// is then left out of the step. Returns the batch indices of the sequences the step runs.
std::vector<int> CudaRunner::Impl::validate_step(const StepBatch& batch,
                                                 const std::unordered_map<uint64_t, int>& prev_rows,
                                                 std::vector<std::string>* errors) const {
  const ModelConfig& c = cfg();
  const int n_batch = int(batch.tokens.size());
  std::vector<int> valid;
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const SequenceStep& q = batch.seqs[s];
    MXS_CHECK(q.num_tokens >= 1 && q.token_offset >= 0 && q.token_offset + q.num_tokens <= n_batch,
              strfmt("StepBatch: sequence %llu has tokens [%d, %d) outside the batch of %d tokens",
                     (unsigned long long)q.seq_id, q.token_offset, q.token_offset + q.num_tokens, n_batch));
    std::string& err = (*errors)[s];
    err = check_sequence_step(batch, q, c.vocab_size, opt.max_model_len, opt.block_size, num_blocks);
    if (err.empty()) err = check_sliding_table(q, opt.block_size, num_sliding_blocks, c.sliding_window);
    if (err.empty() && q.input_from_last_sample) {
      if (q.num_tokens != 1 || q.return_logits)
        err = "input_from_last_sample needs exactly one new token and no return_logits";
      else if (!prev_rows.count(q.seq_id))
        err = "input_from_last_sample: the previous step has no sample for this sequence";
    }
    // (SamplingParams are validated by the engine when the request is created; the ids the kernels index with are
    // checked again here, so that a direct caller's mistake fails its sequence and writes nothing out of bounds.)
    if (err.empty() && q.sample && q.sampling) {
      const SamplingParams& a = *q.sampling;
      if (a.logit_bias.size() > size_t(SamplingParams::kMaxLogitBias) ||
          a.min_tokens_ids.size() > size_t(SamplingParams::kMaxMinTokensIds))
        err = "too many logit_bias entries or min_tokens ids (SamplingParams limits)";
      for (const LogitBias& e : a.logit_bias)
        if (err.empty() && (e.token < 0 || e.token >= c.vocab_size))
          err = strfmt("logit_bias: token %d is outside the vocabulary [0, %d)", e.token, c.vocab_size);
      for (int32_t id : a.min_tokens_ids)
        if (err.empty() && (id < 0 || id >= c.vocab_size))
          err = strfmt("min_tokens: token %d is outside the vocabulary [0, %d)", id, c.vocab_size);
      if (err.empty() && !q.allowed_tokens.empty() && q.allowed_tokens.size() != (size_t(c.vocab_size) + 31) / 32)
        err = strfmt("allowed_tokens has %zu words for a vocabulary of %d", q.allowed_tokens.size(), c.vocab_size);
    }
    if (err.empty()) valid.push_back(int(s));
  }
  int total_new = 0;
  for (int s : valid) total_new += batch.seqs[size_t(s)].num_tokens;
  MXS_CHECK(total_new <= opt.max_tokens, strfmt("StepBatch: %d new tokens exceed the runner's max_tokens = %d",
                                                total_new, opt.max_tokens));
  MXS_CHECK(int(valid.size()) <= opt.max_seqs,
            strfmt("StepBatch: %zu sequences exceed the runner's max_seqs = %d", valid.size(), opt.max_seqs));
  return valid;
}

// The valid sequences' tokens compacted into `host` (tokens, positions, token -> row, block tables, handoff pairs,
// LM-head rows); a decode step of <= kMaxGraphBatch sequences is padded to its graph bucket.
CudaRunner::Impl::StagedRows CudaRunner::Impl::stage_rows(const StepBatch& batch, const std::vector<int>& valid,
                                                          const std::unordered_map<uint64_t, int>& prev_rows) {
  const ModelConfig& c = cfg();
  StagedRows r;
  bool pure_decode = true;
  for (int s : valid) {
    const SequenceStep& q = batch.seqs[size_t(s)];
    pure_decode &= q.num_tokens == 1;
    r.max_ctx = std::max(r.max_ctx, q.context_len);
  }
  r.n_valid = int(valid.size());
  const int n_valid = r.n_valid;
  // A graph bucket pads to graph_batch_bucket(n): its rows must fit the [max_seqs] / [max_tokens] buffers.
  r.use_graph = opt.use_graphs && !timing && pure_decode && n_valid > 0 && n_valid <= kMaxGraphBatch &&
                graph_batch_bucket(n_valid) <= std::min(opt.max_seqs, opt.max_tokens);
  r.n_rows = r.use_graph ? graph_batch_bucket(n_valid) : 0;
  const bool use_graph = r.use_graph;
  const int n_rows = r.n_rows;
  const int scratch_block = num_blocks;
  int& n_tok = r.n_tok;
  int& n_handoff = r.n_handoff;  // input_from_last_sample rows: (token index, previous results row) pairs
  std::vector<int>& lm_seq = r.lm_seq;
  // The block tables go straight to their packed place (pack_inputs).
  host.block_tables = reinterpret_cast<int32_t*>(send);
  host.sliding_block_tables =
      reinterpret_cast<int32_t*>(send + tables_bytes(use_graph ? n_rows : n_valid, max_blocks_per_seq, false));
  for (int vi = 0; vi < (use_graph ? n_rows : n_valid); ++vi) {
    int32_t* table = host.block_tables + size_t(vi) * max_blocks_per_seq;
    int32_t* sliding_table = host.sliding_block_tables + size_t(vi) * max_blocks_per_seq;
    if (vi >= n_valid) {  // padding row of a graph bucket: one token at position 0 in the scratch block
      // Its token: where the step's MoE runs the grouped GEMM, a different one per row, so that the padding
      // rows' pairs spread over the experts like real tokens' instead of all landing on the same four (which
      // then take extra token tiles: H100, batch 160 in the 192 bucket, see docs/PERF.md session 10); on the
      // GEMV path token 0 for all, and moe_router routes each as one of the step's real tokens
      // (MoeRouterParams::n_real): no expert is read for padding alone (20b bucket 12 at 9 sequences: ~1.3 more of
      // 32 experts otherwise).
      const bool moe_gemm = n_rows * c.experts_per_token >= gemm_min_pairs;
      host.tokens[n_tok] = moe_gemm ? vi % c.vocab_size : 0;
      host.positions[n_tok] = 0, host.token_seq[n_tok] = vi;
      table[0] = scratch_block;
      sliding_table[0] = num_sliding_blocks;
      ++n_tok;
      continue;
    }
    const SequenceStep& q = batch.seqs[size_t(valid[size_t(vi)])];
    const int n_blk = (q.context_len + opt.block_size - 1) / opt.block_size;
    std::memcpy(table, q.block_table.data(), size_t(n_blk) * 4);
    if (num_sliding_blocks > 0) {  // released blocks below the window -> the sliding scratch block (never read
      for (int b = 0; b < n_blk; ++b) {  // by decode; a prefill tile may load and mask them)
        const int32_t blk = q.sliding_block_table[size_t(b)];
        sliding_table[b] = blk == kNoBlock ? num_sliding_blocks : blk;
      }
    }
    if (q.input_from_last_sample) {  // the token is on the device: copied there before the forward pass
      host.handoff[2 * n_handoff] = n_tok;
      host.handoff[2 * n_handoff + 1] = prev_rows.at(q.seq_id);
      ++n_handoff;
    }
    for (int i = 0; i < q.num_tokens; ++i) {
      host.tokens[n_tok] = q.input_from_last_sample ? 0 : batch.tokens[size_t(q.token_offset + i)];
      host.positions[n_tok] = batch.positions[size_t(q.token_offset + i)];
      host.token_seq[n_tok] = vi;
      ++n_tok;
    }
    if (use_graph) {
      host.lm_rows[vi] = vi;
      lm_seq.push_back(valid[size_t(vi)]);
    } else if (q.sample || q.return_logits) {
      host.lm_rows[lm_seq.size()] = n_tok - 1;
      lm_seq.push_back(valid[size_t(vi)]);
    }
  }
  if (use_graph)
    for (int vi = n_valid; vi < n_rows; ++vi) host.lm_rows[vi] = vi;
  host.n_real[0] = n_tok - (use_graph ? n_rows - n_valid : 0);
  return r;
}

// A decode step of n_rows (its graph bucket) sequences: replays the graph of (bucket, LM-head kind, attention split),
// capturing it on first use over the fixed input buffers.
void CudaRunner::Impl::launch_graph(int n_rows, int max_ctx) {
  const ModelConfig& c = cfg();
  // With exact_attention, contexts <= kExactAttentionMaxKeys: the exact attention path (key (bucket, 0)); else
  // split-K with the split count rounded up to a power of two so that few graphs cover all lengths.
  const bool exact = exact_attention && max_ctx <= kExactAttentionMaxKeys;
  const int kps = attention_decode_mma_keys_per_split(n_rows, c.num_kv_heads, max_ctx, num_sms);
  const int n_splits = exact ? 1 : next_pow2((max_ctx + kps - 1) / kps);
  // kps and n_splits are powers of two (kps <= 4096, n_splits < 2^16): one graph per (bucket, kps, splits).
  // (+ whether its LM head is the greedy screen: a different graph)
  const auto key = std::make_pair(n_rows | (lm_screen_step ? 1 << 16 : 0), exact ? 0 : (kps << 16) | n_splits);
  auto it = graphs.find(key);
  if (it == graphs.end()) {
    const auto t_capture = std::chrono::steady_clock::now();
    cudaGraph_t graph;
    CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    try {
      forward(n_rows, n_rows, n_splits, exact ? kExactAttentionMaxKeys : kps, PrefillPlan());
    } catch (...) {
      cudaStreamEndCapture(stream, &graph);
      throw;
    }
    CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    cudaGraphExec_t exec;
    CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    cudaGraphDestroy(graph);
    it = graphs.emplace(key, exec).first;
    MXS_LOG_DEBUG("CudaRunner: decode graph captured for %d rows (%s, %d splits of %d keys) in %.1f ms", n_rows,
                  lm_screen_step ? "screened LM head" : "full LM head", n_splits, exact ? 0 : kps,
                  1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t_capture).count());
  }
  CUDA_CHECK(cudaGraphLaunch(it->second, stream));
  last_graph = it->second;
}

// Any other step, launched kernel by kernel: single-token sequences at the front (the engine schedules decodes
// first) run the decode attention; every sequence from the first multi-token one on runs attention_prefill (tensor
// cores, no split workspace) over the tile lists uploaded here.
void CudaRunner::Impl::launch_eager(const StepBatch& batch, const std::vector<int>& valid, const StagedRows& r,
                                    int n_lm) {
  const ModelConfig& c = cfg();
  const int n_valid = r.n_valid;
  PrefillPlan plan;
  int dec_ctx = 1, n_dec_seqs = 0;
  while (n_dec_seqs < n_valid && batch.seqs[size_t(valid[size_t(n_dec_seqs)])].num_tokens == 1) {
    dec_ctx = std::max(dec_ctx, batch.seqs[size_t(valid[size_t(n_dec_seqs)])].context_len);
    ++n_dec_seqs;
  }
  // With exact_attention, steps whose tokens all see <= kExactAttentionMaxKeys keys keep the exact path (the
  // reference's order of operations, as decode graphs do: it also serves multi-token sequences); every other
  // step runs the tensor-core kernels, whose decode kernel serves single-token sequences only (it copies the
  // keys below its token's own before griddepcontrol.wait: the step writes none of them).
  static const bool no_prefill_attention = std::getenv("MXS_NO_PREFILL_ATTENTION") != nullptr;  // debugging
  const bool exact_step = exact_attention && r.max_ctx <= kExactAttentionMaxKeys;
  if (n_dec_seqs < n_valid && !exact_step && !no_prefill_attention) {
    plan.active = true;
    plan.n_dec = n_dec_seqs;  // one token each
    std::vector<int> offs, counts;
    int off = n_dec_seqs, n_prefill = 0;
    for (int vi = n_dec_seqs; vi < n_valid; ++vi) {
      const int n = batch.seqs[size_t(valid[size_t(vi)])].num_tokens;
      offs.push_back(off), counts.push_back(n);
      off += n, n_prefill += n;
    }
    // Full layers: 16- or 32-query tiles by size; sliding layers: 16 (the second list only when they differ).
    plan.tile_q_full = prefill_tile_q(n_prefill, 0);
    const auto full = make_prefill_tiles(offs, counts, plan.tile_q_full);
    MXS_CHECK(int(full.size()) <= max_tiles, "CudaRunner: prefill tiles overflow");
    std::copy(full.begin(), full.end(), host_tiles);
    h2d(dev_tiles, host_tiles, full.size() * sizeof(PrefillTile));
    plan.n_full_tiles = plan.n_slide_tiles = int(full.size());
    plan.slide_tiles_offset = 0;
    if (plan.tile_q_full != kPrefillTileQ16) {
      const auto slide = make_prefill_tiles(offs, counts, kPrefillTileQ16);
      MXS_CHECK(int(slide.size()) <= max_tiles, "CudaRunner: prefill tiles overflow");
      std::copy(slide.begin(), slide.end(), host_tiles + max_tiles);
      h2d(dev_tiles + max_tiles, host_tiles + max_tiles, slide.size() * sizeof(PrefillTile));
      plan.n_slide_tiles = int(slide.size()), plan.slide_tiles_offset = max_tiles;
    }
  }
  const int att_ctx = plan.active ? dec_ctx : r.max_ctx;
  const int att_tokens = plan.active ? std::max(plan.n_dec, 1) : r.n_tok;
  int n_splits = 1, kps = att_ctx;  // exact path for short contexts
  if (!exact_attention || att_ctx > kExactAttentionMaxKeys) {
    kps = attention_decode_mma_keys_per_split(att_tokens, c.num_kv_heads, att_ctx, num_sms);
    n_splits = (att_ctx + kps - 1) / kps;
    const size_t cap_splits = std::max<size_t>(1, partial_rows / (size_t(att_tokens) * c.num_heads));
    if (size_t(n_splits) > cap_splits) {  // many long decode rows: fewer, longer splits
      kps = (att_ctx + int(cap_splits) - 1) / int(cap_splits);
      kps = (kps + 63) / 64 * 64;
      n_splits = (att_ctx + kps - 1) / kps;
    }
  }
  forward(r.n_tok, n_lm, n_splits, kps, plan);
}

// Samples the step's n_lm rows and queues the copy of their results to the pinned set: on copy_stream behind the
// sampling when another step is outstanding (so that the next step's forward pass need not wait for the copy),
// else on the stream. Returns whether the copy went to copy_stream.
bool CudaRunner::Impl::launch_sampling(const SamplingStage& st, int n_lm, int n_argmax_rows) {
  static const bool same_stream = std::getenv("MXS_RESULTS_SAME_STREAM") != nullptr;  // A/B
  const bool side_copy = !pending.empty() && !timing && !same_stream;
  samp.logits = logits, samp.seqs = dev.seq_params, samp.ids = dev.ids, samp.counts = dev.counts;
  samp.tokens = dev.tokens, samp.bias_ids = dev.bias_ids, samp.bias_values = dev.bias_values;
  samp.allowed = dev.allowed;
  samp.n_seqs = n_lm, samp.spread_wanted = st.spread_wanted, samp.spread_penalties = st.spread_penalties;
  samp.spread_selects = st.spread_selects;
  samp.n_argmax_rows = n_argmax_rows;  // the LM head's rows (forward's n_lm_rows)
  if (side_copy_queued)  // that copy reads samp.results, which sampling overwrites
    CUDA_CHECK(cudaStreamWaitEvent(stream, results_copied, 0));
  side_copy_queued = side_copy;
  timed("sampling", [&] { sample_tokens(samp, stream); });
  cudaStream_t cs = stream;
  if (side_copy) {
    CUDA_CHECK(cudaEventRecord(sampled, stream));
    CUDA_CHECK(cudaStreamWaitEvent(copy_stream, sampled, 0));
    cs = copy_stream;
  }
  CUDA_CHECK(cudaMemcpyAsync(host_results, samp.results, size_t(n_lm) * sizeof(SampleResultDev),
                             cudaMemcpyDeviceToHost, cs));
  if (side_copy) CUDA_CHECK(cudaEventRecord(results_copied, copy_stream));
  return side_copy;
}

// What collect() needs of a submitted step, and the sources of the next step's handoff (last_rows). `ready` set:
// the step returns logits, which the caller must read before the next step overwrites them.
CudaRunner::Impl::Pending CudaRunner::Impl::pending_of(const StepBatch& batch, int set, bool launched,
                                                       const std::vector<int>& lm_seq,
                                                       std::vector<std::string>* errors) {
  Pending p;
  p.set = set;
  p.launched = launched;
  std::vector<int> lm_row_of(batch.seqs.size(), -1);
  for (int r = 0; r < int(lm_seq.size()); ++r) lm_row_of[size_t(lm_seq[size_t(r)])] = r;
  bool any_logits = false;
  p.seqs.resize(batch.seqs.size());
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const SequenceStep& q = batch.seqs[s];
    PendingSeq& ps = p.seqs[s];
    ps.seq_id = q.seq_id, ps.sample = q.sample, ps.return_logits = q.return_logits;
    ps.logprobs = q.sample && q.sampling->logprobs;
    ps.top_logprobs = q.sample ? q.sampling->top_logprobs : 0;
    ps.row = lm_row_of[s];
    ps.error = std::move((*errors)[s]);
    any_logits |= q.return_logits && ps.error.empty();
    if (q.sample && ps.error.empty()) last_rows[q.seq_id] = ps.row;
  }
  p.ready = any_logits;
  return p;
}

// The deferred masks of the last submitted step, into its slots of the packed inputs (the pinned image `send` of
// this set, then one copy of the mask region after the forward pass on the stream), then its sampling.
void CudaRunner::Impl::supply_masks(const std::vector<std::span<const uint32_t>>& masks) {
  MXS_CHECK(deferred.active, "CudaRunner::supply_masks: no step waits for masks");
  MXS_CHECK(masks.size() == deferred.batch_index.size(),
            strfmt("CudaRunner::supply_masks: %zu masks for %zu deferred sequences", masks.size(),
                   deferred.batch_index.size()));
  DeferredSampling d = std::move(deferred);
  deferred = DeferredSampling{};
  if (!d.launched) return;
  uint32_t* staged = reinterpret_cast<uint32_t*>(send + (reinterpret_cast<char*>(dev.allowed) - dev_in));
  for (const auto& [batch_index, offset] : d.st.deferred_masks) {
    const size_t k = size_t(std::lower_bound(d.batch_index.begin(), d.batch_index.end(), batch_index) -
                            d.batch_index.begin());
    const std::span<const uint32_t> m = masks[k];
    if (m.empty()) {
      std::fill(staged + offset, staged + offset + mask_words, ~0u);  // unrestricted
    } else {
      MXS_CHECK(m.size() == mask_words, strfmt("CudaRunner::supply_masks: a mask of %zu words for a vocabulary of "
                                               "%zu words", m.size(), mask_words));
      std::copy(m.begin(), m.end(), staged + offset);
    }
  }
  if (!d.st.deferred_masks.empty()) h2d(dev.allowed, staged, d.st.n_mask_words * 4);
  const bool side_copy = d.n_lm > 0 && launch_sampling(d.st, d.n_lm, d.n_argmax_rows);
  CUDA_CHECK(cudaEventRecord(done_events[d.set], side_copy ? copy_stream : stream));
}

// Waits for the oldest outstanding step and builds its outputs.
void CudaRunner::Impl::collect(StepOutput* out) {
  MXS_CHECK(!pending.empty(), "CudaRunner::collect: no step is outstanding");
  MXS_CHECK(!deferred.active || pending.size() > 1, "CudaRunner::collect: the step waits for its masks (supply_masks)");
  Pending p = std::move(pending.front());
  pending.pop_front();
  if (p.ready) {
    *out = std::move(p.out);
    return;
  }
  if (p.launched) {
    CUDA_CHECK(cudaEventSynchronize(done_events[p.set]));
    collect_times();
  }
  build_output(p, out);
}

// Outputs, in batch order, from the step's pinned results (and, for return_logits, the logits buffer: only
// right after that step, see submit()).
void CudaRunner::Impl::build_output(Pending& p, StepOutput* out) {
  const ModelConfig& c = cfg();
  out->samples.clear();
  const SampleResultDev* results = host_results_sets[p.set];
  for (const PendingSeq& q : p.seqs) {
    if (!q.sample && !(q.return_logits && q.error.empty())) continue;
    SampleOutput o;
    o.seq_id = q.seq_id;
    if (!q.error.empty()) {
      o.ok = false;
      o.error = q.error;
      out->samples.push_back(std::move(o));
      continue;
    }
    const int r = q.row;
    if (q.return_logits) {
      CUDA_CHECK(cudaMemcpy(host_logits, static_cast<const uint16_t*>(logits) + size_t(r) * c.vocab_size,
                            size_t(c.vocab_size) * 2, cudaMemcpyDeviceToHost));
      o.logits.resize(size_t(c.vocab_size));
      for (int i = 0; i < c.vocab_size; ++i) {
        const uint32_t u = uint32_t(host_logits[i]) << 16;
        std::memcpy(&o.logits[size_t(i)], &u, 4);
      }
    }
    if (q.sample) {
      const SampleResultDev& res = results[r];
      if (res.error != 0) {
        o.ok = false;
        o.error = res.error == 1 ? "the logits contain NaN" : "the largest logit is not finite after penalties/temperature";
      } else {
        o.token = res.token;
        if (q.logprobs) o.logprob = res.logprob;
        for (int k = 0; k < q.top_logprobs; ++k) o.top.push_back({res.top_ids[k], res.top_lp[k]});
      }
    }
    out->samples.push_back(std::move(o));
  }
}

CudaRunner::CudaRunner(const ModelWeights& weights, const CudaRunnerOptions& options)
    : impl_(std::make_unique<Impl>(options)) {
  CUDA_CHECK(cudaSetDevice(options.device));
  impl_->w = upload_weights(weights, options.progress);
  impl_->pack_weight_copies();
  impl_->init();
}

CudaRunner::CudaRunner(const ModelConfig& config, uint64_t seed, const CudaRunnerOptions& options)
    : impl_(std::make_unique<Impl>(options)) {
  CUDA_CHECK(cudaSetDevice(options.device));
  impl_->w = random_weights(config, seed);
  impl_->pack_weight_copies();
  impl_->init();
}

CudaRunner::~CudaRunner() = default;

const ModelConfig& CudaRunner::config() const { return impl_->cfg(); }
std::string CudaRunner::bf12_dense() const {
  const DeviceWeights& w = impl_->w;
  std::string s = w.lm_head_bf12.bytes ? "lm_head," : "";
  if (!w.layers.empty() && w.layers[0].w_o_bf12.bytes) s += "o_proj,";
  if (!w.layers.empty() && w.layers[0].w_qkv_bf12.bytes) s += "qkv,";
  if (!s.empty()) s.pop_back();
  return s;
}
bool CudaRunner::lm_head_screen() const { return impl_->w.lm_head_screen.q != nullptr; }
bool CudaRunner::exact_attention() const { return impl_->exact_attention; }
KvCacheLayout CudaRunner::kv_layout() const {
  KvCacheLayout k;
  k.block_size = impl_->opt.block_size;
  k.num_blocks = impl_->num_blocks;
  k.num_sliding_blocks = impl_->num_sliding_blocks;
  return k;
}
void CudaRunner::step(const StepBatch& batch, StepOutput* out) {
  MXS_CHECK(impl_->pending.empty(), "CudaRunner::step: submitted steps are still outstanding (collect them first)");
  impl_->submit(batch);
  impl_->collect(out);
}
void CudaRunner::submit(const StepBatch& batch) { impl_->submit(batch); }
void CudaRunner::collect(StepOutput* out) { impl_->collect(out); }
void CudaRunner::supply_masks(const std::vector<std::span<const uint32_t>>& masks) { impl_->supply_masks(masks); }
std::string CudaRunner::device_name() const { return impl_->device_name; }
double CudaRunner::weights_upload_seconds() const { return impl_->w.upload_seconds; }
size_t CudaRunner::weights_bytes() const { return impl_->w.arena.used(); }
void CudaRunner::enable_kernel_timing(bool on) {
  impl_->timing = on;
  impl_->times = {};
}
KernelTimes CudaRunner::kernel_times() const { return impl_->times; }
void CudaRunner::set_use_graphs(bool on) { impl_->opt.use_graphs = on; }
int CudaRunner::graphs_captured() const { return int(impl_->graphs.size()); }
double CudaRunner::time_last_graph_ms(int n) {
  Impl& m = *impl_;
  if (!m.last_graph || n < 1) return 0.0;
  MXS_CHECK(m.pending.empty(), "CudaRunner::time_last_graph_ms: collect the outstanding steps first");
  cudaEvent_t ev[2];
  for (cudaEvent_t& e : ev) CUDA_CHECK(cudaEventCreate(&e));
  CUDA_CHECK(cudaGraphLaunch(m.last_graph, m.stream));  // warm
  CUDA_CHECK(cudaEventRecord(ev[0], m.stream));
  for (int i = 0; i < n; ++i) CUDA_CHECK(cudaGraphLaunch(m.last_graph, m.stream));
  CUDA_CHECK(cudaEventRecord(ev[1], m.stream));
  // The LM head folds its argmax into keys that sampling clears; no sampling ran after these replays.
  CUDA_CHECK(cudaMemsetAsync(m.lm_argmax, 0, size_t(m.opt.max_seqs) * sizeof(unsigned long long), m.stream));
  CUDA_CHECK(cudaEventSynchronize(ev[1]));
  float ms = 0.f;
  CUDA_CHECK(cudaEventElapsedTime(&ms, ev[0], ev[1]));
  for (cudaEvent_t e : ev) CUDA_CHECK(cudaEventDestroy(e));
  return double(ms) / n;
}

namespace {
__global__ void fill_random_bf16(uint16_t* p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;
    x ^= x >> 31, x *= 0xbf58476d1ce4e5b9ull, x ^= x >> 29;
    // bf16 in [-2, 2): sign, exponent 126..127, random mantissa
    p[i] = uint16_t(((x >> 8) & 0x8000u) | ((126u + ((x >> 20) & 1u)) << 7) | (x & 0x7fu));
  }
}
}  // namespace

void CudaRunner::fill_kv_random(uint64_t seed) {
  for (size_t l = 0; l < impl_->kv_layers.size(); ++l) {
    fill_random_bf16<<<2048, 256, 0, impl_->stream>>>(static_cast<uint16_t*>(impl_->kv_layers[l]),
                                                      impl_->layer_kv_bytes[l] / 2, seed++);
    CUDA_CHECK_LAUNCH();
  }
  CUDA_CHECK(cudaStreamSynchronize(impl_->stream));
}

}  // namespace mxs::cuda
