// CPU backend speed: prefill tokens/s (one chunk) and decode tokens/s (one token per step, greedy) of
// CpuRunner on a checkpoint folder, with the weight bytes a decode step streams, as GB/s.
//   cpu_forward_bench [MODEL_DIR] [--prompt N] [--decode N] [--chunk N]   (MXSERVE_THREADS sets threads)
// Without MODEL_DIR: random in-memory weights, the tiny preset's shape unless overridden with
//   --hidden H --layers L --experts E --vocab V  (e.g. one 20b-width layer: --hidden 2880 --layers 1).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/thread_pool.h"
#include "common/timer.h"
#include "cpu/cpu_runner.h"
#include "cpu/random_weights.h"
#include "model/weights.h"

using namespace mxs;

namespace {

// Bytes a single-token step reads: attention + router weights of every layer, K active experts, LM head.
double decode_weight_bytes(const ModelConfig& c) {
  const double H = c.hidden_size, I = c.intermediate_size;
  const double attn = 2.0 * (H * c.q_dim() * 2 + H * c.kv_dim() * 2) + 2.0 * H * c.num_experts;
  const double expert = (2 * I * H + H * I) * (0.5 + 1.0 / 32) + 2.0 * (2 * I + H);  // MXFP4 + scales + bias
  return c.num_layers * (attn + c.experts_per_token * expert) + 2.0 * c.vocab_size * H;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  int n_prompt = 256, n_decode = 32, chunk = 0;
  int hidden = 64, layers = 4, experts = 8, vocab = 201088;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] {
      if (i + 1 >= argc) throw Error("missing value after " + a);
      return std::atoi(argv[++i]);
    };
    if (a == "--prompt") n_prompt = next();
    else if (a == "--decode") n_decode = next();
    else if (a == "--chunk") chunk = next();
    else if (a == "--hidden") hidden = next();
    else if (a == "--layers") layers = next();
    else if (a == "--experts") experts = next();
    else if (a == "--vocab") vocab = next();
    else dir = a;
  }
  if (chunk <= 0) chunk = n_prompt;

  std::unique_ptr<cpu::RandomWeights> rw;
  ModelWeights w;
  Stopwatch load;
  if (dir.empty()) {
    // head geometry: 16/2 heads for the tiny width, 64/8 (gpt-oss) for anything wider.
    const bool wide = hidden > 64;
    ModelConfig c = cpu::small_test_config(vocab, hidden, layers, wide ? 64 : 16, wide ? 8 : 2, experts,
                                           std::min(4, experts), hidden);
    rw = cpu::make_random_weights(c, 1);
    w = rw->weights;
    dir = strfmt("<random: hidden %d, %d layers, %d experts, vocab %d>", hidden, layers, experts, vocab);
  } else {
    w = load_model(dir);
  }
  const ModelConfig c = w.config;
  const int bs = 16, blocks = (n_prompt + n_decode) / bs + 2;
  cpu::CpuRunnerOptions o;
  o.num_blocks = blocks;
  cpu::CpuRunner runner(std::move(w), o);
  std::printf("model %s: hidden %d, layers %d, experts %d, vocab %d; threads %d; load %.2f s\n", dir.c_str(),
              c.hidden_size, c.num_layers, c.num_experts, c.vocab_size, ThreadPool::global().size(),
              load.seconds());

  std::vector<int32_t> table(static_cast<size_t>(blocks));
  std::iota(table.begin(), table.end(), 0);
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  std::vector<int32_t> seq;
  for (int i = 0; i < n_prompt; ++i) seq.push_back(int32_t((i * 7919 + 13) % std::min(c.vocab_size, 200000)));

  auto step = [&](int first, int n) {
    StepBatch b;
    for (int p = first; p < first + n; ++p) {
      b.tokens.push_back(seq[size_t(p)]);
      b.positions.push_back(p);
    }
    SequenceStep s;
    s.num_tokens = n;
    s.context_len = first + n;
    s.block_table = table;
    s.sample = true;
    s.sampling = &greedy;
    b.seqs.push_back(s);
    StepOutput out;
    runner.step(b, &out);
    if (!out.samples.at(0).ok) throw Error(out.samples[0].error);
    return out.samples[0].token;
  };

  Stopwatch pf;
  int32_t next = -1;
  for (int done = 0; done < n_prompt; done += chunk) next = step(done, std::min(chunk, n_prompt - done));
  const double prefill_s = pf.seconds();
  Stopwatch dc;
  for (int i = 0; i < n_decode; ++i) {
    seq.push_back(next);
    next = step(int(seq.size()) - 1, 1);
  }
  const double decode_s = dc.seconds();
  const double gb = decode_weight_bytes(c) / 1e9;
  std::printf("command: %s", argv[0]);
  for (int i = 1; i < argc; ++i) std::printf(" %s", argv[i]);
  std::printf("\nprefill: %d tokens (chunks of %d) in %.3f s = %.1f tok/s\n", n_prompt, chunk, prefill_s,
              n_prompt / prefill_s);
  std::printf("decode:  %d tokens in %.3f s = %.2f tok/s (%.3f GB of weights per token -> %.2f GB/s)\n", n_decode,
              decode_s, n_decode / decode_s, gb, gb * n_decode / decode_s);
  return 0;
}
