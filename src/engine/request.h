// What a client hands the engine (Request) and what comes back (TokenEvent, one per request per step
// that produced something). Native types only: the HTTP server and the offline API both consume these.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/model_runner.h"
#include "engine/sampling_params.h"
#include "engine/token_constraint.h"
#include "text/special_tokens.h"

namespace mxs {

// The harmony stop tokens: <|return|>, <|call|>, <|endoftext|>. Never <|end|>: it ends a message (e.g. the
// analysis channel), not the completion.
inline std::vector<int32_t> default_stop_token_ids() { return {tok::kReturn, tok::kCall, tok::kEndOfText}; }

struct Request {
  std::vector<int32_t> prompt;  // token ids, already rendered (harmony) and encoded
  SamplingParams sampling;
  int max_tokens = -1;  // generated tokens at most; -1 = until --max-length (or the KV pool) is reached
  std::vector<int32_t> stop_token_ids = default_stop_token_ids();
  bool ignore_stop_tokens = false;  // benchmarks: always generate max_tokens
  // Matched on the detokenized output (needs a tokenizer); the text up to the match is returned, the
  // match itself and anything after it are not.
  std::vector<std::string> stop_strings;
  // Structured outputs: makes each sequence's TokenConstraint (empty: any token). Copies share the factory.
  TokenConstraintFactory constraint;
  int priority = 0;  // lower runs first (ties: first come, first served); the highest value is preempted first
  double arrival_time = 0.0;  // now_seconds() at submission; 0 = the engine stamps it
};

enum class FinishReason {
  kNone,    // still running
  kStop,    // a stop token or stop string
  kLength,  // max_tokens or --max-length
  kAbort,   // cancelled by the client or the engine shut down
  kError,   // this request failed (e.g. a sampler error); others are unaffected
};
const char* finish_reason_name(FinishReason r);  // "stop", "length", "abort", "error"

// Seconds on the steady clock (mxs::now_seconds()); 0 = did not happen.
struct RequestTimings {
  double arrival = 0.0;
  double first_scheduled = 0.0;     // queue time = first_scheduled - arrival
  double first_token = 0.0;         // TTFT = first_token - arrival
  std::vector<double> token_times;  // when each generated token came out of its step
  double end = 0.0;

  double queue_s() const { return first_scheduled > 0 ? first_scheduled - arrival : 0.0; }
  double ttft_s() const { return first_token > 0 ? first_token - arrival : 0.0; }
  // Mean time between generated tokens after the first (TPOT); 0 with fewer than two tokens.
  double mean_tpot_s() const;
  double e2e_s() const { return end > 0 ? end - arrival : 0.0; }
};

struct TokenEvent {
  uint64_t request_id = 0;
  // New generated tokens, a stop token included (it counts as generated; it has no text).
  std::vector<int32_t> token_ids;
  std::vector<float> logprobs;                  // [token_ids.size()] when sampling.logprobs
  std::vector<std::vector<TokenLogprob>> top;   // [token_ids.size()] when sampling.top_logprobs > 0
  // New detokenized text (whole UTF-8 characters). Text that could still become a stop string is held
  // back until it cannot; empty without a tokenizer.
  std::string text;
  FinishReason finish = FinishReason::kNone;
  // On the final event only:
  std::string error;              // kError: what went wrong; kLength from the pool: why
  int32_t stop_token = -1;        // kStop by a stop token
  std::string stop_string;        // kStop by a stop string
  int num_prompt_tokens = 0;
  int num_output_tokens = 0;
  int num_cached_tokens = 0;      // prompt tokens served by the prefix cache at first admission
  int num_preemptions = 0;
  RequestTimings timings;

  bool finished() const { return finish != FinishReason::kNone; }
};

}  // namespace mxs
