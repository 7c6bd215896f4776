// `mxserve serve`: the OpenAI-compatible HTTP server. Listens first (GET /health is 503 while the model
// loads), loads the checkpoint (the demo model without --model), starts the engine, serves until SIGINT or
// SIGTERM, then shuts down gracefully (stop accepting, let in-flight requests finish within
// --shutdown-timeout, cancel the rest) and exits 0.
#include <pthread.h>
#include <signal.h>

#include <cstdlib>
#include <memory>

#include "cli/command.h"
#include "common/error.h"
#include "common/log.h"
#include "common/paths.h"
#include "common/timer.h"
#include "engine/engine.h"
#include "engine/runner_factory.h"
#include "model/demo_model.h"
#include "model/mkmodel.h"
#include "model/weights.h"
#include "server/api_server.h"
#include "text/tokenizer.h"

namespace {

struct ServeArgs {
  std::string model;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string backend = "auto";
  std::string async_scheduling = "auto";
  int max_batch_size = 256;
  int max_num_batched_tokens = 2048;
  int max_length = 0;
  double device_memory_utilization = 0.90;
  std::string bf12_dense = mxs::kBf12DenseDefault;
  bool lm_head_screen = true;
  bool exact_attention = false;
  int64_t kv_cache_tokens = 65536;
  int max_queued_requests = 1024;
  int64_t responses_store = 1000;
  std::string served_model_name;
  std::string api_key;
  int io_threads = 2;
  double header_timeout = 30.0;
  double write_timeout = 60.0;
  size_t max_body_bytes = 16u << 20;
  double shutdown_timeout = 10.0;
};

std::string basename_of(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const size_t slash = dir.rfind('/');
  return slash == std::string::npos ? dir : dir.substr(slash + 1);
}

// The checkpoint's tokenizer.json, else the one the environment / cache provides.
std::string tokenizer_path(const std::string& dir) {
  const std::string local = mxs::join_path(dir, "tokenizer.json");
  if (mxs::file_exists(local)) return local;
  const std::string found = mxs::find_tokenizer_json();
  MXS_CHECK(!found.empty(), mxs::strfmt("%s has no tokenizer.json and none was found: run scripts/fetch-tokenizer.sh "
                                        "or set MXSERVE_TOKENIZER",
                                        dir.c_str()));
  return found;
}

void run_serve(const ServeArgs& a) {
  // SIGINT/SIGTERM are blocked in every thread (the mask is inherited) and taken by sigwait() below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client gone mid-write is an error code, not a signal

  MXS_CHECK(a.max_queued_requests >= 1, "--max-queued-requests must be >= 1");
  MXS_CHECK(a.responses_store >= 0, "--responses-store must be >= 0");
  mxs::server::ApiServerOptions opt;
  opt.http.host = a.host;
  opt.http.port = a.port;
  opt.http.io_threads = a.io_threads;
  opt.http.header_timeout_s = a.header_timeout;
  opt.http.body_timeout_s = 2 * a.header_timeout;
  opt.http.write_timeout_s = a.write_timeout;
  opt.http.max_body_bytes = a.max_body_bytes;
  opt.max_queued_requests = a.max_queued_requests;
  opt.responses_store = size_t(a.responses_store);
  opt.api_key = a.api_key;
  if (opt.api_key.empty()) {
    if (const char* env = std::getenv("MXSERVE_API_KEY")) opt.api_key = env;
  }

  // Declaration order = reverse destruction order: the engine (whose events reach into the server) goes
  // first, then the server, then the runner and tokenizer it used.
  std::unique_ptr<mxs::Tokenizer> tokenizer;
  std::unique_ptr<mxs::ModelRunner> runner;
  mxs::server::ApiServer server(opt);
  std::unique_ptr<mxs::Engine> engine;

  server.start();
  MXS_LOG_INFO("mxserve: listening on http://%s:%d (loading the model; /health is 503 until ready)%s", a.host.c_str(),
               server.port(), opt.api_key.empty() ? "" : ", API key required on /v1/*");
  mxs::Stopwatch load_time;
  const std::string dir = a.model.empty() ? mxs::ensure_demo_model() : a.model;
  mxs::ModelWeights weights = mxs::load_model(dir);
  tokenizer = mxs::Tokenizer::from_file(tokenizer_path(dir));
  const int model_max = weights.config.max_position_embeddings;
  MXS_CHECK(
      a.max_length >= 0 && a.max_length <= model_max,
      mxs::strfmt("--max-length %d is out of range: must be in [1, %d] (the model's maximum), or 0 for the maximum",
                  a.max_length, model_max));
  const int max_length = a.max_length > 0 ? a.max_length : model_max;

  mxs::RunnerSpec spec;
  spec.backend = a.backend;
  spec.kv_tokens = a.kv_cache_tokens;
  spec.device_memory_utilization = a.device_memory_utilization;
  spec.bf12_dense = a.bf12_dense == "none" ? "" : a.bf12_dense;
  spec.lm_head_screen = a.lm_head_screen;
  spec.exact_attention = a.exact_attention;
  spec.max_batch_size = a.max_batch_size;
  spec.max_num_batched_tokens = a.max_num_batched_tokens;
  spec.max_length = max_length;
  runner = mxs::make_runner(weights, spec);

  mxs::EngineConfig ec;
  ec.max_batch_size = a.max_batch_size;
  ec.max_num_batched_tokens = a.max_num_batched_tokens;
  ec.max_length = max_length;
  ec.async_scheduling = mxs::cli::async_scheduling_enabled(a.async_scheduling, runner->name());
  engine = std::make_unique<mxs::Engine>(*runner, tokenizer.get(), ec);
  const std::string name = a.served_model_name.empty() ? basename_of(dir) : a.served_model_name;
  server.set_model(engine.get(), tokenizer.get(), name, engine->config().max_length);
  MXS_LOG_INFO("mxserve: ready in %.1f s: model '%s' from %s, backend %s, max length %d, %d KV blocks of %d tokens",
               load_time.seconds(), name.c_str(), dir.c_str(), runner->name().c_str(), engine->config().max_length,
               engine->kv_layout().num_blocks, engine->kv_layout().block_size);

  int sig = 0;
  sigwait(&signals, &sig);
  MXS_LOG_INFO("mxserve: %s received, shutting down (in-flight requests get up to %.0f s)",
               sig == SIGINT ? "SIGINT" : "SIGTERM", a.shutdown_timeout);
  server.shutdown(a.shutdown_timeout, [&engine] { engine->stop(); });
  engine->stop();
  MXS_LOG_INFO("mxserve: stopped");
}

mxs::cli::CommandRegistrar registrar(0, [](CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  CLI::App* cmd =
      app.add_subcommand("serve", "Serve a model over an OpenAI-compatible HTTP API (chat, completions, metrics)");
  cmd->add_option("--model", a->model, "Model folder (Hugging Face layout); default: the built-in tiny demo model");
  cmd->add_option("--host", a->host, "Address to bind (default 127.0.0.1; 0.0.0.0 for all interfaces)");
  cmd->add_option("--port", a->port, "Port (default 8000; 0 = any free port)");
  cmd->add_option("--backend", a->backend, "auto, cpu or cuda (auto: cuda when this build has it and a GPU is usable, else cpu)");
  cmd->add_option("--max-batch-size", a->max_batch_size, "Sequences per engine step (default 256)");
  cmd->add_option("--max-num-batched-tokens", a->max_num_batched_tokens, "New tokens per engine step (default 2048)");
  cmd->add_option("--max-length", a->max_length, "Prompt + output tokens per request (default: the model's maximum)");
  mxs::cli::add_async_scheduling_option(cmd, &a->async_scheduling);
  cmd->add_option("--device-memory-utilization", a->device_memory_utilization,
                  "cuda: fraction of GPU memory to use, weights + KV cache (default 0.90)");
  mxs::cli::add_bf12_dense_option(cmd, &a->bf12_dense);
  mxs::cli::add_lm_head_screen_option(cmd, &a->lm_head_screen);
  mxs::cli::add_exact_attention_option(cmd, &a->exact_attention);
  cmd->add_option("--kv-cache-tokens", a->kv_cache_tokens, "cpu: tokens the KV pool holds (default 65536)");
  cmd->add_option("--max-queued-requests", a->max_queued_requests,
                  "Requests waiting for their first token beyond which new ones get 429 (default 1024)");
  cmd->add_option("--responses-store", a->responses_store,
                  "Responses API responses kept in memory for previous_response_id and GET /v1/responses/{id}, the "
                  "least recently used dropped beyond it (default 1000; 0: none)");
  cmd->add_option("--served-model-name", a->served_model_name, "Model id in the API (default: the folder name)");
  cmd->add_option("--api-key", a->api_key, "Require 'Authorization: Bearer KEY' on /v1/* (or set MXSERVE_API_KEY)");
  cmd->add_option("--http-threads", a->io_threads, "HTTP io threads (default 2)");
  cmd->add_option("--header-timeout", a->header_timeout,
                  "Seconds a connection may take to send request headers, also the keep-alive idle limit (default 30)");
  cmd->add_option("--write-timeout", a->write_timeout,
                  "Seconds a response write may stall before the client is dropped (default 60)");
  cmd->add_option("--max-body-bytes", a->max_body_bytes, "Largest request body; larger ones get 413 (default 16 MiB)");
  cmd->add_option("--shutdown-timeout", a->shutdown_timeout,
                  "Seconds in-flight requests get to finish on SIGINT/SIGTERM before they are cancelled (default 10)");
  cmd->callback([a] { run_serve(*a); });
});

}  // namespace
