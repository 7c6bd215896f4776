// `mxserve generate`: one prompt through the engine, the final answer streamed to stdout (reasoning hidden
// unless --show-reasoning, then on stderr), and the load / TTFT / prompt tok/s / decode tok/s figures on stderr.
#include <cstdio>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli/command.h"
#include "common/error.h"
#include "common/paths.h"
#include "common/timer.h"
#include "engine/engine.h"
#include "engine/json_constraint.h"
#include "engine/runner_factory.h"
#include "model/demo_model.h"
#include "model/weights.h"
#include "text/harmony.h"
#include "text/harmony_parser.h"
#include "text/json_token_mask.h"
#include "text/special_tokens.h"
#include "text/tokenizer.h"

namespace {

struct GenerateArgs {
  std::string model;
  std::string prompt;
  std::string backend = "auto";
  std::string bf12_dense = mxs::kBf12DenseDefault;
  bool lm_head_screen = true;
  bool exact_attention = false;
  std::string async_scheduling = "auto";
  int max_tokens = 512;
  int max_length = 8192;
  bool show_reasoning = false;
  bool raw = false;
  float temperature = 1.0f;
  float top_p = 1.0f;
  int top_k = 0;
  float min_p = 0.0f;
  float frequency_penalty = 0.0f, presence_penalty = 0.0f, repetition_penalty = 1.0f;
  uint64_t seed = 0;
  std::vector<std::string> logit_bias;  // TOKEN=BIAS each
  int min_tokens = 0;
  bool ignore_eos = false;
  bool json_object = false;
  std::string json_schema;  // a file holding a JSON Schema
  std::string reasoning_effort = "medium";
};

// --logit-bias TOKEN=BIAS (e.g. 200002=-100): one entry.
mxs::LogitBias parse_logit_bias_arg(const std::string& s) {
  const size_t eq = s.find('=');
  auto bad = [&] { return mxs::Error("--logit-bias " + s + ": must be TOKEN=BIAS, e.g. 200002=-100"); };
  if (eq == std::string::npos || eq == 0 || eq + 1 == s.size()) throw bad();
  mxs::LogitBias e;
  try {
    size_t used = 0;
    const long long id = std::stoll(s.substr(0, eq), &used);
    if (used != eq || id < 0 || id > std::numeric_limits<int32_t>::max()) throw bad();
    e.token = int32_t(id);
    const std::string b = s.substr(eq + 1);
    e.bias = std::stof(b, &used);
    if (used != b.size()) throw bad();
  } catch (const std::logic_error&) {  // (stoll / stof: no number, or out of range)
    throw bad();
  }
  return e;
}

// Streams reasoning to stderr between markers, and everything else to stdout, flushing as it goes.
class Printer {
 public:
  explicit Printer(bool show_reasoning) : show_reasoning_(show_reasoning) {}
  void content(const std::string& s) {
    if (s.empty()) return;
    end_reasoning();
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
    wrote_content_ = true;
  }
  void reasoning(const std::string& s) {
    if (s.empty() || !show_reasoning_) return;
    if (!in_reasoning_) std::fputs("[reasoning]\n", stderr);
    in_reasoning_ = true;
    std::fwrite(s.data(), 1, s.size(), stderr);
    std::fflush(stderr);
  }
  void note(const std::string& s) {
    end_reasoning();
    std::fprintf(stderr, "%s\n", s.c_str());
  }
  void finish() {
    end_reasoning();
    if (wrote_content_) std::fputc('\n', stdout);
    std::fflush(stdout);
  }

