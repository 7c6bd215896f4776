// A request's n choices answering one exchange (see choice_group.h).
#include "server/choice_group.h"

#include <ctime>

#include "common/error.h"
#include "server/generation_session.h"
#include "server/openai_format.h"
#include "server/router.h"
#include "server/serving_context.h"
#include "server/server_metrics.h"
#include "server/sse.h"

namespace mxs::server {

using nlohmann::json;

void add_completion_usage(json& into, const json& more) {
  const auto num = [](const json& j, const char* a, const char* b = nullptr) -> int64_t {
    const json* v = j.contains(a) ? &j.at(a) : nullptr;
    if (v && b) v = v->is_object() && v->contains(b) ? &v->at(b) : nullptr;
    return v && v->is_number_integer() ? v->get<int64_t>() : 0;
  };
  into["completion_tokens"] = num(into, "completion_tokens") + num(more, "completion_tokens");
  into["total_tokens"] = num(into, "prompt_tokens") + into["completion_tokens"].get<int64_t>();
  into["completion_tokens_details"]["reasoning_tokens"] =
      num(into, "completion_tokens_details", "reasoning_tokens") +
      num(more, "completion_tokens_details", "reasoning_tokens");
}

ChoiceGroup::ChoiceGroup(std::shared_ptr<HttpExchange> exchange, int n, bool stream)
    : exchange_(std::move(exchange)),
      n_(n),
      stream_(stream),
      id_suffix_(random_id()),
      created_(int64_t(std::time(nullptr))),
      sessions_(size_t(n)),
      remaining_(n),
      responses_(size_t(n)) {}

void ChoiceGroup::add(int index, const std::shared_ptr<GenerationSession>& session) {
  std::lock_guard<std::mutex> lock(mu_);
  sessions_[size_t(index)] = session;
}

void ChoiceGroup::watch_disconnect(ServingContext& ctx) {
  std::weak_ptr<ChoiceGroup> weak = weak_from_this();
  ServingContext* c = &ctx;
  exchange_->on_disconnect([weak, c] {
    if (auto g = weak.lock()) {
      c->metrics->requests_cancelled.inc();
      g->cancel_all();
    }
  });
}

void ChoiceGroup::defer_rest(MakeSession make, std::vector<Request> requests) {
  std::lock_guard<std::mutex> lock(mu_);
  make_ = std::move(make);
  deferred_ = std::move(requests);
}

void ChoiceGroup::start_deferred() {
  MakeSession make;
  std::vector<Request> requests;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (deferred_.empty()) return;
    requests = std::move(deferred_);
    deferred_.clear();
    make = std::move(make_);
    if (failed_ || cancelled_) return;
  }
  for (size_t k = 0; k < requests.size(); ++k) {
    const int index = int(k) + 1;
    try {
      auto session = make(exchange_, shared_from_this(), index);
      add(index, session);
      session->start(std::move(requests[k]));
      bool cancelled;
      {
        std::lock_guard<std::mutex> lock(mu_);
        cancelled = cancelled_;
      }
      if (cancelled) session->cancel();  // the client left while it was starting
    } catch (const ApiException& e) {
      fail(e.error);
      return;
    } catch (const std::exception& e) {
      ApiError err;
      err.status = 500;
      err.type = "server_error";
      err.message = strfmt("starting choice %d failed: %s", index, e.what());
      fail(err);
      return;
    }
  }
}

void ChoiceGroup::cancel_all() {
  std::vector<std::shared_ptr<GenerationSession>> live;
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    for (auto& w : sessions_)
      if (auto s = w.lock()) live.push_back(std::move(s));
  }
  for (auto& s : live) s->cancel();
}

bool ChoiceGroup::failed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failed_;
}

void ChoiceGroup::fail(const ApiError& error) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (failed_ || remaining_ == 0) return;
    failed_ = true;
  }
  if (stream_) {
    exchange_->send_chunk(sse_json(error_json(error)));
    exchange_->send_chunk(sse_done());
    exchange_->end_stream();
  } else {
    exchange_->respond(error_response(error));
  }
  cancel_all();
}

void ChoiceGroup::stream_done(json usage_chunk) {
  json last;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (failed_ || remaining_ == 0) return;
    if (!usage_chunk.is_null()) {
      if (usage_chunk_.is_null())
        usage_chunk_ = std::move(usage_chunk);
      else
        add_completion_usage(usage_chunk_["usage"], usage_chunk["usage"]);
    }
    if (--remaining_ > 0) return;
    last = std::move(usage_chunk_);
  }
  if (!last.is_null()) exchange_->send_chunk(sse_json(last));
  exchange_->send_chunk(sse_done());
  exchange_->end_stream();
}

void ChoiceGroup::response_done(int index, json response) {
  json merged;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (failed_ || remaining_ == 0) return;
    responses_[size_t(index)] = std::move(response);
    if (--remaining_ > 0) return;
    merged = std::move(responses_[0]);
    json choices = json::array();
    for (int i = 0; i < n_; ++i) {
      json& r = i == 0 ? merged : responses_[size_t(i)];
      for (auto& c : r["choices"]) choices.push_back(std::move(c));
      if (i > 0) add_completion_usage(merged["usage"], r["usage"]);
    }
    merged["choices"] = std::move(choices);
  }
  exchange_->respond(json_response(200, merged));
}

}  // namespace mxs::server
