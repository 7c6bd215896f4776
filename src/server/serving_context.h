// What every OpenAI endpoint handler shares: the engine and tokenizer (null until the model is loaded),
// the served model's name and limits, the metrics, the bounded waiting queue and a way to run work on an
// io thread. Owned by ApiServer; handlers get a reference.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "server/server_metrics.h"

namespace mxs {
class Engine;
class JsonTokenMask;
class Tokenizer;
}  // namespace mxs

namespace mxs::server {

class ResponseStore;

struct ServingContext {
  std::atomic<Engine*> engine{nullptr};  // set once the model is loaded (then /health is 200)
  const Tokenizer* tokenizer = nullptr;  // set before engine
  std::string model_name;                // served model id (set before engine)
  int max_length = 0;                    // prompt + output tokens (set before engine)
  std::shared_ptr<const JsonTokenMask> json_masks;  // response_format json_object (set before engine)
  int max_queued_requests = 1024;        // waiting requests beyond this get 429
  int64_t created_unix = 0;              // model "created" for /v1/models
  ServerMetrics* metrics = nullptr;
  ResponseStore* responses = nullptr;    // the Responses API's stored responses
  std::function<void(std::function<void()>)> post;  // run a task on an io thread
  std::atomic<int> waiting{0};                      // requests submitted that have not produced a token yet

  bool ready() const { return engine.load() != nullptr; }
};

}  // namespace mxs::server