 private:
  void end_reasoning() {
    if (in_reasoning_) std::fputs("\n[/reasoning]\n", stderr);
    in_reasoning_ = false;
  }
  bool show_reasoning_;
  bool in_reasoning_ = false;
  bool wrote_content_ = false;
};

void run_generate(const GenerateArgs& a) {
  mxs::SamplingParams sampling;
  sampling.temperature = a.temperature;
  sampling.top_p = a.top_p;
  sampling.top_k = a.top_k;
  sampling.min_p = a.min_p;
  sampling.frequency_penalty = a.frequency_penalty;
  sampling.presence_penalty = a.presence_penalty;
  sampling.repetition_penalty = a.repetition_penalty;
  sampling.seed = a.seed;
  for (const std::string& b : a.logit_bias) sampling.logit_bias.push_back(parse_logit_bias_arg(b));
  sampling.min_tokens = a.min_tokens;
  sampling.validate();  // names the parameter before anything loads
  const auto effort = mxs::harmony::reasoning_effort_from_name(a.reasoning_effort);
  MXS_CHECK(effort.has_value(), mxs::strfmt("--reasoning-effort %s: must be low, medium or high",
                                            a.reasoning_effort.c_str()));
  MXS_CHECK(a.max_tokens >= 1, mxs::strfmt("--max-tokens %d: must be >= 1", a.max_tokens));
  MXS_CHECK(a.max_length >= 2, mxs::strfmt("--max-length %d: must be >= 2", a.max_length));
  mxs::check_backend_available(a.backend);  // before the (slow) load
  // --json-schema: compiled before the load, so that a schema the subset cannot hold fails at once.
  std::shared_ptr<const mxs::JsonSchema> schema;
  nlohmann::ordered_json schema_json;
  if (!a.json_schema.empty()) {
    MXS_CHECK(!a.json_object, "--json-schema and --json-object exclude each other");
    MXS_CHECK(!a.ignore_eos && a.min_tokens == 0, "--json-schema cannot be combined with --ignore-eos or --min-tokens");
    try {
      schema_json = nlohmann::ordered_json::parse(mxs::read_file(a.json_schema));
    } catch (const nlohmann::json::exception& e) {
      throw mxs::Error(mxs::strfmt("--json-schema %s: not JSON: %s", a.json_schema.c_str(), e.what()));
    }
    try {
      schema = mxs::JsonSchema::compile(nlohmann::json::parse(schema_json.dump()));
    } catch (const mxs::Error& e) {
      throw mxs::Error(mxs::strfmt("--json-schema %s: %s", a.json_schema.c_str(), e.what()));
    }
  }

  mxs::Stopwatch load_watch;
  const std::string dir = a.model.empty() ? mxs::ensure_demo_model() : a.model;
  const std::string tokenizer_path = mxs::join_path(dir, "tokenizer.json");
  MXS_CHECK(mxs::file_exists(tokenizer_path),
            mxs::strfmt("%s: no tokenizer.json in the model folder (generate needs it to encode the prompt; copy the "
                        "gpt-oss tokenizer.json there, e.g. from `bash scripts/fetch-tokenizer.sh`)",
                        tokenizer_path.c_str()));
  const std::unique_ptr<mxs::Tokenizer> tokenizer = mxs::Tokenizer::from_file(tokenizer_path);
  const mxs::ModelWeights weights = mxs::load_model(dir);

  // Encode first: a prompt that cannot fit fails before the KV pool is allocated.
  std::vector<int32_t> prompt;
  if (a.raw) {
    prompt = tokenizer->encode(a.prompt);
  } else {
    mxs::harmony::RenderOptions opt;
    opt.reasoning_effort = *effort;
    if (schema) opt.response_format = mxs::harmony::ResponseFormat{"response", "", schema_json};
    mxs::harmony::ChatMessage user;
    user.role = mxs::harmony::Role::kUser;
    user.content = a.prompt;
    prompt = mxs::harmony::render_prompt_ids(*tokenizer, {user}, {}, opt);
  }
  const int max_length = std::min(a.max_length, weights.config.max_position_embeddings);
  MXS_CHECK(int(prompt.size()) < max_length,
            mxs::strfmt("the prompt is %zu tokens but --max-length is %d (prompt + output): shorten the prompt or "
                        "raise --max-length",
                        prompt.size(), max_length));
  const int max_tokens = std::min(a.max_tokens, max_length - int(prompt.size()));

  mxs::RunnerSpec spec;
  spec.backend = a.backend;
  spec.kv_tokens = int64_t(prompt.size()) + max_tokens;
  spec.max_batch_size = 1;
  spec.max_length = max_length;
  spec.bf12_dense = a.bf12_dense == "none" ? "" : a.bf12_dense;
  spec.lm_head_screen = a.lm_head_screen;
  spec.exact_attention = a.exact_attention;
  const std::unique_ptr<mxs::ModelRunner> runner = mxs::make_runner(weights, spec);
  mxs::EngineConfig ec;
  ec.max_length = max_length;
  ec.max_batch_size = 1;
  ec.async_scheduling = mxs::cli::async_scheduling_enabled(a.async_scheduling, runner->name());
  mxs::Engine engine(*runner, tokenizer.get(), ec);
  const double load_s = load_watch.seconds();

  mxs::Request req;
  req.prompt = prompt;
  req.sampling = sampling;
  req.max_tokens = max_tokens;
  req.ignore_stop_tokens = a.ignore_eos;
  if (a.json_object || schema) {  // chat: the final answer only (the reasoning stays free); --raw: the continuation
    MXS_CHECK(!a.ignore_eos && a.min_tokens == 0, "--json-object cannot be combined with --ignore-eos or --min-tokens");
    auto masks = std::make_shared<const mxs::JsonTokenMask>(*tokenizer, weights.config.vocab_size);
    const std::vector<int32_t> ends = a.raw ? std::vector<int32_t>{mxs::tok::kReturn, mxs::tok::kEndOfText}
                                            : std::vector<int32_t>{mxs::tok::kReturn};
    req.constraint = schema ? mxs::json_schema_constraint(masks, schema, !a.raw, ends)
                            : mxs::json_object_constraint(masks, !a.raw, ends);
  }
  auto events = std::make_shared<mxs::EventQueue>();
  engine.submit(std::move(req), events);

  Printer out(a.show_reasoning);
  mxs::harmony::ChatOutputParser parser(*tokenizer, /*call_id_seed=*/1);
  mxs::TokenEvent ev;
  for (;;) {
    events->pop(&ev);
    if (a.raw) {
      out.content(ev.text);
    } else {
      for (int32_t id : ev.token_ids) {
        const mxs::harmony::ChatDelta d = parser.feed(id);
        out.reasoning(d.reasoning);
        out.content(d.content);
        for (const auto& call : d.tool_calls)
          if (!call.name.empty()) out.note("[tool call] " + call.name);
      }
    }
    if (ev.finished()) break;
  }
  if (!a.raw) {
    const mxs::harmony::ChatDelta d = parser.finish(ev.finish == mxs::FinishReason::kLength);
    out.reasoning(d.reasoning);
    out.content(d.content);
  }
  out.finish();
  if (ev.finish == mxs::FinishReason::kError) throw mxs::Error("generation failed: " + ev.error);
  if (!a.raw && parser.result().content.empty())
    out.note(mxs::strfmt("(no final answer: the %d generated tokens hold no harmony answer message, as expected from "
                         "a random checkpoint such as the demo model; --raw shows the raw continuation)",
                         ev.num_output_tokens));

  const mxs::RequestTimings& t = ev.timings;
  const int n_out = ev.num_output_tokens;
  const double prefill_s = t.first_token - t.first_scheduled;
  const double decode_s = n_out > 1 ? t.token_times.back() - t.first_token : 0.0;
  std::fprintf(stderr,
               "load %.2f s | TTFT %.3f s | prompt %d tokens, %.1f tok/s | decode %d tokens, %.2f tok/s | "
               "finish: %s (%s backend)\n",
               load_s, t.ttft_s(), ev.num_prompt_tokens, prefill_s > 0 ? ev.num_prompt_tokens / prefill_s : 0.0,
               n_out, decode_s > 0 ? (n_out - 1) / decode_s : 0.0, mxs::finish_reason_name(ev.finish),
               runner->name().c_str());
}

mxs::cli::CommandRegistrar registrar(20, [](CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand(
      "generate", "Run one prompt (harmony chat format, or --raw text) and stream the answer to stdout");
  cmd->add_option("--model", a->model, "Model folder (default: the built-in tiny demo model)");
  cmd->add_option("--prompt,-p", a->prompt, "The user message (or raw text with --raw)")->required();
  cmd->add_option("--backend", a->backend, "auto, cpu or cuda (auto: cuda when a GPU is usable, else cpu)")->capture_default_str();
  cmd->add_option("--max-tokens", a->max_tokens, "Generated tokens at most")->capture_default_str();
  cmd->add_option("--max-length", a->max_length, "Prompt + output tokens at most")->capture_default_str();
  cmd->add_flag("--show-reasoning", a->show_reasoning, "Print the analysis channel to stderr");
  cmd->add_flag("--raw", a->raw, "Encode the prompt as plain text (no chat format) and print the raw continuation");
  cmd->add_option("--temperature", a->temperature, "0 = greedy")->capture_default_str();
  cmd->add_option("--top-p", a->top_p, "Nucleus sampling mass")->capture_default_str();
  cmd->add_option("--top-k", a->top_k, "0 = off")->capture_default_str();
  cmd->add_option("--min-p", a->min_p, "Drop tokens below this fraction of the best one's probability (0 = off)")
      ->capture_default_str();
  cmd->add_option("--frequency-penalty", a->frequency_penalty,
                  "Subtract this times a token's count in the output from its logit (OpenAI semantics, [-2, 2])")
      ->capture_default_str();
  cmd->add_option("--presence-penalty", a->presence_penalty,
                  "Subtract this from the logit of every token already in the output (OpenAI semantics, [-2, 2])")
      ->capture_default_str();
  cmd->add_option("--repetition-penalty", a->repetition_penalty,
                  "Divide positive (multiply negative) logits of prompt and output tokens by this (HF semantics, 1 = off)")
      ->capture_default_str();
  cmd->add_option("--seed", a->seed, "Sampling seed (same seed, same output)")->capture_default_str();
  cmd->add_option("--logit-bias", a->logit_bias,
                  "TOKEN=BIAS: add BIAS ([-100, 100]) to the token's logit (repeatable; OpenAI logit_bias)");
  cmd->add_option("--min-tokens", a->min_tokens, "Generate at least this many tokens: the stop tokens are held back")
      ->capture_default_str();
  cmd->add_flag("--json-object", a->json_object,
                "The answer is one JSON object (as response_format json_object; with --raw the whole continuation)");
  cmd->add_option("--json-schema", a->json_schema,
                  "A file with a JSON Schema: the answer is one object of it (as response_format json_schema; the "
                  "subset: src/text/json_schema_acceptor.h)");
  cmd->add_flag("--ignore-eos", a->ignore_eos,
                "Do not stop at the stop tokens (<|return|>, <|call|>): always --max-tokens");
  mxs::cli::add_async_scheduling_option(cmd, &a->async_scheduling);
  mxs::cli::add_bf12_dense_option(cmd, &a->bf12_dense);
  mxs::cli::add_lm_head_screen_option(cmd, &a->lm_head_screen);
  mxs::cli::add_exact_attention_option(cmd, &a->exact_attention);
  cmd->add_option("--reasoning-effort", a->reasoning_effort, "low, medium or high")->capture_default_str();
  cmd->callback([a] { run_generate(*a); });
});

}  // namespace
