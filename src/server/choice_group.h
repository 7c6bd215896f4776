// The choices of one request with `n` > 1: n engine requests, each driven by its own session (its own output parser,
// stop strings, logprobs and finish reason; its own seed), answering one HTTP exchange under one id.
//   stream:  each choice's chunks go out as they come, with its "index"; once the last choice has finished, one
//            usage chunk (with include_usage) and [DONE].
//   else:    one response, its choices in index order, once the last choice has finished.
//   usage:   the prompt once (as the first choice saw it: tokens, cached tokens), the choices' completion and
//            reasoning tokens summed.
// Choices 1..n-1 start when choice 0 delivers its first event: its prompt's KV blocks are then in the prefix cache,
// so they compute only what the cache lacks (one prefill for the n choices, at one engine step of extra latency
// for the others' first tokens).
// The first failure answers for the whole request (the others are cancelled and answer nothing); a client that
// leaves cancels every choice.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/request.h"
#include "server/generation_session.h"
#include "server/http_server.h"
#include "server/openai_schema.h"

namespace mxs::server {

class ChoiceGroup : public std::enable_shared_from_this<ChoiceGroup> {
 public:
  using MakeSession = std::function<std::shared_ptr<GenerationSession>(std::shared_ptr<HttpExchange>,
                                                                      std::shared_ptr<ChoiceGroup>, int choice)>;
  ChoiceGroup(std::shared_ptr<HttpExchange> exchange, int n, bool stream);

  const std::string& id_suffix() const { return id_suffix_; }
  int64_t created() const { return created_; }

  // Choice `index`'s session (for cancellation); watch_disconnect(): one disconnect callback cancels them all.
  void add(int index, const std::shared_ptr<GenerationSession>& session);
  void watch_disconnect(ServingContext& ctx);
  // Choices 1..n-1 (`requests[i - 1]` is choice i's), made and started by start_deferred().
  void defer_rest(MakeSession make, std::vector<Request> requests);
  // Choice 0's session calls it before handling its first event (once; a no-op after a failure or a disconnect).
  void start_deferred();

  // A choice's end. stream_done: its usage chunk (null without include_usage); response_done: its whole response
  // (one choice). Each choice calls one of them once, unless the group failed.
  void stream_done(nlohmann::json usage_chunk);
  void response_done(int index, nlohmann::json response);
  // The first failure answers for the request (in-band when streaming) and cancels every choice.
  void fail(const ApiError& error);
  bool failed() const;

 private:
  void cancel_all();

  const std::shared_ptr<HttpExchange> exchange_;
  const int n_;
  const bool stream_;
  const std::string id_suffix_;
  const int64_t created_;
  mutable std::mutex mu_;
  std::vector<std::weak_ptr<GenerationSession>> sessions_;
  int remaining_;
  bool failed_ = false;
  bool cancelled_ = false;                   // the client left, or a choice failed
  MakeSession make_;
  std::vector<Request> deferred_;
  nlohmann::json usage_chunk_;               // stream: the merged usage chunk (null: none)
  std::vector<nlohmann::json> responses_;    // not streaming: each choice's response
};

// usage objects (openai_format.h usage_json): `into` += `more`'s completion and reasoning tokens; total recomputed.
void add_completion_usage(nlohmann::json& into, const nlohmann::json& more);

// Starts a request's choices: `gen.n` sessions made by make(exchange, group, choice) (group null when n = 1), each
// submitting `base` with its own seed (the client's + choice when given, else a random one); choices 1..n-1 after
// choice 0's first event (ChoiceGroup). Throws (as GenerationSession::start) before any choice has started, e.g. 429
// when the queue has no room for all n; a later choice's failure answers through the group.
inline void start_choices(ServingContext& ctx, std::shared_ptr<HttpExchange> exchange, const GenerationOptions& gen,
                          const Request& base, const ChoiceGroup::MakeSession& make) {
  const int n = gen.n;
  auto request_of = [&](int choice) {
    Request req = base;
    req.sampling.seed = gen.seed_given ? gen.sampling.seed + uint64_t(choice) : random_seed();
    return req;
  };
  if (n == 1) {
    make(std::move(exchange), std::shared_ptr<ChoiceGroup>(), 0)->start(request_of(0));
    return;
  }
  GenerationSession::check_capacity(ctx, n);
  auto group = std::make_shared<ChoiceGroup>(exchange, n, gen.stream);
  std::vector<Request> rest;
  for (int i = 1; i < n; ++i) rest.push_back(request_of(i));
  group->defer_rest(make, std::move(rest));  // (before choice 0 starts: its first event may come at once)
  auto first = make(exchange, group, 0);
  group->add(0, first);
  first->start(request_of(0));  // throws before anything has started: the router answers
  group->watch_disconnect(ctx);
}

}  // namespace mxs::server
