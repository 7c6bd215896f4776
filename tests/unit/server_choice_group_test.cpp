// ChoiceGroup (server/choice_group.h), the `n` > 1 fan-in, against a recording HttpExchange: one response with the
// choices in index order whatever order they end in, usage with the prompt once and the completions summed; a
// stream's one usage chunk and [DONE] only after its last choice; the first failure answers alone.
#include <gtest/gtest.h>

#include <mutex>
#include <string>
#include <vector>

#include "server/choice_group.h"
#include "server/openai_format.h"
#include "server/serving_context.h"

namespace mxs::server {
namespace {

using nlohmann::json;

struct RecordingExchange : HttpExchange {
  std::vector<HttpResponse> responses;
  std::vector<std::string> chunks;
  int streams_started = 0, streams_ended = 0;
  void respond(HttpResponse r) override { responses.push_back(std::move(r)); }
  void start_stream(int, std::string, std::vector<std::pair<std::string, std::string>>) override { ++streams_started; }
  bool send_chunk(std::string data) override {
    chunks.push_back(std::move(data));
    return true;
  }
  void end_stream() override { ++streams_ended; }
  void on_disconnect(std::function<void()>) override {}
  bool client_gone() const override { return false; }
};

std::string content_of(int index) {
  std::string c = "c";
  c += std::to_string(index);
  return c;
}

json response_of(int index, int completion, int reasoning) {
  json choice = {{"index", index}, {"message", {{"role", "assistant"}, {"content", content_of(index)}}}};
  return with_usage(response_envelope("chatcmpl-x", "chat.completion", 1, "m", json::array({choice})),
                    usage_json(40, completion, reasoning, index == 0 ? 0 : 32));
}

TEST(ChoiceGroup, OneResponseInIndexOrderWithUsageSummed) {
  auto ex = std::make_shared<RecordingExchange>();
  auto g = std::make_shared<ChoiceGroup>(ex, 3, /*stream=*/false);
  g->response_done(2, response_of(2, 7, 1));
  g->response_done(0, response_of(0, 5, 2));
  EXPECT_TRUE(ex->responses.empty()) << "nothing before the last choice";
  g->response_done(1, response_of(1, 9, 0));
  ASSERT_EQ(ex->responses.size(), 1u);
  EXPECT_EQ(ex->responses[0].status, 200);
  const json r = json::parse(ex->responses[0].body);
  ASSERT_EQ(r["choices"].size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(r["choices"][i]["index"], i);
    EXPECT_EQ(r["choices"][i]["message"]["content"], content_of(i));
  }
  EXPECT_EQ(r["usage"]["prompt_tokens"], 40);
  EXPECT_EQ(r["usage"]["completion_tokens"], 21);
  EXPECT_EQ(r["usage"]["total_tokens"], 61);
  EXPECT_EQ(r["usage"]["completion_tokens_details"]["reasoning_tokens"], 3);
  EXPECT_EQ(r["usage"]["prompt_tokens_details"]["cached_tokens"], 0) << "the prompt as choice 0 saw it";
  g->response_done(1, response_of(1, 9, 0));  // (a second end is ignored)
  EXPECT_EQ(ex->responses.size(), 1u);
}

TEST(ChoiceGroup, StreamEndsOnceAfterItsLastChoice) {
  auto ex = std::make_shared<RecordingExchange>();
  auto g = std::make_shared<ChoiceGroup>(ex, 2, /*stream=*/true);
  auto usage_chunk = [](int completion) {
    return with_usage(response_envelope("chatcmpl-x", "chat.completion.chunk", 1, "m", json::array()),
                      usage_json(40, completion, 0, 0));
  };
  g->stream_done(usage_chunk(6));
  EXPECT_TRUE(ex->chunks.empty());
  EXPECT_EQ(ex->streams_ended, 0);
  g->stream_done(usage_chunk(4));
  ASSERT_EQ(ex->chunks.size(), 2u);
  const std::string& u = ex->chunks[0];
  const json uj = json::parse(u.substr(u.find('{'), u.rfind('}') - u.find('{') + 1));
  EXPECT_EQ(uj["usage"]["completion_tokens"], 10);
  EXPECT_EQ(uj["usage"]["total_tokens"], 50);
  EXPECT_TRUE(uj["choices"].empty());
  EXPECT_NE(ex->chunks[1].find("[DONE]"), std::string::npos);
  EXPECT_EQ(ex->streams_ended, 1);

  // Without include_usage: only [DONE].
  auto ex2 = std::make_shared<RecordingExchange>();
  auto g2 = std::make_shared<ChoiceGroup>(ex2, 2, true);
  g2->stream_done(nullptr);
  g2->stream_done(nullptr);
  ASSERT_EQ(ex2->chunks.size(), 1u);
  EXPECT_NE(ex2->chunks[0].find("[DONE]"), std::string::npos);
}

TEST(ChoiceGroup, TheFirstFailureAnswersAlone) {
  ApiError e;
  e.status = 500;
  e.type = "server_error";
  e.message = "generation failed: boom";
  auto ex = std::make_shared<RecordingExchange>();
  auto g = std::make_shared<ChoiceGroup>(ex, 3, false);
  g->response_done(0, response_of(0, 5, 0));
  g->fail(e);
  EXPECT_TRUE(g->failed());
  g->fail(e);
  g->response_done(1, response_of(1, 5, 0));
  g->response_done(2, response_of(2, 5, 0));
  ASSERT_EQ(ex->responses.size(), 1u);
  EXPECT_EQ(ex->responses[0].status, 500);
  EXPECT_NE(ex->responses[0].body.find("boom"), std::string::npos);

  auto sx = std::make_shared<RecordingExchange>();
  auto sg = std::make_shared<ChoiceGroup>(sx, 2, true);
  sg->fail(e);
  sg->stream_done(nullptr);
  sg->stream_done(nullptr);
  ASSERT_EQ(sx->chunks.size(), 2u) << "the in-band error and [DONE], once";
  EXPECT_NE(sx->chunks[0].find("boom"), std::string::npos);
  EXPECT_NE(sx->chunks[1].find("[DONE]"), std::string::npos);
  EXPECT_EQ(sx->streams_ended, 1);
}

TEST(ChoiceGroup, TheQueueMustHoldEveryChoice) {
  ServerMetrics metrics(nullptr);
  ServingContext ctx;
  ctx.metrics = &metrics;
  ctx.max_queued_requests = 8;
  ctx.waiting = 5;
  EXPECT_NO_THROW(GenerationSession::check_capacity(ctx, 3));
  try {  // room for 3 more, not 4: retry later
    GenerationSession::check_capacity(ctx, 4);
    ADD_FAILURE() << "no 429";
  } catch (const ApiException& e) {
    EXPECT_EQ(e.error.status, 429);
    EXPECT_EQ(e.error.retry_after_s, 1);
  }
  ctx.waiting = 0;
  try {  // more choices than the queue can ever hold: a 400 naming n
    GenerationSession::check_capacity(ctx, 9);
    ADD_FAILURE() << "no 400";
  } catch (const ApiException& e) {
    EXPECT_EQ(e.error.status, 400);
    EXPECT_EQ(e.error.param, "n");
  }
  EXPECT_EQ(metrics.requests_rejected.value(), 1.0) << "the 429 counts as a rejection";
}

TEST(ChoiceGroup, UsageSumIgnoresMissingFields) {
  json a = usage_json(10, 3, 1, 0);
  add_completion_usage(a, json::object());
  EXPECT_EQ(a["completion_tokens"], 3);
  add_completion_usage(a, usage_json(10, 4, 2, 8));
  EXPECT_EQ(a["completion_tokens"], 7);
  EXPECT_EQ(a["total_tokens"], 17);
  EXPECT_EQ(a["completion_tokens_details"]["reasoning_tokens"], 3);
}

}  // namespace
}  // namespace mxs::server
